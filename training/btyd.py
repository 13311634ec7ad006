"""BG/NBD and Gamma-Gamma maximum-likelihood fits with scipy (no lifetimes dependency).

The likelihood and prediction formulas live in :mod:`shopml.artifacts.customers` (the runtime);
this module only fits parameters and checks convergence, on arrays (:func:`fit_bgnbd`,
:func:`fit_gamma_gamma`) or on a capped sample of a customer-feature frame
(:func:`fit_bgnbd_on`). A fit that does not converge (optimizer failure or a parameter on its
bound, as BG/NBD's ``a -> 0`` on daily Online Retail data) is flagged in :class:`BtydFit` and
logged as a warning; callers decide what to do with it. "On its bound" includes a parameter the
optimizer left near the bound on a likelihood that is as high at the bound (a flat or rising
ridge, :func:`_flat_to_bound`): on Online Retail every monthly fit from 2011-02-01 to
2011-09-01 stopped at ``a`` = 0.0001-0.002 with the likelihood at the bound 0.0000-0.004 higher;
CDNOW's fits are 500-1,500 log-likelihood units from the bound and unchanged.

One boundary optimum is a model of its own, and :func:`fit_bgnbd` returns it as such: BG/NBD's
``a`` on its lower bound is the nested no-dropout model (the dropout probability p ~ Beta(a, b)
has all its mass at 0 as ``a -> 0``: the NBD / Poisson-Gamma model). Its fit, ``a`` fixed at the
bound and r, alpha, b re-fitted there, is returned converged with ``limit`` =
:data:`BGNBD_A_LIMIT` and a message saying so (:func:`_a_limit`); callers use it and report it.
The other bounds are not models shopml serves and stay "not converged": ``a`` at its upper
bound, r or alpha at either bound, b at its lower bound (p's mass at 1); b at its *upper* bound
together with ``a`` at its lower one is the same no-dropout limit (b has no effect there). So is
an optimizer failure that is not a boundary optimum (no bound, or the fit with ``a`` at its
bound fails or is less likely).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeResult, minimize

from shopml.artifacts.customers import bgnbd_loglik, gamma_gamma_loglik
from training.snapshots import sample_ids

log = logging.getLogger(__name__)

#: negative mean log-likelihood of the log-parameters
NegLogLik = Callable[[np.ndarray], Any]

LOG_BOUND = 9.0  # parameters live in [exp(-9), exp(9)] ~ [1.2e-4, 8100]
#: a fitted parameter this close to a bound (in log: within a factor ~20) is checked for a
#: likelihood that is flat or rising towards the bound (:func:`_flat_to_bound`)
NEAR_BOUND = 3.0
PROFILE_TOL = 1e-6  # mean log-likelihood per customer: "at least as likely" up to this
#: what a BG/NBD fit whose ``a`` is on its lower bound is (:func:`_a_limit`)
BGNBD_A_LIMIT = "BG/NBD at its a -> 0 limit (no dropout, the NBD model)"
#: BG/NBD and Gamma-Gamma are fitted on at most this many customers (a fixed hash sample; CDNOW's
#: 23,570 and Online Retail's 3,314 are below it) and then score every customer.
BTYD_FIT_CUSTOMERS = 30_000


class ConvergenceError(RuntimeError):
    """A BTYD fit did not converge."""


@dataclass
class BtydFit:
    """Fitted parameters, the log-likelihood and whether the fit converged (with a reason).

    ``limit``: the nested model a boundary optimum is (e.g. :data:`BGNBD_A_LIMIT`); such a fit
    is ``converged`` (the constrained fit did) and ``at_bound`` names the parameters on bounds.
    """

    params: dict[str, float]
    loglik: float
    converged: bool
    message: str = ""
    at_bound: list[str] = field(default_factory=list)
    limit: str = ""


def _flat_to_bound(
    names: list[str], negll: NegLogLik, x: np.ndarray, fun: float, done: list[str]
) -> list[str]:
    """Parameters near a bound (within :data:`NEAR_BOUND` in log) whose bound fits as well.

    On a likelihood that keeps rising (or stays flat) towards a bound, as BG/NBD's ``a -> 0``
    on daily Online Retail data, the optimizer stops anywhere on the ridge (``a`` = 0.0002 ..
    0.002 there): the fit looks interior but is not. Each such parameter is fixed at its bound
    and the others re-optimized from the fit; when that is at least as likely (within
    :data:`PROFILE_TOL` per customer), maximum likelihood is on the bound.
    """
    flat: list[str] = []
    for i, (name, v) in enumerate(zip(names, x, strict=True)):
        if name in done or abs(v) < LOG_BOUND - NEAR_BOUND:
            continue
        res = _fit_fixed(negll, x, i, float(np.copysign(LOG_BOUND, v)))
        if res.fun <= fun + PROFILE_TOL:
            flat.append(name)
    return flat


def _fit_fixed(negll: NegLogLik, x: np.ndarray, i: int, edge: float) -> OptimizeResult:
    """L-BFGS-B over the other parameters, parameter ``i`` fixed at ``edge`` (log scale), from
    ``x``; the result's ``x`` has parameter ``i`` back in place."""

    def fixed(theta: np.ndarray) -> float:
        return float(negll(np.insert(theta, i, edge)))

    bounds = [(-LOG_BOUND, LOG_BOUND)] * (len(x) - 1)
    res = minimize(fixed, np.delete(x, i), method="L-BFGS-B", bounds=bounds)
    res.x = np.insert(res.x, i, edge)
    return res


def _a_limit(names: list[str], negll: NegLogLik, fit: BtydFit, what: str) -> BtydFit:
    """BG/NBD's ``a`` on its lower bound: the fit of the nested no-dropout model.

    ``a`` is fixed at its bound and r, alpha, b re-fitted (from the fit's point, as
    :func:`_flat_to_bound` does). Returned converged with ``limit`` = :data:`BGNBD_A_LIMIT` when
    that fit succeeds, is at least as likely (:data:`PROFILE_TOL` per customer) and has r and
    alpha off their bounds and b off its lower bound; otherwise ``fit`` unchanged (not
    converged). ``fit.loglik`` is the mean log-likelihood per customer here.
    """
    logs = {n: float(np.log(v)) for n, v in fit.params.items()}
    others = set(fit.at_bound) - {"a"}
    if (
        "a" not in fit.at_bound
        or logs["a"] > -LOG_BOUND + NEAR_BOUND
        or others - {"b"}
        or ("b" in others and logs["b"] < 0)
    ):
        return fit
    x = np.array([logs[n] for n in names])
    i = names.index("a")
    res = _fit_fixed(negll, x, i, -LOG_BOUND)
    if not (res.success and np.isfinite(res.fun) and res.fun <= -fit.loglik + PROFILE_TOL):
        return fit
    lows = [n for n, v in zip(names, res.x, strict=True) if v <= -LOG_BOUND + 1e-3 and n != "a"]
    highs = [n for n, v in zip(names, res.x, strict=True) if v >= LOG_BOUND - 1e-3]
    done = ["a", "b"] if res.x[names.index("b")] > 0 else ["a"]
    if lows or set(highs) - {"b"} or _flat_to_bound(names, negll, res.x, float(res.fun), done):
        return fit  # r or alpha on a bound, or b at its lower one: not the no-dropout model
    params = {n: float(np.exp(v)) for n, v in zip(names, res.x, strict=True)}
    msg = (
        f"{BGNBD_A_LIMIT}: maximum likelihood has a on its bound ({params['a']:.3g}); r, alpha, "
        "b re-fitted with a there"
    )
    log.debug("%s: %s; params %s", what, msg, params)
    at_bound = ["a", *(["b"] if "b" in highs or "b" in others else [])]
    return BtydFit(params, -float(res.fun), True, msg, at_bound, BGNBD_A_LIMIT)


def _fit(
    names: list[str],
    negll: NegLogLik,
    x0: np.ndarray,
    what: str,
    quick: bool = False,
    limits: bool = False,
) -> BtydFit:
    """Maximum likelihood over the log-parameters in [-LOG_BOUND, LOG_BOUND]; ``limits``: a
    boundary optimum with ``a`` on its lower bound is returned as BG/NBD's no-dropout limit
    (:func:`_a_limit`). ``loglik`` is per customer (callers scale it)."""
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
    fit = BtydFit(params, -float(best_fun), bool(converged), msg, at_bound)
    if not converged and limits and np.isfinite(best_fun):
        fit = _a_limit(names, negll, fit, what)
    if not fit.converged:
        log.warning("%s fit did not converge (%s); params %s", what, msg, params)
    return fit


def _aggregate(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(np.float64)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, quick: bool = False) -> BtydFit:
    """Maximum-likelihood BG/NBD (r, alpha, a, b) from repeat count, recency and age.

    ``x`` = repeat purchases, ``t_x`` = time of the last purchase since the first, ``T`` = time
    since the first purchase (any unit; predictions use the same unit). ``quick``: one L-BFGS-B
    run instead of three starts and a Nelder-Mead polish (~10x fewer likelihood evaluations;
    for large samples, where the likelihood surface is well determined). Maximum likelihood
    with ``a`` on its lower bound returns the no-dropout (NBD) limit fit, converged, ``limit``
    set and said in ``message`` (see the module docstring).
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
    fit = _fit(["r", "alpha", "a", "b"], negll, x0, "BG/NBD", quick, limits=True)
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
