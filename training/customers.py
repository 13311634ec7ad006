"""Churn and repurchase-propensity models (LightGBM on stacked snapshots): fit and scoring.

Discipline (BENCHMARKS.md protocol C):

- features come from :func:`features.users.user_features` at monthly cutoffs before ``as_of``;
  a cutoff is usable for training only when its label window ends on or before ``as_of``;
- the latest usable cutoff is the *validation* cutoff: a model trained on earlier cutoffs is
  scored there and compared with the baselines (recency, frequency, BG/NBD P(no purchase in the
  window), LightGBM on RFM trained on one earlier cutoff), each calibrated there;
- the served LightGBM is refitted on all usable cutoffs (validation included) with the same
  number of rounds, and its calibration is *cross-fitted*: K boosters, each trained on the stacked
  snapshots without one fold of customers, score that fold out of sample; Platt (or isotonic) is
  fitted on those out-of-fold scores against the task's own label (e.g. 90 days) on the cutoffs
  that have it. The calibration map thus belongs to boosters trained like the served one (a map
  fitted on the validation booster does not fit a booster refitted on more data);
- the level of the probabilities follows the features: on the protocol-C validation replays
  (``python -m training.benchmarks.customers --validation``: 6 Online Retail, 5 CDNOW fits at
  earlier as_of dates) the cross-fitted Platt map beat the best reference's Brier on 11 of 11
  (mean -1.5%); calibrations that hold the level at as_of instead did worse: re-centring the
  mean probability at as_of on the calibration cutoffs' mean rate +0.1% (5 of 11), on the
  latest rate -1.2% (10 of 11), standardising scores per population -0.5% (6 of 11), Platt on
  the latest cutoff only -1.3%, exponentially weighted cutoffs -1.4%;
- BG/NBD enters the blend only where its maximum-likelihood fits converged: at the validation
  cutoff (else it is a reference only) and at every cutoff of the blend's cross-fitted
  calibration (else the blend is dropped and LightGBM alone is served with its own cross-fitted
  calibration; one warning line, the model's notes and
  ``calibration_["bgnbd_unconverged_cutoffs"]`` say so). A fit whose ``a`` is on its bound
  (BENCHMARKS.md: on daily Online Retail data maximum likelihood sits on ``a -> 0``) is the
  nested no-dropout model, :data:`~training.btyd.BGNBD_A_LIMIT` (:func:`~training.btyd.fit_bgnbd`:
  ``a`` fixed at its bound, r, alpha, b re-fitted): it converged and is used for the baseline
  and the blend like an interior fit, said in one INFO line, the notes of the models that use it
  and ``calibration_["bgnbd_a_limit_cutoffs"]``. On Online Retail every fit since 2011-02 is that
  limit; CDNOW's are interior;
- training cutoffs lie on month starts, or on the 1st and the 16th for small shops
  (:func:`cutoffs_per_month`: fewer than :data:`MIN_MONTHLY_ROWS` customer-snapshot rows a
  month over ``n_snapshots`` months), which doubles a small shop's training and calibration
  rows; the validation cutoff of an ``as_of`` on a month start stays the same month start;
- if the LightGBM did not beat the best baseline on validation, a warning is logged and the best
  baseline is served instead, through the same
  :class:`~shopml.artifacts.customers.CustomerArtifact` API.

Scale (:mod:`training.snapshots`): the snapshots' features come from a
:class:`~training.snapshots.UserSnapshots` cache, so a cutoff's features are computed once per
training (shared by churn, repurchase and value when the jobs pass one cache) and only the
cutoffs that are used are computed. Above ``max_train_customers`` customers, every training and
validation snapshot uses the same fixed hash sample of customers (features from their orders,
item statistics from all customers; float32); BG/NBD parameters are fitted on that sample too.
Scores at ``as_of`` (:meth:`_CustomerModel.score_table`) always cover every customer. At or below
the cap the models are exactly those of the uncapped computation.

Layout: this module fits the two classifiers (validate, blend, calibrate, choose) and scores
them; its pieces live beside it, one job each: :mod:`training.snapshots` (feature cache, cutoff
grid, feature columns, training population), :mod:`training.calibration` (Platt / isotonic maps,
customer folds, out-of-fold scores), :mod:`training.btyd` (BG/NBD and Gamma-Gamma fits for the
baseline and the blend), :mod:`training.metrics` (AUC, lift, Brier, reliability),
:mod:`training.customer_base` (LightGBM defaults, :class:`DataWindowError`, artifact save/load)
and :mod:`training.customer_value` (:class:`ValueModel`). What serving runs (probabilities, the
blend, reason codes) is :mod:`shopml.artifacts.customers`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.embedding import EMBED_PHRASES
from features.labels import churn_labels, repurchase_labels
from features.momentum import MOMENTUM_PHRASES
from features.purchases import as_timestamp
from features.schema import CUSTOMER_ID, ORDERED_AT
from features.segments import segment_tags
from features.users import RFM_FEATURES
from shopml.artifacts.customers import (
    PHRASES,
    Calibration,
    CustomerArtifact,
    blend_scores,
    blend_stats,
)
from training.base import check_fitted
from training.btyd import BGNBD_A_LIMIT, BtydFit, fit_bgnbd_on
from training.calibration import (
    CV_FOLDS,
    SAMPLED_CV_FOLDS,
    customer_folds,
    fit_calibration,
    out_of_fold_scores,
)
from training.customer_base import DEFAULT_PARAMS, CustomerArtifactIO, DataWindowError
from training.metrics import classification_metrics
from training.snapshots import (
    MAX_TRAIN_CUSTOMERS,
    UserSnapshots,
    as_matrix,
    customer_features,
    customers_before,
    default_features,
    monthly_cutoffs,
    select_rows,
    uses_optional,
)

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "BASELINES",
    "REFERENCE_NAMES",
    "ChurnModel",
    "DataWindowError",
    "RepurchaseModel",
]

log = logging.getLogger(__name__)


def _cutoffs_phrase(dates: list[str]) -> list[str]:
    """``["the calibration cutoff(s) d1, d2"]`` (empty for no dates)."""
    if not dates:
        return []
    return [f"the calibration cutoff{'s' if len(dates) > 1 else ''} {', '.join(dates)}"]


#: weight of the BG/NBD score in the LightGBM + BG/NBD blend (kept only when it ranks better on the
#: validation cutoff). 0.2 was best or next to best on 12 validation cutoffs of Online Retail and
#: CDNOW (+0.0003..+0.0026 AUC over LightGBM alone); 0 turns the blend off.
BLEND_WEIGHT = 0.2
BTYD_INPUTS = ("repeat_days", "span_days", "tenure_days", "recency_days")
#: months of training snapshots (``n_snapshots``)
N_SNAPSHOTS = 6
#: below this many monthly training rows (customers x ``n_snapshots``) the training cutoffs are
#: taken twice a month, on the 1st and the 16th (:func:`cutoffs_per_month`)
MIN_MONTHLY_ROWS = 50_000
SHORT_HORIZON = 30  # days; the short label horizon tried for longer tasks (see _train_horizons)
BASELINES = ("baseline-recency", "baseline-frequency", "baseline-bgnbd", "lightgbm-rfm")
REFERENCE_NAMES = {
    "baseline-recency": "recency",
    "baseline-frequency": "frequency",
    "baseline-bgnbd": "bg/nbd",
    "lightgbm-rfm": "lightgbm-rfm",
    "lightgbm": "lightgbm",
}


def cutoffs_per_month(n_customers: int, n_snapshots: int) -> int:
    """Training cutoffs per month: 2 (the 1st and the 16th) when monthly snapshots of
    ``n_customers`` over ``n_snapshots`` months give fewer than :data:`MIN_MONTHLY_ROWS` rows,
    else 1 (month starts).

    A small shop has few rows per snapshot; mid-month cutoffs double them with windows half a
    month apart. Protocol-C validation replays (labels ending by the test as_of), mean of 3
    seeds, twice-monthly vs monthly: Online Retail (3,300 customers, ~20,000 monthly rows) AUC
    +0.0007 (4 of 6 replays better), Brier -0.00056 (4 of 6; churn90 -0.0003/-0.0012,
    repurchase30 up to -0.0011); CDNOW (23,570 customers, ~141,000 rows; one seed) AUC -0.0002
    (2 of 5), Brier +0.0001 (churn90 +0.0005) at twice the fit time, so large shops stay monthly.
    Any threshold from ~20,100 to ~141,400 rows decides both data sets the same way; 50,000 is
    a round number in that range, not tuned finer.
    """
    return 2 if n_customers * n_snapshots < MIN_MONTHLY_ROWS else 1


class _CustomerModel(CustomerArtifactIO):
    """Shared fit logic of the churn and repurchase classifiers."""

    kind: ClassVar[str] = "customer"
    task: ClassVar[str] = "churn"
    default_horizon: ClassVar[int] = 90

    def __init__(
        self,
        horizon_days: int | None = None,
        *,
        n_snapshots: int = N_SNAPSHOTS,
        cutoffs_per_month: int | None = None,
        min_history_days: int = 30,
        num_boost_round: int = 300,
        params: dict[str, Any] | None = None,
        features: list[str] | None = None,
        calibration: str = "platt",
        refit: bool = True,
        baselines: tuple[str, ...] = BASELINES,
        num_threads: int = 1,
        seed: int = 0,
        train_horizons: tuple[int, ...] | None = None,
        cv_folds: int = CV_FOLDS,
        blend_weight: float = BLEND_WEIGHT,
        max_train_customers: int | None = MAX_TRAIN_CUSTOMERS,
        client: Client | None = None,
    ) -> None:
        if max_train_customers is not None and max_train_customers < 1:
            raise ValueError(f"max_train_customers must be >= 1, got {max_train_customers}")
        self.client = client  # a Dask client: every LightGBM fit runs through lightgbm.dask
        self.max_train_customers = max_train_customers
        if not 0.0 <= blend_weight < 1.0:
            raise ValueError(f"blend_weight must be in [0, 1), got {blend_weight}")
        self.blend_weight = blend_weight
        if cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2, got {cv_folds}")
        self.cv_folds = cv_folds
        self.horizon_days = horizon_days
        self.train_horizons = train_horizons
        if cutoffs_per_month is not None and cutoffs_per_month < 1:
            raise ValueError(f"cutoffs_per_month must be >= 1, got {cutoffs_per_month}")
        for name, count in (("n_snapshots", n_snapshots), ("num_boost_round", num_boost_round)):
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count}")
        self.n_snapshots = n_snapshots
        self.cutoffs_per_month = cutoffs_per_month
        self.min_history_days = min_history_days
        self.num_boost_round = num_boost_round
        self.params = params
        self.features = features
        self.calibration = calibration
        self.refit = refit
        self.baselines = baselines
        self.num_threads = num_threads
        self.seed = seed

    # ---- pieces
    @property
    def _optional(self) -> bool:
        """Whether the requested features include :data:`OPTIONAL_FEATURES` (computed only then)."""
        return uses_optional(self.features or ())

    @property
    def _horizon(self) -> int:
        return int(self.horizon_days or self.default_horizon)

    @property
    def _train_horizons(self) -> tuple[int, ...]:
        """Label horizons the LightGBM may be trained on (the one scoring best on validation is
        kept). By default the task's horizon and, when longer, also 30 days: a short-window label
        reaches cutoffs closer to ``as_of`` and can rank long-window outcomes as well or better."""
        if self.train_horizons:
            return tuple(int(h) for h in self.train_horizons)
        H = self._horizon
        return (H, SHORT_HORIZON) if H > SHORT_HORIZON else (H,)

    def _labels(
        self, orders: pd.DataFrame, cutoff: pd.Timestamp, pop: pd.Index, horizon: int | None = None
    ) -> np.ndarray:
        h = int(horizon or self._horizon)
        if self.task == "churn":
            return churn_labels(orders, cutoff, pop, h).to_numpy()
        return repurchase_labels(orders, cutoff, pop, h).to_numpy()

    def _lgb_params(self) -> dict[str, Any]:
        p = {**DEFAULT_PARAMS, **(self.params or {})}
        p.update(
            objective="binary",
            num_threads=self.num_threads,
            seed=self.seed,
            deterministic=True,
            force_row_wise=True,
        )
        return p

    def _train(
        self,
        X: pd.DataFrame | np.ndarray,
        y: np.ndarray,
        rounds: int,
        names: list[str] | None = None,
    ) -> lgb.Booster:
        if self.client is not None:
            from training.dask_models import train_binary

            frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=names)
            return train_binary(self.client, frame, y, self._lgb_params(), rounds)
        if isinstance(X, pd.DataFrame):
            names, X = list(X.columns), as_matrix(X)
        data = lgb.Dataset(X, label=y, feature_name=names or "auto", free_raw_data=True)
        return lgb.train(self._lgb_params(), data, num_boost_round=rounds)

    def _crossfit(
        self,
        feats_at: dict[pd.Timestamp, pd.DataFrame],
        labels: dict[tuple[pd.Timestamp, int], np.ndarray],
        cuts: list[pd.Timestamp],
        label_h: int,
        names: list[str],
        as_of: pd.Timestamp,
        bg_logit: dict[pd.Timestamp, np.ndarray] | None = None,
        folds: int | None = None,
        blend: dict[str, float] | None = None,
    ) -> tuple[lgb.Booster, Calibration, dict[str, Any]] | None:
        """The served booster (trained on all ``cuts``) and its cross-fitted calibration.

        Customers are split into ``folds`` (default ``cv_folds``) folds (a hash of the id, so a
        customer's snapshots stay together); a booster trained without a fold scores it. The calibration is fitted on
        these out-of-fold scores against the task's label (``horizon_days``) on the cutoffs whose
        label window ends by ``as_of``; with ``bg_logit`` (BG/NBD log-odds per calibration cutoff)
        and ``blend`` (the blend's fixed standardisation, see :meth:`fit`) the out-of-fold scores
        are first blended with them exactly as the served score is at ``as_of``. None when no
        cutoff in ``cuts`` has that label.
        """
        H = self._horizon
        has_label = [c + pd.Timedelta(days=H) <= as_of for c in cuts]
        if not any(has_label):
            return None
        X_df, y = self._stack_h(feats_at, labels, cuts, label_h)
        X = as_matrix(X_df[names])
        del X_df
        ids = np.concatenate([feats_at[c].index.astype(str).to_numpy() for c in cuts])
        folds = folds or self.cv_folds
        fold = customer_folds(ids, folds)
        cal_rows = np.concatenate(
            [np.full(len(feats_at[c]), ok) for c, ok in zip(cuts, has_label, strict=True)]
        )
        y_cal = np.concatenate(
            [labels[(c, H)] for c, ok in zip(cuts, has_label, strict=True) if ok]
        )
        oof = out_of_fold_scores(
            X,
            y,
            fold,
            cal_rows,
            folds,
            lambda Xk, yk: self._train(Xk, yk, self.num_boost_round, names),
        )
        scores = oof[cal_rows]
        if bg_logit is not None:
            assert blend is not None
            start = 0
            for c in (c for c, o in zip(cuts, has_label, strict=True) if o):
                part = slice(start, start + len(feats_at[c]))
                scores[part] = blend_scores(scores[part], bg_logit[c], blend)
                start = part.stop
        ok = ~np.isnan(scores)
        calibration = fit_calibration(scores[ok], y_cal[ok], self.calibration)
        info = {
            "method": calibration.method,
            "cross_fitted_folds": folds,
            "cutoffs": [str(c.date()) for c, o in zip(cuts, has_label, strict=True) if o],
            "label_horizon_days": H,
            "rows": int(ok.sum()),
            "blended_with_bgnbd": bg_logit is not None,
        }
        return self._train(X, y, self.num_boost_round, names), calibration, info

    @staticmethod
    def _stack_h(
        feats_at: dict[pd.Timestamp, pd.DataFrame],
        labels: dict[tuple[pd.Timestamp, int], np.ndarray],
        cutoffs: list[pd.Timestamp],
        horizon: int,
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Features of ``cutoffs`` stacked, with their labels over ``horizon`` days."""
        X = pd.concat([feats_at[c] for c in cutoffs], ignore_index=True)
        return X, np.concatenate([labels[(c, horizon)] for c in cutoffs])

    # ---- fit
    def fit(
        self,
        orders: pd.DataFrame,
        as_of: object,
        items: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
        *,
        snapshots: UserSnapshots | None = None,
        score: bool = True,
    ) -> Self:
        """Train on snapshots whose label window ends by ``as_of``; validate, calibrate, choose.

        ``snapshots``: a shared feature cache built on ``orders`` or on any table whose lines
        before ``as_of`` are those of ``orders`` (e.g. the whole table of a backtest's prefix);
        by default a private one. Labels read only windows that end by ``as_of``. ``score``:
        precompute the served score table (every customer's probability, segment and reasons);
        a backtest that only evaluates the model skips it.
        """
        t0 = time.perf_counter()
        as_of = as_timestamp(as_of)
        H = self._horizon
        if len(orders) == 0:
            raise DataWindowError("no orders: cannot fit a customer model on an empty table")
        first = orders[ORDERED_AT].min()
        if not (orders[ORDERED_AT] < as_of).any():
            raise DataWindowError(
                f"as_of {as_of.date()} is before all data (first order {first}); "
                "no history to learn from"
            )
        hist = orders  # labels read windows ending by as_of; features only lines before cutoffs
        cache = (
            snapshots
            if snapshots is not None and (snapshots.optional or not self._optional)
            else UserSnapshots(orders, items=items, customers=customers, optional=self._optional)
        )
        features_s, computed_before = cache.seconds, len(cache.computed)
        pop = cache.population(as_of, self.max_train_customers)
        feats_at: dict[pd.Timestamp, pd.DataFrame] = {}
        labels: dict[tuple[pd.Timestamp, int], np.ndarray] = {}

        def feats(c: pd.Timestamp) -> pd.DataFrame:
            if c not in feats_at:
                feats_at[c] = cache.features(c, pop)
            return feats_at[c]

        def label(c: pd.Timestamp, h: int) -> np.ndarray:
            if (c, h) not in labels:
                labels[(c, h)] = self._labels(hist, c, feats(c).index, h)
            return labels[(c, h)]

        # None: by the training population's size (:func:`cutoffs_per_month`)
        n_customers = len(pop) if pop is not None else len(customers_before(orders, as_of))
        step = self.cutoffs_per_month or cutoffs_per_month(n_customers, self.n_snapshots)
        self.cutoffs_per_month_ = step
        n_cuts = self.n_snapshots * step  # training snapshots: n_snapshots months' worth
        cutoffs = monthly_cutoffs(
            first, as_of, H, self.min_history_days, n_cuts + step * (H // 28 + 2), step
        )
        if len(cutoffs) < 2:
            raise DataWindowError(
                f"need >= 2 monthly cutoffs with {self.min_history_days} days of history and a "
                f"complete {H}-day label window before {as_of.date()}; found {len(cutoffs)}"
            )
        val_cut = cutoffs[0]
        # cutoffs with a complete H-day label before the validation cutoff (the lightgbm-rfm
        # reference's); the LightGBM itself may train on a shorter label horizon only
        train_cuts = [c for c in cutoffs[1:] if c + pd.Timedelta(days=H) <= val_cut]
        train_cuts = train_cuts[:n_cuts]
        X_val, y_val = feats(val_cut), label(val_cut, H)
        if len(np.unique(y_val)) < 2:
            raise DataWindowError(
                f"validation labels at {val_cut.date()} have a single class; cannot validate"
            )
        names = self.features or default_features(X_val.columns)
        missing = [n for n in names if n not in X_val.columns]
        if missing:
            raise ValueError(f"unknown feature(s) {missing}; available: {list(X_val.columns)}")
        # the LightGBM, trained on each label horizon, scored on the validation cutoff (label H)
        horizon_cuts: dict[int, tuple[list[pd.Timestamp], list[pd.Timestamp]]] = {}
        for h in self._train_horizons:
            cuts_h = monthly_cutoffs(
                first,
                as_of,
                h,
                self.min_history_days,
                n_cuts + step * ((H + h) // 28 + 3),
                step,
            )
            val_tr = [c for c in cuts_h if c + pd.Timedelta(days=h) <= val_cut][:n_cuts]
            if val_tr:
                horizon_cuts[h] = (val_tr, cuts_h[:n_cuts])
        if not horizon_cuts:
            raise DataWindowError(
                f"no training cutoff before the validation cutoff {val_cut.date()} with a "
                f"complete label window of {' or '.join(map(str, self._train_horizons))} days; "
                "need a longer history"
            )
        for h, (val_tr, all_h) in horizon_cuts.items():
            for c in sorted({*val_tr, *all_h}, reverse=True):
                label(c, h)
        self.validation_: dict[str, dict[str, Any]] = {}
        boosters: dict[int, lgb.Booster] = {}
        for h, (val_tr, _) in horizon_cuts.items():
            X_tr, y_tr = self._stack_h(feats_at, labels, val_tr, h)
            boosters[h] = self._train(X_tr[names], y_tr, self.num_boost_round)
            raw = np.asarray(boosters[h].predict(X_val[names].to_numpy(np.float64), raw_score=True))
            cal = fit_calibration(raw, y_val, self.calibration)
            self.validation_[f"lightgbm@{h}d"] = classification_metrics(y_val, cal(raw))
        label_h = max(boosters, key=lambda h: self.validation_[f"lightgbm@{h}d"]["roc_auc"])

        # candidates scored on the validation cutoff
        cands: dict[str, CustomerArtifact] = {}
        val_raw: dict[str, np.ndarray] = {}
        cands["lightgbm"] = self._artifact("lightgbm", names, boosters[label_h], as_of)
        if "lightgbm-rfm" in self.baselines and not train_cuts:
            log.info(
                "%s: no cutoff before %s has a %d-day label; no lightgbm-rfm reference",
                self.task,
                val_cut.date(),
                H,
            )
        if "lightgbm-rfm" in self.baselines and train_cuts:
            rfm_cut = train_cuts[0]
            rfm_b = self._train(feats(rfm_cut)[RFM_FEATURES], label(rfm_cut, H), 200)
            cands["lightgbm-rfm"] = self._artifact("lightgbm-rfm", RFM_FEATURES, rfm_b, as_of)
        for kind in ("baseline-recency", "baseline-frequency"):
            if kind in self.baselines:
                cands[kind] = self._artifact(kind, list(X_val.columns), None, as_of)
        bg_val = None
        if "baseline-bgnbd" in self.baselines:
            bg_val = fit_bgnbd_on(X_val)
            cands["baseline-bgnbd"] = self._artifact(
                "baseline-bgnbd", list(X_val.columns), None, as_of, btyd=bg_val.params
            )
        for name, art in cands.items():
            raw = art.raw_score(X_val[art.feature_names].to_numpy(np.float64))
            val_raw[name] = raw
            art.calibration = fit_calibration(
                raw, y_val, self.calibration if name == "lightgbm" else "platt"
            )
            self.validation_[name] = classification_metrics(y_val, art.calibration(raw))
        if bg_val is not None:
            self.validation_["baseline-bgnbd"]["converged"] = bg_val.converged
            if bg_val.limit:
                self.validation_["baseline-bgnbd"]["limit"] = bg_val.limit

        # LightGBM + BG/NBD blend, kept when it ranks better on the validation cutoff. Both
        # scores are standardised with their mean and std on the validation cutoff, and that one
        # affine map serves everywhere (cross-fitted calibration cutoffs, as_of): re-standardising
        # on each population would re-centre the score there and so pin the mean probability to
        # the calibration cutoffs' churn rate whatever the features say; on 7 validation replays
        # where the blend was kept that raised the Brier score in 6 (Online Retail, CDNOW)
        blend = False
        bg_fit = bg_val
        if self.blend_weight > 0 and set(BTYD_INPUTS) <= set(names):
            bg_fit = bg_val or fit_bgnbd_on(X_val)
            if bg_fit.converged:
                bg_raw = self._bgnbd_logit(X_val, bg_fit.params, as_of)
                stats = blend_stats(val_raw["lightgbm"], bg_raw, self.blend_weight)
                z = blend_scores(val_raw["lightgbm"], bg_raw, stats)
                cal = fit_calibration(z, y_val, self.calibration)
                self.validation_["lightgbm+bgnbd"] = classification_metrics(y_val, cal(z))
                blend = (
                    self.validation_["lightgbm+bgnbd"]["roc_auc"]
                    > self.validation_["lightgbm"]["roc_auc"]
                )
                if blend:
                    self.validation_["lightgbm-alone"] = self.validation_["lightgbm"]
                    self.validation_["lightgbm"] = self.validation_["lightgbm+bgnbd"]
                    art = cands["lightgbm"]
                    art.blend, art.btyd, art.calibration = stats, dict(bg_fit.params), cal

        # BG/NBD at each cutoff of the served blend's cross-fitted calibration (the blended
        # out-of-fold scores use them, as the served score uses the fit at as_of). A fit there
        # that does not converge is not used: the blend is dropped and LightGBM alone is served
        # with its own cross-fitted calibration (BENCHMARKS.md: never used silently)
        all_cuts = horizon_cuts[label_h][1]
        cal_cuts = [c for c in all_cuts if c + pd.Timedelta(days=H) <= as_of]
        bg_cal: dict[pd.Timestamp, BtydFit] = {}
        self.bgnbd_unconverged_: dict[str, str] = {}  # calibration cutoff -> the fit's message
        if blend and self.refit:
            bg_cal = {c: fit_bgnbd_on(feats_at[c]) for c in cal_cuts}
            self.bgnbd_unconverged_ = {
                str(c.date()): fit.message for c, fit in bg_cal.items() if not fit.converged
            }
            if self.bgnbd_unconverged_:
                blend, bg_cal = False, {}
                self.validation_["lightgbm"] = self.validation_.pop("lightgbm-alone")
                art = cands["lightgbm"]
                art.blend, art.btyd = {}, {}
                art.calibration = fit_calibration(val_raw["lightgbm"], y_val, self.calibration)
                art.notes.append(
                    "LightGBM + BG/NBD blend dropped: BG/NBD did not converge at the calibration "
                    "cutoff(s) "
                    + ", ".join(f"{d} ({m})" for d, m in self.bgnbd_unconverged_.items())
                )
        self.blend_ = blend

        # where BG/NBD is used at its a -> 0 limit (the no-dropout NBD model): reported, not silent
        val_limit = [f"the validation cutoff {val_cut.date()}"] if bg_fit and bg_fit.limit else []
        cal_limit = [str(c.date()) for c, fit in bg_cal.items() if fit.limit]

        # BG/NBD at as_of (the baseline's and the blend's parameters)
        self.bgnbd_fit_ = None
        all_now = cache.features(as_of)  # every customer: scored below
        feats_now = select_rows(all_now, pop)  # the training population
        if "baseline-bgnbd" in cands or blend:
            self.bgnbd_fit_ = fit_bgnbd_on(feats_now)
            for name in ("baseline-bgnbd", "lightgbm"):
                if name in cands and (name != "lightgbm" or blend):
                    cands[name].btyd = dict(self.bgnbd_fit_.params)
                    if not self.bgnbd_fit_.converged:
                        cands[name].notes.append(
                            f"BG/NBD did not converge: {self.bgnbd_fit_.message}"
                        )
        now_limit = [f"as_of {as_of.date()}"] if self.bgnbd_fit_ and self.bgnbd_fit_.limit else []
        base_at = [*val_limit, *now_limit] if "baseline-bgnbd" in cands else []
        blend_at = [*val_limit, *_cutoffs_phrase(cal_limit), *now_limit] if blend else []
        self.bgnbd_limits_ = blend_at or base_at  # where the baseline / blend use that limit
        for name, at in (("baseline-bgnbd", base_at), ("lightgbm", blend_at)):
            if at:
                cands[name].notes.append(
                    f"{BGNBD_A_LIMIT} at {'; '.join(at)} (maximum likelihood has a on its bound; "
                    "r, alpha, b re-fitted with a there)"
                )

        # refit on all usable cutoffs at as_of, with a cross-fitted calibration (otherwise the
        # validation booster is served with the calibration fitted on it); the lightgbm-rfm
        # reference stays the booster of one earlier cutoff, calibrated on validation
        calibration_info: dict[str, Any] = {
            "method": cands["lightgbm"].calibration.method,
            "cutoffs": [str(val_cut.date())],
            "label_horizon_days": H,
            "cross_fitted_folds": 0,
        }
        if self.refit:
            for c in all_cuts:
                if c + pd.Timedelta(days=H) <= as_of:
                    label(c, H)
            bg_logit = None
            if blend:  # BG/NBD fitted at each calibration cutoff (all converged), as at as_of
                bg_logit = {
                    c: self._bgnbd_logit(feats_at[c], fit.params, as_of)
                    for c, fit in bg_cal.items()
                }
            # above the cap (a sampled population) fewer folds: each fold booster costs as much
            # as the served one, and ~100,000 customers leave plenty of out-of-fold rows
            folds = self.cv_folds if pop is None else min(self.cv_folds, SAMPLED_CV_FOLDS)
            refit = self._crossfit(
                feats_at,
                labels,
                all_cuts,
                label_h,
                names,
                as_of,
                bg_logit,
                folds,
                cands["lightgbm"].blend if blend else None,
            )
            if refit is None:
                log.info(
                    "%s: no training cutoff has a %d-day label; serving the validation booster",
                    self.task,
                    H,
                )
                all_cuts = horizon_cuts[label_h][0]
            else:
                art = cands["lightgbm"]
                art.booster, art.calibration, calibration_info = refit
        else:
            all_cuts = horizon_cuts[label_h][0]
        if self.bgnbd_unconverged_:
            calibration_info["bgnbd_unconverged_cutoffs"] = dict(self.bgnbd_unconverged_)
        if blend and cal_limit:
            calibration_info["bgnbd_a_limit_cutoffs"] = cal_limit
        self.calibration_ = calibration_info

        # choose
        model_auc = self.validation_["lightgbm"]["roc_auc"]
        eligible = {
            k: v["roc_auc"]
            for k, v in self.validation_.items()
            if not k.startswith("lightgbm") or k == "lightgbm-rfm"
            if v.get("converged", True)
        }
        best_base = max(eligible, key=lambda k: eligible[k]) if eligible else None
        chosen = "lightgbm"
        if best_base is not None and not model_auc > eligible[best_base]:
            log.warning(
                "%s model did NOT beat its best baseline on validation (%s AUC %.4f vs "
                "LightGBM %.4f at %s): serving the baseline %s instead",
                self.task,
                best_base,
                eligible[best_base],
                model_auc,
                val_cut.date(),
                best_base,
            )
            chosen = best_base
        self._report_bgnbd(
            bg_val, val_cut, as_of, chosen, blend, calibration=self.bgnbd_unconverged_
        )
        if self.bgnbd_limits_:
            users = [
                *(["the bg/nbd baseline"] if "baseline-bgnbd" in cands else []),
                *(["the LightGBM + BG/NBD blend"] if blend else []),
            ]
            log.info(
                "%s: %s at %s (maximum likelihood has a on its bound; r, alpha, b re-fitted with "
                "a there): used for %s, noted in the model's notes (serving %s)",
                self.task,
                BGNBD_A_LIMIT,
                "; ".join(self.bgnbd_limits_),
                " and ".join(users),
                chosen,
            )
        for name, art in cands.items():
            art.metrics = {
                "validation": self.validation_[name],
                "validation_cutoff": str(val_cut.date()),
                "training_cutoffs": [str(c.date()) for c in all_cuts],
                "label_horizon_days": label_h if name == "lightgbm" else H,
            }
            if name == "lightgbm":
                art.metrics["calibration"] = calibration_info
        self.candidates_ = cands
        self.chosen_ = chosen
        self.artifact_: CustomerArtifact | None = cands[chosen]
        self.artifact_.notes.append(f"chosen on validation at {val_cut.date()}: {chosen}")
        self.cutoffs_ = cutoffs
        self.training_cutoffs_ = all_cuts
        self.label_horizon_ = label_h
        self.validation_cutoff_ = val_cut
        self.feature_names_ = names
        self.as_of_ = as_of
        self.fit_s_ = time.perf_counter() - t0
        self.training_customers_ = None if pop is None else len(pop)
        if score:
            self.artifact_.scores = self.score_table(hist, as_of, features=all_now)
        # one line per fit; each snapshot's own line is DEBUG (`shopml -v`)
        n_snapshots = len(set(feats_at) | {as_of})
        n_computed = min(len(cache.computed) - computed_before, n_snapshots)
        log.info(
            "%s fit as of %s: %d snapshots (%d computed, %d cached), %s customers%s, %.1f s "
            "(features %.1f s)",
            self.task,
            as_of.date(),
            n_snapshots,
            n_computed,
            n_snapshots - n_computed,
            f"{len(all_now):,}",
            "" if pop is None else f", trained on a sample of {len(pop):,}",
            time.perf_counter() - t0,
            cache.seconds - features_s,
        )
        return self

    def _report_bgnbd(
        self,
        bg_val: BtydFit | None,
        val_cut: pd.Timestamp,
        as_of: pd.Timestamp,
        chosen: str,
        blend: bool,
        *,
        calibration: dict[str, str] | None = None,
    ) -> None:
        """One warning line per fit when BG/NBD did not converge, saying what shopml does about
        it (BENCHMARKS.md: a fit that does not converge is reported, never used silently).
        ``calibration``: the blend's calibration cutoffs whose fit did not converge (date ->
        the fit's message); the blend was dropped for them."""
        calibration = calibration or {}
        failed = [
            (when, fit.message)
            for when, fit in (
                (f"the validation cutoff {val_cut.date()}", bg_val),
                (str(as_of.date()), self.bgnbd_fit_),
            )
            if fit is not None and not fit.converged
        ]
        if calibration:
            dates = ", ".join(calibration)
            plural = "s" if len(calibration) > 1 else ""
            first = next(iter(calibration.values()))
            failed.insert(0, (f"the calibration cutoff{plural} {dates}", first))
        if not failed:
            return
        now_failed = self.bgnbd_fit_ is not None and not self.bgnbd_fit_.converged
        at_val = bg_val is not None and not bg_val.converged
        if at_val:
            action = (
                "it is not eligible to be served nor blended with LightGBM; its backtest score "
                f"is a reference only (serving {chosen})"
            )
        elif calibration:
            served = (
                f"{chosen} with the parameters at {as_of.date()}, noted in the model's notes"
                if chosen == "baseline-bgnbd" and now_failed
                else chosen
            )
            action = (
                "those fits are not used: the LightGBM + BG/NBD blend is dropped, noted in the "
                f"model's notes (serving {served})"
            )
        elif chosen == "baseline-bgnbd" or (chosen == "lightgbm" and blend):
            action = f"{chosen} is served with these parameters, noted in the model's notes"
        else:
            action = f"not used (serving {chosen})"
        log.warning(
            "%s: BG/NBD did not converge at %s (%s): %s",
            self.task,
            " and ".join(when for when, _ in failed),
            failed[0][1],
            action,
        )

    def _bgnbd_logit(
        self, feats: pd.DataFrame, params: dict[str, float], as_of: pd.Timestamp
    ) -> np.ndarray:
        """BG/NBD log-odds of the task's event for each row of ``feats``."""
        art = self._artifact("baseline-bgnbd", list(feats.columns), None, as_of, btyd=params)
        return art.raw_score(feats.to_numpy(np.float64))

    def _artifact(
        self,
        kind: str,
        names: list[str],
        booster: lgb.Booster | None,
        as_of: pd.Timestamp,
        btyd: dict[str, float] | None = None,
    ) -> CustomerArtifact:
        return CustomerArtifact(
            task=self.task,
            kind=kind,
            feature_names=list(names),
            horizon_days=self._horizon,
            as_of=str(as_of.date()),
            booster=booster,
            btyd=dict(btyd or {}),
            phrases={**PHRASES, **MOMENTUM_PHRASES, **EMBED_PHRASES},
        )

    # ---- predict
    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability for each row of a :func:`user_features` frame."""
        check_fitted(self, "artifact_")
        assert self.artifact_ is not None
        return self.artifact_.predict_proba(
            features[self.artifact_.feature_names].to_numpy(np.float64)
        )

    def score_table(
        self,
        orders: pd.DataFrame,
        as_of: object,
        *,
        items: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
        top_k: int = 3,
        features: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """customer_id, probability, segment and reason phrases for every customer at ``as_of``
        (``features``: their :func:`~training.snapshots.customer_features` at ``as_of`` when
        already computed)."""
        check_fitted(self, "artifact_")
        assert self.artifact_ is not None
        optional = uses_optional(self.artifact_.feature_names)
        feats = (
            features
            if features is not None
            else customer_features(
                orders, as_of, items=items, customers=customers, optional=optional
            )
        )
        if feats.empty:
            raise DataWindowError(f"no customer has a purchase before {pd.Timestamp(as_of).date()}")  # type: ignore[arg-type]
        X = feats[self.artifact_.feature_names].to_numpy(np.float64)
        if self.client is not None:  # every customer scored on the cluster
            from training.dask_models import score_customers

            proba, reasons = score_customers(self.client, self.artifact_, X, top_k=top_k)
        else:
            proba = self.artifact_.predict_proba(X)
            reasons = self.artifact_.reason_text(X, top_k=top_k, sep="; ")
        return pd.DataFrame(
            {
                CUSTOMER_ID: feats.index.astype(str),
                f"{self.task}_proba": proba,
                "segment": segment_tags(feats).to_numpy(),
                "reasons": reasons,
                "as_of": str(pd.Timestamp(as_of).date()),  # type: ignore[arg-type]
            }
        )

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """A fitted model from a saved artifact (prediction only)."""
        model = super().load(folder)
        assert model.artifact_ is not None
        model.feature_names_ = model.artifact_.feature_names
        return model


class ChurnModel(_CustomerModel):
    """P(no purchase in the next ``horizon_days`` (90) days)."""

    kind = "churn"
    task = "churn"
    default_horizon = 90


class RepurchaseModel(_CustomerModel):
    """P(>= 1 purchase in the next ``horizon_days`` (30) days)."""

    kind = "repurchase"
    task = "repurchase"
    default_horizon = 30
