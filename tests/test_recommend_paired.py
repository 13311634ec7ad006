"""The paired validation tool of the recommender (training/benchmarks/recommend_paired.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.benchmarks import recommend_paired as rp

BASE = {"a/0/R-all": 0.40, "a/1/R-all": 0.50, "b/0/R-all": 0.30, "a/0/R-new": 0.10}
NEW = {"a/0/R-all": 0.41, "a/1/R-all": 0.48, "b/0/R-all": 0.33, "a/0/R-new": 0.10, "c/0/R-all": 1}


def test_paired_known_answer() -> None:
    rows = {r["task"]: r for r in rp.paired(BASE, NEW)}
    d = np.array([0.01, -0.02, 0.03])  # fits both hold: c/0 is only in NEW
    assert rows["R-all"]["fits"] == 3
    assert rows["R-all"]["mean"] == round(d.mean(), 4)
    assert rows["R-all"]["se"] == round(d.std(ddof=1) / np.sqrt(3), 4)
    assert (rows["R-all"]["better"], rows["R-all"]["worse"]) == (2, 1)
    assert rows["R-all"]["per_replay"] == {"a": -0.005, "b": 0.03}
    # one fit: no standard error; equal scores are neither better nor worse
    assert rows["R-new"]["se"] is None
    assert (rows["R-new"]["better"], rows["R-new"]["worse"]) == (0, 0)
    assert "R-cold" not in rows


def test_paired_refuses_files_without_a_common_fit() -> None:
    with pytest.raises(ValueError, match="share no fit"):
        rp.paired({"a/0/R-all": 0.4}, {"a/1/R-all": 0.4})


def test_replay_scores_keys_every_seed_and_task(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_validate(dataset: Any, **kw: Any) -> list[dict[str, Any]]:
        calls.append(kw)
        return [
            {"task": t, "model": f"shopml seed {s}", "ndcg@10": s + 0.1 * j}
            for s in kw["seeds"]
            for j, t in enumerate(rp.TASKS)
        ] + [{"task": "R-all", "model": "shopml mean", "ndcg@10": 9.0}]

    import training.benchmarks.recommend as recommend

    monkeypatch.setattr(recommend, "validate", fake_validate)
    got = rp.replay_scores(None, replays=("2011-06-03",), seeds=(3, 12), params={"x": 1})
    assert got == {
        "2011-06-03/3/R-all": 3.0,
        "2011-06-03/3/R-new": 3.1,
        "2011-06-03/3/R-cold": 3.2,
        "2011-06-03/12/R-all": 12.0,
        "2011-06-03/12/R-new": 12.1,
        "2011-06-03/12/R-cold": 12.2,
    }
    # validation only: nothing written, the test window never read, the params passed on
    assert calls[0]["write"] is False and calls[0]["model_params"] == {"x": 1}


def test_compare_only_prints_the_paired_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    (tmp_path / "new.json").write_text(json.dumps(NEW))
    rp.main(
        [str(tmp_path / "new.json"), "--against", str(tmp_path / "base.json"), "--compare-only"]
    )
    out = capsys.readouterr().out
    assert (
        "R-all: +0.0067 (SE 0.0145; 2 better, 1 worse of 3); per replay a -0.0050, b +0.0300" in out
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["out.json", "--compare-only"], "--compare-only needs --against"),
        (["out.json", "--params", "[1]"], "must be a JSON object"),
        (["out.json", "--params", "{bad"], "not JSON"),
        (["out.json", "--params", '{"ranker_bagz": 3}'], "unknown RecommenderModel argument"),
        (["out.json", "--seeds", "0,x"], "comma-separated integers"),
    ],
)
def test_bad_arguments_exit_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        rp.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("content", ["not json", json.dumps(["a"]), json.dumps({"a/0/R-all": "x"})])
def test_bad_scores_files_are_named(tmp_path: Path, content: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    (tmp_path / "ok.json").write_text(json.dumps(BASE))
    argv = [str(tmp_path / "ok.json"), "--against", str(tmp_path / "bad.json"), "--compare-only"]
    with pytest.raises(SystemExit, match=r"bad\.json"):
        rp.main(argv)


def test_files_sharing_no_fit_exit_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"x/0/R-all": 0.1}))
    (tmp_path / "b.json").write_text(json.dumps({"y/0/R-all": 0.1}))
    argv = [str(tmp_path / "b.json"), "--against", str(tmp_path / "a.json"), "--compare-only"]
    with pytest.raises(SystemExit, match="share no fit"):
        rp.main(argv)
