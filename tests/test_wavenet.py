"""The WaveNet family (Lee et al. 2019): a causal trunk, its auxiliary heads, and training on real audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import self_supervised_spec, TaskSpec
from mtl_edge.train.models import create_model, model_entry
from mtl_edge.train.wavenet import WaveNetTrunk, downsample_repeat

SPECS = {"scene": TaskSpec("scene", labels=("a", "b", "c")), "next_step": self_supervised_spec("next_step"),
         "upsampling": self_supervised_spec("upsampling")}


def _model(**size):
    torch.manual_seed(0)
    entry = model_entry("wavenet")
    args = entry.build_args(800, SPECS, None, **{"channels": 4, "blocks": 2, "layers": 3, "tag_hidden": 8,
                                                  "aux_hidden": 8, **size})
    return create_model("wavenet", **args).eval()


def test_the_trunk_is_causal_with_the_documented_receptive_field():
    trunk = WaveNetTrunk(channels=4, blocks=2, layers=3).eval()
    assert trunk.receptive_field == 1 + 2 * (1 + 2 + 4)
    x = torch.randn(1, 300)
    y = x.clone()
    y[0, 100] += 1.0  # a change at sample 100 ...
    with torch.no_grad():
        a, b = trunk(x), trunk(y)
    changed = torch.nonzero((a - b).abs().amax(dim=1)[0] > 0).flatten()
    assert changed.min() == 100  # ... changes nothing before it
    assert changed.max() == 100 + trunk.receptive_field - 1  # ... and nothing past the receptive field
    assert len(WaveNetTrunk().layers) == 18  # the paper's 3 blocks of 6 layers


def test_next_step_predicts_each_sample_from_the_past_only():
    model = _model()
    x = torch.randn(2, 800)
    y = x.clone()
    y[:, 400] += 1.0
    with torch.no_grad():
        a, b = model(x)["next_step"], model(y)["next_step"]
    assert a.shape == x.shape and torch.all(a[:, 0] == 0)
    torch.testing.assert_close(a[:, :401], b[:, :401], rtol=0, atol=0)  # sample 400 itself is not seen
    assert (a[:, 401] != b[:, 401]).all()  # the next one is predicted from it


def test_upsampling_sees_only_the_4khz_version_of_the_clip():
    x = torch.randn(3, 802)
    low = downsample_repeat(x)
    assert low.shape == x.shape
    torch.testing.assert_close(low[:, :800].reshape(3, -1, 4), x[:, :800].reshape(3, -1, 4).mean(-1, keepdim=True)
                               .expand(-1, -1, 4))
    torch.testing.assert_close(low[:, 800:], x[:, 800:].mean(-1, keepdim=True).expand(-1, 2))
    # two clips with the same 4-sample means: the same upsampling output, other next-step outputs
    model = _model()
    wiggle = torch.tensor([1.0, -1.0, 1.0, -1.0]).repeat(200)
    with torch.no_grad():
        a, b = model(x[:, :800]), model(x[:, :800] + 0.3 * wiggle)
    torch.testing.assert_close(a["upsampling"], b["upsampling"])
    assert not torch.allclose(a["next_step"], b["next_step"])


def test_size_options_are_checked():
    with pytest.raises(MtlEdgeError, match="unknown model option\\(s\\) width"):
        model_entry("wavenet").build_args(800, SPECS, None, width=3)
    with pytest.raises(MtlEdgeError, match="positive integers, not channels=0"):
        model_entry("wavenet").build_args(800, SPECS, None, channels=0)
    paper = create_model("wavenet", **model_entry("wavenet").build_args(800, {"scene": SPECS["scene"]}))
    assert paper.trunk.input.out_channels == 64 and len(paper.trunk.layers) == 18


@pytest.mark.slow
def test_wavenet_trains_on_real_audio_with_its_auxiliary_tasks_and_exports(demo_corpus, tmp_path):
    from mtl_edge.export import export_run
    from mtl_edge.features.waveform import WaveformConfig
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    cfg = TrainConfig(model="wavenet", epochs=2, patience=5, mixup=0.0, batch_size=16,
                      model_args={"channels": 8, "blocks": 2, "layers": 4, "tag_hidden": 16, "aux_hidden": 16})
    run = train_run(demo_corpus, ["scene", "next_step", "upsampling"], tmp_path / "run", cfg,
                    input_config=WaveformConfig(samples=4000), processes=1)
    tasks = run.metrics["tasks"]
    assert 0 <= tasks["scene"]["multi"]["accuracy"] <= 1
    for aux in ("next_step", "upsampling"):
        assert tasks[aux]["kind"] == "reconstruction" and np.isfinite(tasks[aux]["multi"]["mse"])
    # the 4 kHz version already holds most of the clip: rebuilding it beats predicting silence
    assert tasks["upsampling"]["multi"]["relative_rmse"] < 1.0
    exported = export_run(run.folder, formats="onnx", precisions="fp32", progress=False)
    (artefact,) = exported.artefacts
    assert artefact["status"] == "ok" and [o["name"] for o in artefact["outputs"]] == ["scene", "next_step", "upsampling"]


def test_model_args_on_the_command_line_are_checked_before_any_work(demo_corpus, tmp_path):
    from typer.testing import CliRunner

    from mtl_edge.cli import app
    from mtl_edge.cli_options import parse_model_args

    assert parse_model_args("channels=16, blocks=2") == {"channels": 16, "blocks": 2}
    result = CliRunner().invoke(app, ["train", "--corpus", str(demo_corpus), "--tasks", "scene,next_step", "--model",
                                      "wavenet", "--model-args", "channels=many", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "--model-args takes k=v pairs of integers" in result.output
    assert not (tmp_path / "r").exists()


def test_the_table_shows_reconstruction_tasks_with_their_own_metrics():
    from io import StringIO

    from rich.console import Console

    from mtl_edge.report.tables import render_metrics

    buffer = StringIO()
    metrics = {"corpus": "c", "tasks": {
        "scene": {"kind": "classification", "test_samples": 5, "multi": {"accuracy": 0.8, "macro_f1": 0.7}},
        "next_step": {"kind": "reconstruction", "multi": {"loss": 0.0053, "mse": 0.0053, "relative_rmse": 1.04}}}}
    render_metrics(metrics, Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert "scene" in text and "0.800" in text
    assert "next_step (reconstruction): multi loss 0.0053, mse 0.0053, relative_rmse 1.04" in text


def test_inference_batches_keep_activations_small():
    from mtl_edge.train.trainer import predict

    model = _model()  # 800 samples x 4 channels: 312 clips per call
    assert model.predict_batch == 1_000_000 // (800 * 4)
    paper = create_model("wavenet", **model_entry("wavenet").build_args(16000, {"scene": SPECS["scene"]}))
    assert paper.predict_batch == 1  # 16000 samples x 64 channels
    x = np.random.default_rng(0).standard_normal((5, 800)).astype(np.float32)
    whole, rows = predict(model, x), predict(model, x, batch=1)
    for task in whole:
        np.testing.assert_allclose(whole[task], rows[task], rtol=1e-5, atol=1e-6)
