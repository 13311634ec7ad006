"""The demand-forecast artifact: a precomputed weekly forecast table plus what made it.

Built by :class:`training.demand.DemandModel` at fit time; serving loads it and looks forecasts up
(no model runs at request time). A saved folder holds:

- ``forecast.npz`` (``allow_pickle=False``): ``quantiles`` (3, n, H) P10/P50/P90, ``point`` (n, H),
  ``history`` (n, W) the last W weekly units, ``price`` (n,) the last unit price;
- ``items.parquet``: item_id, name, category (row order of the arrays);
- ``booster_<q>.txt`` / ``booster_<model>_<q>.txt``: the LightGBM quantile boosters (text format)
  of the level-scaled (``lgb``) and unit (``lgb_raw``) models, for audit and refits;
- ``meta.json``: origin week, weeks, combination weights, parameters, library versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopml.artifacts.meta import library_versions

MAX_HORIZON = 12
QUANTILE_LEVELS = (0.1, 0.5, 0.9)
FORECAST_FILE = "forecast.npz"
ITEMS_FILE = "items.parquet"
META_FILE = "meta.json"


def booster_file(model: str, q: float) -> str:
    """File name of a booster: ``booster_<q>.txt`` for ``lgb``, ``booster_<model>_<q>.txt`` else."""
    return f"booster_{q}.txt" if model == "lgb" else f"booster_{model}_{q}.txt"


def check_horizon(horizon: int, available: int = MAX_HORIZON) -> int:
    """``horizon`` as an int in 1..available, else ValueError."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
        raise ValueError(f"horizon must be an integer number of weeks, got {horizon!r}")
    if not 1 <= int(horizon) <= available:
        raise ValueError(f"horizon must be between 1 and {available} weeks, got {horizon}")
    return int(horizon)


@dataclass
class DemandArtifact:
    """Weekly demand forecasts for every item with sales history, ready to look up.

    ``quantiles[k, i, h]`` is the P10/P50/P90 (k = 0, 1, 2) of item ``i`` in week ``h + 1`` after
    ``origin`` (the last complete week of the training data); ``point[i, h]`` is the point forecast
    (combination chosen for low MASE with honest totals; use it for expected volume).

    When ``as_of`` falls mid-week, week 1 is the current week and holds only the demand still
    ahead of ``as_of``: :attr:`first_week_share` of a week's units (from the shop's weekday
    profile), over :attr:`first_week_span` of a week of calendar time (1 and 1 otherwise).
    """

    items: pd.Index
    origin: pd.Timestamp
    quantiles: np.ndarray
    point: np.ndarray
    history: np.ndarray
    history_weeks: pd.DatetimeIndex
    price: np.ndarray
    category: np.ndarray
    names: np.ndarray
    boosters: dict[str, list[str]] = field(default_factory=dict)  # model -> text per quantile
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = pd.Index(self.items.astype(str), name="item_id")
        self._pos = pd.Series(np.arange(len(self.items)), index=self.items)

    @classmethod
    def build(cls, **kwargs: Any) -> DemandArtifact:
        """Build from arrays (quantiles sorted along the first axis and clipped at 0)."""
        q = np.maximum(np.sort(np.asarray(kwargs.pop("quantiles"), dtype=float), axis=0), 0.0)
        p = np.maximum(np.asarray(kwargs.pop("point"), dtype=float), 0.0)
        return cls(quantiles=q, point=p, **kwargs)

    # ---------------------------------------------------------------------------- lookups
    @property
    def horizon(self) -> int:
        """Weeks ahead available in the table."""
        return int(self.point.shape[1])

    @property
    def weeks(self) -> pd.DatetimeIndex:
        """Week-ending dates (Sundays) of the forecast table."""
        return pd.DatetimeIndex(
            [self.origin + pd.Timedelta(days=7 * k) for k in range(1, self.horizon + 1)]
        )

    @property
    def first_week_share(self) -> float:
        """Share of week 1's units still ahead of ``as_of`` (1: the whole week is ahead)."""
        return float(self.meta.get("first_week_share", 1.0))

    @property
    def first_week_span(self) -> float:
        """Calendar share of week 1 still ahead of ``as_of`` (2/7 from a Saturday 00:00)."""
        return float(self.meta.get("first_week_span", 1.0))

    def share_ahead(self, horizon: int) -> np.ndarray:
        """Per week ahead 1..horizon, the share of that week's units the forecast covers."""
        out = np.ones(horizon)
        out[0] = self.first_week_share
        return out

    def positions(self, item_ids: list[str] | pd.Index | np.ndarray) -> np.ndarray:
        """Row positions of ``item_ids``; KeyError naming the unknown ones."""
        ids = pd.Index(np.asarray(item_ids, dtype=object).astype(str))
        pos = self._pos.index.get_indexer(ids)
        if (pos < 0).any():
            unknown = list(ids[pos < 0][:5])
            raise KeyError(f"unknown item id(s) (no sales history in the model): {unknown}")
        return np.asarray(pos)

    def forecast_arrays(
        self, item_ids: list[str] | pd.Index | np.ndarray, horizon: int
    ) -> dict[str, np.ndarray]:
        """Arrays (n_items, horizon): ``p10``, ``p50``, ``p90``, ``point``. Fast path for serving."""
        horizon = check_horizon(horizon, self.horizon)
        pos = self.positions(item_ids)
        q = self.quantiles[:, pos, :horizon]
        return {"p10": q[0], "p50": q[1], "p90": q[2], "point": self.point[pos, :horizon]}

    def forecast(self, item_ids: list[str] | pd.Index | np.ndarray, horizon: int) -> pd.DataFrame:
        """Long table: item_id, week (Sunday), h, p10, p50, p90, point (units per week),
        share_ahead (the share of the week's units still ahead of ``as_of``: below 1 only for
        week 1 of a mid-week ``as_of``, whose forecast is that remaining demand).

        Quantiles never cross and are never negative. ``horizon`` in 1..12 (ValueError otherwise);
        an unknown item raises KeyError.
        """
        arrays = self.forecast_arrays(item_ids, horizon)
        n = arrays["point"].shape[0]
        ids = np.asarray(item_ids, dtype=object).astype(str)
        return pd.DataFrame(
            {
                "item_id": np.repeat(ids, horizon),
                "week": np.tile(self.weeks[:horizon].to_numpy(), n),
                "h": np.tile(np.arange(1, horizon + 1), n),
                **{k: v.reshape(-1) for k, v in arrays.items()},
                "share_ahead": np.tile(self.share_ahead(horizon), n),
            }
        )

    def item_info(self, item_ids: list[str] | pd.Index | np.ndarray) -> pd.DataFrame:
        """Name, category and last unit price of ``item_ids``."""
        pos = self.positions(item_ids)
        return pd.DataFrame(
            {"name": self.names[pos], "category": self.category[pos], "price": self.price[pos]},
            index=self.items[pos],
        )

    # ------------------------------------------------------------------------------- files
    def save(self, folder: Path) -> None:
        """Write the artifact into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / FORECAST_FILE,
            quantiles=self.quantiles,
            point=self.point,
            history=self.history,
            price=self.price,
        )
        pd.DataFrame(
            {
                "item_id": self.items.astype(str),
                "name": self.names.astype(str),
                "category": self.category.astype(str),
            }
        ).to_parquet(folder / ITEMS_FILE, index=False)
        for name, texts in self.boosters.items():
            for q, text in zip(QUANTILE_LEVELS, texts, strict=False):
                (folder / booster_file(name, q)).write_text(text)
        meta = {
            **self.meta,
            "kind": "demand",
            "origin": str(self.origin.date()),
            "history_weeks": [str(w.date()) for w in self.history_weeks],
            "quantile_levels": list(QUANTILE_LEVELS),
            "booster_models": list(self.boosters),
            "versions": library_versions(),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, folder: Path) -> DemandArtifact:
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        with np.load(folder / FORECAST_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        items = pd.read_parquet(folder / ITEMS_FILE)
        boosters: dict[str, list[str]] = {}
        for name in meta.get("booster_models", ["lgb"]):
            files = [folder / booster_file(name, q) for q in QUANTILE_LEVELS]
            if all(f.exists() for f in files):
                boosters[name] = [f.read_text() for f in files]
        return cls(
            items=pd.Index(items["item_id"].astype(str)),
            origin=pd.Timestamp(meta["origin"]),
            quantiles=arrays["quantiles"],
            point=arrays["point"],
            history=arrays["history"],
            history_weeks=pd.DatetimeIndex(pd.to_datetime(meta["history_weeks"])),
            price=arrays["price"],
            category=items["category"].astype(str).to_numpy(dtype=object),
            names=items["name"].astype(str).to_numpy(dtype=object),
            boosters=boosters,
            meta=meta,
        )
