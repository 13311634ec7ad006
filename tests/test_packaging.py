"""The Bento build file stays in step with the project: its pins are the lock file's, its
service and included code exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(name: str) -> str:
    """PEP 503 name: case and ``-_.`` runs do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines as {normalised name: version}; anything else is skipped."""
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+).*", line)
        if match:
            pins[_normalise(match.group(1))] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def bentofile() -> dict:
    return yaml.safe_load((ROOT / "bentofile.yaml").read_text())


def test_bento_packages_are_pinned_to_the_lock_files_versions(bentofile: dict) -> None:
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    packages = bentofile["python"]["packages"]
    bento = _pins(packages)
    assert len(bento) == len(packages), f"every Bento package must be pinned with ==: {packages}"
    drift = {name: (version, lock.get(name)) for name, version in bento.items()}
    drift = {name: pair for name, pair in drift.items() if pair[0] != pair[1]}
    assert not drift, f"bentofile.yaml pins differ from requirements.lock (bento, lock): {drift}"


def test_bento_service_is_importable(bentofile: dict) -> None:
    module, _, attribute = bentofile["service"].partition(":")
    assert hasattr(importlib.import_module(module), attribute), bentofile["service"]


def test_bento_includes_match_code(bentofile: dict) -> None:
    for pattern in bentofile["include"]:
        assert list(ROOT.glob(pattern)), (
            f"bentofile.yaml includes {pattern!r}, which matches nothing"
        )


def test_pin_parser_reads_names_and_versions() -> None:
    assert _pins(
        ["PyYAML==6.0.4", "# comment", "foo>=1", "zope.interface==7.1 ; python_version>'3'"]
    ) == {
        "pyyaml": "6.0.4",
        "zope-interface": "7.1",
    }
