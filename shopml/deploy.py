"""Put the MLflow champions into the BentoML model store, and start the service.

The glue between training (MLflow registry) and serving (BentoML store): the service itself never
talks to MLflow and never imports training code.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from shopml.config import MODEL_KINDS

log = logging.getLogger(__name__)

SERVICE = "serving.service:Shopml"


def pack_champions(tracking_uri: str | None = None) -> dict[str, str]:
    """Copy each kind's MLflow champion into the BentoML store (skipped when already there).

    Returns kind -> BentoML tag. Kinds without a champion are left out (the service reports them
    as missing). The churn champion also carries the customer-value model (stored as ``value``).
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from serving.models import model_name, store_model
    from training.jobs import VALUE_SUBFOLDER
    from training.tracking import Tracker, safe_uri

    tracker = Tracker(tracking_uri)
    tags: dict[str, str] = {}
    for kind in MODEL_KINDS:
        champion = tracker.champion(kind)
        if champion is None:
            log.warning(
                "%s: no champion in %s; train it first (shopml train)", kind, safe_uri(tracker.uri)
            )
            continue
        labels = {"mlflow_version": champion.version, "mlflow_run_id": champion.run_id}
        targets = [kind, "value"] if kind == "churn" else [kind]
        try:
            current = bentoml.models.get(f"{model_name(kind)}:latest")
            if current.info.labels.get("mlflow_run_id") == champion.run_id:
                tags |= {t: str(bentoml.models.get(f"{model_name(t)}:latest").tag) for t in targets}
                continue
        except NotFound:
            pass
        metadata = {
            "as_of": champion.as_of,
            "trained_at": champion.trained_at,
            "gate_metric": champion.gate_metric,
            "gate_value": champion.gate_value,
            "registered_model": f"shopml-{kind}",
        }
        with tempfile.TemporaryDirectory(prefix="shopml-pack-") as tmp:
            folder = tracker.download(kind, Path(tmp))
            tags[kind] = store_model(kind, folder, labels, metadata)
            if kind == "churn" and (folder / VALUE_SUBFOLDER).is_dir():
                tags["value"] = store_model("value", folder / VALUE_SUBFOLDER, labels, metadata)
    return tags


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (checked before packing models)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def serve(host: str, port: int, *, workers: int | None = None) -> int:
    """Run ``bentoml serve`` in the foreground on ``host:port``; returns its exit code."""
    cmd = [str(Path(sys.executable).with_name("bentoml")), "serve", SERVICE]
    cmd += ["--host", host, "--port", str(port)]
    env = {**os.environ, "SHOPML_BIND_HOST": host}
    if workers:
        env["SHOPML_WORKERS"] = str(workers)
    log.info("serving on http://%s:%d (Ctrl-C stops it)", host, port)
    return run_foreground(cmd, env)


def run_foreground(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` until it exits; a SIGTERM to this process is passed on to it, so that
    ``kill <pid of shopml serve>`` stops the server instead of leaving it running orphaned."""
    proc = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum))
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the server's process group too
            try:
                return proc.wait(timeout=30)  # let it shut down; a second Ctrl-C stops it
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                proc.terminate()
                return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def curl_examples(host: str, port: int, user: str, item: str) -> str:
    """Example calls of every endpoint, for the user to copy."""
    base = f"http://{host}:{port}"
    post = f"curl -s -X POST {base}/v1/{{}} -H 'content-type: application/json' -d '{{}}'"
    calls = [
        ("recommend", f'{{"user_id": "{user}", "k": 5}}'),
        ("similar_items", f'{{"item_id": "{item}", "k": 5}}'),
        ("churn_risk", '{"limit": 5, "sort": "value_at_risk"}'),
        ("customer_scores", f'{{"customer_ids": ["{user}"]}}'),
        (
            "forecast",
            f'{{"item_ids": ["{item}"], "horizon": 4, "lead_time_weeks": 2, "service_level": 0.95, "stock_on_hand": {{"{item}": 10}}}}',
        ),
        ("models", "{}"),
    ]
    lines = [post.format(name, body) for name, body in calls]
    lines.append(f"open {base}/  # Swagger UI; OpenAPI at {base}/docs.json")
    return "\n".join(lines)
