"""The feature set, its manifest and the CLI, end to end on a tiny synthetic shop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import load_dataset
from features.pipeline import FeatureSet, build_feature_set, write_feature_set
from features.synthetic import ShopConfig, write_shop
from features.threads import ENV, feature_threads, helpers, parallel_map
from shopml.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop") / "demo"
    write_shop(ShopConfig(n_customers=300, n_items=60, seed=3), out, progress=False)
    return out


def test_feature_set_and_manifest(shop: Path, tmp_path: Path) -> None:
    dataset = load_dataset(shop)
    fs = build_feature_set(dataset, "2024-09-01")
    assert fs.labels is not None and len(fs.labels) == len(fs.users)
    assert fs.interactions.matrix.shape == (
        len(fs.interactions.user_ids),
        len(fs.interactions.item_ids),
    )
    out = write_feature_set(fs, dataset, tmp_path / "features")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["as_of"] == "2024-09-01"
    assert manifest["rows"]["users"] == len(fs.users)
    assert {s["table"] for s in manifest["sources"]} == {"orders", "items", "customers"}
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    users = pd.read_parquet(out / "users.parquet")
    assert list(users.columns[1:]) == manifest["features"]["users"]


def test_features_use_only_rows_before_as_of(shop: Path) -> None:
    dataset = load_dataset(shop)
    as_of = pd.Timestamp("2024-06-01")
    before = build_feature_set(dataset, as_of)
    cut = dataset.orders[dataset.orders["ordered_at"] < as_of].reset_index(drop=True)
    dataset.orders = cut
    after = build_feature_set(dataset, as_of)
    pd.testing.assert_frame_equal(before.users, after.users)
    pd.testing.assert_frame_equal(before.items, after.items)
    assert (before.interactions.matrix != after.interactions.matrix).nnz == 0
    assert after.labels is None  # no rows after as_of: no labels


def test_as_of_before_data_is_refused(shop: Path) -> None:
    with pytest.raises(ValueError, match="on or before the first order"):
        build_feature_set(load_dataset(shop), "2000-01-01")


def test_cli_features_writes_output(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "f"
    result = runner.invoke(
        app, ["features", "--data", str(shop), "--as-of", "2024-09-01", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").exists()


def test_cli_validate_bad_file_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text("customer_id,order_id\nc1,o1\n")
    result = runner.invoke(app, ["validate", "--data", str(bad)])
    assert result.exit_code != 0
    assert "missing required column" in str(result.exception)


def test_cli_entry_point_prints_one_line_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "orders.csv"
    bad.write_text("customer_id,order_id\nc1,o1\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from shopml.cli import run; run()", "validate", "--data", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "missing required column(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unusable_tracking_store_is_one_line(shop: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    args = ["train", "--data", str(shop), "-k", "churn", "--tracking-uri", str(blocker / "store")]
    proc = subprocess.run(
        [sys.executable, "-c", "from shopml.cli import run; run()", *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "cannot use the MLflow tracking store" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_report_shows_whole_rule_names(tmp_path: Path) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text(
        "customer_id,order_id,item_id,ordered_at,quantity,unit_price\n"
        "c1,o1,i1,2024-01-02,1,0\nc1,o2,i1,2024-01-03,1,2.5\n"
    )
    result = runner.invoke(app, ["validate", "--data", str(bad)], env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    assert "non_positive_price" in result.output  # not cut to fit a narrow terminal
    assert "│ quarantined │" in result.output


def test_cli_bad_experiment_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "exp.yaml"
    bad.write_text("data: {path: x}\nchurn_days: 3\n")
    result = runner.invoke(app, ["train", "-e", str(bad)])
    assert result.exit_code != 0
    assert str(result.exception) == f"{bad}: churn_days: Extra inputs are not permitted"


def test_cli_experiment_data_elsewhere_names_data_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """experiments/online-retail.yaml reads ../shared/data: in a clone elsewhere the error named
    only the path ('../shared/data/...: no such file or folder'), not the experiment or --data."""
    exp = tmp_path / "retail.yaml"
    exp.write_text("name: r\ndata: {path: ../shared/data/online_retail/x.parquet}\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "-e", str(exp), "--tracking-uri", str(tmp_path / "m")])
    assert result.exit_code != 0
    message = str(result.exception)
    assert message.startswith("../shared/data/online_retail/x.parquet: no such file or folder")
    assert f"the data path of {exp}, read from {tmp_path}" in message
    assert "pass --data PATH" in message
    assert not (tmp_path / "m").exists()  # refused before any tracking store is made


def test_cli_train_warns_before_replacing_another_experiments_champion(
    shop: Path, tmp_path: Path
) -> None:
    """Registered names are per kind: training a second shop (-e cdnow.yaml, then -e
    online-retail.yaml) into one store silently replaced the first shop's champions."""
    store = str(tmp_path / "m")
    outputs = []
    for name in ("shop-a", "shop-a", "shop-b"):
        exp = tmp_path / f"{name}.yaml"
        exp.write_text(f"name: {name}\ndata: {{path: {shop}}}\nmodels: [repurchase]\n")
        result = runner.invoke(app, ["train", "-e", str(exp), "--tracking-uri", store])
        assert result.exit_code == 0, result.output
        outputs.append(" ".join(result.output.split()))
    assert "warning" not in outputs[0] and "warning" not in outputs[1]  # its own champion
    text = outputs[2]
    assert "warning: repurchase: the champion in this store (v1) was trained by experiment " in text
    assert "'shop-a', not 'shop-b'" in text
    assert "use a tracking store per shop (--tracking-uri)" in text


def test_cli_bad_as_of(shop: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["features", "--data", str(shop), "--as-of", "yesterday-ish", "--out", str(tmp_path / "x")],
    )
    assert result.exit_code != 0
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--models", "telepathy"], "unknown kind"),
        (["train", "-e", "missing.yaml"], "not found"),
        (["bench", "quality", "--dataset", "nowhere"], "unknown 'nowhere'"),
        (["demo-data", "--start", "2025-01-01", "--end", "2024-01-01"], "must be after --start"),
        (["score", "--service-level", "1.5"], "--service-level"),
        (["train", "--as-of", "2024-13-45"], "--as-of: '2024-13-45' is not a date"),
        (["demo-data", "--start", "2024-99-01"], "--start: '2024-99-01' is not a date"),
        (["train", "--format", "telepathy", "-d", "{shop}"], "unknown format 'telepathy'"),
        (["train", "--mapping", "nowhere.yaml", "-d", "{shop}"], "mapping file not found"),
        # --as-of is checked before the data is read
        (["features", "-d", "nowhere", "--as-of", "soon", "--out", "x"], "--as-of: 'soon'"),
        (["features", "-d", "{shop}", "--out", "/dev/null/x"], "--out /dev/null/x: cannot write"),
        # a cutoff one month into the data: which model, which date, what to do (the message
        # spoke of 'as_of 2022-11-03', the backtest's start, which the user never typed)
        (
            [
                "train",
                "-d",
                "{shop}",
                "-k",
                "churn",
                "--as-of",
                "2023-02-01",
                "--tracking-uri",
                "{tmp}/store",
            ],
            "churn: cannot backtest on the 90 days before --as-of 2023-02-01 (",
        ),
    ],
)
def test_cli_refuses_bad_arguments(
    args: list[str], message: str, shop: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, [a.format(shop=shop, tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    assert message in (str(result.exception) + result.output)


def _same_feature_set(a: FeatureSet, b: FeatureSet) -> None:
    pd.testing.assert_frame_equal(a.users, b.users, check_exact=True)
    pd.testing.assert_frame_equal(a.items, b.items, check_exact=True)
    assert a.labels is not None and b.labels is not None
    pd.testing.assert_frame_equal(a.labels, b.labels, check_exact=True)
    ma, mb = a.interactions.matrix.tocsr(), b.interactions.matrix.tocsr()
    for part in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(ma, part), getattr(mb, part))
    assert np.array_equal(a.interactions.user_ids, b.interactions.user_ids)
    assert np.array_equal(a.interactions.item_ids, b.interactions.item_ids)
    pd.testing.assert_index_equal(a.demand.items, b.demand.items, exact=True)
    pd.testing.assert_index_equal(a.demand.weeks, b.demand.weeks, exact=True)
    assert np.array_equal(a.demand.units, b.demand.units)
    assert np.array_equal(a.demand.price, b.demand.price, equal_nan=True)


def test_threads_give_identical_feature_sets(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "1")
    one = load_dataset(shop)
    monkeypatch.setenv(ENV, "2")
    two = load_dataset(shop)  # Parquet columns read on two threads
    pd.testing.assert_frame_equal(one.orders, two.orders, check_exact=True)
    assert [r.to_dict() for r in one.reports] == [r.to_dict() for r in two.reports]
    _same_feature_set(
        build_feature_set(one, "2024-09-01", threads=1),
        build_feature_set(two, "2024-09-01", threads=2),
    )


def test_thread_count_from_argument_env_or_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert feature_threads() == min(2, os.cpu_count() or 1)
    assert feature_threads(3) == 3
    monkeypatch.setenv(ENV, " 1 ")
    assert feature_threads() == 1
    monkeypatch.setenv(ENV, "two")
    with pytest.raises(ValueError, match="SHOPML_THREADS='two'"):
        feature_threads()
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        feature_threads(0)


def test_model_fitting_threads_checked_like_the_feature_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training.jobs import default_threads

    monkeypatch.delenv(ENV, raising=False)
    assert default_threads() == min(8, os.cpu_count() or 1)
    monkeypatch.setenv(ENV, "3")
    assert default_threads() == 3
    for raw in ("abc", "0", "-2", "1.5"):
        monkeypatch.setenv(ENV, raw)
        with pytest.raises(ValueError, match=f"SHOPML_THREADS='{raw}'"):
            default_threads()


@pytest.mark.parametrize("threads", [1, 2])
def test_helpers_and_parallel_map_keep_order_and_errors(threads: int) -> None:
    assert parallel_map(lambda x: x * x, range(7), threads) == [0, 1, 4, 9, 16, 25, 36]
    with helpers(threads) as pool:
        ok = pool.submit(sum, [1, 2, 3])
        bad = pool.submit(int, "x")
    assert ok.result() == 6
    with pytest.raises(ValueError, match="invalid literal"):
        bad.result()


def test_bench_scale_passes_its_options_and_rejects_unknown_engines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import subprocess

    calls: list[list[str]] = []

    def call(cmd: list[str]) -> int:
        calls.append(cmd)
        return 0

    monkeypatch.setattr(subprocess, "call", call)
    args = ["bench", "scale", "--customers", "300", "--items", "20", "--engine", "pandas"]
    result = runner.invoke(app, [*args, "--full-train", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cmd = calls[0][calls[0].index("training.benchmarks.scale") + 1 :]
    assert cmd[:6] == ["--customers", "300", "--items", "20", "--engines", "pandas"]
    assert "--full-train" in cmd and str(tmp_path) in cmd and "--merge" not in cmd

    bad = runner.invoke(app, ["bench", "scale", "--engine", "spark"])
    assert bad.exit_code != 0 and "use one of pandas, dask" in str(bad.exception)
    assert len(calls) == 1  # nothing started for the bad engine


def test_serve_passes_sigterm_to_the_server(tmp_path: Path) -> None:
    """``kill <pid of shopml serve>`` stops the server it started (was left running orphaned)."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from shopml.deploy import run_foreground; "
            f"sys.exit(run_foreground([sys.executable, '-c', {child!r}], dict(os.environ)))",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=10) != 0  # the server's exit status: killed by SIGTERM
        with pytest.raises(ProcessLookupError):
            os.kill(child_pid, 0)
    finally:
        parent.kill()


@pytest.mark.parametrize("command", ["serve", "run"])
def test_busy_port_is_one_line_before_any_work(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A taken port is named at once (was: models packed, curl examples, then a bentoml traceback)."""
    import socket

    import shopml.deploy

    def must_not_run(*_args: object, **_kwargs: object) -> dict[str, str]:
        raise AssertionError("packed or trained although the port is taken")

    monkeypatch.setattr(shopml.deploy, "pack_champions", must_not_run)
    monkeypatch.setattr("shopml.cli.train", must_not_run)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        args = [command, "--port", str(port)]
        if command == "run":
            args += ["--data", str(tmp_path)]
        result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert f"port {port} on 127.0.0.1 is already in use" in str(result.exception)
    assert "--port" in str(result.exception)


def test_run_keeps_champions_trained_on_other_data(
    monkeypatch: pytest.MonkeyPatch, shop: Path
) -> None:
    """`make run` trains only models without a champion: a shop's champions (trained on other
    data) are served, not replaced by demo models (they were retrained and promoted)."""
    from types import SimpleNamespace

    import training.tracking

    champions = {"churn": SimpleNamespace(version="4", data_sha="sha-of-the-shop")}
    monkeypatch.setattr(
        training.tracking.Tracker,
        "champion",
        lambda self, kind: champions.get(kind),
    )
    trained: list[list[str]] = []
    monkeypatch.setattr("shopml.cli.train", lambda **kwargs: trained.append(list(kwargs["models"])))
    served: list[int] = []
    monkeypatch.setattr("shopml.cli.serve", lambda host, port: served.append(port))
    monkeypatch.setattr("shopml.deploy.port_in_use", lambda host, port: False)
    result = runner.invoke(app, ["run", "--data", str(shop), "--port", "3999"])
    assert result.exit_code == 0, result.output
    assert trained == [["repurchase", "demand", "recommender"]]
    assert "churn: serving the champion v4, trained on other data" in result.output
    assert served == [3999]


def test_score_items_with_blank_stock_are_unknown_not_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A blank stock_on_hand in --items stays unknown (was filled with 0: a stock-out alert)."""
    import training.score

    seen: dict[str, pd.Series] = {}

    def fake_score(_tracker: object, _out: Path, **kwargs: object) -> dict[str, int]:
        seen["stock"] = kwargs["stock_on_hand"]  # type: ignore[assignment]
        return {}

    monkeypatch.setattr(training.score, "score", fake_score)
    items = tmp_path / "items.csv"
    items.write_text("item_id,stock_on_hand\nA,5\nB,\n")
    result = runner.invoke(app, ["score", "--out", str(tmp_path / "out"), "--items", str(items)])
    assert result.exit_code == 0, result.output
    assert seen["stock"]["A"] == 5.0
    assert pd.isna(seen["stock"]["B"])


def test_demo_data_errors_name_the_flag(tmp_path: Path) -> None:
    """Bad demo-data options name the flag, not the ShopConfig class or a bare errno."""
    swapped = runner.invoke(
        app,
        ["demo-data", "--out", str(tmp_path / "a"), "--start", "2024-01-01", "--end", "2023-01-01"],
    )
    assert swapped.exit_code != 0
    assert str(swapped.exception) == "--end (2023-01-01) must be after --start (2024-01-01)"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = runner.invoke(
        app, ["demo-data", "--out", str(blocker / "x"), "--customers", "20", "--items", "5"]
    )
    assert unwritable.exit_code != 0 and str(unwritable.exception).startswith(f"--out {blocker}")
    ok = runner.invoke(
        app, ["demo-data", "--out", str(tmp_path / "b"), "--customers", "20", "--items", "5"]
    )
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("wrote") == 1 and "customers" in ok.output


def test_features_warn_when_as_of_is_long_after_the_last_order(shop: Path, tmp_path: Path) -> None:
    """An --as-of years after the data (a typo) is built but flagged."""
    late = runner.invoke(
        app,
        ["features", "--data", str(shop), "--as-of", "2030-01-01", "--out", str(tmp_path / "a")],
    )
    assert late.exit_code == 0, late.output
    assert "--as-of 2030-01-01 is" in late.output and "after the last order" in late.output
    ok = runner.invoke(
        app,
        ["features", "--data", str(shop), "--as-of", "2024-09-01", "--out", str(tmp_path / "b")],
    )
    assert ok.exit_code == 0 and "after the last order" not in ok.output


def test_features_as_of_with_an_offset_is_the_same_instant_in_utc(
    shop: Path, tmp_path: Path
) -> None:
    """--as-of 2024-09-01T02:00+02:00 is 2024-09-01 00:00 UTC (was a TypeError traceback)."""
    out = tmp_path / "f"
    result = runner.invoke(
        app,
        ["features", "--data", str(shop), "--as-of", "2024-09-01T02:00+02:00", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["as_of"] == "2024-09-01"


def test_cli_train_prints_decisions_not_library_noise(shop: Path, tmp_path: Path) -> None:
    """`shopml train` in a log (not a terminal, CI=true): no MLflow registry prints, no line per
    snapshot date, no progress bar; the per-model decision line with its time."""
    import subprocess
    import sys

    store = f"sqlite:///{tmp_path / 'm' / 'mlflow.db'}"
    args = ["train", "--data", str(shop), "-k", "repurchase", "--tracking-uri", store]
    proc = subprocess.run(
        [sys.executable, "-c", "from shopml.cli import run; run()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true", "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "Successfully registered model" not in err and "Created version" not in err
    assert "user features at" not in err and "snapshot 20" not in err
    assert "\x1b[" not in err  # plain lines: no live display, no cursor movement
    assert "repurchase: version 1 promoted to champion: no champion yet (" in err
    assert "repurchase v1: roc_auc" in err
    verbose = subprocess.run(
        [sys.executable, "-c", "from shopml.cli import run; run()", "-v", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true", "COLUMNS": "200"},
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "user features at" in verbose.stderr  # the per-date lines are DEBUG (-v)


@pytest.mark.parametrize(
    ("terminal", "ci", "live"),
    [(True, "", True), (True, "true", False), (True, "1", False), (False, "", False)],
)
def test_live_display_only_on_a_terminal_outside_ci(
    monkeypatch: pytest.MonkeyPatch, terminal: bool, ci: str, live: bool
) -> None:
    from rich.console import Console

    import shopml.cli as cli

    monkeypatch.setattr(cli, "console", Console(stderr=True, force_terminal=terminal))
    monkeypatch.setenv("CI", ci)
    assert cli.live_display() is live
    with cli.training_progress() as progress:
        progress(1, 4, "churn (1/1): fit")
