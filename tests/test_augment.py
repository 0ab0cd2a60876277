"""Augmented copies of training clips: which rows they join, determinism, the cache, bad input, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data.backgrounds import background_paths
from mtl_edge.data.manifest import read_manifest
from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.augment import AugmentConfig, augmented_inputs
from mtl_edge.features.logmel import FeatureConfig
from mtl_edge.train.data import load_task_data

AUG = AugmentConfig(copies=2, transforms=("pitch_shift", "gain", "background_noise"), tasks=("kws",), probability=1.0)


@pytest.fixture(scope="module")
def corpus(tiny_corpus, tmp_path_factory):
    """A writable copy of the tiny corpus (the cache lives inside it)."""
    folder = tmp_path_factory.mktemp("aug") / "corpus"
    shutil.copytree(tiny_corpus, folder, ignore=shutil.ignore_patterns(".features"))
    return folder


def test_copies_join_only_the_chosen_tasks_training_split(corpus):
    plain = load_task_data(corpus, ["kws", "scene"], workers=1, progress=False)
    augmented = load_task_data(corpus, ["kws", "scene"], workers=1, progress=False, augment=AUG)
    kws, kws0 = augmented.tasks["kws"], plain.tasks["kws"]
    n = len(kws0.rows["train"])
    assert len(kws.rows["train"]) == 3 * n
    np.testing.assert_array_equal(kws.rows["train"][:n], kws0.rows["train"])
    np.testing.assert_array_equal(kws.targets["train"], np.tile(kws0.targets["train"], 3))
    for split in ("validation", "test", "test_unseen_speakers"):  # held-out splits stay as they are
        np.testing.assert_array_equal(kws.rows[split], kws0.rows[split])
    for split, rows in augmented.tasks["scene"].rows.items():  # scene is not augmented
        np.testing.assert_array_equal(rows, plain.tasks["scene"].rows[split])
    # each copy is the clip's own features, changed: pitch, gain and noise alter them, the shape stays
    copy_rows = kws.rows["train"][n:2 * n]
    assert all(augmented.paths[c] == f"{augmented.paths[o]}#augmented-0" for o, c in zip(kws0.rows["train"], copy_rows))
    originals, copies = augmented.inputs[kws0.rows["train"]], augmented.inputs[copy_rows]
    assert copies.shape == originals.shape and np.isfinite(copies).all()
    assert (np.abs(copies - originals).max(axis=1) > 1e-3).all()
    second = augmented.inputs[kws.rows["train"][2 * n:]]
    assert (np.abs(second - copies).max(axis=1) > 1e-3).all()  # two copies are two draws


def test_copies_are_identical_across_workers_and_reused_from_the_cache(corpus, tmp_path):
    paths = sorted({r.path for r in read_manifest(corpus).rows_for("kws") if r.split == "train"})[:40]
    cfg = FeatureConfig()
    serial = augmented_inputs(corpus, paths, cfg, AUG, cache_dir=tmp_path / "a", workers=1, progress=False)
    parallel = augmented_inputs(corpus, paths, cfg, AUG, cache_dir=tmp_path / "b", workers=2, progress=False)
    assert serial.items == parallel.items and len(serial.items) == 80
    np.testing.assert_array_equal(serial.inputs, parallel.inputs)
    (entry,) = (tmp_path / "a").iterdir()
    written = (entry / "inputs.npy").stat().st_mtime_ns
    subset = augmented_inputs(corpus, paths[:10], cfg, AUG, cache_dir=tmp_path / "a", workers=1, progress=False)
    np.testing.assert_array_equal(subset.inputs, serial.inputs[:20])
    assert (entry / "inputs.npy").stat().st_mtime_ns == written  # read, not recomputed
    other = augmented_inputs(corpus, paths[:10], cfg, AugmentConfig(**{**AUG.to_json(), "seed": 1}),
                             cache_dir=tmp_path / "a", workers=1, progress=False)
    assert not np.allclose(other.inputs, subset.inputs)  # another seed, other draws, another entry
    assert len(list((tmp_path / "a").iterdir())) == 2


def test_background_noise_is_the_training_splits_own_backgrounds(corpus):
    manifest = read_manifest(corpus)
    split_of = manifest.clips()
    found = background_paths(corpus)
    assert found and all(split_of[str(p.relative_to(corpus))] == "train" for p in found)
    kinds = {r.path: r.extra["kind"] for r in manifest.rows}
    assert {kinds[str(p.relative_to(corpus))] for p in found} == {"silence"}


def test_a_corpus_without_backgrounds_gets_a_clear_error(corpus, tmp_path):
    manifest = read_manifest(corpus)
    keep = [r for r in manifest.rows if r.extra["kind"] != "silence"]
    bare = tmp_path / "bare"
    shutil.copytree(corpus, bare, ignore=shutil.ignore_patterns(".features"))
    lines = (corpus / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    kind = header.index("kind")
    (bare / "manifest.csv").write_text("\n".join([lines[0], *(l for l in lines[1:] if l.split(",")[kind] != "silence")]) + "\n")
    assert len(read_manifest(bare).rows) == len(keep)
    with pytest.raises(MtlEdgeError, match="no background recordings in the train split"):
        load_task_data(bare, ["kws"], workers=1, progress=False, augment=AUG)
    # without background noise the same corpus augments fine
    data = load_task_data(bare, ["kws"], workers=1, progress=False,
                          augment=AugmentConfig(copies=1, transforms=("gain",), probability=1.0))
    assert len(data.tasks["kws"].rows["train"]) == 2 * len([r for r in keep if r.task == "kws" and r.split == "train"])


@pytest.mark.parametrize("kwargs, message", [
    ({"copies": 1, "transforms": ("reverb",)}, "unknown augmentation reverb"),
    ({"copies": -1}, "copies must be >= 0"),
    ({"copies": 1, "transforms": ()}, "no transform given"),
    ({"copies": 1, "probability": 0.0}, "probability must be in"),
])
def test_bad_augment_configs_are_refused(kwargs, message):
    with pytest.raises(MtlEdgeError, match=message):
        AugmentConfig(**kwargs)


def test_train_cli_records_the_augmentation_and_refuses_bad_options(corpus, tmp_path):
    runner = CliRunner()
    base = ["train", "--corpus", str(corpus), "--tasks", "kws,scene", "--steps", "3", "--hidden", "128,128,128"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "r"), "--augment", "gain,pitch_shift", "--augment-copies", "1",
                                 "--augment-tasks", "kws"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["train"]["augment"]
    assert recorded["transforms"] == ["gain", "pitch_shift"] and recorded["tasks"] == ["kws"] and recorded["copies"] == 1
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "r"), "--resume", "--augment", "gain", "--augment-tasks", "kws"])
    assert result.exit_code != 0 and "other settings" in result.output  # another augmentation is another run
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "s"), "--augment", "gain", "--augment-tasks", "speaker"])
    assert result.exit_code != 0 and "speaker" in result.output and "does not train" in result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "t"), "--augment-tasks", "kws"])
    assert result.exit_code != 0 and "needs --augment" in result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "u"), "--augment", "echo"])
    assert result.exit_code != 0 and "unknown augmentation echo" in result.output
    plain = runner.invoke(app, [*base, "--out", str(tmp_path / "v")])
    assert plain.exit_code == 0 and "augment" not in json.loads((tmp_path / "v" / "config.json").read_text())["train"]


def test_waveform_inputs_are_augmented_the_same_way(corpus):
    """The wavenet's raw-audio inputs: copies are the clip's samples changed (noise injection, pitch shift)."""
    from mtl_edge.features.waveform import WaveformConfig

    cfg = AugmentConfig(copies=1, transforms=("pitch_shift", "background_noise"), tasks=("scene",), probability=1.0)
    plain = load_task_data(corpus, ["scene"], WaveformConfig(samples=4000), workers=1, progress=False)
    data = load_task_data(corpus, ["scene"], WaveformConfig(samples=4000), workers=1, progress=False, augment=cfg)
    n = len(plain.tasks["scene"].rows["train"])
    originals = data.inputs[plain.tasks["scene"].rows["train"]]
    copies = data.inputs[data.tasks["scene"].rows["train"][n:]]
    assert copies.shape == originals.shape == (n, 4000)
    assert np.abs(copies).max() <= 1.0 and (np.abs(copies - originals).max(axis=1) > 1e-3).all()


def test_gaussian_noise_is_white_noise_at_an_snr_within_the_range(corpus):
    """Noise injection that keeps a scene's label (background_noise mixes in other scenes' backgrounds)."""
    from mtl_edge.features.waveform import WaveformConfig

    cfg = AugmentConfig(copies=1, transforms=("gaussian_noise",), tasks=("scene",), probability=1.0, snr_db=(10.0, 15.0))
    # the whole 1 s clip, over which audiomentations sets the SNR
    plain = load_task_data(corpus, ["scene"], WaveformConfig(), workers=1, progress=False)
    data = load_task_data(corpus, ["scene"], WaveformConfig(), workers=1, progress=False, augment=cfg)
    n = len(plain.tasks["scene"].rows["train"])
    originals = data.inputs[plain.tasks["scene"].rows["train"]].astype(np.float64)
    noise = data.inputs[data.tasks["scene"].rows["train"][n:]] - originals
    snr = 10 * np.log10((originals ** 2).mean(axis=1) / (noise ** 2).mean(axis=1))
    assert ((snr > 9.9) & (snr < 15.1)).all() and snr.std() > 0.1  # drawn per copy within the range
    spectrum = np.abs(np.fft.rfft(noise, axis=1)) ** 2
    low, high = spectrum[:, 1:1000].mean(), spectrum[:, 1000:].mean()
    assert 0.8 < low / high < 1.25  # white: as much power in the low half as in the high half
    assert AugmentConfig(copies=1).transforms == ("pitch_shift", "time_stretch", "gain", "background_noise")
