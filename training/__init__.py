"""Model training, backtests against baselines, and the MLflow platform (tracking, registry)."""
