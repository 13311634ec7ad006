"""RFM / lifecycle segment tags, one per customer, from :func:`features.users.user_features`.

Rules, applied in this order (the first that matches wins):

1. ``new``: first purchase less than ``new_days`` (30) days before ``as_of``.
2. ``dormant``: no purchase for more than ``dormant_days`` (180) days.
3. ``at-risk``: no purchase for more than ``at_risk_gap_multiple`` (2) times the customer's usual
   gap between purchase days, or, for one-time buyers (no usual gap), for more than
   ``at_risk_days`` (60) days.
4. ``high-value``: total spend in the top ``high_value_share`` (20%) of the population.
5. ``active``: everyone else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENTS = ("new", "active", "high-value", "at-risk", "dormant")


def segment_tags(
    features: pd.DataFrame,
    *,
    new_days: float = 30,
    dormant_days: float = 180,
    at_risk_gap_multiple: float = 2.0,
    at_risk_days: float = 60,
    high_value_share: float = 0.2,
) -> pd.Series:
    """One tag per customer (see the module docstring for the rules)."""
    recency = features["recency_days"].to_numpy(dtype=np.float64)
    tenure = features["tenure_days"].to_numpy(dtype=np.float64)
    gap = features["gap_mean"].to_numpy(dtype=np.float64)
    money = features["monetary_total"].to_numpy(dtype=np.float64)
    threshold = np.quantile(money, 1 - high_value_share) if len(money) else np.inf
    at_risk = np.where(np.isnan(gap), recency > at_risk_days, recency > at_risk_gap_multiple * gap)
    conditions = [
        tenure < new_days,
        recency > dormant_days,
        at_risk,
        money >= threshold,
    ]
    tags = np.select(conditions, ["new", "dormant", "at-risk", "high-value"], default="active")
    return pd.Series(tags, index=features.index, name="segment", dtype=object)
