"""Churn / repurchase / value models: shapes, round trip, determinism, calibration, reasons,
baseline fallback, BG/NBD on the published CDNOW summary, bad inputs, real population counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.rebuy import REBUY_COLUMNS
from features.schema import purchases
from features.users import user_features
from shopml.artifacts.customers import (
    CustomerArtifact,
    UnknownCustomerError,
    blend_scores,
    blend_stats,
    fact_of,
)
from training.btyd import btyd_sample, fit_bgnbd, fit_bgnbd_on, hist_btyd
from training.calibration import SAMPLED_CV_FOLDS, customer_folds, fit_calibration
from training.customer_value import ValueModel
from training.customers import (
    MIN_MONTHLY_ROWS,
    ChurnModel,
    DataWindowError,
    RepurchaseModel,
    cutoffs_per_month,
)
from training.snapshots import (
    UserSnapshots,
    customer_features,
    id_hash,
    monthly_cutoffs,
    sample_ids,
)

AS_OF = pd.Timestamp("2023-10-01")
FAST: dict[str, Any] = {"n_snapshots": 3, "num_boost_round": 30, "num_threads": 1, "seed": 7}


def shop(n_customers: int = 400, seed: int = 0) -> pd.DataFrame:
    """A small BG/NBD-like shop: gamma purchase rates, geometric dropout, 2022-01 .. 2024-01."""
    rng = np.random.default_rng(seed)
    start, days = pd.Timestamp("2022-01-01"), 730
    rows = []
    for c in range(n_customers):
        rate = rng.gamma(0.8, 1 / 25)  # purchases per day
        p_drop = rng.beta(1, 6)
        t = rng.uniform(0, 400)
        k = 0
        while t < days:
            n_lines = 1 + rng.poisson(1.5)
            for _ in range(n_lines):
                item = f"i{min(int(rng.zipf(1.6)), 60)}"
                rows.append(
                    (
                        f"c{c}",
                        f"o{c}-{k}",
                        item,
                        start + pd.Timedelta(days=t),
                        float(1 + rng.poisson(1)),
                        float(rng.choice([2.5, 5.0, 12.0])),
                    )
                )
            k += 1
            if rng.random() < p_drop:
                break
            t += rng.exponential(1 / max(rate, 1e-3))
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "item_id", "ordered_at", "quantity", "unit_price"]
    )
    df["is_return"] = False
    for col in ("customer_id", "order_id", "item_id"):
        df[col] = df[col].astype("category")
    df["ordered_at"] = df["ordered_at"].astype("datetime64[us]")
    return df


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return shop()


@pytest.fixture(scope="module")
def churn(orders: pd.DataFrame) -> ChurnModel:
    return ChurnModel(**FAST).fit(orders, AS_OF)


def features_at(orders: pd.DataFrame, names: list[str]) -> np.ndarray:
    return customer_features(orders, AS_OF)[names].to_numpy(np.float64, copy=True)


def test_fit_predict_shapes(orders: pd.DataFrame, churn: ChurnModel) -> None:
    feats = customer_features(orders, AS_OF)
    p = churn.predict_proba(feats)
    assert p.shape == (len(feats),)
    assert np.all((p >= 0) & (p <= 1))
    table = churn.artifact_.scores  # type: ignore[union-attr]
    assert table is not None and len(table) == len(feats)
    assert {"customer_id", "churn_proba", "segment", "reasons"} <= set(table.columns)
    assert set(churn.validation_) >= {"lightgbm", "baseline-recency", "baseline-bgnbd"}


def test_label_horizon_chosen_on_validation(orders: pd.DataFrame, churn: ChurnModel) -> None:
    # churn90 tries LightGBMs trained on 90- and 30-day labels and keeps the better on validation
    assert {"lightgbm@90d", "lightgbm@30d"} <= set(churn.validation_)
    best = max((90, 30), key=lambda h: churn.validation_[f"lightgbm@{h}d"]["roc_auc"])
    assert churn.label_horizon_ == best
    # no training label window reaches past as_of (validation windows end by the validation cutoff)
    for c in churn.training_cutoffs_:
        assert c + pd.Timedelta(days=churn.label_horizon_) <= AS_OF
    only = ChurnModel(**FAST, train_horizons=(90,), baselines=()).fit(orders, AS_OF)
    assert only.label_horizon_ == 90 and "lightgbm@30d" not in only.validation_
    meta = churn.artifact_.metrics  # type: ignore[union-attr]
    if churn.chosen_ == "lightgbm":
        assert meta["label_horizon_days"] == churn.label_horizon_


def test_calibration_cross_fitted_for_the_served_booster(churn: ChurnModel) -> None:
    # the served booster is refitted on all cutoffs; its calibration comes from out-of-fold scores
    # of boosters trained the same way, against 90-day labels that end by as_of
    info = churn.calibration_
    assert info["cross_fitted_folds"] == FAST.get("cv_folds", 5)
    assert info["label_horizon_days"] == 90 and info["cutoffs"]
    for c in info["cutoffs"]:
        assert pd.Timestamp(c) + pd.Timedelta(days=90) <= AS_OF
        assert pd.Timestamp(c) in churn.training_cutoffs_
    if churn.chosen_ == "lightgbm":
        assert churn.artifact_.metrics["calibration"] == info  # type: ignore[union-attr]


def test_no_refit_serves_the_validation_booster(orders: pd.DataFrame) -> None:
    m = RepurchaseModel(**FAST, refit=False, baselines=()).fit(orders, AS_OF)
    assert m.calibration_["cross_fitted_folds"] == 0
    assert m.calibration_["cutoffs"] == [str(m.validation_cutoff_.date())]
    for c in m.training_cutoffs_:  # trained only on labels that end by the validation cutoff
        assert c + pd.Timedelta(days=30) <= m.validation_cutoff_
    with pytest.raises(ValueError, match="cv_folds"):
        RepurchaseModel(cv_folds=1)


def test_blend_known_answer() -> None:
    stats = blend_stats(np.array([0.0, 2.0]), np.array([1.0, 3.0]), 0.25)
    assert stats == {"weight": 0.25, "lgb_mean": 1.0, "lgb_std": 1.0, "bg_mean": 2.0, "bg_std": 1.0}
    np.testing.assert_allclose(
        blend_scores(np.array([0.0, 2.0, 4.0]), np.array([3.0, 1.0, 2.0]), stats),
        [0.75 * -1 + 0.25 * 1, 0.75 * 1 + 0.25 * -1, 0.75 * 3 + 0.0],
    )
    flat = blend_stats(np.ones(3), np.ones(3), 0.5)  # constant scores: std 1, no division by 0
    assert flat["lgb_std"] == 1.0 and flat["bg_std"] == 1.0


def test_bgnbd_blend_chosen_on_validation(orders: pd.DataFrame, tmp_path: Path) -> None:
    m = RepurchaseModel(**FAST, baselines=("baseline-bgnbd",)).fit(orders, AS_OF)
    art = m.artifact_
    assert art is not None and "lightgbm+bgnbd" in m.validation_
    kept = (
        m.validation_["lightgbm+bgnbd"]["roc_auc"] > m.validation_["lightgbm-alone"]["roc_auc"]
        if m.blend_
        else True
    )
    assert kept
    if m.blend_:
        assert m.validation_["lightgbm"] == m.validation_["lightgbm+bgnbd"]
        assert m.calibration_["blended_with_bgnbd"]
    lgb_art = m.candidates_["lightgbm"]
    assert (lgb_art.blend.get("weight") == 0.2) == m.blend_
    assert set(lgb_art.btyd) == ({"r", "alpha", "a", "b"} if m.blend_ else set())
    off = RepurchaseModel(**FAST, blend_weight=0.0, baselines=()).fit(orders, AS_OF)
    assert "lightgbm+bgnbd" not in off.validation_ and not off.blend_
    assert off.artifact_ is not None and off.artifact_.blend == {}
    with pytest.raises(ValueError, match="blend_weight"):
        RepurchaseModel(blend_weight=1.0)


def test_blend_standardised_once_on_validation(
    orders: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the blend's standardisation is measured on the validation cutoff and reused unchanged for
    # the cross-fitted calibration cutoffs and at as_of: re-measuring it on the population at
    # as_of would re-centre the score there and override the level the features give
    import training.customers as tc

    calls: list[dict[str, float]] = []

    def counted(lgb_raw: np.ndarray, bg_raw: np.ndarray, weight: float) -> dict[str, float]:
        calls.append(blend_stats(lgb_raw, bg_raw, weight))
        return calls[-1]

    monkeypatch.setattr(tc, "blend_stats", counted)
    m = RepurchaseModel(**FAST, baselines=("baseline-bgnbd",)).fit(orders, AS_OF)
    assert m.blend_ and m.calibration_["blended_with_bgnbd"]  # the blend wins on this shop
    assert len(calls) == 1
    art = m.candidates_["lightgbm"]
    assert art.blend == calls[0]
    feats = customer_features(orders, AS_OF)
    raw = art.raw_score(feats[art.feature_names].to_numpy(np.float64))
    assert abs(raw.mean()) > 1e-3  # not re-centred on the population at as_of


def no_dropout_bgnbd() -> Any:
    """A real BG/NBD fit on its a -> 0 bound: customers who never drop out (Poisson buying on
    [0, T], rates ~ Gamma(r = 0.8, alpha = 25)) put maximum likelihood on the bound a -> 0, as
    daily Online Retail data does."""
    rng = np.random.default_rng(0)
    T = rng.uniform(100, 400, 2000)
    x = rng.poisson(rng.gamma(0.8, 1 / 25, 2000) * T)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), 1), 0.0)
    return fit_bgnbd(x, t_x, T)


def test_bgnbd_with_a_on_its_bound_is_the_no_dropout_limit() -> None:
    from training.btyd import BGNBD_A_LIMIT, LOG_BOUND

    # maximum likelihood on a -> 0 is the nested NBD model: a fixed at its bound, r and alpha
    # re-fitted recover the Poisson-Gamma buyers' r = 0.8, alpha = 25; converged, and said
    fit = no_dropout_bgnbd()
    # (b may reach its upper bound too: with a -> 0 that is the same limit; the optimizer does
    # on some machines' floating point)
    assert fit.converged and fit.limit == BGNBD_A_LIMIT and fit.at_bound in (["a"], ["a", "b"])
    assert fit.params["a"] == np.exp(-LOG_BOUND)
    assert fit.message.startswith(BGNBD_A_LIMIT + ": maximum likelihood has a on its bound")
    assert abs(fit.params["r"] - 0.8) < 0.05 and abs(fit.params["alpha"] - 25) < 2.5


def test_only_a_on_its_lower_bound_is_a_model() -> None:
    from training.btyd import BGNBD_A_LIMIT, _fit

    # log-likelihoods over (r, alpha, a, b) with the optimum at log r = 0, log alpha = 3,
    # log b = 5 and a's (or another parameter's) optimum beyond a bound
    def quad(**opt: float):  # type: ignore[no-untyped-def]
        at = {"r": 0.0, "alpha": 3.0, "a": -1.0, "b": 5.0, **opt}
        c = np.array([at[n] for n in ("r", "alpha", "a", "b")])
        return lambda t: float(np.sum((t - c) ** 2))

    x0 = np.zeros(4)
    names = ["r", "alpha", "a", "b"]
    a_low = _fit(names, quad(a=-12.0), x0, "t", limits=True)
    assert a_low.converged and a_low.limit == BGNBD_A_LIMIT and a_low.at_bound == ["a"]
    assert np.log(a_low.params["a"]) == -9.0
    assert abs(np.log(a_low.params["b"]) - 5.0) < 1e-3  # the others re-fitted
    for opt in ({"a": 12.0}, {"a": -12.0, "r": -12.0}, {"a": -12.0, "b": -12.0}, {"r": 12.0}):
        fit = _fit(names, quad(**opt), x0, "t", limits=True)
        assert not fit.converged and not fit.limit, opt
    assert not _fit(names, quad(a=-12.0), x0, "t").converged  # Gamma-Gamma: no limit model
    interior = _fit(names, quad(), x0, "t", limits=True)
    assert interior.converged and not interior.limit and interior.at_bound == []


def test_a_likelihood_flat_towards_the_bound_is_not_converged() -> None:
    from training.btyd import LOG_BOUND, _flat_to_bound

    # the optimizer stopped at log a = -8 (a = 0.0003) on a likelihood still rising towards
    # the bound -9 (or flat there): maximum likelihood is on the bound
    rising = lambda t: 0.01 * (t[0] + 12.0) ** 2 + (t[1] - 1.0) ** 2  # noqa: E731
    flat = lambda t: (t[1] - 1.0) ** 2  # noqa: E731
    interior = lambda t: (t[0] + 8.0) ** 2 + (t[1] - 1.0) ** 2  # noqa: E731
    x = np.array([-8.0, 1.0])
    for negll, expected in ((rising, ["a"]), (flat, ["a"]), (interior, [])):
        assert _flat_to_bound(["a", "b"], negll, x, float(negll(x)), []) == expected
    far = np.array([-LOG_BOUND + 3.5, 1.0])  # not near a bound: not checked
    assert _flat_to_bound(["a", "b"], rising, far, float(rising(far)), []) == []


@pytest.mark.realdata
def test_bgnbd_on_online_retail_daily_is_on_the_bound(online_retail) -> None:  # type: ignore[no-untyped-def]
    # BENCHMARKS.md: on Online Retail daily data plain maximum likelihood sits on a bound
    # (a -> 0). At 2011-06-01 the optimizer stops at a ~ 0.0002 (inside the bound 1.2e-4),
    # yet the likelihood with a at its bound is as high: the fit is the no-dropout limit, with a
    # on its bound and the others re-fitted there
    from training.btyd import BGNBD_A_LIMIT

    feats = customer_features(online_retail.orders, "2011-06-01")
    fit = fit_bgnbd_on(feats)
    assert fit.converged and fit.limit == BGNBD_A_LIMIT and "a" in fit.at_bound
    assert fit.params["a"] == np.exp(-9.0)


def test_unconverged_bgnbd_at_a_calibration_cutoff_drops_the_blend(
    orders: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the blend's calibration cutoffs are 2023-09-01 (also the validation cutoff), 08-01 and
    # 07-01; BG/NBD fitted at 07-01 does not converge (an optimizer failure, not a boundary
    # optimum): that fit must not be used, the blend is dropped and the served model is exactly
    # LightGBM alone (as with blend_weight 0), said in a warning, the model's notes and its
    # calibration record
    import training.customers as tc
    from training.btyd import BtydFit

    # LightGBM (blended or not) is served; monthly cutoffs
    kw: dict[str, Any] = {**FAST, "baselines": (), "cutoffs_per_month": 1}
    cache = UserSnapshots(orders)
    blended = RepurchaseModel(**kw).fit(orders, AS_OF, snapshots=cache)
    assert blended.blend_ and "bgnbd_unconverged_cutoffs" not in blended.calibration_
    assert blended.calibration_["cutoffs"] == ["2023-09-01", "2023-08-01", "2023-07-01"]
    bad_frame = cache.features(pd.Timestamp("2023-07-01"))
    bad_fit = BtydFit(
        {"r": 0.5, "alpha": 20.0, "a": 0.8, "b": 2.5}, -1e4, False, "ABNORMAL_TERMINATION_IN_LNSRCH"
    )
    real = tc.fit_bgnbd_on
    seen: list[bool] = []

    def fit_on(feats: pd.DataFrame) -> Any:
        seen.append(feats is bad_frame)
        return bad_fit if feats is bad_frame else real(feats)

    monkeypatch.setattr(tc, "fit_bgnbd_on", fit_on)
    with caplog.at_level(logging.WARNING, logger="training.customers"):
        m = RepurchaseModel(**kw).fit(orders, AS_OF, snapshots=cache)
    assert any(seen)
    assert not m.blend_ and m.chosen_ == "lightgbm"
    assert m.calibration_["bgnbd_unconverged_cutoffs"] == {"2023-07-01": bad_fit.message}
    assert not m.calibration_["blended_with_bgnbd"]
    assert m.validation_["lightgbm"] == blended.validation_["lightgbm-alone"]
    art = m.artifact_
    assert art is not None and art.blend == {} and art.btyd == {}
    assert any("blend dropped" in n and "2023-07-01" in n for n in art.notes)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warned if "calibration cutoff 2023-07-01" in w] == [
        "repurchase: BG/NBD did not converge at the calibration cutoff 2023-07-01 "
        f"({bad_fit.message}): those fits are not used: the LightGBM + BG/NBD blend is "
        "dropped, noted in the model's notes (serving lightgbm)"
    ]
    alone = RepurchaseModel(**{**kw, "blend_weight": 0.0}).fit(orders, AS_OF, snapshots=cache)
    feats = cache.features(AS_OF)
    np.testing.assert_array_equal(m.predict_proba(feats), alone.predict_proba(feats))
    assert not np.allclose(m.predict_proba(feats), blended.predict_proba(feats))


def test_bgnbd_at_its_a_limit_keeps_the_blend_and_says_so(
    orders: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # BG/NBD fitted at the calibration cutoff 2023-07-01 has a on its bound: the no-dropout (NBD)
    # limit fit is used in the blend's cross-fitted calibration like an interior fit (the blend
    # is kept, not dropped), said in one INFO line, the model's notes and its calibration record
    import training.customers as tc
    from training.btyd import BGNBD_A_LIMIT

    kw: dict[str, Any] = {**FAST, "baselines": ()}
    cache = UserSnapshots(orders)
    blended = RepurchaseModel(**kw).fit(orders, AS_OF, snapshots=cache)
    assert blended.blend_ and "bgnbd_a_limit_cutoffs" not in blended.calibration_
    limit_frame, limit_fit = cache.features(pd.Timestamp("2023-07-01")), no_dropout_bgnbd()
    assert limit_fit.limit == BGNBD_A_LIMIT
    real = tc.fit_bgnbd_on
    logits: list[dict[str, float]] = []
    real_logit = tc.RepurchaseModel._bgnbd_logit

    def fit_on(feats: pd.DataFrame) -> Any:
        return limit_fit if feats is limit_frame else real(feats)

    def logit(self: Any, feats: pd.DataFrame, params: dict[str, float], as_of: Any) -> Any:
        logits.append(params)
        return real_logit(self, feats, params, as_of)

    monkeypatch.setattr(tc, "fit_bgnbd_on", fit_on)
    monkeypatch.setattr(tc.RepurchaseModel, "_bgnbd_logit", logit)
    with caplog.at_level(logging.INFO, logger="training.customers"):
        m = RepurchaseModel(**kw).fit(orders, AS_OF, snapshots=cache)
    assert m.blend_ and m.chosen_ == "lightgbm"
    assert limit_fit.params in logits  # the limit fit's parameters scored the 07-01 rows
    assert m.calibration_["bgnbd_a_limit_cutoffs"] == ["2023-07-01"]
    assert "bgnbd_unconverged_cutoffs" not in m.calibration_
    assert m.validation_ == blended.validation_  # validation cutoff 09-01: an interior fit
    art = m.artifact_
    assert art is not None and art.blend == blended.artifact_.blend  # type: ignore[union-attr]
    assert art.btyd == m.bgnbd_fit_.params  # type: ignore[union-attr]
    assert any(
        n.startswith(BGNBD_A_LIMIT + " at the calibration cutoff 2023-07-01") for n in art.notes
    )
    said = [r for r in caplog.records if BGNBD_A_LIMIT in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (
            logging.INFO,
            f"repurchase: {BGNBD_A_LIMIT} at the calibration cutoff 2023-07-01 (maximum "
            "likelihood has a on its bound; r, alpha, b re-fitted with a there): used for the "
            "LightGBM + BG/NBD blend, noted in the model's notes (serving lightgbm)",
        )
    ]
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and "BG/NBD" in r.getMessage()
    ]
    feats = cache.features(AS_OF)
    assert not np.allclose(m.predict_proba(feats), blended.predict_proba(feats))


def test_short_history_trains_on_the_short_label(orders: pd.DataFrame) -> None:
    # as_of 2022-07-01: the validation cutoff 2022-04-01 has no 90-day-labelled cutoff before it,
    # but 2022-03-01 has a 30-day label: the LightGBM trains on that, no lightgbm-rfm reference
    m = ChurnModel(**FAST).fit(orders, "2022-07-01")
    assert m.validation_cutoff_ == pd.Timestamp("2022-04-01")
    assert m.label_horizon_ == 30 and "lightgbm@90d" not in m.validation_
    assert "lightgbm-rfm" not in m.candidates_ and "baseline-bgnbd" in m.candidates_
    for c in m.training_cutoffs_:
        assert c + pd.Timedelta(days=30) <= pd.Timestamp("2022-07-01")
    # the cutoffs with a 90-day label among the 30-day-labelled training cutoffs (1st and 16th)
    assert m.calibration_["cutoffs"] == ["2022-04-01", "2022-03-16"]


def test_blended_artifact_round_trip(tmp_path: Path, orders: pd.DataFrame) -> None:
    m = RepurchaseModel(**FAST, baselines=()).fit(orders, AS_OF)
    art = m.candidates_["lightgbm"]
    feats = customer_features(orders, AS_OF)
    X = feats[art.feature_names].to_numpy(np.float64)
    assert art.booster is not None
    art.btyd = fit_bgnbd(
        *(feats[c].to_numpy() for c in ("repeat_days", "span_days", "tenure_days"))
    ).params
    lgb_raw = np.asarray(art.booster.predict(X, raw_score=True))
    art.blend = blend_stats(lgb_raw, art._bgnbd_logit(X), 0.2)
    raw = art.raw_score(X)
    assert abs(raw.mean()) < 1e-9  # both parts standardised on this population
    assert not np.allclose(raw, (lgb_raw - lgb_raw.mean()) / lgb_raw.std())  # BG/NBD counts
    art.save(tmp_path / "blend")
    back = CustomerArtifact.load(tmp_path / "blend")
    assert back.blend == art.blend
    np.testing.assert_array_equal(back.predict_proba(X), art.predict_proba(X))
    assert back.reasons(X[:5]) == art.reasons(X[:5])


def test_customer_folds_stable_and_balanced() -> None:
    ids = np.array([f"c{i}" for i in range(2000)])
    folds = customer_folds(ids, 5)
    assert set(folds) == {0, 1, 2, 3, 4}
    assert np.bincount(folds).min() > 300  # ~400 each
    np.testing.assert_array_equal(customer_folds(ids[::-1], 5), folds[::-1])  # by id, not position
    np.testing.assert_array_equal(customer_folds(np.array(["c7", "c7"]), 5), folds[[7, 7]])


def test_repurchase_and_value(orders: pd.DataFrame) -> None:
    rep = RepurchaseModel(**FAST).fit(orders, AS_OF)
    feats = customer_features(orders, AS_OF)
    assert rep.predict_proba(feats).shape == (len(feats),)
    val = ValueModel(horizon_days=90, n_snapshots=2, num_boost_round=30).fit(orders, AS_OF)
    v = val.predict(feats)
    assert v.shape == (len(feats),) and np.all(v >= 0)
    np.testing.assert_array_equal(v, np.round(v, 2))  # in cents: a dormant customer's is 0
    assert set(val.validation_) == {"lightgbm", "bgnbd-gammagamma"}


def test_save_load_round_trip(tmp_path: Path, orders: pd.DataFrame, churn: ChurnModel) -> None:
    churn.save(tmp_path / "churn")
    loaded = CustomerArtifact.load(tmp_path / "churn")
    art = churn.artifact_
    assert art is not None
    X = features_at(orders, art.feature_names)
    np.testing.assert_array_equal(loaded.predict_proba(X), art.predict_proba(X))
    assert loaded.reasons(X[:5]) == art.reasons(X[:5])
    assert loaded.scores is not None and art.scores is not None
    pd.testing.assert_frame_equal(loaded.scores, art.scores)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))
    again = ChurnModel.load(tmp_path / "churn")
    np.testing.assert_array_equal(
        again.predict_proba(customer_features(orders, AS_OF)), art.predict_proba(X)
    )


def test_determinism_with_seed(orders: pd.DataFrame, churn: ChurnModel) -> None:
    other = ChurnModel(**FAST).fit(orders, AS_OF)
    assert churn.artifact_ is not None and other.artifact_ is not None
    X = features_at(orders, churn.artifact_.feature_names)
    np.testing.assert_array_equal(
        other.artifact_.predict_proba(X), churn.artifact_.predict_proba(X)
    )


def test_calibration_in_unit_interval(orders: pd.DataFrame) -> None:
    iso = ChurnModel(**FAST, calibration="isotonic").fit(orders, AS_OF)
    assert iso.artifact_ is not None
    X = features_at(orders, iso.artifact_.feature_names)
    p = iso.artifact_.predict_proba(X)
    assert np.all((p >= 0) & (p <= 1))
    extreme = np.vstack([np.zeros(X.shape[1]), np.nanmax(X, axis=0) * 100 + 1])
    assert np.all(
        (iso.artifact_.predict_proba(extreme) >= 0) & (iso.artifact_.predict_proba(extreme) <= 1)
    )


def test_reasons_are_plain_phrases(orders: pd.DataFrame, churn: ChurnModel) -> None:
    art = churn.artifact_
    assert art is not None
    reasons = art.reasons(features_at(orders, art.feature_names), top_k=3)
    assert any(reasons)
    for phrases in reasons:
        assert len(phrases) <= 3
        for phrase in phrases:
            assert phrase and "{" not in phrase and "_" not in phrase and "nan" not in phrase
    values = {n: np.nan for n in art.feature_names}
    values.update(gap_ratio=3.0, spend_change_90d=-0.6)
    assert art.phrase("gap_ratio", values) == "no order for 3.0x the usual gap"
    assert art.phrase("gap_ratio", {**values, "gap_ratio": 0.84}) == (
        "last order 0.8x the usual gap ago"
    )
    assert art.phrase("season_share", {**values, "season_share": 0.5}) == (
        "50% of their orders in the calendar months of the next 90 days"
    )
    # no usual gap yet: one order day (not the vague default)
    assert art.phrase("gap_ratio", {**values, "gap_ratio": np.nan}) == (
        "ordered on one day only so far"
    )
    assert art.phrase("spend_change_90d", values) == "spend down 60% vs previous quarter"
    assert art.phrase("repeat_days", values) == "purchase history pattern"  # NaN: no number
    assert art.phrase("repeat_days", {**values, "repeat_days": 0.0}) == (
        "never ordered again after the first order"
    )
    assert art.phrase("repeat_days", {**values, "repeat_days": 4.0}) == (
        "ordered again on 4 days after the first"
    )
    assert art.phrase("country_share", {**values, "country_share": 0.02}) == (
        "their country has 2% of the shop's customers"
    )
    assert art.phrase("country_share", {**values, "country_share": 0.002}) == (
        "their country has under 1% of the shop's customers"
    )
    assert art.phrase("item_popularity", {**values, "item_popularity": np.log1p(120.0)}) == (
        "buys items that typically have 120 buyers"
    )
    assert art.phrase("item_retention", {**values, "item_retention": 0.25}) == (
        "buys items after which 25% of buyers reorder within a month"
    )
    # counts of 0 and 1 read naturally
    assert art.phrase("spend_30d", {**values, "spend_30d": 0.0}) == "no spend in the last 30 days"
    assert art.phrase("spend_30d", {**values, "spend_30d": 12.0}) == "spend 12 in the last 30 days"
    assert (
        art.phrase("orders_90d", {**values, "orders_90d": 0.0}) == "no orders in the last 90 days"
    )
    assert art.phrase("n_orders", {**values, "n_orders": 1.0}) == "1 order so far"
    assert art.phrase("n_orders", {**values, "n_orders": 4.0}) == "4 orders so far"
    assert art.phrase("spend_change_90d", {**values, "spend_change_90d": 0.001}) == (
        "spend flat vs previous quarter"
    )
    # decayed order counts say the number and the half-life; below 0.05 no order is that recent
    assert art.phrase("orders_decay7", {**values, "orders_decay7": 2.34}) == (
        "2.3 recency-weighted orders (an order counts half after 7 days)"
    )
    assert art.phrase("orders_decay30", {**values, "orders_decay30": 0.04}) == (
        "no order in the last 30 days"
    )
    assert art.phrase("orders_decay90", values) == "purchase history pattern"  # NaN: no number
    # phrases saved in older artifacts still read their direction word
    old = CustomerArtifact(
        **{**art.__dict__, "phrases": {"orders_decay90": "{activity} ordering activity"}}
    )
    assert old.phrase("orders_decay90", values) == "little ordering activity"


class FixedContributions(CustomerArtifact):
    """An artifact whose contributions are given (to test reason selection alone)."""

    contrib: np.ndarray = np.zeros(0)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        return self.contrib


def test_reasons_state_each_fact_once() -> None:
    names = ["orders_30d", "spend_30d", "recency_days", "gap_ratio", "spend_90d", "gap_trend"]
    art = FixedContributions(
        task="churn", kind="baseline-recency", feature_names=names, horizon_days=90, as_of="x"
    )
    art.contrib = np.array([[3.0, 2.5, 2.0, 1.0, 0.5, 0.2], [0.1, 0.2, 3.0, 0.3, 0.0, 0.0]])
    X = np.array([[0.0, 0.0, 40.0, 2.0, 0.0, 1.5], [0.0, 0.0, 40.0, 2.0, 0.0, 1.5]])
    # "no spend in the last 30/90 days" and "no order for 40 days" repeat the first fact
    assert art.reasons(X, top_k=3) == [
        [
            "no orders in the last 30 days",
            "no order for 2.0x the usual gap",
            "last gap between orders was 1.5x the usual gap",
        ],
        ["no order for 40 days", "no order for 2.0x the usual gap"],
    ]
    assert art.reasons(X, top_k=3) == reference_reasons(art, X, 3)
    assert fact_of("no spend in the last 180 days") == fact_of("no orders in the last 30 days")
    assert fact_of("last gap between orders was 12 days") == fact_of(
        "last gap between orders was 1.5x the usual gap"
    )
    assert fact_of("spend 1,458 in the last 90 days") == fact_of("spend 1,458 in the last 180 days")
    assert fact_of("3.9 recency-weighted orders (an order counts half after 180 days)") == (
        fact_of("2.6 recency-weighted orders (an order counts half after 90 days)")
    )
    assert fact_of("1 order so far") == fact_of("ordered on one day only so far")
    assert fact_of("ordered in only 1 month") == fact_of("ordered on one day only so far")
    assert fact_of("spend 12 in the last 30 days") != fact_of("no spend in the last 30 days")
    assert fact_of("usually orders every 10 days") == "usually orders every 10 days"


def reference_reasons(art: CustomerArtifact, X: np.ndarray, top_k: int) -> list[list[str]]:
    """The per-row loop the vectorised reasons replace (the first top_k phrases of the positive
    contributions, largest first, that state distinct facts)."""
    contrib = art.contributions(X)
    order = np.argsort(-contrib, axis=1, kind="stable")[:, : 3 * top_k]
    out = []
    for i in range(len(X)):
        values = dict(zip(art.feature_names, X[i].tolist(), strict=True))
        phrases: list[str] = []
        for j in order[i]:
            if contrib[i, j] <= 0 or len(phrases) == top_k:
                break
            phrase = art.phrase(art.feature_names[j], values)
            if fact_of(phrase) not in map(fact_of, phrases):
                phrases.append(phrase)
        out.append(phrases)
    return out


@pytest.mark.parametrize("top_k", [1, 3])
def test_vectorised_reasons_equal_the_row_loop(
    orders: pd.DataFrame, churn: ChurnModel, top_k: int
) -> None:
    art = churn.artifact_
    assert art is not None
    X = features_at(orders, art.feature_names)
    X[::7, art.feature_names.index("spend_change_90d")] = np.nan  # NaN values: default phrase
    expected = reference_reasons(art, X, top_k)
    assert art.reasons(X, top_k=top_k) == expected
    assert any(len(r) == min(top_k, 2) for r in expected)  # several reasons, deduplicated
    text = art.reason_text(X, top_k=top_k)
    assert text.tolist() == ["; ".join(r) for r in expected]
    base = CustomerArtifact(**{**art.__dict__, "kind": "baseline-recency", "booster": None})
    assert base.reasons(X, top_k) == reference_reasons(base, X, top_k)


BASE_NAMES = ["recency_days", "n_orders", "repeat_days", "span_days", "tenure_days", "gap_ratio"]
BTYD = {"r": 0.8, "alpha": 60.0, "a": 0.5, "b": 3.0}


def baseline(kind: str, task: str = "churn") -> CustomerArtifact:
    return CustomerArtifact(
        task=task,
        kind=kind,
        feature_names=list(BASE_NAMES),
        horizon_days=90 if task == "churn" else 30,
        as_of="2024-01-01",
        btyd=dict(BTYD),
    )


def customers_rows(recency: Any, n_orders: Any) -> np.ndarray:
    """Rows of BASE_NAMES: one order day per order, first order 300 days ago."""
    rec, n = np.asarray(recency, dtype=np.float64), np.asarray(n_orders, dtype=np.float64)
    tenure = np.full(len(rec), 300.0)
    span = tenure - rec
    gap = np.where((n > 1) & (span > 0), span / np.maximum(n - 1, 1), np.nan)
    return np.column_stack([rec, n, n - 1, span, tenure, rec / np.where(gap > 0, gap, np.nan)])


def test_baseline_reasons_are_relative_to_the_reference_customers() -> None:
    """A baseline's raw score is not centred (churn by frequency is -log(1 + orders) < 0 for
    everyone): without a reference no customer got a reason. Contributions are now the score
    less the reference customers' mean score (known answer), positive for the riskier half."""
    pop = customers_rows([10.0 * k for k in range(1, 33)], [1.0 + k % 4 for k in range(32)])
    freq = baseline("baseline-frequency")
    assert all(r == [] for r in freq.reasons(pop))  # the old behaviour, kept without reference
    freq.set_reference(pop)
    ref = np.asarray(freq.reference["n_orders"])
    assert len(ref) == 16 and sorted(ref.tolist()) == sorted(ref.tolist())
    X = customers_rows([50.0, 50.0], [1.0, 4.0])
    expected = -np.log1p(X[:, 1]) + np.mean(np.log1p(ref))
    np.testing.assert_allclose(freq.contributions(X)[:, BASE_NAMES.index("n_orders")], expected)
    assert freq.reasons(X) == [["1 order so far"], []]

    rec = baseline("baseline-recency", task="repurchase")  # raw -log(1 + days): all negative
    assert all(r == [] for r in rec.reasons(pop))
    rec.set_reference(pop)
    # 16 customers at evenly spaced quantiles of the score: recency 310, 290, ..., 10 days
    assert rec.reference["recency_days"] == [310.0 - 20 * k for k in range(16)]
    assert rec.reasons(customers_rows([5.0, 250.0], [2.0, 2.0])) == [["no order for 5 days"], []]
    shares = [np.mean([r == [] for r in art.reasons(pop)]) for art in (freq, rec)]
    assert all(0.2 < s < 0.8 for s in shares)  # about the less risky half, not everyone


def test_bgnbd_reasons_are_shapley_values_against_the_reference() -> None:
    rng = np.random.default_rng(3)
    pop = customers_rows(
        rng.uniform(1, 299, 200).round().tolist(), rng.integers(1, 9, 200).tolist()
    )
    for task in ("churn", "repurchase"):
        art = baseline("baseline-bgnbd", task)
        art.set_reference(pop)
        contrib = art.contributions(pop)
        used = [BASE_NAMES.index(n) for n in ("repeat_days", "recency_days", "tenure_days")]
        used.append(BASE_NAMES.index("gap_ratio"))  # churn: overdue repeat buyers' share
        others = np.delete(contrib, used, axis=1)
        assert not others.any()
        # efficiency: they add up to the raw score less the reference customers' mean score,
        # except the positive repeat share of buyers within their usual gap (churn: dropped)
        refs = customers_rows(
            art.reference["recency_days"], np.add(art.reference["repeat_days"], 1)
        )
        total = art.raw_score(pop) - art.raw_score(refs).mean()
        kept = np.isclose(contrib[:, used].sum(axis=1), total)
        assert kept.mean() > 0.8
        risky = art.predict_proba(pop) >= np.quantile(art.predict_proba(pop), 0.7)
        assert all(art.reasons(pop[risky]))  # every customer of the riskiest 30% has a reason
    churn = baseline("baseline-bgnbd")
    churn.set_reference(pop)
    # a one-time buyer silent for 290 days vs a weekly buyer last seen 2 days ago
    X = customers_rows([290.0, 2.0], [1.0, 40.0])
    reasons = churn.reasons(X)
    assert "no order for 290 days" in reasons[0]
    assert not any("no order" in r for r in reasons[1])
    # a repeat buyer silent for 8x their usual gap: said with the gap, not "ordered again"
    # (one reference customer: a one-time buyer as silent and as old; only x differs)
    churn.reference = {"repeat_days": [0.0], "recency_days": [240.0], "tenure_days": [300.0]}
    overdue = customers_rows([240.0, 2.0], [4.0, 4.0])
    contrib = churn.contributions(overdue)
    one_timer = customers_rows([240.0], [1.0])
    gain = churn.raw_score(overdue[:1]) - churn.raw_score(one_timer)
    assert gain[0] > 0  # 3 repeat days, then 240 silent days: likely gone
    np.testing.assert_allclose(contrib[0, BASE_NAMES.index("gap_ratio")], gain[0])
    assert contrib[0, BASE_NAMES.index("repeat_days")] == 0.0
    assert churn.reasons(overdue[:1]) == [["no order for 12.0x the usual gap"]]
    # ordered 2 days ago, within the usual gap: the repeat orders are no reason to leave
    assert not any(
        r.startswith(("ordered again", "no order for")) for r in churn.reasons(overdue)[1]
    )


def test_baseline_reference_round_trip_and_old_artifacts(tmp_path: Path) -> None:
    pop = customers_rows([10.0 * k for k in range(1, 33)], [1.0 + k % 4 for k in range(32)])
    art = baseline("baseline-bgnbd")
    art.set_reference(pop)
    back = CustomerArtifact.load(art.save(tmp_path / "new"))
    assert back.reference == art.reference
    np.testing.assert_array_equal(back.contributions(pop), art.contributions(pop))
    # an artifact saved before the reference was stored: loads, old attribution (raw / 2)
    art.reference = {}
    folder = art.save(tmp_path / "old")
    meta = json.loads((folder / "meta.json").read_text())
    del meta["reference"]
    (folder / "meta.json").write_text(json.dumps(meta))
    old = CustomerArtifact.load(folder)
    assert old.reference == {}
    half = old.raw_score(pop) / 2
    np.testing.assert_allclose(old.contributions(pop)[:, BASE_NAMES.index("recency_days")], half)
    lgb_like = baseline("baseline-recency", task="value")
    lgb_like.set_reference(pop)  # nothing to explain for value: no reference
    assert lgb_like.reference == {}


def test_rebuy_columns_are_optional(orders: pd.DataFrame, churn: ChurnModel) -> None:
    assert not set(REBUY_COLUMNS) & set(churn.feature_names_)  # not used by default
    assert not set(REBUY_COLUMNS) & set(customer_features(orders, AS_OF).columns)  # nor computed
    feats = customer_features(orders, AS_OF, optional=True)
    names = [*churn.feature_names_, "items_due_share", "due_ratio_min"]
    shared = UserSnapshots(orders)  # without the optional columns: the model builds its own
    model = ChurnModel(**FAST, features=names).fit(orders, AS_OF, snapshots=shared)
    assert model.feature_names_ == names
    assert model.predict_proba(feats).shape == (len(feats),)
    assert len(model.score_table(orders, AS_OF)) == len(feats)  # computes what it needs


def test_backtest_fit_skips_the_score_table(orders: pd.DataFrame) -> None:
    model = ChurnModel(**FAST).fit(orders, AS_OF, score=False)
    assert model.artifact_ is not None and model.artifact_.scores is None


def test_baseline_fallback(orders: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    # a LightGBM that cannot split (min_data_in_leaf above the sample size) predicts a constant:
    # AUC 0.5, so the recency baseline must be served, loudly
    with caplog.at_level(logging.WARNING, logger="training.customers"):
        m = ChurnModel(
            **FAST,
            params={"min_data_in_leaf": 10**7},
            baselines=("baseline-recency",),
            blend_weight=0.0,  # a BG/NBD blend would rank well without the LightGBM
        ).fit(orders, AS_OF)
    assert m.chosen_ == "baseline-recency"
    assert m.artifact_ is not None and m.artifact_.kind == "baseline-recency"
    assert any("did NOT beat" in r.message for r in caplog.records)
    X = features_at(orders, m.artifact_.feature_names)
    p = m.artifact_.predict_proba(X)
    assert p.shape == (len(X),) and np.all((p >= 0) & (p <= 1))
    assert all(isinstance(r, list) for r in m.artifact_.reasons(X[:3]))


def test_bad_inputs(orders: pd.DataFrame, churn: ChurnModel) -> None:
    with pytest.raises(DataWindowError, match="before all data"):
        ChurnModel(**FAST).fit(orders, "2020-01-01")
    with pytest.raises(DataWindowError, match="empty"):
        ChurnModel(**FAST).fit(orders.iloc[:0], AS_OF)
    with pytest.raises(DataWindowError, match="cutoffs"):
        ChurnModel(**FAST).fit(orders, "2022-03-01")  # too little history for any cutoff
    assert churn.artifact_ is not None
    with pytest.raises(UnknownCustomerError, match="nobody"):
        churn.artifact_.score("nobody")
    first = str(churn.artifact_.scores["customer_id"].iloc[0])  # type: ignore[index]
    assert churn.artifact_.score(first)["customer_id"] == first
    with pytest.raises(ValueError, match="columns"):
        churn.artifact_.predict_proba(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unknown feature"):
        ChurnModel(**FAST, features=["nope"]).fit(orders, AS_OF)


def test_not_fitted() -> None:
    from training.base import NotFittedError

    with pytest.raises(NotFittedError):
        ChurnModel().predict_proba(pd.DataFrame())


@pytest.mark.realdata
def test_bgnbd_recovers_published_cdnow(cdnow_path: Path) -> None:
    summary = pd.read_csv(cdnow_path.parent / "cdnow_customers_summary.csv.gz")
    fit = fit_bgnbd(*(summary[c].to_numpy() for c in ("frequency", "recency", "T")))
    assert fit.converged
    for name, value in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        assert fit.params[name] == pytest.approx(value, abs=2e-3)


@pytest.mark.realdata
def test_population_counts(online_retail, cdnow_path: Path) -> None:  # type: ignore[no-untyped-def]
    from features.io import load_dataset

    orr = user_features(purchases(online_retail.orders), "2011-09-01")
    assert len(orr) == 3314
    cd = load_dataset(cdnow_path)
    assert len(user_features(cd.orders, "1997-10-01")) == 23570


# ---------------------------------------------------------------- scale: capped population, cache
def sampled(ids: pd.Index, cap: int) -> list[str]:
    """The ids :func:`sample_ids` keeps when ``ids`` are more than ``cap`` (a sample is drawn)."""
    kept = sample_ids(ids, cap)
    assert kept is not None, f"{len(ids)} ids, cap {cap}: no sample drawn"
    return list(kept)


def test_sample_ids_known_answer_and_stable() -> None:
    ids = pd.Index([f"c{i}" for i in range(10)])
    # SipHash of the id string with pandas' fixed key: the same in every run and on every machine
    assert list(id_hash(pd.Index(["c0", "c1"]))) == [14157290225740440609, 2680680849849350385]
    assert sampled(ids, 3) == ["c1", "c2", "c3"]
    assert sampled(ids, 5) == ["c1", "c2", "c3", "c4", "c7"]  # grows, never reshuffles
    assert sampled(ids[::-1], 3) == ["c3", "c2", "c1"]  # by id, in the given order
    assert sample_ids(ids, 10) is None and sample_ids(ids, 11) is None  # at or below the cap
    with pytest.raises(ValueError, match="cap must be >= 1"):
        sample_ids(ids, 0)
    with pytest.raises(ValueError, match="max_train_customers"):
        ChurnModel(max_train_customers=0)


def test_cache_returns_fresh_features(orders: pd.DataFrame) -> None:
    cache = UserSnapshots(orders)
    cut = AS_OF - pd.DateOffset(months=2)
    full = cache.features(cut)
    # features of the whole table at a cutoff = features of the table cut before as_of
    fresh = customer_features(orders.loc[orders["ordered_at"] < AS_OF], cut)
    pd.testing.assert_frame_equal(full, fresh)
    assert cache.features(cut) is full and cache.computed == [(cut, None)]  # computed once
    sample = cache.population(AS_OF, 150)
    assert sample is not None and len(sample) == 150
    part = cache.features(cut, sample)
    assert set(part.index) <= set(sample) and all(t == np.float32 for t in part.dtypes)
    # a sampled customer's row is its row among all customers (item statistics of everyone)
    expected = full.loc[part.index].astype(np.float32)
    pd.testing.assert_frame_equal(part, expected)
    assert cache.population(AS_OF, 150) is sample and cache.population(AS_OF, 10_000) is None
    earlier = cache.population(AS_OF - pd.Timedelta(days=30), 150)  # a backtest's sample
    assert earlier is not None and earlier is not sample
    assert cache.features(cut, sample) is part  # the fit's sample and its frames are kept
    with pytest.raises(ValueError, match="unknown sample"):
        cache.features(cut, pd.Index(["c1"]))


def test_below_the_cap_nothing_changes(orders: pd.DataFrame, churn: ChurnModel) -> None:
    assert churn.training_customers_ is None  # 400 customers < the default cap
    for cap in (None, 400):
        other = ChurnModel(**FAST, max_train_customers=cap).fit(orders, AS_OF)
        assert other.validation_ == churn.validation_
        assert other.artifact_ is not None and churn.artifact_ is not None
        assert other.artifact_.scores is not None and churn.artifact_.scores is not None
        pd.testing.assert_frame_equal(other.artifact_.scores, churn.artifact_.scores)


def test_capped_training_population_scores_everyone(orders: pd.DataFrame) -> None:
    cache = UserSnapshots(orders)
    model = ChurnModel(**FAST, max_train_customers=200).fit(orders, AS_OF, snapshots=cache)
    sample = cache.population(AS_OF, 200)
    assert model.training_customers_ == 200 and sample is not None
    assert model.calibration_["cross_fitted_folds"] == SAMPLED_CV_FOLDS  # fewer folds above the cap
    sampled = [key for key in cache.computed if key[1] is not None]
    assert len(sampled) >= 3  # the snapshots, all on the sample (float32)
    for c in model.cutoffs_:
        if (c, (AS_OF, 200)) in cache._frames:
            assert set(cache.features(c, sample).index) <= set(sample)
    assert model.artifact_ is not None and model.artifact_.scores is not None
    assert len(model.artifact_.scores) == len(user_features(orders, AS_OF))  # every customer
    again = ChurnModel(**FAST, max_train_customers=200).fit(orders, AS_OF)
    assert again.validation_ == model.validation_  # deterministic, private or shared cache


def test_cutoffs_on_one_month_grid() -> None:
    first = pd.Timestamp("2010-12-01 08:26")
    on_start = monthly_cutoffs(first, pd.Timestamp("2011-09-01"), 90, 30, 3)
    assert on_start == [pd.Timestamp(d) for d in ("2011-06-01", "2011-05-01", "2011-04-01")]
    # a backtest's as_of mid-month: the same month starts, each label window ending by as_of
    mid = monthly_cutoffs(first, pd.Timestamp("2011-10-03"), 30, 30, 3)
    assert mid == [pd.Timestamp(d) for d in ("2011-09-01", "2011-08-01", "2011-07-01")]
    assert monthly_cutoffs(first, pd.Timestamp("2011-01-15"), 30, 30, 3) == []  # no history


def test_cutoffs_on_a_half_month_grid() -> None:
    first = pd.Timestamp("2010-12-01 08:26")
    half = monthly_cutoffs(first, pd.Timestamp("2011-09-01"), 90, 30, 5, per_month=2)
    days = ("2011-06-01", "2011-05-16", "2011-05-01", "2011-04-16", "2011-04-01")
    assert half == [pd.Timestamp(d) for d in days]
    # mid-month as_of: the 16th before it is no cutoff when its window does not end by as_of
    mid = monthly_cutoffs(first, pd.Timestamp("2011-10-20"), 30, 30, 3, per_month=2)
    assert mid == [pd.Timestamp(d) for d in ("2011-09-16", "2011-09-01", "2011-08-16")]
    # the month starts are those of the monthly grid (snapshots shared), history respected
    full = monthly_cutoffs(first, pd.Timestamp("2011-09-01"), 30, 30, 100, per_month=2)
    assert [c for c in full if c.day == 1] == monthly_cutoffs(
        first, pd.Timestamp("2011-09-01"), 30, 30, 100
    )
    assert full[-1] == pd.Timestamp("2011-01-01") and len(full) == 15
    with pytest.raises(ValueError, match="per_month"):
        monthly_cutoffs(first, pd.Timestamp("2011-09-01"), 30, 30, 3, per_month=0)


def test_training_snapshots_twice_a_month(orders: pd.DataFrame, churn: ChurnModel) -> None:
    # default: cutoffs on the 1st and the 16th over n_snapshots months, every label by as_of
    cuts = churn.training_cutoffs_
    assert {c.day for c in cuts} == {1, 16} and len(cuts) == 2 * FAST["n_snapshots"]
    for c in cuts:
        assert c + pd.Timedelta(days=churn.label_horizon_) <= AS_OF
    monthly = ChurnModel(**FAST, cutoffs_per_month=1).fit(orders, AS_OF, score=False)
    assert {c.day for c in monthly.training_cutoffs_} == {1}
    assert len(monthly.training_cutoffs_) == FAST["n_snapshots"]
    assert monthly.validation_cutoff_ == churn.validation_cutoff_  # same month-start validation
    assert churn.cutoffs_per_month_ == 2 and monthly.cutoffs_per_month_ == 1
    with pytest.raises(ValueError, match="cutoffs_per_month"):
        ChurnModel(cutoffs_per_month=0)


def test_cutoffs_per_month_by_training_rows() -> None:
    # twice a month below MIN_MONTHLY_ROWS customer-snapshot rows, monthly from there on
    assert cutoffs_per_month(400, 6) == 2
    assert cutoffs_per_month(3_314, 6) == 2  # Online Retail: ~20,000 rows
    assert cutoffs_per_month(23_570, 6) == 1  # CDNOW: ~141,000 rows
    assert cutoffs_per_month(MIN_MONTHLY_ROWS // 6 + 1, 6) == 1
    assert cutoffs_per_month(MIN_MONTHLY_ROWS // 6 - 1, 6) == 2


def test_platt_calibration_known_answer() -> None:
    # labels drawn from sigmoid(2 s - 1): Platt recovers the slope and intercept
    rng = np.random.default_rng(3)
    s = rng.normal(size=40_000)
    y = (rng.random(s.size) < 1 / (1 + np.exp(-(2 * s - 1)))).astype(np.int8)
    cal = fit_calibration(s, y, "platt")
    assert cal.method == "platt"
    assert abs(cal.a - 2) < 0.08 and abs(cal.b + 1) < 0.05
    iso = fit_calibration(s, y, "isotonic")
    assert abs(iso(np.array([0.5]))[0] - 0.5) < 0.05  # sigmoid(0) at s = 0.5


def test_btyd_fits_on_a_capped_hash_sample(orders: pd.DataFrame) -> None:
    feats = customer_features(orders, AS_OF)
    assert btyd_sample(feats, len(feats)) is feats  # at or below the cap: every customer
    part = btyd_sample(feats, 100)
    assert len(part) == 100 and set(part.index) == set(sampled(feats.index, 100))
    full = fit_bgnbd_on(feats, len(feats))
    assert full.params == fit_bgnbd(*hist_btyd(feats)).params  # the full fit, unchanged
    quick = fit_bgnbd_on(feats, 200)  # above the cap: one quick run on 200 customers
    assert quick.params == fit_bgnbd(*hist_btyd(btyd_sample(feats, 200)), quick=True).params
    assert quick.params != full.params


def test_backtest_sample_frames_serve_the_fit(orders: pd.DataFrame) -> None:
    cache = UserSnapshots(orders)
    early, late = AS_OF - pd.Timedelta(days=90), AS_OF
    bt = cache.population(early, 150)  # a backtest's sample: higher hash bound
    fit = cache.population(late, 150)
    assert bt is not None and fit is not None
    cut = early - pd.DateOffset(months=2)
    cache.features(cut, bt)
    n_computed = len(cache.computed)
    derived = cache.features(cut, fit)  # rows of the backtest's frame
    assert len(cache.computed) == n_computed  # not computed from the orders
    fresh = UserSnapshots(orders)
    again = fresh.population(late, 150)
    assert again is not None
    pd.testing.assert_frame_equal(derived, fresh.features(cut, again))
    # a cutoff after the backtest's as_of cannot come from its sample
    after = late - pd.DateOffset(months=1)
    cache.features(after, fit)
    assert cache.computed[-1] == (after, (late, 150))


def test_shared_cache_computes_each_cutoff_once(orders: pd.DataFrame) -> None:
    cache = UserSnapshots(orders)
    churn = ChurnModel(**FAST).fit(orders, AS_OF, snapshots=cache)
    after_churn = len(cache.computed)
    rep = RepurchaseModel(**FAST).fit(orders, AS_OF, snapshots=cache)
    ValueModel(horizon_days=90, n_snapshots=2, num_boost_round=30).fit(
        orders, AS_OF, snapshots=cache
    )
    assert len(cache.computed) == len(set(cache.computed))  # nothing computed twice
    assert len(cache.computed) < after_churn + 2  # repurchase and value reuse churn's cutoffs
    alone = RepurchaseModel(**FAST).fit(orders, AS_OF)  # its own cache: the same model
    assert alone.validation_ == rep.validation_
    assert churn.artifact_ is not None and rep.artifact_ is not None and alone.artifact_ is not None
    assert alone.artifact_.scores is not None and rep.artifact_.scores is not None
    pd.testing.assert_frame_equal(alone.artifact_.scores, rep.artifact_.scores)


def test_customer_signals_known_answer() -> None:
    from features.purchases import Purchases
    from training.benchmarks.customer_signals import customer_signals

    rows = [  # customer, order, item, day, quantity, price
        ("A", "o1", "x", "2023-10-10", 1.0, 2.0),
        ("A", "o1", "y", "2023-10-10", 1.0, 3.0),
        ("A", "o2", "x", "2024-02-10", 2.0, 2.0),
        ("B", "o3", "x", "2023-11-20", 1.0, 10.0),
        ("B", "o4", "y", "2023-12-15", 1.0, 1.0),
        ("B", "o5", "y", "2024-03-01", 9.0, 9.0),  # at as_of: not read
    ]
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "item_id", "ordered_at", "quantity", "unit_price"]
    )
    df["ordered_at"] = pd.to_datetime(df["ordered_at"]).astype("datetime64[us]")
    df["is_return"] = False
    got = customer_signals(Purchases.of(df, "2024-03-01"))
    assert list(got.index) == ["A", "B"]
    # Oct-Dec share of each item's other lines (x: 2 of 3 lines, y: 2 of 2; shop 4/5), prior 20
    seasonal_a = (17 / 22 + 17 / 21 + 18 / 22) / 3
    seasonal_b = (17 / 22 + 17 / 21) / 2
    # 90-day outcome known for o1 (next order 123 days later: no) and o3 (o4 25 days later: yes)
    shop = 1 / 3
    ret_a = ((1 + 20 * shop) / 21 + (20 * shop) / 20 + (1 + 20 * shop) / 22) / 3
    ret_b = ((0 + 20 * shop) / 21 + (0 + 20 * shop) / 21) / 2
    expected = pd.DataFrame(
        {
            "seasonal_item_share": [seasonal_a, seasonal_b],
            "item_retention90": [ret_a, ret_b],
            "own_repeat_share": [0.5, 0.0],
            "q4_spend_share": [5 / 9, 1.0],
        },
        index=got.index,
    )
    pd.testing.assert_frame_equal(got[list(expected.columns)], expected)
    # the later candidates are there too (a gap survival is a probability)
    assert got["gap_survival"].between(0, 1).all()


def test_customer_signals_paired_changes_known_answer() -> None:
    from training.benchmarks.customer_signals import paired_changes

    def rec(task: str, day: str, variant: str, auc: float, brier: float) -> dict[str, Any]:
        return {"task": task, "as_of": day, "variant": variant, "auc": auc, "brier": brier}

    records = [
        rec("churn90", "d1", "base", 0.70, 0.20),
        rec("churn90", "d1", "all", 0.72, 0.19),
        rec("repurchase30", "d1", "base", 0.80, 0.10),
        rec("repurchase30", "d1", "all", 0.79, 0.12),
        rec("repurchase30", "d2", "all", 0.99, 0.01),  # no base on this replay: not paired
    ]
    assert paired_changes(records) == {
        "all": {
            "replays": {"churn90@d1": 0.02, "repurchase30@d1": -0.01},
            "mean_auc_change": 0.005,
            "mean_brier_change": 0.005,
            "better": 1,
            "n": 2,
        }
    }


def test_signal_snapshots_join_the_signals(orders: pd.DataFrame) -> None:
    from features.purchases import Purchases
    from training.benchmarks.customer_signals import (
        SIGNAL_COLUMNS,
        SignalSnapshots,
        customer_signals,
    )

    cut = pd.Timestamp("2023-07-01")
    got = SignalSnapshots(orders).features(cut)
    plain = UserSnapshots(orders).features(cut)
    pd.testing.assert_frame_equal(got[list(plain.columns)], plain)
    signals = customer_signals(Purchases.of(orders, cut)).reindex(plain.index)
    pd.testing.assert_frame_equal(got[SIGNAL_COLUMNS], signals)
