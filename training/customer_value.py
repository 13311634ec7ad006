"""The customer-value model: expected net spend (purchases minus returns) per customer over the
next ``horizon_days``.

LightGBM (tweedie) on stacked snapshots or BG/NBD + Gamma-Gamma, whichever has the lower RMSE on
a validation cutoff (:class:`ValueModel`); the snapshots, cutoffs and sampling are those of the
churn and repurchase models (:mod:`training.snapshots`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.labels import future_spend
from features.purchases import as_timestamp
from features.schema import CUSTOMER_ID, ORDERED_AT
from shopml.artifacts.customers import CustomerArtifact, net_order_value
from training.base import check_fitted
from training.btyd import btyd_sample, fit_bgnbd_on, fit_gamma_gamma
from training.customer_base import DEFAULT_PARAMS, CustomerArtifactIO, DataWindowError
from training.snapshots import (
    MAX_TRAIN_CUSTOMERS,
    UserSnapshots,
    as_matrix,
    default_features,
    monthly_cutoffs,
    select_rows,
)

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


class ValueModel(CustomerArtifactIO):
    """Expected spend over the next ``horizon_days`` (365): LightGBM (tweedie) or BG/NBD+Gamma-Gamma,
    whichever has the lower RMSE on a validation cutoff; BG/NBD+Gamma-Gamma when the history is
    too short to backtest a ``horizon_days`` window (logged)."""

    kind: ClassVar[str] = "value"

    def __init__(
        self,
        horizon_days: int = 365,
        *,
        n_snapshots: int = 3,
        num_boost_round: int = 300,
        params: dict[str, Any] | None = None,
        num_threads: int = 1,
        seed: int = 0,
        max_train_customers: int | None = MAX_TRAIN_CUSTOMERS,
        client: Client | None = None,
    ) -> None:
        self.client = client  # a Dask client: LightGBM fits and scores run on its cluster
        self.max_train_customers = max_train_customers
        self.horizon_days = horizon_days
        self.n_snapshots = n_snapshots
        self.num_boost_round = num_boost_round
        self.params = params
        self.num_threads = num_threads
        self.seed = seed

    def _btyd_artifact(self, feats: pd.DataFrame, as_of: pd.Timestamp) -> CustomerArtifact:
        bg = fit_bgnbd_on(feats)
        fit_rows = btyd_sample(feats)
        rate = fit_rows["return_rate"].to_numpy() if "return_rate" in fit_rows else None
        gg = fit_gamma_gamma(
            fit_rows["repeat_days"].to_numpy(),
            net_order_value(fit_rows["monetary_mean"].to_numpy(), rate),
        )
        art = CustomerArtifact(
            task="value",
            kind="bgnbd-gammagamma",
            feature_names=list(feats.columns),
            horizon_days=self.horizon_days,
            as_of=str(as_of.date()),
            btyd={**bg.params, **gg.params},
        )
        for what, fit in (("BG/NBD", bg), ("Gamma-Gamma", gg)):
            if not fit.converged:
                art.notes.append(f"{what} did not converge: {fit.message}")
            elif fit.limit:  # BG/NBD's a -> 0: the no-dropout (NBD) model, used and said
                art.notes.append(fit.message)
        return art

    def fit(
        self,
        orders: pd.DataFrame,
        as_of: object,
        items: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
        *,
        snapshots: UserSnapshots | None = None,
    ) -> Self:
        """Fit both candidates, backtest where the history allows, keep the better one
        (``snapshots``: a shared feature cache, as in
        :meth:`training.customers.ChurnModel.fit`; BG/NBD and Gamma-Gamma are fitted on the
        training population, every customer is scored)."""
        as_of = as_timestamp(as_of)
        if not (orders[ORDERED_AT] < as_of).any():
            raise DataWindowError(f"as_of {as_of.date()} is before all data; no history")
        hist = orders  # spend labels read windows ending by as_of
        cache = (
            snapshots
            if snapshots is not None
            else UserSnapshots(orders, items=items, customers=customers)
        )
        pop = cache.population(as_of, self.max_train_customers)
        first = orders[ORDERED_AT].min()
        H = self.horizon_days
        cutoffs = monthly_cutoffs(first, as_of, H, 30, self.n_snapshots + H // 28 + 2)
        feats_now = cache.features(as_of)
        self.validation_: dict[str, dict[str, float]] = {}
        chosen = self._btyd_artifact(select_rows(feats_now, pop), as_of)
        if len(cutoffs) >= 2:
            val = cutoffs[0]
            tr = [c for c in cutoffs[1:] if c + pd.Timedelta(days=H) <= val][: self.n_snapshots]
            if tr:
                cols = default_features(feats_now.columns)
                snaps = {c: cache.features(c, pop)[cols] for c in [val, *tr]}
                ys = {c: future_spend(hist, c, snaps[c].index, H).to_numpy() for c in snaps}
                X = pd.concat([snaps[c] for c in tr], ignore_index=True)
                y = np.concatenate([ys[c] for c in tr])
                params = {
                    **DEFAULT_PARAMS,
                    **(self.params or {}),
                    "objective": "tweedie",
                    "num_threads": self.num_threads,
                    "seed": self.seed,
                    "deterministic": True,
                    "force_row_wise": True,
                }
                b = self._train(params, X, y)
                lgb_art = CustomerArtifact(
                    task="value",
                    kind="lightgbm",
                    feature_names=list(X.columns),
                    horizon_days=H,
                    as_of=str(as_of.date()),
                    booster=b,
                )
                btyd_val = self._btyd_artifact(snaps[val], val)
                Xv = snaps[val].to_numpy(np.float64)
                for name, art in (("lightgbm", lgb_art), ("bgnbd-gammagamma", btyd_val)):
                    pred = art.predict(Xv)
                    err = pred - ys[val]
                    self.validation_[name] = {
                        "rmse": float(np.sqrt(np.mean(err**2))),
                        "mae": float(np.mean(np.abs(err))),
                        "bias": float(err.sum() / max(ys[val].sum(), 1e-9)),
                    }
                if (
                    self.validation_["lightgbm"]["rmse"]
                    < self.validation_["bgnbd-gammagamma"]["rmse"]
                ):
                    X_all = pd.concat([snaps[c] for c in [val, *tr]], ignore_index=True)
                    y_all = np.concatenate([ys[c] for c in [val, *tr]])
                    lgb_art.booster = self._train(params, X_all, y_all)
                    chosen = lgb_art
        for note in chosen.notes:
            log.warning("value model: %s", note)
        if not self.validation_:  # logged once, in full (the note is what the artifact keeps)
            log.warning(
                "value model: history too short to backtest a %d-day window before %s; "
                "serving BG/NBD + Gamma-Gamma without a backtest",
                H,
                as_of.date(),
            )
            chosen.notes.append("not backtested: history shorter than the horizon")
        chosen.metrics = {"validation": self.validation_}
        X_now = feats_now[chosen.feature_names].to_numpy(np.float64)
        pred = self._predict(chosen, X_now)
        chosen.scores = pd.DataFrame(
            {CUSTOMER_ID: feats_now.index.astype(str), "value": pred, "as_of": str(as_of.date())}
        )
        self.artifact_: CustomerArtifact | None = chosen
        self.as_of_ = as_of
        return self

    def _train(self, params: dict[str, Any], X: pd.DataFrame, y: np.ndarray) -> lgb.Booster:
        if self.client is not None:  # on the Dask cluster through lightgbm.dask
            from training.dask_models import train_regressor

            return train_regressor(self.client, X, y, params, self.num_boost_round)
        data = lgb.Dataset(as_matrix(X), label=y)
        return lgb.train(params, data, num_boost_round=self.num_boost_round)

    def _predict(self, art: CustomerArtifact, X: np.ndarray) -> np.ndarray:
        if self.client is not None:  # every customer scored on the cluster
            from training.dask_models import predict_rows

            return predict_rows(self.client, art, X)
        return art.predict(X)

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Expected spend over the horizon for each row of a :func:`user_features` frame."""
        check_fitted(self, "artifact_")
        assert self.artifact_ is not None
        return self.artifact_.predict(features[self.artifact_.feature_names].to_numpy(np.float64))
