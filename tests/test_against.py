"""``analyze --against``: affinity predictions against a sweep's measured pair gains, on the committed
experiment 3 results (a real 8-task pair sweep and a real affinity run of the demo corpus)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from mtl_edge.cli import app

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "exp3"


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def sweep(tmp_path):
    return Path(shutil.copytree(RESULTS / "sweep", tmp_path / "sweep"))


def _gain(sweep: Path, main: str, aux: str, tasks: list[str]) -> float:
    pair = "+".join(sorted((main, aux), key=tasks.index))
    values = []
    for seed in (0, 1, 2):
        multi = json.loads((sweep / "runs" / pair / f"seed{seed}" / "metrics.json").read_text())
        single = json.loads((sweep / "runs" / main / f"seed{seed}" / "metrics.json").read_text())
        values.append(multi["tasks"][main]["test"]["macro_f1"] - single["tasks"][main]["test"]["macro_f1"])
    return statistics.fmean(values)


def test_predictions_gains_and_statistics_are_recomputable(sweep, tmp_path):
    result = cli("analyze", sweep, "--against", RESULTS / "affinity", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "against.json").read_text())
    affinity = json.loads((RESULTS / "affinity" / "affinity.json").read_text())
    tasks = json.loads((sweep / "sweep.json").read_text())["tasks"]
    i = {t: k for k, t in enumerate(affinity["tasks"])}
    assert len(record["pairs"]) == len(tasks) * (len(tasks) - 1)
    for p in record["pairs"]:
        assert p["tag"] == affinity["tag"][i[p["aux"]]][i[p["main"]]]
        assert p["cosine"] == affinity["cosine"][i[p["aux"]]][i[p["main"]]]
        assert p["gain"] == pytest.approx(_gain(sweep, p["main"], p["aux"], tasks), abs=1e-9)
    for name in ("tag", "cosine"):
        pred, meas = [p[name] for p in record["pairs"]], [p["gain"] for p in record["pairs"]]
        s = record["stats"][f"{name}_directed"]
        assert s["rho"] == pytest.approx(spearmanr(pred, meas)[0]) and s["p"] == pytest.approx(spearmanr(pred, meas)[1])
        assert s["sign_agreement"] == pytest.approx(sum((a > 0) == (b > 0) for a, b in zip(pred, meas)) / len(meas))
        assert s["always_gain_agreement"] == pytest.approx(sum(b > 0 for b in meas) / len(meas))
        assert f"{name}_directed: {len(meas)} pairs, Spearman rho {s['rho']:+.3f}" in result.output
    by = {(p["main"], p["aux"]): p for p in record["pairs"]}
    for u in record["undirected"]:
        m, a = u["pair"].split("+")
        assert u["gain"] == pytest.approx(by[m, a]["gain"] + by[a, m]["gain"])
        assert u["tag"] == pytest.approx(by[m, a]["tag"] + by[a, m]["tag"])
    assert len(record["undirected"]) == len(tasks) * (len(tasks) - 1) // 2
    statuses = [json.loads(p.read_text()) for p in sweep.glob("runs/*/seed*/status.json")
                if len(p.parent.parent.name.split("+")) <= 2]
    assert record["cost"] == {"affinity_runs": 1, "affinity_wall_s": affinity["wall_s"], "sweep_runs": len(statuses),
                              "sweep_wall_s": round(sum(s["wall_s"] for s in statuses), 1)}
    for name in ("against.md", "pairs.csv", "against.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_bad_input_exits_1_naming_the_problem(sweep, tmp_path):
    result = cli("analyze", sweep, "--against", tmp_path)
    assert result.exit_code == 1 and "is not an affinity result" in result.output
    other = Path(shutil.copytree(RESULTS / "affinity", tmp_path / "other"))
    record = json.loads((other / "affinity.json").read_text())
    record["settings"]["corpus_fingerprint"] = "f" * 64
    (other / "affinity.json").write_text(json.dumps(record))
    result = cli("analyze", sweep, "--against", other)
    assert result.exit_code == 1 and "another corpus" in result.output
    record = json.loads((RESULTS / "affinity" / "affinity.json").read_text())
    record["tasks"] = ["x1", "x2", "x3", "x4", "x5", "x6", "x7"] + record["tasks"][7:]  # one task in common
    (other / "affinity.json").write_text(json.dumps(record))
    result = cli("analyze", sweep, "--against", other)
    assert result.exit_code == 1 and "share fewer than two tasks" in result.output
