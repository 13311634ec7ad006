"""Paired validation of a recommender change on protocol R's replays (no test label is read).

Every change in ``experiments/results/online-retail-R-diagnostics.md`` since session 9 is
measured this way. Fit the code of the current checkout at each replay of :data:`REPLAYS` for
each seed, write every fit's R-all / R-new / R-cold NDCG@10 to a JSON file, then compare two such
files fit by fit (same replay, same seed): the mean difference, its standard error and the
number of fits better and worse, overall and per replay::

    python -m training.benchmarks.recommend_paired runs/base.json          # on main
    python -m training.benchmarks.recommend_paired runs/new.json --against runs/base.json
    python -m training.benchmarks.recommend_paired runs/b3.json --params '{"ranker_bags": 3}' \\
        --against runs/base.json

``--params`` passes ``RecommenderModel`` keyword arguments (JSON). Run the two sides on the same
machine: the fit is chaotic in floating point, so the same code scores differently on another
CPU. 18 fits take about 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

#: the validation replays of protocol R (each 90-day window ends by the test as_of 2011-09-01)
REPLAYS = ("2011-06-03", "2011-04-18", "2011-05-10")
SEEDS = (0, 1, 2, 3, 4, 5)
TASKS = ("R-all", "R-new", "R-cold")
DATA = "../shared/data/online_retail/online_retail.parquet"


def replay_scores(
    dataset: Any,
    replays: tuple[str, ...] = REPLAYS,
    seeds: tuple[int, ...] = SEEDS,
    params: dict[str, Any] | None = None,
) -> dict[str, float]:
    """NDCG@10 of every fit, keyed ``"<replay>/<seed>/<task>"``."""
    from training.benchmarks.recommend import validate

    out: dict[str, float] = {}
    start = time.perf_counter()
    for replay in replays:
        rows = validate(
            dataset,
            as_of=pd.Timestamp(replay),
            seeds=seeds,
            write=False,
            model_params=params,
            with_references=False,
        )
        for r in rows:
            if r["model"].startswith("shopml seed "):
                out[f"{replay}/{r['model'].rsplit(' ', 1)[1]}/{r['task']}"] = r["ndcg@10"]
        print(f"replay {replay} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return out


def paired(base: dict[str, float], new: dict[str, float]) -> list[dict[str, Any]]:
    """Per task (and per replay within it): ``new`` minus ``base`` over the fits both hold.

    Raises ``ValueError`` when the files share no fit (different replays or seeds)."""
    shared = sorted(set(base) & set(new))
    if not shared:
        raise ValueError("the two files share no fit (replay/seed/task): nothing to pair")
    rows = []
    for task in TASKS:
        keys = [k for k in shared if k.endswith(f"/{task}")]
        if not keys:
            continue
        d = np.array([new[k] - base[k] for k in keys])
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
        replays = sorted({k.split("/")[0] for k in keys})
        rows.append(
            {
                "task": task,
                "fits": len(d),
                "mean": round(float(d.mean()), 4),
                "se": None if se is None else round(se, 4),
                "better": int((d > 0).sum()),
                "worse": int((d < 0).sum()),
                "per_replay": {
                    r: round(float(np.mean([new[k] - base[k] for k in keys if k.startswith(r)])), 4)
                    for r in replays
                },
            }
        )
    return rows


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read scores from {path}: {e}") from e
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise SystemExit(f"{path} is not a scores file of this tool ({{'replay/seed/task': ndcg}})")
    return data


def _params(text: str) -> dict[str, Any]:
    """``--params``: a JSON object of ``RecommenderModel`` keyword arguments."""
    from training.recommender import RecommenderModel

    try:
        params = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(params, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of RecommenderModel arguments")
    known = set(inspect.signature(RecommenderModel).parameters) - {"random_state"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown RecommenderModel argument(s) {unknown}; known: {sorted(known)}"
        )
    return params


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected: {e}") from e
    if not seeds:
        raise argparse.ArgumentTypeError("at least one seed")
    return seeds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write this checkout's scores (JSON)")
    parser.add_argument("--against", type=Path, default=None, help="scores file to pair with")
    parser.add_argument("--params", type=_params, default={}, metavar="JSON")
    parser.add_argument("--seeds", type=_seeds, default=SEEDS, metavar="0,1,...")
    parser.add_argument(
        "--compare-only", action="store_true", help="pair OUT with --against, fit nothing"
    )
    args = parser.parse_args(argv)
    if args.compare_only and args.against is None:
        parser.error("--compare-only needs --against")
    base = _read(args.against) if args.against else None
    if args.compare_only:
        scores = _read(args.out)
    else:
        from features.io import load_dataset

        logging.basicConfig(level=logging.WARNING)
        scores = replay_scores(load_dataset(DATA), seeds=args.seeds, params=args.params)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(scores, indent=1))
        print(f"wrote {len(scores)} scores to {args.out}")
    if base is not None:
        try:
            rows = paired(base, scores)
        except ValueError as e:
            raise SystemExit(str(e)) from e
        for r in rows:
            se = "n/a" if r["se"] is None else f"{r['se']:.4f}"
            per = ", ".join(f"{k} {v:+.4f}" for k, v in r["per_replay"].items())
            print(
                f"{r['task']}: {r['mean']:+.4f} (SE {se}; {r['better']} better, {r['worse']} "
                f"worse of {r['fits']}); per replay {per}"
            )


if __name__ == "__main__":
    main()
