"""The log mel CNN: what its per-clip normalisation removes, SpecAugment in training only, its checks, a real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import TaskSpec
from mtl_edge.train.logmel_cnn import FREQ_MASK, TIME_MASK, LogMelCNN, _cnn_args, warp_frequency


def _specs(**outputs) -> dict[str, TaskSpec]:
    return {task: TaskSpec(name=task, kind="classification", labels=tuple(f"l{i}" for i in range(n))) for task, n in outputs.items()}


def test_the_clip_level_and_a_fixed_gain_do_not_change_the_answer(speech_samples):
    """Per-clip band normalisation takes the level out: a clip 20 dB quieter gives the same bands and outputs."""
    torch.manual_seed(0)
    model = LogMelCNN(16000, {"kws": 12}, channels=4).eval()
    noise = np.random.default_rng(0).normal(0, 1e-3, 16000).astype(np.float32)  # the corpus's noise floor
    clip = torch.from_numpy(speech_samples + noise)[None]
    loud, quiet = model.bands(clip), model.bands(clip * 0.1)
    assert torch.allclose(loud, quiet, atol=2e-3)
    assert loud.shape == (1, 40, 101)
    assert torch.allclose(loud.mean(dim=-1), torch.zeros(1, 40), atol=1e-4)  # each band centred over the clip
    with torch.no_grad():
        assert torch.allclose(model(clip)["kws"], model(clip * 0.1)["kws"], atol=1e-3)


def _contiguous(indices: list[int]) -> bool:
    """No index missing between the first and the last (an empty mask is a span of width 0)."""
    return indices == list(range(indices[0], indices[0] + len(indices))) if indices else len(indices) == 0


def test_spec_augment_masks_one_band_span_and_one_frame_span_in_training_only(speech_samples):
    torch.manual_seed(0)
    model = LogMelCNN(16000, {"kws": 12}, channels=4)
    ones = torch.ones(200, 40, 101)
    masked = model._masked(ones)
    band_widths, frame_widths = set(), set()
    for row in masked:
        bands = (row == 0).all(dim=1).nonzero().flatten().tolist()  # bands masked at every frame
        frames = (row == 0).all(dim=0).nonzero().flatten().tolist()
        assert _contiguous(bands) and _contiguous(frames)
        assert len(bands) <= FREQ_MASK and len(frames) <= TIME_MASK
        # nothing else is masked
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[bands, :] = False
        keep[:, frames] = False
        assert (row[keep] == 1).all()
        band_widths.add(len(bands))
        frame_widths.add(len(frames))
    assert len(band_widths) > 3 and len(frame_widths) > 3  # widths are drawn, not fixed
    clip = torch.from_numpy(speech_samples)[None].repeat(4, 1)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.embed(clip), model.embed(clip))
    model.train()
    model.dropout.p = 0.0
    with torch.no_grad():  # batch norm in training uses the batch's statistics: the same batch twice, other masks
        assert not torch.equal(model.embed(clip), model.embed(clip))
    no_masks = LogMelCNN(16000, {"kws": 12}, channels=4, spec_augment=0)
    no_masks.dropout.p = 0.0
    with torch.no_grad():
        assert torch.equal(no_masks.embed(clip), no_masks.embed(clip))


def test_size_options_and_short_clips_are_refused_with_the_reason():
    specs = _specs(kws=12)
    assert _cnn_args(16000, specs)["tasks"] == {"kws": 12}
    with pytest.raises(MtlEdgeError, match="unknown model option.*layers"):
        _cnn_args(16000, specs, layers=3)
    with pytest.raises(MtlEdgeError, match="spec_augment is 0 or 1"):
        _cnn_args(16000, specs, spec_augment=2)
    with pytest.raises(MtlEdgeError, match="vtlp a percentage from 0 to 49, not vtlp=50"):
        _cnn_args(16000, specs, vtlp=50)
    with pytest.raises(MtlEdgeError, match="gives 7 frames.*at least 8"):
        _cnn_args(1000, specs)
    with pytest.raises(MtlEdgeError, match="of 4 bands"):
        _cnn_args(16000, specs, n_mels=4)


def test_the_cnn_trains_on_real_speech_reports_unseen_voices_and_exports(demo_corpus, tmp_path):
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    cfg = TrainConfig(model="logmel_cnn", epochs=3, patience=5, batch_size=32, seed=0, model_args={"channels": 4})
    run = train_run(demo_corpus, ["kws", "gender"], tmp_path / "run", cfg, processes=1)
    kws = run.metrics["tasks"]["kws"]
    assert run.metrics["tasks"]["gender"]["multi"]["accuracy"] > 0.5
    assert kws["test_unseen_speakers"]["samples"] > 0 and 0 <= kws["test_unseen_speakers"]["multi"]["accuracy"] <= 1
    import csv

    losses: dict[int, list[float]] = {}
    with open(run.folder / "multi" / "curves.csv") as f:
        for row in csv.DictReader(f):
            losses.setdefault(int(row["epoch"]), []).append(float(row["loss"]))
    first, last = min(losses), max(losses)
    assert np.mean(losses[last]) < np.mean(losses[first])
    exported = export_run(run.folder, formats="onnx,tflite", precisions="fp32", progress=False)
    assert [a["status"] for a in exported.artefacts] == ["ok", "ok"]
    assert all([i["name"] for i in a["inputs"]] == ["waveform"] for a in exported.artefacts)


def test_the_cnn_trains_with_the_kws_recipe_unless_told_otherwise():
    """No mixup (a mix of two words is no word) and a one-cycle schedule, unless --recipe says otherwise."""
    from mtl_edge.cli_options import recipe_for, train_config

    assert recipe_for("logmel_cnn", None) == "kws_cnn" and recipe_for("dnn", None) is None
    cfg = train_config("logmel_cnn", "256,256,256", 0, None, None, "channels=8", recipe_for("logmel_cnn", None))
    assert (cfg.mixup, cfg.lr, cfg.lr_schedule, cfg.steps, cfg.model_args) == (0.0, 3e-3, "onecycle", 1500, {"channels": 8})
    plain = train_config("logmel_cnn", "256,256,256", 0, None, None, None, recipe_for("logmel_cnn", "none"))
    assert (plain.mixup, plain.lr, plain.lr_schedule, plain.steps) == (0.4, 1e-3, "step", 0)
    given = train_config("logmel_cnn", "256,256,256", 0, None, None, None, recipe_for("logmel_cnn", None), lr=5e-4, steps=300)
    assert (given.lr, given.steps, given.mixup) == (5e-4, 300, 0.0)  # options given beside the recipe win


def test_the_onecycle_schedule_is_torchs_as_a_function_of_the_step():
    """The same rates as torch's OneCycleLR at every step, computed from the step alone (a resumed run continues it)."""
    from mtl_edge.train.trainer import TrainConfig

    cfg = TrainConfig(lr=3e-3, steps=120, lr_schedule="onecycle")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=120, cycle_momentum=False)
    expected = []
    for _ in range(120):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [cfg.lr_at_step(3e-3, step) for step in range(120)]
    assert np.allclose(ours, expected, rtol=1e-9, atol=1e-12)
    assert max(ours) == pytest.approx(3e-3) and ours[0] == pytest.approx(3e-3 / 25)


def test_onecycle_without_a_step_budget_or_an_unknown_schedule_is_refused(tiny_corpus, tmp_path):
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    with pytest.raises(MtlEdgeError, match="onecycle .* needs a step budget"):
        train_run(tiny_corpus, ["kws"], tmp_path / "a", TrainConfig(model="logmel_cnn", lr_schedule="onecycle", epochs=1,
                                                                     model_args={"channels": 2}), processes=1)
    with pytest.raises(MtlEdgeError, match="unknown learning-rate schedule 'cosine'"):
        train_run(tiny_corpus, ["kws"], tmp_path / "b", TrainConfig(model="logmel_cnn", lr_schedule="cosine", epochs=1,
                                                                     model_args={"channels": 2}), processes=1)


def test_vtlp_moves_a_tone_by_the_warp_factor_and_keeps_nyquist():
    """Below the knee a component at bin k moves to k * alpha; alpha 1 is the identity; Nyquist stays at Nyquist."""
    bins, knee = 513, 4800.0 * 1024 / 16000
    power = torch.zeros(3, 2, bins)
    power[:, :, 100] = 1.0
    power[:, :, bins - 1] = 0.5
    alpha = torch.tensor([1.0, 1.1, 0.9])
    warped = warp_frequency(power, alpha, knee)
    assert torch.equal(warped[0], power[0])
    for row, a in zip(warped[1:], alpha[1:]):
        peak = row[0, :400]
        centre = float((peak * torch.arange(400)).sum() / peak.sum())  # the interpolated tone's centre
        assert centre == pytest.approx(100 * float(a), abs=0.05)
        assert float(row[0, bins - 1]) == pytest.approx(0.5)
        assert torch.equal(row[0], row[1])  # every frame of a clip gets the clip's factor


def test_vtlp_warps_only_in_training_and_draws_a_factor_per_clip(speech_samples):
    torch.manual_seed(0)
    plain = LogMelCNN(16000, {"kws": 12}, channels=4)
    warped = LogMelCNN(16000, {"kws": 12}, channels=4, vtlp=10)
    warped.load_state_dict(plain.state_dict())
    clip = torch.from_numpy(speech_samples)[None].repeat(4, 1)
    for model in (plain, warped):
        model.spec_augment = False
        model.dropout.p = 0.0
    plain.eval(), warped.eval()
    with torch.no_grad():  # the exported (eval) graph is the plain one
        assert torch.equal(plain.embed(clip), warped.embed(clip))
    plain.train(), warped.train()
    with torch.no_grad():
        bands = plain.bands(clip)
        assert torch.equal(bands, plain.bands(clip))
        drawn = warped.bands(clip)
        assert not torch.allclose(drawn, bands, atol=1e-3)
        assert not torch.allclose(drawn[0], drawn[1], atol=1e-3)  # one factor per clip, not per batch
