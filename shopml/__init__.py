"""shopml: recommendations, churn risk, repurchase propensity and demand forecasts for shops."""

__version__ = "0.1.0"
