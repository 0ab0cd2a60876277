"""The contracts, exercised from outside the package.

A model family and a self-supervised task that exist only in this file (a waveform-in conv net with a
classification head and a reconstruction head) are trained, checkpointed, exported to ONNX and TFLite
and benchmarked through the public functions, with no change to the package. And the feature
options flow one way: ``data prepare`` then ``train`` use one feature config.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.features.waveform import WaveformConfig
from mtl_edge.tasks import SELF_SUPERVISED, TaskSpec, register_task
from mtl_edge.train.models import MultiTaskModel, register_model, unregister_model

SAMPLES = 2000  # 125 ms crops keep the throwaway model's training to seconds
MODEL = "throwaway-wave"
TASK = "throwaway_rebuild"


class ThrowawayWave(MultiTaskModel):
    """Strided conv trunk on raw samples; mean-pool + linear for labelled tasks, a transposed conv back to
    the samples for reconstruction tasks."""

    input_kind = "waveform"

    def __init__(self, input_dim: int, tasks: dict[str, dict], channels: int = 8):
        super().__init__()
        self.input_dim = input_dim
        self.trunk = nn.Sequential(nn.Conv1d(1, channels, kernel_size=16, stride=8), nn.ReLU())
        heads = {}
        for task, head in tasks.items():
            if head["kind"] == "reconstruction":
                heads[task] = nn.Sequential(nn.ConvTranspose1d(channels, 1, kernel_size=16, stride=8), nn.Flatten())
            else:
                heads[task] = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, head["outputs"]))
        self.heads = nn.ModuleDict(heads)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x.unsqueeze(1))

    def shared_parameters(self):
        return list(self.trunk.parameters())


def _args(input_dim, specs, cfg=None):
    return {"input_dim": int(input_dim), "tasks": {t: {"kind": s.kind, "outputs": s.outputs} for t, s in specs.items()}}


@pytest.fixture
def throwaway():
    """Registered for one test, then removed: the package itself does not know this model or task."""
    register_model(MODEL, input_kind="waveform", task_kinds=("classification", "reconstruction"),
                   build_args=_args, tiny_args=_args, tiny_input_dim=SAMPLES)(ThrowawayWave)
    register_task(TASK)(lambda: TaskSpec(TASK, kind="reconstruction"))
    yield
    unregister_model(MODEL)
    SELF_SUPERVISED.pop(TASK, None)


@pytest.mark.slow
def test_a_model_family_defined_outside_the_package_trains_exports_and_benchmarks(throwaway, demo_corpus, tmp_path):
    from mtl_edge.bench.harness import bench
    from mtl_edge.export import export_run
    from mtl_edge.train.checkpoint import load_checkpoint
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig, predict

    cfg = TrainConfig(model=MODEL, epochs=2, patience=5, mixup=0.0, batch_size=32)
    run = train_run(demo_corpus, ["scene", TASK], tmp_path / "run", cfg, input_config=WaveformConfig(samples=SAMPLES),
                    processes=1)
    metrics = run.metrics["tasks"]
    assert metrics["scene"]["kind"] == "classification" and 0 <= metrics["scene"]["multi"]["accuracy"] <= 1
    assert metrics[TASK]["kind"] == "reconstruction"
    assert set(metrics[TASK]["multi"]) == {"loss", "mse", "relative_rmse"} and metrics[TASK]["multi"]["mse"] > 0
    assert run.metrics["task_specs"][TASK]["needs_labels"] is False
    config = json.loads((run.folder / "config.json").read_text())
    assert config["features"] == {"kind": "waveform", "samples": SAMPLES, "sample_rate": 16000, "position": "centre"}

    model, info = load_checkpoint(run.folder / "multi" / "model.pt")
    assert isinstance(model, ThrowawayWave) and info["input_kind"] == "waveform"
    assert info["task_specs"][TASK]["kind"] == "reconstruction" and info["labels"][TASK] == []
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, (3, SAMPLES)).astype(np.float32)
    out = predict(model, clip)
    assert out["scene"].shape == (3, len(info["labels"]["scene"])) and out[TASK].shape == (3, SAMPLES)

    # reconstruction heads are exported on request (the default exports the labelled tasks' heads only)
    exported = export_run(run.folder, formats="onnx,tflite", precisions="fp32", progress=False, heads="all")
    manifest = exported.manifest
    assert manifest["input"]["name"] == "waveform" and manifest["input"]["samples"] == SAMPLES
    assert manifest["task_specs"][TASK]["kind"] == "reconstruction"
    assert {(a["format"], a["status"]) for a in exported.artefacts} == {("onnx", "ok"), ("tflite", "ok")}
    for a in exported.artefacts:
        assert [i["name"] for i in a["inputs"]] == ["waveform"]
        assert [o["name"] for o in a["outputs"]] == ["scene", TASK]
        rebuilt = a["verification"]["tasks"][TASK]
        assert rebuilt["relative_rms_error"] <= 1e-4, a["path"]
        assert a["verification"]["tasks"]["scene"]["agreement"] == 1.0
    with np.load(exported.folder / "testset.npz") as z:
        assert z["waveforms"].shape[1] == SAMPLES and z["features"].shape[1] == 0

    measured = bench(exported.folder, device="desktop", runtime="onnxruntime,litert", min_runs=5, min_secs=0,
                     max_secs=2)
    lines = measured.measurements
    assert {(r["runtime"], r["model"]) for r in lines} == {("onnxruntime", "multi"), ("litert", "multi")}
    for r in lines:
        # the desktop runs the very artefact the export verified, on this machine: "ok" is equal by construction
        # (it checks the plumbing); answers from another architecture are checked in tests/test_devbed.py
        assert r["p50_ms"] > 0 and r["answers_status"] == "ok", r
        assert r["answers_rel_rms_" + TASK] <= 1e-4  # the reconstruction output, checked on the device side


@pytest.mark.slow
def test_prepare_then_train_uses_the_prepared_features(demo_corpus, tmp_path):
    """`data prepare --win-ms 30` then `train --win-ms 30` (and `train` with no feature option): one cache
    entry, no rebuild, and the checkpoint records the 30 ms window."""
    import shutil

    from mtl_edge.features.cache import CURRENT
    from mtl_edge.train.checkpoint import load_checkpoint

    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus, ignore=shutil.ignore_patterns(".features"))
    runner = CliRunner()
    prepared = runner.invoke(app, ["data", "prepare", str(corpus), "--win-ms", "30", "--workers", "1"])
    assert prepared.exit_code == 0, prepared.output
    entries = sorted(p for p in (corpus / ".features").iterdir() if p.is_dir())
    assert len(entries) == 1
    current = json.loads((corpus / ".features" / CURRENT).read_text())
    assert current["features"]["config"]["win_ms"] == 30.0 and current["features"]["key"] == entries[0].name
    stamp = (entries[0] / "features.npy").stat().st_mtime_ns

    for name, extra in (("explicit", ["--win-ms", "30"]), ("implicit", [])):
        trained = runner.invoke(app, ["train", "--corpus", str(corpus), "--tasks", "scene", "--out", str(tmp_path / name),
                                      "--epochs", "1", "--hidden", "128,128,128", *extra])
        assert trained.exit_code == 0, trained.output
        _, info = load_checkpoint(tmp_path / name / "multi" / "model.pt")
        assert info["feature_config"]["win_ms"] == 30.0
        assert json.loads((tmp_path / name / "config.json").read_text())["features"]["win_ms"] == 30.0
    assert sorted(p for p in (corpus / ".features").iterdir() if p.is_dir()) == entries  # not rebuilt, no new entry
    assert (entries[0] / "features.npy").stat().st_mtime_ns == stamp

    # an explicit option that differs from the prepared one is the user's choice: another cache entry
    other = runner.invoke(app, ["train", "--corpus", str(corpus), "--tasks", "scene", "--out", str(tmp_path / "w40"),
                                "--epochs", "1", "--hidden", "128,128,128", "--win-ms", "40"])
    assert other.exit_code == 0, other.output
    _, info = load_checkpoint(tmp_path / "w40" / "multi" / "model.pt")
    assert info["feature_config"]["win_ms"] == 40.0
    assert len([p for p in (corpus / ".features").iterdir() if p.is_dir()]) == 2


def test_feature_options_share_featureconfigs_defaults():
    """`data prepare` and `train` name FeatureConfig's defaults (40 ms windows) in their help."""
    from mtl_edge.features.logmel import FeatureConfig

    runner = CliRunner()
    for command in (["data", "prepare", "--help"], ["train", "--help"]):
        text = " ".join(runner.invoke(app, command, terminal_width=200).output.split())
        assert f"else {FeatureConfig.win_ms:g})" in text and f"else {FeatureConfig.n_mels})" in text, command
    assert FeatureConfig.win_ms == 40.0
