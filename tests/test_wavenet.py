"""The WaveNet family (Lee et al. 2019): a causal trunk, its auxiliary heads, and training on real audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import self_supervised_spec, TaskSpec
from mtl_edge.train.models import create_model, model_entry
from mtl_edge.train.wavenet import WaveNetTrunk, downsample_repeat

SPECS = {"scene": TaskSpec("scene", labels=("a", "b", "c")), "next_step": self_supervised_spec("next_step"),
         "upsample": self_supervised_spec("upsample")}


def _model(**size):
    torch.manual_seed(0)
    entry = model_entry("wavenet")
    args = entry.build_args(800, SPECS, None, **{"channels": 4, "blocks": 2, "layers": 3, "tag_hidden": 8,
                                                  "aux_hidden": 8, **size})
    return create_model("wavenet", **args).eval()


def test_the_trunk_is_causal_with_the_documented_receptive_field():
    torch.manual_seed(0)
    trunk = WaveNetTrunk(channels=4, blocks=2, layers=3).eval().double()  # float64: the far taps' effect is tiny
    assert trunk.receptive_field == 1 + 2 * (1 + 2 + 4)
    x = torch.randn(1, 300, dtype=torch.float64)
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
    x[:, 400] = 1.0
    y = x.clone()
    y[:, 400] = -1.0  # a sign flip keeps the clip's RMS, which the input coding scales every sample by
    with torch.no_grad():
        a, b = model(x)["next_step"], model(y)["next_step"]
    assert a.shape == x.shape and torch.all(a[:, 0] == 0)
    torch.testing.assert_close(a[:, :401], b[:, :401], rtol=0, atol=0)  # sample 400 itself is not seen
    assert (a[:, 401] != b[:, 401]).all()  # the next one is predicted from it


def test_upsample_sees_only_the_4khz_version_of_the_clip():
    x = torch.randn(3, 802)
    low = downsample_repeat(x)
    assert low.shape == x.shape
    torch.testing.assert_close(low[:, :800].reshape(3, -1, 4), x[:, :800].reshape(3, -1, 4).mean(-1, keepdim=True)
                               .expand(-1, -1, 4))
    torch.testing.assert_close(low[:, 800:], x[:, 800:].mean(-1, keepdim=True).expand(-1, 2))
    # two clips with the same 4-sample means: the same upsample output, other next-step outputs
    model = _model()
    wiggle = torch.tensor([1.0, -1.0, 1.0, -1.0]).repeat(200)
    with torch.no_grad():
        a, b = model(x[:, :800]), model(x[:, :800] + 0.3 * wiggle)
    torch.testing.assert_close(a["upsample"], b["upsample"])
    assert not torch.allclose(a["next_step"], b["next_step"])


def test_new_models_mu_law_code_the_trunk_input_and_old_checkpoints_keep_the_raw_samples():
    from mtl_edge.train.wavenet import DEFAULT_MULAW, code_input, mulaw

    x = torch.linspace(-1, 1, 201)
    coded = mulaw(x, 255)
    assert coded[0] == -1 and coded[-1] == 1 and mulaw(torch.zeros(1), 255).item() == 0 and (torch.diff(coded) > 0).all()
    torch.testing.assert_close(mulaw(-x, 255), -coded)
    assert mulaw(torch.tensor([0.01]), 255).item() == pytest.approx(np.log1p(2.55) / np.log1p(255))
    assert torch.equal(mulaw(x, 0), x)
    # each clip to an RMS of 1 before the coding: a clip's level does not change what the trunk sees
    quiet = 0.05 * torch.randn(2, 800)
    torch.testing.assert_close(code_input(quiet, 255), code_input(8 * quiet, 255))
    rms = quiet.pow(2).mean(dim=-1, keepdim=True).sqrt()
    torch.testing.assert_close(code_input(quiet, 255), mulaw(quiet / rms, 255))
    assert torch.equal(code_input(quiet, 0), quiet)
    # new build args record the coding; a checkpoint's args without it (from before the option) build raw input
    args = model_entry("wavenet").build_args(800, SPECS, None, channels=4, blocks=2, layers=3)
    assert args["mulaw"] == DEFAULT_MULAW == 255
    old = create_model("wavenet", **{k: v for k, v in args.items() if k != "mulaw"}).eval()
    new = create_model("wavenet", **args).eval()
    new.load_state_dict(old.state_dict())
    clip = 0.05 * torch.randn(2, 800)
    with torch.no_grad():
        torch.testing.assert_close(new.embed(clip), old.trunk(code_input(clip, 255)))
        torch.testing.assert_close(old.embed(clip), old.trunk(clip))
    assert model_entry("wavenet").build_args(800, SPECS, None, channels=4, blocks=2, layers=3, mulaw=0)["mulaw"] == 0


def test_coded_models_rebuild_samples_at_the_level_of_the_clip():
    """The trunk sees no level, so reconstruction heads are scaled back by the clip's RMS: a clip 8x louder
    gets outputs 8x larger, and the tagging outputs do not move."""
    args = model_entry("wavenet").build_args(800, SPECS, None, channels=4, blocks=2, layers=3)
    model = create_model("wavenet", **args).eval()
    clip = 0.02 * torch.randn(2, 800)
    with torch.no_grad():
        quiet, loud = model(clip), model(8 * clip)
    for task in ("next_step", "upsample"):
        assert quiet[task].abs().max() > 0
        torch.testing.assert_close(loud[task], 8 * quiet[task], rtol=1e-4, atol=1e-5 * float(loud[task].abs().max()))
    torch.testing.assert_close(loud["scene"], quiet["scene"], rtol=1e-4, atol=1e-6)


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
    from mtl_edge.train.trainer import recipe_config

    cfg = recipe_config("lee2019", model="wavenet", epochs=2, patience=5, batch_size=16,
                        model_args={"channels": 8, "blocks": 2, "layers": 4, "tag_hidden": 16, "aux_hidden": 16})
    run = train_run(demo_corpus, ["scene", "next_step", "upsample", "denoise"], tmp_path / "run", cfg,
                    input_config=WaveformConfig(samples=4000), processes=1)
    tasks = run.metrics["tasks"]
    assert 0 <= tasks["scene"]["multi"]["accuracy"] <= 1 and 0 <= tasks["scene"]["multi"]["map_at_3"] <= 1
    for aux in ("next_step", "upsample", "denoise"):
        assert tasks[aux]["kind"] == "reconstruction" and np.isfinite(tasks[aux]["multi"]["mse"])
    # the 4 kHz version already holds most of the clip: rebuilding it beats predicting silence
    assert tasks["upsample"]["multi"]["relative_rmse"] < 1.0
    # validation scores only the task that selects models (no extra trunk passes for the auxiliaries)
    history = json.loads((run.folder / "multi" / "history.json").read_text())
    assert [(sorted(e["validation_accuracy"]), "validation_metric" in e) for e in history["epochs"]] == [(["scene"], False)] * 2
    exported = export_run(run.folder, formats="onnx", precisions="fp32,int8-dynamic", progress=False)
    fp32, dynamic = exported.artefacts  # the inference heads only, by default
    assert fp32["status"] == "ok" and [o["name"] for o in fp32["outputs"]] == ["scene"]
    # convolutions get unsigned 8-bit weights (ConvInteger with int8 weights is several times slower than fp32)
    import onnx

    graph = onnx.load(str(exported.folder / dynamic["path"])).graph
    weights = {i.name: i.data_type for i in graph.initializer}
    conv_weights = [weights[n.input[1]] for n in graph.node if n.op_type == "ConvInteger"]
    assert dynamic["quantization"]["weight_type"] == "QUInt8" and conv_weights
    assert set(conv_weights) == {onnx.TensorProto.UINT8}
    exported = export_run(run.folder, tmp_path / "all", formats="onnx", precisions="fp32", progress=False, heads="all")
    (artefact,) = exported.artefacts  # the denoising head is never exported: its input is corrupted inside the model
    assert artefact["status"] == "ok" and [o["name"] for o in artefact["outputs"]] == ["scene", "next_step", "upsample"]


def test_the_coded_input_converts_to_static_int8_tflite_and_runs_in_litert(tiny_corpus, tmp_path):
    """mu-law's constant is a float: an int became an int64 tensor in the exported graph, and static int8
    calibration (a histogram observer on each input of the multiplication) failed on it."""
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import recipe_config

    cfg = recipe_config("lee2019", model="wavenet", steps=2, batch_size=8,
                        model_args={"channels": 4, "blocks": 1, "layers": 3, "tag_hidden": 8, "aux_hidden": 8})
    run = train_run(tiny_corpus, ["scene"], tmp_path / "run", cfg, processes=1)
    exported = export_run(run.folder, formats="tflite", precisions="int8", progress=False, allow_degraded=True)
    (artefact,) = exported.artefacts
    assert artefact["quantization"]["scheme"].startswith("PT2E static int8")
    scene = artefact["verification"]["tasks"]["scene"]  # run by the LiteRT interpreter on the test split
    assert scene["n"] > 0 and 0.0 <= scene["agreement"] <= 1.0


@pytest.mark.slow
def test_two_tagging_heads_against_their_single_task_models_through_export_and_bench(tiny_corpus, tmp_path):
    from mtl_edge.bench.harness import bench
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import recipe_config

    cfg = recipe_config("lee2019", model="wavenet", steps=4, batch_size=8,
                        model_args={"channels": 4, "blocks": 1, "layers": 3, "tag_hidden": 8, "aux_hidden": 8})
    run = train_run(tiny_corpus, ["scene", "instrument"], tmp_path / "run", cfg, single=True, processes=1)
    exported = export_run(run.folder, formats="onnx", precisions="fp32", progress=False, allow_degraded=True)
    assert sorted(a["model"] for a in exported.artefacts) == ["multi", "single:instrument", "single:scene"]
    out = bench(exported.folder, "desktop", runtime="onnxruntime", precisions="fp32", compare="single",
                results=tmp_path / "bench", min_runs=5, min_secs=0, max_secs=2, warmup=1, progress=False)
    (line,) = out.compares
    assert line["tasks"] == ["scene", "instrument"] and line["n_single"] == 2
    assert line["multi_p50_ms"] > 0 and line["single_p50_sum_ms"] > 0
    # raw waveform in: no feature front-end, so the headline ratios are the model-only ones
    assert line["frontend_p50_ms"] == 0.0
    assert line["runtime_ratio_shared_frontend"] == line["runtime_ratio"]
    assert line["runtime_ratio_frontend_per_model"] == line["runtime_ratio"]


def test_denoise_needs_background_recordings(demo_corpus, tmp_path):
    from mtl_edge.features.waveform import WaveformConfig
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "audio").symlink_to(demo_corpus / "audio")
    (corpus / "tasks.json").symlink_to(demo_corpus / "tasks.json")
    lines = (demo_corpus / "manifest.csv").read_text().splitlines()
    kind = lines[0].split(",").index("kind")
    (corpus / "manifest.csv").write_text("\n".join([lines[0], *(l for l in lines[1:] if l.split(",")[kind] != "silence")]) + "\n")
    cfg = TrainConfig(model="wavenet", steps=1, model_args={"channels": 4, "blocks": 1, "layers": 2, "tag_hidden": 8,
                                                            "aux_hidden": 8})
    with pytest.raises(MtlEdgeError, match="denoise needs background recordings in the training split"):
        train_run(corpus, ["scene", "denoise"], tmp_path / "run", cfg, input_config=WaveformConfig(samples=800),
                  processes=1, workers=1)


def test_wavenet_trains_with_the_paper_recipe_unless_told_otherwise(tiny_corpus, tmp_path):
    import json

    from typer.testing import CliRunner

    from mtl_edge.cli import app

    base = ["train", "--corpus", str(tiny_corpus), "--tasks", "scene,next_step", "--model", "wavenet", "--steps", "1",
            "--model-args", "channels=4,blocks=1,layers=2,tag_hidden=8,aux_hidden=8"]
    runner = CliRunner()
    lrs = {"tagging": 5.37e-5, "auxiliary": 5e-3}
    for extra, expect in [([], ("sum", 48, lrs, 5)),
                          (["--weighting", "uniform", "--batch-size", "8", "--lr-decay-every", "0"], ("uniform", 8, lrs, None)),
                          (["--recipe", "none"], ("uniform", 64, None, None))]:
        out = tmp_path / str(len(extra))
        result = runner.invoke(app, [*base, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        train = json.loads((out / "config.json").read_text())["train"]
        assert (train["weighting"], train["batch_size"], train.get("head_lr"), train.get("lr_decay_every")) == expect
    # learning rates beside the recipe: the trunk's, and one head group's (the other keeps the recipe's)
    result = runner.invoke(app, [*base, "--lr", "1e-3", "--head-lr", "tagging=2e-3", "--out", str(tmp_path / "lr")])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "lr" / "config.json").read_text())["train"]
    assert (train["lr"], train["head_lr"]) == (1e-3, {"tagging": 2e-3, "auxiliary": 5e-3})
    for bad in ("tagging", "trunk=1e-3", "tagging=-1", "tagging=fast"):
        result = runner.invoke(app, [*base, "--head-lr", bad, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 1 and "--head-lr takes GROUP=LR pairs" in result.output, (bad, result.output)
    assert not (tmp_path / "bad").exists()
    result = runner.invoke(app, [*base, "--label-fraction", "0.01", "--out", str(tmp_path / "few")])
    assert result.exit_code != 0 and "without a training example" in result.output
    result = runner.invoke(app, ["train", "--corpus", str(tiny_corpus), "--tasks", "scene,denoise", "--out",
                                 str(tmp_path / "dnn")])
    assert result.exit_code != 0 and "has no head for denoise (reconstruction)" in result.output
    assert not (tmp_path / "dnn").exists()  # refused before any feature or folder work


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


def test_denoise_mixes_a_background_of_the_bank_at_10_to_15_db():
    specs = {**SPECS, "denoise": self_supervised_spec("denoise")}
    args = model_entry("wavenet").build_args(800, specs, None, channels=4, blocks=2, layers=3, tag_hidden=8, aux_hidden=8)
    model = create_model("wavenet", **args)
    x = torch.randn(64, 800) * 0.1
    with pytest.raises(MtlEdgeError, match="no noise bank attached"):
        model.eval()(x)
    bank = torch.randn(5, 800) * 0.3
    model.noise = bank
    model.train()
    noisy = model.add_noise(x)
    added = noisy - x
    snr = 20 * torch.log10(x.pow(2).mean(-1).sqrt() / added.pow(2).mean(-1).sqrt())
    assert snr.min() >= 10 - 1e-3 and snr.max() <= 15 + 1e-3 and snr.std() > 0.5  # drawn over the whole range
    # every added noise is a scaled background of the bank
    for row in added[:8]:
        ratios = [float(torch.linalg.vector_norm(row - (row @ b / (b @ b)) * b)) for b in bank]
        assert min(ratios) < 1e-4
    assert not torch.allclose(model.add_noise(x), noisy)  # training: a fresh draw each time
    model.eval()
    torch.testing.assert_close(model.add_noise(x), model.add_noise(x))  # evaluation: repeatable


def test_chunked_gradients_equal_the_whole_batch(monkeypatch):
    """A batch accumulated over chunks gives the whole batch's gradient, with mixup, for uniform and sum."""
    from mtl_edge.train.trainer import batch_losses, chunked_backward, mixup_partners
    from mtl_edge.train.weighting import create_weighting

    tasks = list(SPECS)
    x = torch.randn(10, 800) * 0.1
    batch_tasks = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0, 1, 0])
    targets = torch.tensor([0, -1, -1, 1, 2, -1, -1, 1, -1, 0])
    for name in ("uniform", "sum"):
        weighting = create_weighting(name, tasks)
        mix = mixup_partners(batch_tasks, 0.4, torch.Generator().manual_seed(1))
        whole, chunked = _model().train(), _model().train()
        losses = batch_losses(whole, x, batch_tasks, targets, tasks, mix, SPECS)
        counts = {t: int((batch_tasks == i).sum()) for i, t in enumerate(tasks)}
        total = weighting.backward(losses, whole.shared_parameters(), counts)
        total_c, losses_c = chunked_backward(chunked, weighting, x, batch_tasks, targets, tasks, mix, SPECS, chunk=3)
        torch.testing.assert_close(total_c, total.detach(), rtol=1e-5, atol=1e-7)
        for t in tasks:
            torch.testing.assert_close(losses_c[t], losses[t].detach(), rtol=1e-5, atol=1e-7)
        for (n, a), (_, b) in zip(whole.named_parameters(), chunked.named_parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=n)
    assert _model().train_chunk == _model().predict_batch



def test_training_sees_random_crops_and_evaluation_the_whole_clip():
    """The paper's random crops: each training clip becomes a window of ``crop`` samples at its own
    offset, the reconstruction targets are that window, the noise is cut to it; eval is untouched."""
    from mtl_edge.train.trainer import batch_losses

    specs = {**SPECS, "denoise": self_supervised_spec("denoise")}
    model = _model(crop=200)
    model.noise = torch.randn(3, 800) * 0.3
    x = torch.arange(800, dtype=torch.float32).repeat(16, 1) + 1000 * torch.arange(16).unsqueeze(1)
    model.train()
    torch.manual_seed(3)
    view = model.training_view(x)
    assert view.shape == (16, 200)
    starts = view[:, 0] - 1000 * torch.arange(16)
    torch.testing.assert_close(view - view[:, :1], torch.arange(200, dtype=torch.float32).repeat(16, 1))  # contiguous
    torch.testing.assert_close(view[:, 0], x[torch.arange(16), starts.long()])  # ... windows of each own clip
    assert len(set(starts.tolist())) > 8 and starts.min() >= 0 and starts.max() <= 600  # at offsets of their own
    torch.manual_seed(3)
    torch.testing.assert_close(model.training_view(x), view)  # from torch's generator: a resumed run repeats them
    assert model.add_noise(view).shape == (16, 200)
    assert model.eval().training_view(x) is x
    assert model(x)["scene"].shape == (16, 3) and model(x)["upsample"].shape == (16, 800)

    # the loss of a reconstruction task is taken against the cropped clip it saw
    model.train()
    clips = torch.randn(4, 800) * 0.1
    torch.manual_seed(5)
    losses = batch_losses(model, clips, torch.tensor([1, 1, 1, 1]), torch.full((4,), -1), ["scene", "next_step"], None, specs)
    torch.manual_seed(5)
    window = model.training_view(clips)
    expected = specs["next_step"].loss_fn()(model.task_outputs(window, {"next_step": torch.ones(4, dtype=torch.bool)})["next_step"], window) / 4
    torch.testing.assert_close(losses["next_step"], expected)
    assert _model(crop=200).train_chunk == 1_000_000 // (200 * 4) > _model().train_chunk  # chunks sized for the crop
    assert _model(crop=5000).crop == 0  # a crop past the clip is the whole clip


def test_inputs_or_crops_shorter_than_the_receptive_field_are_refused():
    entry = model_entry("wavenet")
    with pytest.raises(MtlEdgeError, match="a prepared clip of 100 samples is shorter than the trunk's receptive field \\(190"):
        entry.build_args(100, SPECS, None)
    with pytest.raises(MtlEdgeError, match="the crop of 10 samples is shorter than the trunk's receptive field \\(15"):
        entry.build_args(800, SPECS, None, blocks=2, layers=3, crop=10)
    assert entry.build_args(800, SPECS, None, blocks=2, layers=3, crop=15)["crop"] == 15

def test_the_sum_weighting_adds_per_task_means():
    from mtl_edge.train.weighting import create_weighting

    losses = {"a": torch.tensor(2.0), "b": torch.tensor(6.0)}  # summed sample losses / batch size 4
    total = create_weighting("sum", ["a", "b"]).combine(losses, {"a": 1, "b": 3})
    assert float(total) == pytest.approx(2.0 * 4 / 1 + 6.0 * 4 / 3)  # mean of a's 1 sample + mean of b's 3
    with pytest.raises(MtlEdgeError, match="needs each task's sample count"):
        create_weighting("sum", ["a", "b"]).combine(losses)


def test_the_lee2019_recipe_sets_per_head_learning_rates_and_their_decay():
    from mtl_edge.train.trainer import TrainConfig, _param_groups, recipe_config

    cfg = recipe_config("lee2019", model="wavenet")
    assert (cfg.weighting, cfg.batch_size, cfg.betas, cfg.mixup) == ("sum", 48, (0.9, 0.99), 0.0)
    model = _model()
    groups = _param_groups(cfg, model, SPECS, [])
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[3e-4] == {id(p) for p in model.trunk.parameters()}
    assert by_lr[5.37e-5] == {id(p) for p in model.heads["scene"].parameters()}
    assert by_lr[5e-3] == {id(p) for t in ("next_step", "upsample") for p in model.heads[t].parameters()}
    assert [cfg.lr_at(1.0, e) for e in (0, 4, 5, 9, 10)] == [1.0, 1.0, 0.95, 0.95, pytest.approx(0.9025)]
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert set(TrainConfig().to_json()) == {"model", "hidden", "dropout", "optimizer", "lr", "momentum", "weight_decay",
                                            "batch_size", "epochs", "patience", "mixup", "select", "weighting", "seed"}
    with pytest.raises(MtlEdgeError, match="unknown training recipe 'paper'"):
        recipe_config("paper")


def test_label_fraction_keeps_classes_and_unlabeled_seconds_caps_the_pool(tiny_corpus):
    from mtl_edge.features.waveform import WaveformConfig
    from mtl_edge.train.data import apply_budget, load_task_data

    data = load_task_data(tiny_corpus, ["scene", "next_step"], WaveformConfig(samples=4000), workers=1, progress=False)
    scarce = apply_budget(data, label_fraction=0.5, unlabeled_seconds=5.0, seed=0)
    before, after = data.tasks["scene"], scarce.tasks["scene"]
    for label_id in range(len(before.labels)):
        n = int((before.targets["train"] == label_id).sum())
        assert int((after.targets["train"] == label_id).sum()) == n // 2
    assert set(after.rows["train"]) < set(before.rows["train"])
    np.testing.assert_array_equal(after.rows["test"], before.rows["test"])
    assert len(scarce.tasks["next_step"].rows["train"]) == 20  # 5 s of 0.25 s clips
    again = apply_budget(data.subset(["scene"]), label_fraction=0.5, seed=0)  # a baseline draws the same subset
    np.testing.assert_array_equal(again.tasks["scene"].rows["train"], after.rows["train"])
    with pytest.raises(MtlEdgeError, match="leaves class .* without a training example"):
        apply_budget(data, label_fraction=0.01)
