"""Customer signals of what customers buy and when: a diagnostic, measured on validation and NOT
used (no model reads these columns; they are computed here only).

Run: ``python -m training.benchmarks.customer_signals --dataset online-retail|cdnow``
(``--variants base,all,seasonal,ret90,ownrep,q4spend``, ``--json PATH``). It replays protocol C
at the validation ``as_of`` dates of :data:`REPLAYS` (every label window ends by the test
``as_of``; no test label read, no test look, nothing written under ``experiments/results``) once
per variant: the default snapshot columns plus the variant's signal columns as extra LightGBM
features (:class:`SignalSnapshots`), and prints one JSON line per replay and variant and, per
variant, the paired change of the served model's AUC and Brier on the replay's own window
against ``base`` (:func:`paired_changes`).

Measured at 1081f9f with this harness (then a script in /tmp), the LightGBM + BG/NBD blend kept
where it ranked better, all four columns together: Online Retail +0.0007 mean AUC over 8
replays (better on 4: churn90 at 2011-06-01 +0.0027, 05-16 -0.0004; repurchase30 at 08-01
+0.0003, 07-16 -0.0005, 07-01 -0.0011, 06-16 +0.0017, 06-01 +0.0034, 05-01 -0.0008), Brier
+0.00017; CDNOW -0.0006 mean over 5 (better on 1; 1997-09-01 repurchase30 -0.0023).
``seasonal_item_share`` alone on Online Retail -0.0003 (3 of 8 better), ``item_retention90``
alone +0.0004 (4 of 8); on the two churn90 replays ``own_repeat_share`` +0.0006/+0.0006 and
``q4_spend_share`` +0.0015/-0.0011. None improved both data sets. Re-run with this module after
dab6910 (BG/NBD's a -> 0 limit blended again), ``--variants base,all``: the same paired changes to
4 decimals on every replay of both data sets (CDNOW Brier +0.00002). Features that already cover
the rest of the list in BENCHMARKS.md live in :mod:`features.users` (season and Q4 order shares,
orders in the same window last year, returns, item retention over 30 days, country share) and
:mod:`features.momentum`.

Session 8 (variants ``gaps``, ``itemchurn``, ``returns`` and an ``svd`` embedding, paired
against ``base`` on the first 4 Online Retail replays: churn90 06-01, 05-16, repurchase30 08-01,
07-16): ``gaps`` -0.0006 mean AUC (SE 0.0006, 2 of 4 better), ``itemchurn`` +0.0002 (SE
0.0005, 3 of 4), ``returns`` -0.0001 (SE 0.0006, 2 of 4); the embedding +0.0019 (SE 0.0005, 4
of 4; Brier -0.0007) became :mod:`features.embedding` (a default column of the models; its
columns are no longer computed here).

Per customer with a purchase before ``as_of`` (a :class:`~features.purchases.Purchases`):

- ``seasonal_item_share``: mean over their purchase lines of the item's share of lines placed in
  Oct-Dec (the gift season), leaving the line itself out, shrunk to the shop's share;
- ``item_retention90``: mean over their purchase lines of the share of the item's *other*
  lines (orders older than 90 days, outcome known before ``as_of``) whose customer ordered
  again within 90 days, shrunk to the shop's share;
- ``own_repeat_share``: share of their distinct items bought in >= 2 orders;
- ``q4_spend_share``: share of their spend placed in Oct-Dec;
- ``gap_survival``, ``gap_next30``, ``gap_next90``, ``own_gap_exceed``: their gaps between
  purchase days as a log-normal (shrunk to the shop's), read at the current gap
  (:func:`gap_signals`);
- ``item_churn90``, ``last_item_churn90``: the share of the other buyers of their items (bought
  more than 90 days ago) with no purchase in the last 90 days (:func:`item_churn_signals`);
- ``return_rate_90d``, ``return_rate_change``: returns lately and their change
  (:func:`return_signals`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from features.arrays import counts, run_starts, safe_div
from features.purchases import DAY, Purchases
from features.schema import CUSTOMER_ID
from training.benchmarks.customers import SPECS, VALIDATION_AS_OF, replay_at
from training.snapshots import UserSnapshots, default_features

log = logging.getLogger(__name__)

OLD_SIGNAL_COLUMNS = [
    "seasonal_item_share",
    "item_retention90",
    "own_repeat_share",
    "q4_spend_share",
]
GAP_COLUMNS = ["gap_survival", "gap_next30", "gap_next90", "own_gap_exceed"]
ITEM_CHURN_COLUMNS = ["item_churn90", "last_item_churn90"]
RETURN_COLUMNS = ["return_rate_90d", "return_rate_change"]
SIGNAL_COLUMNS = [
    *OLD_SIGNAL_COLUMNS,
    *GAP_COLUMNS,
    *ITEM_CHURN_COLUMNS,
    *RETURN_COLUMNS,
]
PRIOR_LINES = 20.0
PRIOR_GAPS = 2.0  # pseudo-gaps at the shop's log-gap mean and variance
PRIOR_BUYERS = 20.0
#: extra columns per variant; ``base`` is the project's default feature set
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "all": OLD_SIGNAL_COLUMNS,
    "gaps": GAP_COLUMNS,
    "itemchurn": ITEM_CHURN_COLUMNS,
    "returns": RETURN_COLUMNS,
    "seasonal": ["seasonal_item_share"],
    "ret90": ["item_retention90"],
    "ownrep": ["own_repeat_share"],
    "q4spend": ["q4_spend_share"],
}
#: protocol C's validation replays, plus Online Retail's mid-month repurchase30 replays
#: 2011-07-16 and 2011-06-16 (the measurement's 8 and 5 replays)
REPLAYS: dict[str, dict[str, list[str]]] = {
    "online-retail": {
        "churn90": VALIDATION_AS_OF["online-retail"]["churn90"],
        "repurchase30": [
            "2011-08-01",
            "2011-07-16",
            "2011-07-01",
            "2011-06-16",
            "2011-06-01",
            "2011-05-01",
        ],
    },
    "cdnow": VALIDATION_AS_OF["cdnow"],
}


def _loo_share(
    hits: np.ndarray, total: np.ndarray, item: np.ndarray, own_hit: np.ndarray, own: np.ndarray
) -> np.ndarray:
    """Per line, the item's smoothed share ``hits / total`` without the line itself."""
    overall = float(hits.sum()) / float(total.sum()) if total.sum() > 0 else 0.0
    return (hits[item] - own_hit + PRIOR_LINES * overall) / (total[item] - own + PRIOR_LINES)


def customer_signals(p: Purchases) -> pd.DataFrame:
    """:data:`SIGNAL_COLUMNS` of every customer with a purchase (index: customer id)."""
    n = p.n_customers
    o_c = p.o_customer
    month = p.o_when.astype("datetime64[M]").astype(np.int64) % 12 + 1
    o_q4 = month >= 10
    line_order = p.line_order
    item = p.item
    line_c = o_c[line_order]
    n_lines = counts(line_c, None, n)
    # seasonal items
    line_q4 = o_q4[line_order].astype(np.float64)
    q4_hits = np.bincount(item, weights=line_q4, minlength=p.n_items)
    all_lines = np.bincount(item, minlength=p.n_items).astype(np.float64)
    seasonal = _loo_share(q4_hits, all_lines, item, line_q4, np.ones(len(item)))
    feats = {"seasonal_item_share": safe_div(counts(line_c, seasonal, n), n_lines)}
    # item retention over 90 days (orders whose 90-day outcome is known before as_of)
    seq = p.by_customer
    s_c = o_c[seq]
    s_age = p.o_age[seq]
    again = (s_c[1:] == s_c[:-1]) & (s_age[:-1] - s_age[1:] <= 90.0)
    came_back = np.zeros(p.n_orders, dtype=bool)
    came_back[seq[:-1]] = again
    known = p.o_age > 90.0
    line_known = known[line_order].astype(np.float64)
    line_hit = (came_back & known)[line_order].astype(np.float64)
    ret_hits = np.bincount(item, weights=line_hit, minlength=p.n_items)
    ret_lines = np.bincount(item, weights=line_known, minlength=p.n_items)
    ret = _loo_share(ret_hits, ret_lines, item, line_hit, line_known)
    feats["item_retention90"] = safe_div(counts(line_c, ret, n), n_lines)
    # own repeat items
    ch = p.chains
    repeat = (ch.pair_end > ch.pair_start).astype(np.float64)
    pairs = counts(ch.pair_customer, None, n)
    feats["own_repeat_share"] = safe_div(counts(ch.pair_customer, repeat, n), pairs)
    # spend in the gift season
    value = p.order_values()
    feats["q4_spend_share"] = safe_div(counts(o_c[o_q4], value[o_q4], n), counts(o_c, value, n))
    feats.update(gap_signals(p))
    feats.update(item_churn_signals(p))
    feats.update(return_signals(p, value))
    present = counts(o_c, None, n) > 0
    frame = pd.DataFrame(feats, index=pd.Index(p.customers, name=CUSTOMER_ID))
    return frame.loc[present, SIGNAL_COLUMNS]


def _log_sf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """log P(G > x) of a log-normal gap G (log-mean ``mu``, log-sd ``sd``); 0 for x <= 0."""
    from scipy.special import log_ndtr

    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(np.maximum(x, 1e-9)) - mu) / sd
    return np.where(x > 0, log_ndtr(-z), 0.0)


def gap_signals(p: Purchases) -> dict[str, np.ndarray]:
    """The customer's own distribution of gaps between purchase days (log-normal, shrunk to the
    shop's with :data:`PRIOR_GAPS` pseudo-gaps), read at the current gap (days since the last
    purchase day, ``r``): ``gap_survival`` P(gap > r), ``gap_next{30,90}`` P(gap <= r + h | gap >
    r) (the gap's hazard over the next h days), ``own_gap_exceed`` the smoothed share of their
    own gaps longer than r."""
    n = p.n_customers
    seq = p.by_customer
    s_c = p.o_customer[seq]
    s_day = p.o_day[seq]
    is_day = run_starts(s_c, s_day)
    d_c, d_day = s_c[is_day], s_day[is_day]
    same = d_c[1:] == d_c[:-1]
    gaps = np.diff(d_day)[same].astype(np.float64)
    g_c = d_c[1:][same]
    out = {c: np.full(n, np.nan) for c in GAP_COLUMNS}
    if len(gaps) < 2:
        return out
    lg = np.log(gaps)
    mu0, var0 = float(lg.mean()), float(lg.var())
    k = counts(g_c, None, n)
    s1, s2 = counts(g_c, lg, n), counts(g_c, lg * lg, n)
    mu = (s1 + PRIOR_GAPS * mu0) / (k + PRIOR_GAPS)
    ss = s2 - 2 * mu * s1 + k * mu**2  # own squared deviations from mu
    var = (ss + PRIOR_GAPS * (var0 + (mu0 - mu) ** 2)) / (k + PRIOR_GAPS)
    sd = np.sqrt(np.maximum(var, 1e-4))
    last_day = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_day, d_c, d_day)
    as_of_day = int(np.datetime64(p.as_of, "D").astype(np.int64))
    r = (as_of_day - last_day).astype(np.float64)
    ls_r = _log_sf(r, mu, sd)
    out["gap_survival"] = np.exp(ls_r)
    for h in (30, 90):
        out[f"gap_next{h}"] = -np.expm1(_log_sf(r + h, mu, sd) - ls_r)
    longer = counts(g_c[gaps > r[g_c]], None, n)
    out["own_gap_exceed"] = (longer + 0.5) / (k + 1.0)
    has = counts(d_c, None, n) > 0
    for c in GAP_COLUMNS:
        out[c][~has] = np.nan
    return out


def item_churn_signals(p: Purchases, horizon: float = 90.0) -> dict[str, np.ndarray]:
    """Item-level churn of the *other* buyers (known before ``as_of``): of the customers who had
    bought the item more than ``horizon`` days before ``as_of``, the share with no purchase in
    the last ``horizon`` days (leaving the customer out, shrunk to the shop's share with
    :data:`PRIOR_BUYERS`). ``item_churn90``: mean over the customer's distinct items;
    ``last_item_churn90``: over the items of their most recent purchase day."""
    n = p.n_customers
    ch = p.chains
    pc, pi = ch.pair_customer, ch.item[ch.pair_start]
    first_age = p.o_age[ch.order[ch.pair_start]]
    last_age = np.full(n, np.inf)
    np.minimum.at(last_age, p.o_customer, p.o_age)
    churned = (last_age > horizon).astype(np.float64)
    old = first_age > horizon  # bought before as_of - horizon: the outcome is known
    buyers = np.bincount(pi[old], minlength=p.n_items).astype(np.float64)
    churn = np.bincount(pi[old], weights=churned[pc[old]], minlength=p.n_items)
    out = {c: np.full(n, np.nan) for c in ITEM_CHURN_COLUMNS}
    if buyers.sum() <= 0 or np.count_nonzero(buyers) < 2:
        return out
    overall = float(churn.sum() / buyers.sum())
    own_b = old.astype(np.float64)
    own_c = own_b * churned[pc]
    rate = (churn[pi] - own_c + PRIOR_BUYERS * overall) / (buyers[pi] - own_b + PRIOR_BUYERS)
    n_pairs = counts(pc, None, n)
    out["item_churn90"] = safe_div(counts(pc, rate, n), n_pairs)
    # pairs whose newest purchase is on the customer's last purchase day
    pair_day = p.o_day[ch.order[ch.pair_end]]
    last_day = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_day, pc, pair_day)
    last = pair_day == last_day[pc]
    out["last_item_churn90"] = safe_div(counts(pc[last], rate[last], n), counts(pc[last], None, n))
    return out


def return_signals(p: Purchases, o_value: np.ndarray) -> dict[str, np.ndarray]:
    """Returns lately: returned value over the last 90 days / spend over them
    (``return_rate_90d``) and its change against the customer's rate before then."""
    n = p.n_customers
    out = {c: np.full(n, np.nan) for c in RETURN_COLUMNS}
    rc = p.customer_all[p.ret]
    spend90 = counts(p.o_customer[p.o_age <= 90], o_value[p.o_age <= 90], n)
    spend_old = counts(p.o_customer[p.o_age > 90], o_value[p.o_age > 90], n)
    if not len(rc):
        out["return_rate_90d"] = np.where(spend90 > 0, 0.0, np.nan)
        out["return_rate_change"] = np.where((spend90 > 0) & (spend_old > 0), 0.0, np.nan)
        return out
    from features.schema import ORDERED_AT, QUANTITY, UNIT_PRICE

    rows = p.ret
    r_val = np.abs(
        p.orders[QUANTITY].to_numpy(np.float64)[rows]
        * p.orders[UNIT_PRICE].to_numpy(np.float64)[rows]
    )
    when = p.orders[ORDERED_AT].to_numpy()[rows]
    r_age = np.asarray((np.datetime64(p.as_of) - when) / DAY, dtype=np.float64)  # type: ignore[operator]
    ok = rc >= 0
    recent = ok & (r_age <= 90)
    earlier = ok & (r_age > 90)
    rate90 = safe_div(counts(rc[recent], r_val[recent], n), spend90)
    rate_old = safe_div(counts(rc[earlier], r_val[earlier], n), spend_old)
    out["return_rate_90d"] = rate90
    out["return_rate_change"] = rate90 - rate_old
    return out


class SignalSnapshots(UserSnapshots):
    """The snapshot cache with :data:`SIGNAL_COLUMNS` joined to every cutoff's features."""

    def compute(self, cutoff: pd.Timestamp, sample: pd.Index | None) -> pd.DataFrame:
        frame = super().compute(cutoff, sample)
        extra = customer_signals(Purchases.of(self.orders, cutoff)).reindex(frame.index)
        return pd.concat([frame, extra], axis=1)


def replay(
    dataset: str,
    variants: list[str],
    dates: dict[str, list[str]] | None = None,
    *,
    num_threads: int = 2,
) -> list[dict[str, Any]]:
    """Protocol C at each replay (default :data:`REPLAYS`) once per variant: one record per
    replay and variant (served model's AUC and Brier on the replay's window, its Brier minus the
    best reference's, whether the blend was kept, its validation AUC, seconds)."""
    from features.io import load_dataset

    ds = load_dataset(SPECS[dataset].path)
    cache = SignalSnapshots(ds.orders, items=ds.items, customers=ds.customers)
    out: list[dict[str, Any]] = []
    for task, days in (dates or REPLAYS[dataset]).items():
        for day in days:
            cols = cache.features(pd.Timestamp(day)).columns
            base = [c for c in default_features(cols) if c not in SIGNAL_COLUMNS]
            for name in variants:
                t0 = time.perf_counter()
                config = {"features": base + VARIANTS[name]}
                rows, d = replay_at(ds, day, task, cache, config, num_threads)
                r = rows[0]
                rec = {
                    "task": task,
                    "as_of": day,
                    "variant": name,
                    "auc": r["roc_auc"],
                    "brier": r["brier"],
                    "brier_vs_ref": r["brier_vs_best_ref"],
                    "served": r.get("served"),
                    "blend": d["blended_with_bgnbd"],
                    "val_auc": d["validation"]["lightgbm"]["roc_auc"],
                    "s": round(time.perf_counter() - t0, 1),
                }
                out.append(rec)
                print(json.dumps(rec), flush=True)
    return out


def paired_changes(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant other than ``base``: its AUC and Brier minus ``base``'s on the same replay
    (task, as_of), their means, and on how many replays its AUC was higher."""
    base = {(r["task"], r["as_of"]): r for r in records if r["variant"] == "base"}
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        b = base.get((r["task"], r["as_of"]))
        if r["variant"] == "base" or b is None:
            continue
        v = out.setdefault(r["variant"], {"replays": {}, "auc": [], "brier": []})
        d_auc, d_brier = r["auc"] - b["auc"], r["brier"] - b["brier"]
        v["replays"][f"{r['task']}@{r['as_of']}"] = round(d_auc, 4)
        v["auc"].append(d_auc)
        v["brier"].append(d_brier)
    return {
        name: {
            "replays": v["replays"],
            "mean_auc_change": round(float(np.mean(v["auc"])), 4),
            "mean_brier_change": round(float(np.mean(v["brier"])), 5),
            "better": int(np.sum(np.asarray(v["auc"]) > 0)),
            "n": len(v["auc"]),
        }
        for name, v in out.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SPECS), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--variants",
        default="base,all",
        help=f"comma-separated, from {', '.join(VARIANTS)} (base is always run)",
    )
    parser.add_argument("--json", default=None, help="also write the records and summary here")
    args = parser.parse_args()
    names = ["base", *[v for v in args.variants.split(",") if v and v != "base"]]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.ERROR)
    records = replay(args.dataset, names, num_threads=args.threads)
    summary = paired_changes(records)
    for name, s in summary.items():
        print(
            f"{args.dataset} {name} vs base: AUC {s['mean_auc_change']:+.4f} mean over "
            f"{s['n']} replays (better on {s['better']}), Brier {s['mean_brier_change']:+.5f}; "
            + ", ".join(f"{k} {v:+.4f}" for k, v in s["replays"].items())
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"records": records, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
