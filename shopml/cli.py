"""The ``shopml`` command line: demo data, validation, features, training, serving, benchmarks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from features.schema import ORDERED_AT, ContractError

app = typer.Typer(
    help="shopml: recommendations, churn risk, repurchase propensity and demand forecasts "
    "from a shop's order history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks (write experiments/results/*.json).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
#: a log file or pipe gets 120 columns (rich's default of 80 wrapped most training lines); a
#: terminal keeps its own width, and $COLUMNS still decides when set
console = Console(
    stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 120
)

#: an --as-of this long after the last order is probably a typo (every customer looks gone)
STALE_AS_OF_DAYS = 365

DataOpt = Annotated[
    str,
    typer.Option(
        "--data", "-d", help="data folder, orders file (.csv/.csv.gz/.parquet) or SQL URL"
    ),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="auto | contract | online-retail | cdnow")
]
MappingOpt = Annotated[
    Path | None,
    typer.Option("--mapping", "-m", help="column-mapping file (YAML/TOML) for a shop export"),
]
TableOpt = Annotated[str | None, typer.Option("--table", help="SQL table with the order lines")]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI; default: $SHOPML_TRACKING_URI, $MLFLOW_TRACKING_URI or "
        "./.mlflow (SQLite)",
    ),
]
QueryOpt = Annotated[
    str | None, typer.Option("--query", help="SQL query returning the order lines")
]


def live_display() -> bool:
    """rich's live lines (status spinners, the training progress bar) on a terminal only and never
    in CI (``CI=true``): logs written to a file or a CI job stay plain lines."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return console.is_terminal and not ci


def _status(text: str) -> contextlib.AbstractContextManager[Any]:
    """A transient spinner line saying what runs now (nothing when :func:`live_display` is off)."""
    return console.status(text) if live_display() else contextlib.nullcontext()


@contextlib.contextmanager
def training_progress() -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar over the stages of a training's models (``churn (1/4): fit``, time in this
    stage, stages done of all, time in all), above which log lines scroll; off when not
    :func:`live_display`. Yields the ``progress`` callback of :func:`training.train.train`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class StageElapsed(ProgressColumn):
        def render(self, task: Any) -> Text:
            since = task.fields.get("since")
            return Text("" if since is None else f"{time.monotonic() - since:.0f} s in stage")

    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        StageElapsed(),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("stages"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not live_display(),
    )
    with bar:
        task = bar.add_task("training", total=None, since=None)

        def update(done: int, total: int, text: str) -> None:
            bar.update(task, completed=done, total=total, description=text, since=time.monotonic())

        yield update


class CliError(Exception):
    """An error to show the user as one line, exiting non-zero."""


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Configure logging and threading for every command."""
    # LightGBM/implicit use OpenMP: busy-waiting threads slow fits down badly on shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask sets it on import
    # MLflow sets its own loggers to INFO on import ("Creating initial MLflow database tables")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose else "WARNING")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "bentoml", "httpx", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(data: str, fmt: str, mapping: Path | None, table: str | None, query: str | None):  # type: ignore[no-untyped-def]
    from features.io import load_dataset

    with _status(f"reading and validating {data} ..."):
        return load_dataset(data, fmt=fmt, mapping=mapping, sql_table=table, sql_query=query)


def print_report(dataset) -> None:  # type: ignore[no-untyped-def]
    """Print the validation report: rows per rule and what was done."""
    for report in dataset.reports:
        if not report.rules:
            console.print(
                f"{report.table}: {report.source}: {report.rows_in:,} rows, all kept, no rule hit"
            )
            continue
        table = Table(
            title=f"{report.table}: {report.source}  ({report.rows_in:,} rows in, "
            f"{report.rows_kept:,} kept, {report.rows_quarantined:,} quarantined)",
            title_justify="left",
        )
        for col in ("rule", "rows", "action", "detail", "example rows"):
            table.add_column(
                col,
                justify="right" if col == "rows" else "left",
                no_wrap=col in ("rule", "rows", "action"),
            )
        for rule in report.rules:
            examples = ", ".join(map(str, rule.examples))
            table.add_row(rule.rule, f"{rule.rows:,}", rule.action, rule.detail, examples)
        console.print(table)
    for note in dataset.notes:
        console.print(f"note: {note}")


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/demo"),
    customers: Annotated[int, typer.Option(min=10, help="number of customers")] = 5000,
    items: Annotated[int, typer.Option(min=5, help="number of items")] = 500,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    start: Annotated[str, typer.Option(help="first order date")] = "2023-01-01",
    end: Annotated[str, typer.Option(help="last order date (exclusive)")] = "2025-01-01",
) -> None:
    """Generate a seeded synthetic shop (orders, items, customers) in the data contract."""
    from features.synthetic import ShopConfig, write_shop

    first, last = _date(start, "--start"), _date(end, "--end")
    if last <= first:
        raise CliError(f"--end ({end}) must be after --start ({start})")
    try:
        config = ShopConfig(
            n_customers=customers, n_items=items, seed=seed, start=first.date(), end=last.date()
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    try:
        counts = write_shop(config, out, progress=live_display())
    except OSError as exc:
        if exc.strerror is None:  # atomic_dir's own refusal names the folder already
            raise CliError(str(exc)) from exc
        raise CliError(f"--out {out}: cannot write there ({exc.strerror})") from exc
    console.print(
        f"wrote {out}: {counts['orders']:,} orders, {counts['order_lines']:,} order lines "
        f"({counts['return_lines']:,} returns), {counts['items']:,} items, "
        f"{counts['customers']:,} customers"
    )


@app.command()
def validate(
    data: DataOpt,
    format: FormatOpt = "auto",
    mapping: MappingOpt = None,
    table: TableOpt = None,
    query: QueryOpt = None,
    quarantine: Annotated[
        Path | None, typer.Option(help="write quarantined rows here (Parquet)")
    ] = None,
) -> None:
    """Validate orders (and items/customers) against the data contract and print the report."""
    dataset = _load(data, format, mapping, table, query)
    print_report(dataset)
    if quarantine is not None:
        rows = dataset.quarantine.get("orders")
        if rows is not None:
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            rows.astype(str).to_parquet(quarantine, index=False)
            console.print(f"quarantined rows: {quarantine}")


@app.command()
def features(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="output folder for the feature set")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="date (YYYY-MM-DD); default: day after last order")
    ] = None,
    format: FormatOpt = "auto",
    mapping: MappingOpt = None,
    table: TableOpt = None,
    query: QueryOpt = None,
    engine: Annotated[str, typer.Option(help="pandas (in process) or dask")] = "pandas",
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786); default: a local cluster"),
    ] = None,
) -> None:
    """Validate the data and write point-in-time features, labels and a manifest as of a date."""
    from features.engine import ENGINES, build_features
    from features.pipeline import write_feature_set

    if engine not in ENGINES:
        raise CliError(f"--engine: use one of {', '.join(ENGINES)}")
    cutoff = _date(as_of)
    dataset = _load(data, format, mapping, table, query)
    print_report(dataset)
    last_order = dataset.orders[ORDERED_AT].max()
    if cutoff is not None and (cutoff - last_order).days > STALE_AS_OF_DAYS:
        console.print(
            f"[yellow]warning:[/] --as-of {cutoff.date()} is {(cutoff - last_order).days:,} days "
            f"after the last order ({last_order.date()}): every customer looks inactive then"
        )
    with _status(f"building features ({engine}) ..."):
        fs = build_features(dataset, cutoff, engine=engine, scheduler=scheduler)  # type: ignore[arg-type]
    try:
        write_feature_set(fs, dataset, out)
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write there ({exc.strerror or exc})") from exc
    console.print(
        f"features as of {fs.as_of.date()} -> {out}: {len(fs.users):,} users, "
        f"{len(fs.items):,} items, {fs.interactions.matrix.nnz:,} user-item pairs "
        f"({sum(fs.timings_s.values()):.1f} s)"
    )


@app.command()
def train(
    experiment: Annotated[
        Path, typer.Option("--experiment", "-e", help="experiment YAML (experiments/*.yaml)")
    ] = Path("experiments/demo.yaml"),
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="data folder, orders file or SQL URL; default: the experiment's data path",
        ),
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="auto | contract | online-retail | cdnow; default: the experiment's (auto)",
        ),
    ] = None,
    mapping: MappingOpt = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            "-k",
            help="churn | repurchase | demand | recommender (repeatable or comma list); "
            "default: the experiment's (all)",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="training date (YYYY-MM-DD); default: day after last order"),
    ] = None,
    tracking_uri: TrackingOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="threads for model fitting; default: $SHOPML_THREADS or 2"),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="pandas (in process) or dask: every LightGBM fit (churn, repurchase, value, "
            "demand) on a Dask cluster through lightgbm.dask"
        ),
    ] = "pandas",
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786); default: a local cluster"),
    ] = None,
) -> None:
    """Validate, build features, backtest against baselines, log to MLflow, register, promote."""
    from features.engine import ENGINES, dask_client
    from shopml.config import load_experiment
    from training.tracking import Tracker, safe_uri
    from training.train import train as run_training

    if engine not in ENGINES:
        raise CliError(f"--engine: use one of {', '.join(ENGINES)}")
    if scheduler and engine != "dask":
        raise CliError("--scheduler needs --engine dask")
    kinds = _parse_kinds(models) if models else None
    cutoff = _date(as_of)
    exp = load_experiment(experiment, as_of=cutoff.date() if cutoff is not None else None)
    overrides = {"path": data, "format": format, "mapping": str(mapping) if mapping else None}
    update = {k: v for k, v in overrides.items() if v is not None}
    if update:  # load_dataset checks the format and the mapping file
        exp = exp.model_copy(update={"data": exp.data.model_copy(update=update)})
    _check_experiment_data(experiment, exp.data.path, given=data is not None)
    with _status(f"reading and validating {exp.data.path} ..."):
        from training.train import load_experiment_data

        dataset = load_experiment_data(exp)
    print_report(dataset)
    tracker = Tracker(tracking_uri, experiment=exp.name)
    for line in _champions_of_other_experiments(tracker, exp.name, kinds or exp.models):
        console.print(f"[yellow]warning:[/] {line}")
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(dask_client(scheduler)) if engine == "dask" else None
        if client is not None:
            console.print(
                f"Dask cluster: {client.dashboard_link} ({len(client.nthreads())} workers)"
            )
        progress = stack.enter_context(training_progress())
        results = run_training(
            exp,
            tracker,
            dataset=dataset,
            kinds=kinds,
            threads=threads,
            progress=progress,
            client=client,
        )
    console.print(f"MLflow: {safe_uri(tracker.uri)} (experiment {exp.name!r})")
    for r in results:
        best = r.backtest.best_baseline()
        versus = f"; best baseline {best[0]} {best[1]:.4f}" if best else ""
        verdict = "[green]promoted[/]" if r.decision.promote else "[yellow]not promoted[/]"
        console.print(
            f"[bold]{r.kind}[/] v{r.version.version}: {r.backtest.gate_metric} "
            f"{r.backtest.value:.4f} on {r.backtest.window}{versus} -> {verdict}: "
            f"{r.decision.reason} ({r.seconds:.0f} s)"
        )


@app.command()
def score(
    out: Annotated[Path, typer.Option(help="output folder for the Parquet files")] = Path(
        "data/scores"
    ),
    lead_time: Annotated[
        float, typer.Option("--lead-time", min=0.01, max=52, help="replenishment lead time, weeks")
    ] = 2.0,
    service_level: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="target cycle service level")
    ] = 0.95,
    items: Annotated[
        Path | None, typer.Option(help="items table with stock_on_hand (csv/parquet)")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Batch outputs of the champions: customers, forecasts and reorder advice as Parquet."""
    from training.score import score as run_score
    from training.tracking import Tracker

    stock = None
    if items is not None:
        from features.io import read_file
        from features.schema import ITEMS, STOCK_ON_HAND
        from features.validation import validate_entities

        table = validate_entities(read_file(items), ITEMS, str(items)).table
        if STOCK_ON_HAND not in table.columns:
            raise CliError(f"{items}: no {STOCK_ON_HAND} column")
        # a blank stock is unknown (no stock-out advice), not zero units
        stock = table.set_index(table["item_id"].astype(str))[STOCK_ON_HAND]
    counts = run_score(
        Tracker(tracking_uri),
        out,
        lead_time_weeks=lead_time,
        service_level=service_level,
        stock_on_hand=stock,
    )
    for name, rows in counts.items():
        console.print(f"{out / (name + '.parquet')}: {rows:,} rows")


HostOpt = Annotated[str, typer.Option(help="bind address (127.0.0.1 keeps it on this machine)")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="port")]


def _require_free_port(host: str, port: int) -> None:
    """Stop with one line naming the port when something already listens there."""
    from shopml.deploy import port_in_use

    if port_in_use(host, port):
        raise CliError(
            f"port {port} on {host} is already in use: stop what runs there or pass --port "
            f"(make run PORT={port + 1})"
        )


@app.command()
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 3000,
    tracking_uri: TrackingOpt = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="worker processes; default: $SHOPML_WORKERS or 1")
    ] = None,
) -> None:
    """Pack the MLflow champions into the BentoML store and serve the API (foreground)."""
    from shopml.deploy import curl_examples, pack_champions
    from shopml.deploy import serve as run_server

    _require_free_port(host, port)
    with _status("packing the champion models ..."):
        tags = pack_champions(tracking_uri)
    if not tags:
        raise CliError("no champion model in the MLflow store: run `shopml train` first")
    for kind, tag in tags.items():
        console.print(f"{kind}: {tag}")
    user, item = _example_ids()
    typer.echo("\nTry:\n" + curl_examples(host, port, user, item) + "\n")
    raise typer.Exit(run_server(host, port, workers=workers))


@app.command("run")
def run_all(
    data: Annotated[
        str, typer.Option("--data", "-d", help="data folder to train on")
    ] = "data/demo",
    experiment: Annotated[Path, typer.Option(help="experiment YAML")] = Path(
        "experiments/demo.yaml"
    ),
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 3000,
) -> None:
    """Train every model that has no champion yet, then serve the API: what `make run` calls.

    A champion trained on other data (your shop's, trained with ``shopml train``) is served as it
    is, never replaced by a model of ``--data``; ``shopml train`` retrains on purpose.
    """
    from features.io import folder_fingerprint
    from shopml.config import MODEL_KINDS
    from training.tracking import Tracker, safe_uri

    _require_free_port(host, port)  # before a training that could take minutes
    tracker = Tracker()
    fingerprint = folder_fingerprint(data)
    missing: list[str] = []
    for kind in MODEL_KINDS:
        champion = tracker.champion(kind)
        if champion is None:
            missing.append(kind)
        elif fingerprint is None or champion.data_sha != fingerprint:
            console.print(
                f"{kind}: serving the champion v{champion.version}, trained on other data than "
                f"{data} (`shopml train` retrains it)"
            )
    if missing:
        console.print(f"training {', '.join(missing)} on {data} (no champion yet)")
        train(experiment=experiment, data=data, models=missing)
    else:
        console.print(f"every model has a champion in {safe_uri(tracker.uri)}: serving them")
    serve(host=host, port=port)


def _champions_of_other_experiments(tracker: Any, name: str, kinds: Iterable[str]) -> list[str]:
    """A warning per model kind whose champion in this store was trained by another experiment:
    registered names are per kind, not per shop, so training a second shop (``-e
    experiments/cdnow.yaml`` after ``online-retail.yaml``) into one store replaces the first
    shop's champions when the gate passes, and ``shopml serve`` then mixes the shops."""
    out = []
    for kind in kinds:
        try:
            champion = tracker.champion(kind)
            if champion is None:
                continue
            run = tracker.client.get_run(champion.run_id)
            other = tracker.client.get_experiment(run.info.experiment_id).name
        except Exception:  # a warning only: never stop a training for it
            continue
        if other != name:
            out.append(
                f"{kind}: the champion in this store (v{champion.version}) was trained by "
                f"experiment {other!r}, not {name!r}; if the gate passes this training replaces "
                "it and `shopml serve` serves one champion per kind: use a tracking store per "
                "shop (--tracking-uri)"
            )
    return out


def _check_experiment_data(experiment: Path, path: str, *, given: bool) -> None:
    """An experiment's own data path that is not there names the experiment file and --data
    (``experiments/online-retail.yaml`` reads ``../shared/data``: a clone elsewhere has none)."""
    from features.io import is_sql_url

    if given or is_sql_url(path) or Path(path).exists():
        return
    raise CliError(
        f"{path}: no such file or folder (the data path of {experiment}, read from "
        f"{Path.cwd()}); pass --data PATH to train this experiment on a copy elsewhere"
    )


def _example_ids() -> tuple[str, str]:
    """A known customer and item of the packed models, for the example calls."""
    try:
        import bentoml
        import pandas as pd

        churn = bentoml.models.get("shopml-churn:latest")
        scores = pd.read_parquet(Path(churn.path) / "scores.parquet", columns=["customer_id"])
        return str(scores["customer_id"].iloc[0]), _example_item()
    except Exception:  # examples only: any id shows the call's shape
        return "C000001", "I00001"


def _example_item() -> str:
    """The packed demand model's item with the largest next-week P50 (the first item by id,
    Online Retail's 10002, is forecast 0 units: the example showed an all-zero forecast)."""
    import bentoml
    import numpy as np

    from shopml.artifacts.demand import DemandArtifact

    art = DemandArtifact.load(Path(bentoml.models.get("shopml-demand:latest").path))
    p50 = art.forecast_arrays(art.items, 1)["p50"][:, 0]
    return str(art.items[int(np.argmax(p50))])


def _parse_kinds(models: list[str]) -> tuple[str, ...]:
    from shopml.config import MODEL_KINDS

    kinds = tuple(k.strip() for m in models for k in m.split(",") if k.strip())
    unknown = [k for k in kinds if k not in MODEL_KINDS]
    if unknown:
        raise CliError(f"--models: unknown kind(s) {unknown}; choose from {list(MODEL_KINDS)}")
    return kinds


@bench_app.command("features")
def bench_features(
    lines: Annotated[int, typer.Option(min=10_000, help="order lines to generate")] = 5_000_000,
    workdir: Annotated[Path, typer.Option(help="where the synthetic shop is written")] = Path(
        "data/bench-features"
    ),
) -> None:
    """Feature-build throughput (order lines/s) and peak memory on a synthetic shop."""
    from training.benchmarks.features import run

    run(lines, workdir)


@bench_app.command("scale")
def bench_scale(
    customers: Annotated[
        int, typer.Option(min=100, help="customers of the synthetic shop")
    ] = 1_000_000,
    items: Annotated[int, typer.Option(min=10, help="items of the synthetic shop")] = 50_000,
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", help="pandas, dask (repeatable); default: both"),
    ] = None,
    full_train: Annotated[
        bool,
        typer.Option(
            "--full-train", help="also time the whole shopml train (all four models) on the shop"
        ),
    ] = False,
    workdir: Annotated[
        Path | None, typer.Option(help="where the shop is generated (or reused)")
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="keep the result rows of other shops and engines")
    ] = False,
    threads: Annotated[int, typer.Option(min=1, help="threads for --full-train")] = 2,
) -> None:
    """Feature build and training time, peak memory: pandas vs a Dask LocalCluster."""
    import subprocess
    import sys

    from features.engine import ENGINES

    engines = engine or list(ENGINES)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise CliError(f"--engine {unknown[0]!r}: use one of {', '.join(ENGINES)}")
    cmd = [sys.executable, "-m", "training.benchmarks.scale"]
    cmd += ["--customers", str(customers), "--items", str(items), "--engines", *engines]
    cmd += ["--threads", str(threads)]
    cmd += ["--workdir", str(workdir)] if workdir else []
    cmd += ["--full-train"] if full_train else []
    cmd += ["--merge"] if merge else []
    raise typer.Exit(subprocess.call(cmd))


@bench_app.command("serve")
def bench_serve(
    workers: Annotated[int, typer.Option(min=1, help="service worker processes")] = 1,
    duration: Annotated[int, typer.Option(min=1, help="seconds per load level")] = 8,
) -> None:
    """Latency and throughput per endpoint vs a no-op endpoint at concurrency 1, 8, 32 (wrk)."""
    from training.benchmarks import serve as serve_bench

    try:
        serve_bench.run(workers=workers, duration_s=duration)
    except RuntimeError as exc:
        raise CliError(str(exc)) from exc


QUALITY_PROTOCOLS = {"online-retail": ("C", "R", "D"), "cdnow": ("C",)}


@bench_app.command("quality")
def bench_quality(
    dataset: Annotated[str, typer.Option(help="online-retail | cdnow")] = "online-retail",
    protocols: Annotated[
        list[str] | None, typer.Option("--protocol", "-p", help="C, R, D (repeatable); default all")
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="threads for protocol C (R and D use 2, like the references)")
    ] = 2,
    note: Annotated[
        str | None, typer.Option(help="what changed since the last look at the test window")
    ] = None,
) -> None:
    """Protocols of ../shared/BENCHMARKS.md on the real data; writes experiments/results/.

    Every run reads the test labels: it counts as one more ``test_looks`` in the results file."""
    import time

    from features.io import load_dataset

    if dataset not in QUALITY_PROTOCOLS:
        raise CliError(f"--dataset: unknown {dataset!r}; choose from {list(QUALITY_PROTOCOLS)}")
    chosen = tuple(p.upper() for p in protocols) if protocols else QUALITY_PROTOCOLS[dataset]
    bad = [p for p in chosen if p not in QUALITY_PROTOCOLS[dataset]]
    if bad:
        raise CliError(
            f"--protocol: {bad} not defined for {dataset}; use {QUALITY_PROTOCOLS[dataset]}"
        )
    for protocol in chosen:
        start = time.perf_counter()
        console.rule(f"{dataset}: protocol {protocol}")
        if protocol == "C":
            from training.benchmarks import customers

            customers.run(dataset, dataset, num_threads=threads, note=note)
        else:
            from training.benchmarks import DATA_PATHS
            from training.benchmarks import demand as demand_bench
            from training.benchmarks import recommend as recommend_bench

            path = DATA_PATHS[dataset]
            if not path.exists():
                raise CliError(f"{path}: the real data set is not here (see ../shared/data)")
            module = recommend_bench if protocol == "R" else demand_bench
            module.run(load_dataset(path), note=note)
        console.print(
            f"protocol {protocol}: experiments/results/{dataset}-{protocol}.json "
            f"({time.perf_counter() - start:.0f} s)"
        )


def _date(text: str | None, flag: str = "--as-of"):  # type: ignore[no-untyped-def]
    from features.purchases import as_timestamp

    if text is None:
        return None
    try:
        return as_timestamp(text)  # an offset is read as the same instant in naive UTC
    except ValueError as exc:
        raise CliError(f"{flag}: {text!r} is not a date (use YYYY-MM-DD)") from exc


def run() -> None:
    """Entry point: show contract and usage errors as one line and exit non-zero."""
    try:
        app()
    except (ContractError, CliError, ValueError, KeyError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except RuntimeError as exc:
        from training.tracking import TrackingStoreError

        if not isinstance(exc, TrackingStoreError):
            raise
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
