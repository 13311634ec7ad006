"""BG/NBD and Gamma-Gamma maximum-likelihood fits with scipy (no lifetimes dependency).

The likelihood and prediction formulas live in :mod:`shopml.artifacts.customers` (the runtime);
this module only fits parameters and checks convergence, on arrays (:func:`fit_bgnbd`,
:func:`fit_gamma_gamma`) or on a capped sample of a customer-feature frame
(:func:`fit_bgnbd_on`). A fit that does not converge (optimizer failure or a parameter on its
bound, as BG/NBD's ``a -> 0`` on daily Online Retail data) is flagged in :class:`BtydFit` and
logged as a warning; callers decide what to do with it. "On its bound" includes a parameter the
optimizer left near the bound on a likelihood that is as high at the bound (a flat or rising
ridge, :func:`_flat_to_bound`): on Online Retail every monthly fit from 2011-02-01 to
2011-09-01 stopped at ``a`` = 0.0001-0.002 with the likelihood at the bound 0.0000-0.004 higher,
and only 2011-08-01 was flagged before; CDNOW's fits are 500-1,500 log-likelihood units from
the bound and unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from shopml.artifacts.customers import bgnbd_loglik, gamma_gamma_loglik
from training.snapshots import sample_ids

log = logging.getLogger(__name__)

LOG_BOUND = 9.0  # parameters live in [exp(-9), exp(9)] ~ [1.2e-4, 8100]
#: a fitted parameter this close to a bound (in log: within a factor ~20) is checked for a
#: likelihood that is flat or rising towards the bound (:func:`_flat_to_bound`)
NEAR_BOUND = 3.0
PROFILE_TOL = 1e-6  # mean log-likelihood per customer: "at least as likely" up to this
#: BG/NBD and Gamma-Gamma are fitted on at most this many customers (a fixed hash sample; CDNOW's
#: 23,570 and Online Retail's 3,314 are below it) and then score every customer.
BTYD_FIT_CUSTOMERS = 30_000


class ConvergenceError(RuntimeError):
    """A BTYD fit did not converge."""


@dataclass
class BtydFit:
    """Fitted parameters, the log-likelihood and whether the fit converged (with a reason)."""

    params: dict[str, float]
    loglik: float
    converged: bool
    message: str = ""
    at_bound: list[str] = field(default_factory=list)


def _flat_to_bound(
    names: list[str], negll, x: np.ndarray, fun: float, done: list[str]
) -> list[str]:  # type: ignore[no-untyped-def]
    """Parameters near a bound (within :data:`NEAR_BOUND` in log) whose bound fits as well.

    On a likelihood that keeps rising (or stays flat) towards a bound, as BG/NBD's ``a -> 0``
    on daily Online Retail data, the optimizer stops anywhere on the ridge (``a`` = 0.0002 ..
    0.002 there): the fit looks interior but is not. Each such parameter is fixed at its bound
    and the others re-optimized from the fit; when that is at least as likely (within
    :data:`PROFILE_TOL` per customer), maximum likelihood is on the bound.
    """
    flat: list[str] = []
    bounds = [(-LOG_BOUND, LOG_BOUND)] * (len(x) - 1)
    for i, (name, v) in enumerate(zip(names, x, strict=True)):
        if name in done or abs(v) < LOG_BOUND - NEAR_BOUND:
            continue
        edge = float(np.copysign(LOG_BOUND, v))

        def fixed(theta: np.ndarray, i: int = i, edge: float = edge) -> float:
            return float(negll(np.insert(theta, i, edge)))

        res = minimize(fixed, np.delete(x, i), method="L-BFGS-B", bounds=bounds)
        if res.fun <= fun + PROFILE_TOL:
            flat.append(name)
    return flat


def _fit(names: list[str], negll, x0: np.ndarray, what: str, quick: bool = False) -> BtydFit:  # type: ignore[no-untyped-def]
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(names)
    best = None
    for start in (x0,) if quick else (x0, x0 + 0.5, x0 - 0.5):
        res = minimize(negll, start, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    # polish with Nelder-Mead from the best point (robust on flat ridges)
    polish = best
    if not quick:
        polish = minimize(
            negll,
            best.x,
            method="Nelder-Mead",
            options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000},
        )
    if not quick and polish.fun <= best.fun and np.all(np.abs(polish.x) <= LOG_BOUND):
        best_x, best_fun, ok, msg = polish.x, polish.fun, bool(polish.success), str(polish.message)
    else:
        best_x, best_fun, ok, msg = best.x, best.fun, bool(best.success), str(best.message)
    at_bound = [n for n, v in zip(names, best_x, strict=True) if abs(v) >= LOG_BOUND - 1e-3]
    flat = _flat_to_bound(names, negll, best_x, float(best_fun), at_bound)
    converged = ok and not at_bound and not flat and np.isfinite(best_fun)
    if at_bound or flat:
        msg = (
            f"parameter(s) {', '.join(at_bound + flat)} on the bound: maximum likelihood not "
            "interior"
        )
        if flat:
            msg += f" (the likelihood with {', '.join(flat)} at its bound is as high)"
        at_bound = at_bound + flat
    params = {n: float(np.exp(v)) for n, v in zip(names, best_x, strict=True)}
    if not converged:
        log.warning("%s fit did not converge (%s); params %s", what, msg, params)
    return BtydFit(params, -float(best_fun), bool(converged), msg, at_bound)


def _aggregate(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(np.float64)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, quick: bool = False) -> BtydFit:
    """Maximum-likelihood BG/NBD (r, alpha, a, b) from repeat count, recency and age.

    ``x`` = repeat purchases, ``t_x`` = time of the last purchase since the first, ``T`` = time
    since the first purchase (any unit; predictions use the same unit). ``quick``: one L-BFGS-B
    run instead of three starts and a Nelder-Mead polish (~10x fewer likelihood evaluations;
    for large samples, where the likelihood surface is well determined).
    """
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if len(x) == 0:
        raise ValueError("cannot fit BG/NBD on an empty population")
    if np.any(t_x > T + 1e-9) or np.any(x < 0):
        raise ValueError("BG/NBD needs 0 <= t_x <= T and x >= 0")
    (ux, ut, uT), w = _aggregate(x, t_x, T)
    n = w.sum()

    def negll(theta: np.ndarray) -> float:
        value = -bgnbd_loglik(np.exp(theta), ux, ut, uT, w) / n
        return value if np.isfinite(value) else 1e10

    scale = float(np.mean(T)) or 1.0
    x0 = np.log(np.array([0.5, scale / 10, 0.8, 2.5]))
    fit = _fit(["r", "alpha", "a", "b"], negll, x0, "BG/NBD", quick)
    fit.loglik *= n
    return fit


def fit_gamma_gamma(x: np.ndarray, mean_value: np.ndarray) -> BtydFit:
    """Gamma-Gamma (p, q, v) on customers with ``x`` >= 1 repeat purchases and positive value."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mean_value, dtype=np.float64)
    keep = (x > 0) & (m > 0) & np.isfinite(m)
    if keep.sum() < 10:
        raise ValueError("Gamma-Gamma needs at least 10 repeat customers with positive spend")
    x, m = x[keep], m[keep]
    n = len(x)

    def negll(theta: np.ndarray) -> float:
        value = -gamma_gamma_loglik(np.exp(theta), x, m) / n
        return value if np.isfinite(value) else 1e10

    x0 = np.log(np.array([2.0, 3.0, float(np.median(m))]))
    fit = _fit(["p", "q", "v"], negll, x0, "Gamma-Gamma")
    fit.loglik *= n
    return fit


def hist_btyd(feats: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BTYD inputs (x, t_x, T in days) from a :func:`user_features` frame."""
    return (
        feats["repeat_days"].to_numpy(np.float64),
        feats["span_days"].to_numpy(np.float64),
        np.maximum(
            feats["tenure_days"].to_numpy(np.float64), feats["span_days"].to_numpy(np.float64)
        ),
    )


def btyd_sample(feats: pd.DataFrame, cap: int = BTYD_FIT_CUSTOMERS) -> pd.DataFrame:
    """The rows of at most ``cap`` customers of ``feats``: those with the smallest
    :func:`~training.snapshots.id_hash` (all rows at or below ``cap``: no sampling)."""
    ids = sample_ids(feats.index, cap)
    return feats if ids is None else feats.loc[feats.index.isin(ids)]


def fit_bgnbd_on(feats: pd.DataFrame, cap: int = BTYD_FIT_CUSTOMERS) -> BtydFit:
    """BG/NBD fitted on the customers of a :func:`user_features` frame, at most ``cap`` of them
    (:func:`btyd_sample`): its cost grows with the distinct (x, t_x, T) rows, and 30,000
    customers pin four parameters down. Above ``cap`` the fit is ``quick`` (one L-BFGS-B run,
    see :func:`fit_bgnbd`); at or below it, exactly the full fit."""
    sample = btyd_sample(feats, cap)
    return fit_bgnbd(*hist_btyd(sample), quick=len(sample) < len(feats))
