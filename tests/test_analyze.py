"""Features and analysis of a sweep: learning-curve fits, train-only dataset features, pair gains
with their tests, the regression, and the report files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.research import analyze as an
from mtl_edge.research import features as feats

TASKS = ["scene", "gender", "vad"]


def test_a_logarithmic_loss_curve_is_fitted_and_its_gradients_are_negative():
    i = np.arange(400) / 399
    loss = -0.5 * np.log(30 * i + 1) + 2.0 + np.random.default_rng(0).normal(0, 0.01, len(i))
    out = feats.curve_features(loss)
    assert out["curve_fit_r2"] > 0.99
    fitted = feats.log_curve(i, *(out[k] for k in ("curve_a", "curve_b", "curve_c", "curve_d")))
    assert np.abs(fitted - (-0.5 * np.log(30 * i + 1) + 2.0)).max() < 0.02  # (c, d, b) trade off: compare curves
    grads = [out[f"curve_grad_{p}"] for p in feats.GRADIENT_POINTS]
    assert all(g < 0 for g in grads)
    assert grads[0] < grads[-1]  # steeper early than late


def test_a_failed_fit_is_missing_and_says_why():
    out = feats.curve_features(np.ones(5))
    assert out["curve_a"] is None and "too few" in out["curve_fit_error"]
    nan_curve = np.full(50, np.nan)
    out = feats.fit_log_curve(np.arange(50) / 49, nan_curve)
    assert out["curve_fit_r2"] is None and out["curve_fit_error"]


def test_pair_features_are_main_aux_and_ratio():
    out = feats.pair_features({"clips": 10.0, "snr": None}, {"clips": 5.0, "snr": 1.0})
    assert out == {"main_clips": 10.0, "aux_clips": 5.0, "ratio_clips": 2.0,
                   "main_snr": None, "aux_snr": 1.0, "ratio_snr": None}


@pytest.mark.slow
def test_regression_finds_a_feature_that_decides_the_gain_and_beats_the_majority():
    rng = np.random.default_rng(0)
    gains, pairs = [], {}
    for k in range(30):
        x = float(rng.uniform(-1, 1))
        gains.append({"main": f"m{k}", "aux": "a", "gain": x + float(rng.normal(0, 0.05))})
        pairs[(f"m{k}", "a")] = {"main_clips": x, "main_noise": float(rng.normal())}
    reg = an.regression(gains, pairs)
    assert reg["all_features"]["f1_mean"] > 0.8
    assert reg["all_features"]["f1_mean"] > reg["majority"]["f1_mean"] + 0.2
    assert reg["ranking"][0]["feature"] == "main_clips"
    few = an.regression(gains[:6], pairs)
    assert "too few" in few["skipped"]


@pytest.fixture(scope="module")
def tiny(tiny_corpus):
    return tiny_corpus


@pytest.mark.slow
def test_dataset_features_ignore_validation_and_test_labels(tiny, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(tiny, changed, symlinks=True, ignore=shutil.ignore_patterns(".features"))
    manifest = changed / "manifest.csv"
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    first = {}
    for row in rows:
        first.setdefault(row["task"], row["label"])
    for row in rows:  # the analysed (single-label) tasks' held-out labels all changed to one
        if row["split"] != "train" and row["task"] in TASKS:
            row["label"] = first[row["task"]]
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    before, after = feats.dataset_features(tiny, TASKS), feats.dataset_features(changed, TASKS)
    assert before == after
    assert before["scene"]["labels"] >= 2 and before["scene"]["clips"] > 0
    from mtl_edge.data.describe import describe_corpus  # the all-splits measurement does see the change

    assert describe_corpus(tiny)["tasks"]["scene"]["label_counts"] != describe_corpus(changed)["tasks"]["scene"]["label_counts"]


@pytest.mark.slow
def test_analyze_a_sweep_writes_the_report_and_its_gains_match_the_runs(tiny, tmp_path):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", "--corpus", str(tiny), "--out", str(out), "--tasks", ",".join(TASKS),
                                      "--combos", "pairs", "--seeds", "2", "--steps", "30", "--hidden", "128,128,128",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["analyze", str(out), "--metric", "accuracy"])
    assert result.exit_code == 0, result.output
    assert "regression not run" in result.output and "too few" in result.output
    report = out / "analysis"
    for name in ("report.md", "gains.csv", "correlations.csv", "per_class.csv", "pair_features.csv",
                 "regression.json", "gains_heatmap.png", "correlations.png"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "gains_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(report / "gains.csv", newline="") as f:
        gains = list(csv.DictReader(f))
    assert len(gains) == 6  # 3 pairs, each task as main once
    runs = out / "runs"
    import json

    for g in gains:
        pair = "+".join(t for t in TASKS if t in (g["main"], g["aux"]))
        per_seed = [json.loads((runs / pair / f"seed{s}" / "metrics.json").read_text())["tasks"][g["main"]]["test"]["accuracy"]
                    - json.loads((runs / g["main"] / f"seed{s}" / "metrics.json").read_text())["tasks"][g["main"]]["test"]["accuracy"]
                    for s in (0, 1)]
        assert float(g["gain"]) == pytest.approx(np.mean(per_seed), abs=1e-5)
        assert float(g["ci_low"]) <= float(g["gain"]) <= float(g["ci_high"])
    per_class = json.loads((runs / "scene" / "seed0" / "metrics.json").read_text())["tasks"]["scene"]["per_class_f1"]
    assert set(per_class) == set(json.loads((runs / "scene" / "seed0" / "metrics.json").read_text())["task_specs"]["scene"]["labels"])
    text = (report / "report.md").read_text()
    assert "Not run:" in text and "| main | aux |" in text


@pytest.mark.slow
def test_a_frame_task_as_main_is_scored_by_its_own_selection_metric(tiny, tmp_path):
    import json

    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", "--corpus", str(tiny), "--out", str(out), "--tasks", "scene,event_activity",
                                      "--combos", "pairs", "--seeds", "2", "--steps", "20", "--hidden", "128,128,128",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["analyze", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "analysis" / "gains.csv", newline="") as f:
        gains = {g["main"]: g for g in csv.DictReader(f)}
    assert {m: g["metric"] for m, g in gains.items()} == {"scene": "macro_f1", "event_activity": "frame_f1"}
    runs = out / "runs"
    frame = [json.loads((runs / "scene+event_activity" / f"seed{s}" / "metrics.json").read_text())["tasks"]["event_activity"]["test"]["frame_f1"]
             - json.loads((runs / "event_activity" / f"seed{s}" / "metrics.json").read_text())["tasks"]["event_activity"]["test"]["frame_f1"]
             for s in (0, 1)]
    assert float(gains["event_activity"]["gain"]) == pytest.approx(np.mean(frame), abs=1e-5)
    assert "event_activity (frame_f1)" in (out / "analysis" / "report.md").read_text()


def test_analyze_refuses_a_sweep_without_pairs_and_an_unknown_metric(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text('{"format": "mtl-edge-sweep", "combos": ["singles"], "tasks": ["a"], "seeds": [0]}')
    result = CliRunner().invoke(app, ["analyze", str(out)])
    assert result.exit_code == 1 and "no pairs" in result.output
    result = CliRunner().invoke(app, ["analyze", str(out), "--metric", "auc"])
    assert result.exit_code == 1 and "unknown metric" in result.output
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "sweep folder" in result.output
