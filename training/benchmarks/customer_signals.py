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

Per customer with a purchase before ``as_of`` (a :class:`~features.purchases.Purchases`):

- ``seasonal_item_share``: mean over their purchase lines of the item's share of lines placed in
  Oct-Dec (the gift season), leaving the line itself out, shrunk to the shop's share;
- ``item_retention90``: mean over their purchase lines of the share of the item's *other*
  lines (orders older than 90 days, outcome known before ``as_of``) whose customer ordered
  again within 90 days, shrunk to the shop's share;
- ``own_repeat_share``: share of their distinct items bought in >= 2 orders;
- ``q4_spend_share``: share of their spend placed in Oct-Dec.
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

from features.arrays import counts, safe_div
from features.purchases import Purchases
from features.schema import CUSTOMER_ID
from training.benchmarks.customers import SPECS, VALIDATION_AS_OF, replay_at
from training.snapshots import UserSnapshots, default_features

log = logging.getLogger(__name__)

SIGNAL_COLUMNS = ["seasonal_item_share", "item_retention90", "own_repeat_share", "q4_spend_share"]
PRIOR_LINES = 20.0
#: extra columns per variant; ``base`` is the project's default feature set
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "all": SIGNAL_COLUMNS,
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
    present = counts(o_c, None, n) > 0
    frame = pd.DataFrame(feats, index=pd.Index(p.customers, name=CUSTOMER_ID))
    return frame.loc[present, SIGNAL_COLUMNS]


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
