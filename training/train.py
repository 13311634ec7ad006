"""``shopml train``: validate -> features -> backtest -> fit -> log -> register -> promote.

One parent MLflow run per training, one nested run per model kind. A kind's champion alias moves
only when the promotion gate (:func:`training.tracking.decide`) says so; the reason is logged,
printed and stored as a tag of the version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.io import Dataset, data_fingerprint, load_dataset
from features.memory import peak_rss_gb
from features.pipeline import check_as_of, default_as_of
from shopml.config import Experiment
from training.jobs import DISTRIBUTED_KINDS, JOBS, Backtest, check_params
from training.tracking import (
    Decision,
    PromotionRefused,
    Tracker,
    VersionInfo,
    decide,
    safe_uri,
    scratch_dir,
)

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


#: The stages of one model kind, in order: ``progress`` hears of each as it starts.
STAGES = ("backtest", "fit", "log and register", "promotion gate")

#: ``progress(done, total, text)``: ``done`` of ``total`` stages of the run are finished and
#: ``text`` says what runs now ("churn (1/2): fit").
ProgressFn = Callable[[int, int, str], None]


@dataclass
class KindResult:
    """What happened to one model kind in a training."""

    kind: str
    version: VersionInfo
    backtest: Backtest
    decision: Decision
    seconds: float
    backtest_seconds: float = 0.0
    fit_seconds: float = 0.0
    #: the training process's peak resident memory (GB) when this kind was done: the kind that
    #: raised it over the previous kind's value set the peak
    peak_rss_gb: float = 0.0


def backtest_key(ds: Dataset, kind: str, as_of: pd.Timestamp, bt: Backtest) -> str:
    """Identifies a backtest: the data (source hashes), the model kind, window and metric."""
    parts = [s.sha256 for s in ds.sources] + [kind, str(as_of.date()), bt.window, bt.gate_metric]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_experiment_data(exp: Experiment) -> Dataset:
    """Read and validate the experiment's data."""
    d = exp.data
    return load_dataset(
        d.path, fmt=d.format, mapping=d.mapping, sql_table=d.sql_table, sql_query=d.sql_query
    )


def train(
    exp: Experiment,
    tracker: Tracker,
    *,
    dataset: Dataset | None = None,
    kinds: tuple[str, ...] | None = None,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    client: Client | None = None,
) -> list[KindResult]:
    """Train every requested model kind of ``exp`` and promote the ones that earn it.

    ``client``: a Dask client; the LightGBM fits of the churn, repurchase, customer-value and
    demand models then run on its cluster through ``lightgbm.dask``
    (:data:`training.jobs.DISTRIBUTED_KINDS`), and the customer models' snapshot features are
    computed on it (:class:`training.dask_models.DaskUserSnapshots`); the recommender in this
    process. ``progress``: told of every stage (:data:`STAGES`) of every kind as it starts.
    """
    kinds = kinds or exp.models
    unknown = [k for k in kinds if k not in JOBS]
    if unknown:
        raise ValueError(f"unknown model kind(s) {unknown}; available: {sorted(JOBS)}")
    settings = {kind: check_params(kind, exp.model_params(kind)) for kind in kinds}
    ds = dataset or load_experiment_data(exp)
    as_of = pd.Timestamp(exp.as_of) if exp.as_of else default_as_of(ds.orders)
    check_as_of(ds.orders, as_of)
    results = []
    with tracker.run(f"train {exp.name} as of {as_of.date()}"):
        tracker.log_params(
            {"experiment": exp.name, "as_of": str(as_of.date()), "models": ",".join(kinds)}
        )
        tracker.log_dict(_redacted(exp), "experiment.json")
        tracker.log_dict(ds.summary(), "data_manifest.json")
        total = len(STAGES) * len(kinds)
        for i, kind in enumerate(kinds):

            def stage(name: str, i: int = i, kind: str = kind) -> None:
                if progress is not None:
                    done = i * len(STAGES) + STAGES.index(name)
                    progress(done, total, f"{kind} ({i + 1}/{len(kinds)}): {name}")

            results.append(
                _train_kind(kind, settings[kind], ds, as_of, tracker, threads, client, stage)
            )
        if progress is not None:
            progress(total, total, "done")
    return results


def _train_kind(
    kind: str,
    params: dict[str, Any],
    ds: Dataset,
    as_of: pd.Timestamp,
    tracker: Tracker,
    threads: int | None,
    client: Client | None = None,
    stage: Callable[[str], None] = lambda name: None,
) -> KindResult:
    """Backtest, fit, log, register and gate one model kind with its checked ``params``."""
    start = time.perf_counter()
    stage("backtest")
    distributed = client is not None and kind in DISTRIBUTED_KINDS
    job = JOBS[kind](threads=threads, client=client) if distributed else JOBS[kind](threads=threads)
    with tracker.run(kind, nested=True, tags={"model_kind": kind}):
        where = {"fit": "lightgbm.dask"} if distributed else {}
        tracker.log_params({"kind": kind, "as_of": str(as_of.date()), **where, **params})
        log.info("%s: backtest on the %d days before %s", kind, job.window_days, as_of.date())
        try:
            bt = job.backtest(ds, as_of, params)
        except ValueError as exc:  # too little history before the window: say which model/date
            raise ValueError(
                f"{kind}: cannot backtest on the {job.window_days} days before --as-of "
                f"{as_of.date()} ({exc}); choose a later --as-of or leave it out"
            ) from exc
        backtest_s = time.perf_counter() - start
        tracker.log_params({"backtest_window": bt.window, "gate_metric": bt.gate_metric})
        for name, metrics in bt.metrics.items():
            tracker.log_metrics(metrics, prefix=f"{_slug(name)}.")
        for path, figure in bt.figures.items():
            tracker.log_figure(figure, f"plots/{path}")
        tracker.log_dict(bt.metrics, "backtest_metrics.json")
        best = bt.best_baseline()
        if best is not None and not bt.beats_baselines():
            log.warning(
                "%s: the model (%s %.4f) does NOT beat its best baseline %s (%.4f) on the backtest",
                kind,
                bt.gate_metric,
                bt.value,
                *best,
            )
        key = backtest_key(ds, kind, as_of, bt)
        log.info("%s: fit on all data before %s", kind, as_of.date())
        stage("fit")
        with scratch_dir() as tmp:
            fit_start = time.perf_counter()
            fitted = job.fit(ds, as_of, params, Path(tmp) / "model")
            fit_s = time.perf_counter() - fit_start
            stage("log and register")
            tracker.log_dict({**fitted.summary, "notes": fitted.notes}, "fit_summary.json")
            version = tracker.log_model(
                kind,
                fitted.folder,
                fitted.input_example,
                gate_metric=bt.gate_metric,
                gate_value=bt.value,
                higher_is_better=bt.higher_is_better,
                backtest_key=key,
                params=params,
                as_of=str(as_of.date()),
                data_sha=data_fingerprint(ds.sources),
            )
        stage("promotion gate")
        decision = _gate(kind, job, ds, as_of, params, bt, key, tracker)
        if decision.promote:
            try:
                tracker.set_champion(version)
            except PromotionRefused as exc:
                log.error("%s: %s", kind, exc)
                decision = Decision(False, f"refused: {exc}")
        tracker.tag_version(version, "gate_decision", decision.reason)
        verdict = "promoted to champion" if decision.promote else "NOT promoted"
        seconds = time.perf_counter() - start
        peak = peak_rss_gb()
        log.info(
            "%s: version %s %s: %s (%.0f s: backtest %.0f s, fit %.0f s, registry %.0f s; "
            "peak memory of the process so far %.1f GB)",
            kind,
            version.version,
            verdict,
            decision.reason,
            seconds,
            backtest_s,
            fit_s,
            seconds - backtest_s - fit_s,
            peak,
        )
        tracker.log_metrics(
            {
                "train_seconds": seconds,
                "backtest_seconds": backtest_s,
                "fit_seconds": fit_s,
                "peak_rss_gb": peak,
            }
        )
    return KindResult(kind, version, bt, decision, seconds, backtest_s, fit_s, peak)


def _gate(
    kind: str,
    job: Any,
    ds: Dataset,
    as_of: pd.Timestamp,
    params: dict[str, Any],
    bt: Backtest,
    key: str,
    tracker: Tracker,
) -> Decision:
    champion = tracker.champion(kind)
    champion_value = None
    if champion is not None and champion.backtest_key != key:
        if json.dumps(champion.params, sort_keys=True) == json.dumps(params, sort_keys=True):
            champion_value = bt.value  # same configuration, same backtest: same score
        else:
            log.info(
                "%s: refitting champion v%s's configuration on this backtest",
                kind,
                champion.version,
            )
            champion_value = job.backtest(ds, as_of, champion.params).value
    return decide(
        bt.value,
        champion,
        backtest_key=key,
        higher_is_better=bt.higher_is_better,
        champion_value_on_candidate_backtest=champion_value,
    )


def _redacted(exp: Experiment) -> dict[str, Any]:
    """The experiment as JSON with the password of a database URL masked."""
    out = exp.model_dump(mode="json")
    out["data"]["path"] = safe_uri(str(out["data"]["path"]))
    return out


def _slug(name: str) -> str:
    return name.replace("/", "").replace(" ", "_")
