"""Features on real audio: log-mel summaries mean what they say, crops, and the on-disk cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.fft
import scipy.stats
from typer.testing import CliRunner

from mtl_edge.data.audio import load_audio, write_wav
from mtl_edge.data.manifest import Row, make_manifest
from mtl_edge.errors import AudioError
from mtl_edge.features import logmel
from mtl_edge.features.cache import prepare_features
from mtl_edge.features.logmel import FeatureConfig, FeatureConfigError, extract, extract_batch, feature_names
from mtl_edge.features.waveform import crop_batch, crop_offset, crop_waveform, scale_waveform, typical_clip_samples

WORDS = ("yes", "no", "up", "down", "left", "right")


def _one_second(path: Path) -> np.ndarray:
    x = load_audio(path).samples
    return np.pad(x, (0, max(0, 16000 - len(x))))[:16000]


def _stat(vec: np.ndarray, cfg: FeatureConfig, stat: str) -> np.ndarray:
    i = cfg.stats.index(stat)
    return vec[i * cfg.n_mels:(i + 1) * cfg.n_mels]


def _librosa_logmel(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    s = librosa.feature.melspectrogram(
        y=x, sr=16000, n_fft=cfg.fft_size, hop_length=cfg.hop_length, win_length=cfg.win_length,
        n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, power=2.0,
    )
    return np.log(np.maximum(s, cfg.floor)).astype(np.float64)


# ---- log mel summaries -------------------------------------------------------------------------


def test_vector_length_matches_names_and_is_finite(speech_samples):
    for cfg in (FeatureConfig(), FeatureConfig(n_mels=24, stats=("mean", "p25"), segments=0),
                FeatureConfig(n_mels=128, segments=3, segment_stats=("mean", "std"))):
        vec = extract(speech_samples, cfg)
        names = feature_names(cfg)
        assert vec.shape == (len(names),) == (cfg.n_features,)
        assert vec.dtype == np.float32
        assert np.isfinite(vec).all()
        assert len(set(names)) == len(names)
    names = feature_names(FeatureConfig())
    assert names[3] == "mel03_mean" and "mel39_kurt" in names and "mel03_seg7_mean" in names
    assert names[-1] == "cep19_dmeanabs" and len(names) == FeatureConfig().n_features == 820


def test_stats_mean_what_they_say(speech_samples):
    cfg = FeatureConfig(stats=("mean", "std", "min", "max", "median", "p10", "p90", "skew", "kurt",
                               "dmeanabs", "dstd", "dmean"), segments=3, align_db=None, n_cepstra=0)
    vec = extract(speech_samples, cfg).astype(np.float64)
    ref = _librosa_logmel(speech_samples, cfg)
    tol = dict(rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(_stat(vec, cfg, "mean"), ref.mean(axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "std"), ref.std(axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "min"), ref.min(axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "max"), ref.max(axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "median"), np.median(ref, axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "p10"), np.percentile(ref, 10, axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "p90"), np.percentile(ref, 90, axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "skew"), scipy.stats.skew(ref, axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "kurt"), scipy.stats.kurtosis(ref, axis=1, fisher=True), **tol)
    delta = np.diff(ref, axis=1)
    np.testing.assert_allclose(_stat(vec, cfg, "dmeanabs"), np.abs(delta).mean(axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "dstd"), delta.std(axis=1), **tol)
    np.testing.assert_allclose(_stat(vec, cfg, "dmean"), delta.mean(axis=1), **tol)
    # Segment means: the frames split into 3 consecutive equal parts.
    n = ref.shape[1]
    seg_block = vec[len(cfg.stats) * cfg.n_mels:].reshape(3, cfg.n_mels)
    for k in range(3):
        np.testing.assert_allclose(seg_block[k], ref[:, k * n // 3:(k + 1) * n // 3].mean(axis=1), **tol)
    # The documented per-frame representation is librosa's log mel spectrogram.
    np.testing.assert_allclose(logmel.logmel(speech_samples, cfg), ref, rtol=1e-4, atol=2e-4)


def test_silence_and_tiny_clips_stay_finite():
    cfg = FeatureConfig()
    silent = extract(np.zeros(16000, np.float32), cfg)
    assert np.isfinite(silent).all()
    assert np.allclose(_stat(silent, cfg, "kurt"), 0) and np.allclose(_stat(silent, cfg, "skew"), 0)
    assert np.allclose(_stat(silent, cfg, "mean"), np.log(cfg.floor), rtol=1e-5)
    tiny = extract(np.full(50, 0.1, np.float32), cfg)  # one frame: fewer frames than segments
    assert np.isfinite(tiny).all() and tiny.shape == (cfg.n_features,)
    with pytest.raises(ValueError):
        extract(np.zeros(0, np.float32), cfg)


def test_different_words_give_different_vectors(speak):
    cfg = FeatureConfig()
    vecs = {w: extract(_one_second(speak(w)), cfg) for w in ("yes", "no", "seven")}
    again = extract(_one_second(speak("yes")), cfg)
    np.testing.assert_array_equal(vecs["yes"], again)  # deterministic on the same rendering
    for a in vecs:
        for b in vecs:
            if a < b:
                assert np.linalg.norm(vecs[a] - vecs[b]) > 1.0, (a, b)
    # Segment means separate "yes" from its time-reversal, which clip-wide statistics cannot.
    x = _one_second(speak("yes"))
    fwd, rev = extract(x, cfg), extract(x[::-1].copy(), cfg)
    n_clip = len(cfg.stats) * cfg.n_mels
    assert np.abs(fwd[n_clip:] - rev[n_clip:]).max() > 1.0
    np.testing.assert_allclose(_stat(fwd, cfg, "mean"), _stat(rev, cfg, "mean"), atol=0.1)


def test_batch_equals_single_clips(speak, speech_samples):
    cfg = FeatureConfig()
    clips = np.stack([speech_samples, _one_second(speak("left")), 0.3 * speech_samples])
    batch = extract_batch(clips, cfg)
    assert batch.shape == (3, cfg.n_features)
    for i in range(3):
        np.testing.assert_allclose(batch[i], extract(clips[i], cfg), rtol=1e-6, atol=1e-6)


def test_config_is_validated_and_round_trips():
    for bad in (dict(stats=("mean", "bogus")), dict(win_ms=0.0), dict(fmin=9000.0), dict(stats=("p101",)),
                dict(stats=(), segments=0, n_cepstra=0), dict(segment_stats=("kurt",)), dict(align_db=0.0),
                dict(align_gap_ms=-1.0), dict(n_cepstra=41), dict(cepstral_stats=("p10",)),
                dict(cepstral_stats=()), dict(segment_stats=("mean", "mean"))):
        with pytest.raises(FeatureConfigError):
            FeatureConfig(**bad)
    cfg = FeatureConfig(n_mels=32, stats=["mean", "p75"], segments=2)
    assert cfg.stats == ("mean", "p75")
    assert FeatureConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert (FeatureConfig().win_length, FeatureConfig().hop_length, FeatureConfig().fft_size) == (640, 160, 1024)
    assert (FeatureConfig(win_ms=25.0).win_length, FeatureConfig(win_ms=25.0).fft_size) == (400, 512)
    # A config written before alignment and cepstra existed keeps meaning what it meant then.
    old = {k: v for k, v in FeatureConfig(win_ms=25.0, segments=4).to_json().items()
           if k not in ("align_db", "align_gap_ms", "n_cepstra", "cepstral_stats")}
    legacy = FeatureConfig.from_json(old)
    assert legacy.align_db is None and legacy.n_cepstra == 0 and legacy.n_features == 600
    assert FeatureConfig.from_json(FeatureConfig().to_json()) == FeatureConfig()


def _place(word: np.ndarray, offset: int, n: int = 16000) -> np.ndarray:
    clip = np.zeros(n, np.float32)
    clip[offset:offset + len(word)] = word[:n - offset]
    return clip


def _spoken(speak, word: str) -> np.ndarray:
    """The word's samples at 16 kHz without espeak's leading and trailing silence."""
    x = load_audio(speak(word)).samples
    loud = np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())
    return x[loud[0]:loud[-1] + 1]


def test_onset_alignment_makes_segments_invariant_to_word_position(speak):
    word = _spoken(speak, "left")
    assert 3000 < len(word) < 11000
    early, late = _place(word, 700), _place(word, 16000 - len(word) - 900)  # ~0.3 s apart, off the hop grid
    aligned = FeatureConfig()
    whole = FeatureConfig(align_db=None)
    n_clip = len(aligned.stats) * aligned.n_mels
    seg = slice(n_clip, n_clip + aligned.segments * aligned.n_mels)

    def seg_diff(cfg):
        a, b = extract(early, cfg)[seg], extract(late, cfg)[seg]
        return np.abs(a - b).mean()

    # Whole-clip segments see the word in other segments; active-region segments barely move.
    assert seg_diff(whole) > 5.0
    assert seg_diff(aligned) < 0.1 * seg_diff(whole)
    # ... and still tell words apart.
    other = extract(_place(_spoken(speak, "right"), 700), aligned)[seg]
    assert np.abs(other - extract(early, aligned)[seg]).mean() > 5 * seg_diff(aligned)


def test_active_region_finds_the_word(speak, recordings):
    cfg = FeatureConfig()
    word = _spoken(speak, "down")  # one voiced syllable: all of it within align_db of its peak
    offset = 5000
    # a real recording as background, its peak 26 dB below the word's
    rec = np.resize(load_audio(recordings[0]).samples, 16000)
    clip = _place(word, offset) + (0.05 * np.abs(word).max() / np.abs(rec).max()) * rec
    lm = logmel.logmel(clip, cfg)
    lo, hi = logmel.active_region(lm, cfg)
    hop = cfg.hop_length
    start, end = offset / hop, (offset + len(word)) / hop
    # inside the word and most of it (a quiet /s/ or a weak second syllable may be left out)
    assert start - 3 <= lo and hi <= end + 3, (lo, hi, start, end)
    assert hi - lo >= 0.6 * (end - start), (lo, hi, start, end)
    # a batch gives each clip its own region; no alignment means the whole clip
    lo2, hi2 = logmel.active_region(np.stack([lm, logmel.logmel(_place(word, 1000), cfg)]), cfg)
    assert lo2[0] == lo and lo2[1] < lo2[0] and hi2[1] - lo2[1] == pytest.approx(hi - lo, abs=3)
    lo3, hi3 = logmel.active_region(lm, FeatureConfig(align_db=None))
    assert (int(lo3), int(hi3)) == (0, lm.shape[-1])


def test_cepstral_stats_are_dct_of_log_mels(speech_samples):
    cfg = FeatureConfig(stats=("mean",), segments=0, n_cepstra=13,
                        cepstral_stats=("mean", "std", "min", "max", "dmeanabs", "dstd", "dmean"))
    vec = extract(speech_samples, cfg).astype(np.float64)
    assert vec.shape == (cfg.n_mels + 13 * 7,) and feature_names(cfg)[cfg.n_mels] == "cep00_mean"
    cep = scipy.fft.dct(_librosa_logmel(speech_samples, cfg), type=2, norm="ortho", axis=0)[:13]
    d = np.diff(cep, axis=1)
    want = [cep.mean(1), cep.std(1), cep.min(1), cep.max(1), np.abs(d).mean(1), d.std(1), d.mean(1)]
    np.testing.assert_allclose(vec[cfg.n_mels:], np.concatenate(want), rtol=1e-4, atol=5e-4)
    # MFCC-like: coefficient 0 is the (scaled) mean log energy over the bands
    np.testing.assert_allclose(vec[cfg.n_mels], vec[:cfg.n_mels].mean() * np.sqrt(cfg.n_mels), rtol=1e-4)


# ---- waveform crops ----------------------------------------------------------------------------


def test_crops_length_padding_and_offsets(speech_samples, recordings):
    long = load_audio(recordings[0]).samples
    assert len(long) > 16000
    centre = crop_waveform(long)
    start = (len(long) - 16000) // 2
    assert centre.shape == (16000,) and centre.dtype == np.float32
    np.testing.assert_array_equal(centre, long[start:start + 16000])
    np.testing.assert_array_equal(crop_waveform(long, position="first"), long[:16000])

    short = speech_samples[:9000]
    padded = crop_waveform(short, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(padded[:9000], short)
    assert not padded[9000:].any()

    rng = np.random.default_rng(1)
    offsets = [crop_offset(len(long), 16000, rng) for _ in range(300)]
    assert min(offsets) >= 0 and max(offsets) <= len(long) - 16000
    assert len(set(offsets)) > 250  # spread over the range, not a constant
    assert crop_offset(16000, 16000, rng) == 0 and crop_offset(100, 16000, rng) == 0
    off = crop_offset(len(long), 16000, np.random.default_rng(7))
    np.testing.assert_array_equal(crop_waveform(long, rng=np.random.default_rng(7)), long[off:off + 16000])


def test_crops_are_deterministic_for_a_seed(recordings):
    clips = [load_audio(p).samples for p in recordings[:3]]
    a = crop_batch(clips, 8000, rng=np.random.default_rng(42))
    b = crop_batch(clips, 8000, rng=np.random.default_rng(42))
    c = crop_batch(clips, 8000, rng=np.random.default_rng(43))
    assert a.shape == (3, 8000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scaling_only_when_the_peak_exceeds_one(speech_samples):
    quiet = 0.5 * speech_samples / np.abs(speech_samples).max()
    np.testing.assert_array_equal(scale_waveform(quiet), quiet.astype(np.float32))
    loud = 3.0 * speech_samples / np.abs(speech_samples).max()
    scaled = crop_waveform(loud)
    assert np.abs(scaled).max() == pytest.approx(1.0)
    np.testing.assert_allclose(scaled, loud / 3.0, atol=1e-6)
    with pytest.raises(ValueError):
        scale_waveform(np.array([0.1, np.nan], np.float32))


def test_typical_clip_length(speak, recordings):
    assert typical_clip_samples([speak("up")] * 3) < 16000 * 2
    info_len = len(load_audio(recordings[1]).samples)
    assert abs(typical_clip_samples([recordings[1]]) - info_len) <= 1


# ---- the cache ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_wavs(speak, tmp_path_factory):
    """Real speech, one WAV per word, rendered once for the module."""
    folder = tmp_path_factory.mktemp("words")
    return {w: speak(w, out=folder / f"{w}.wav") for w in WORDS}


def _corpus(tmp_path: Path, word_wavs: dict[str, Path], bad: bool = False) -> Path:
    root = tmp_path / "corpus"
    (root / "audio").mkdir(parents=True)
    rows = []
    for i, (word, wav) in enumerate(word_wavs.items()):
        rel = f"audio/{word}.wav"
        shutil.copy(wav, root / rel)
        split = "train" if i % 2 == 0 else "test"
        rows.append(Row(rel, "kws", "a" if i < 3 else "b", split))
        rows.append(Row(rel, "speaker", "s1" if i % 2 == 0 else "s2", split))
    if bad:
        (root / "audio/zzz_corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage-not-audio" * 7)
        rows.append(Row("audio/zzz_corrupt.wav", "kws", "a", "train"))
    make_manifest(root, rows).write(root)
    return root


class _Counter:
    """Wrap logmel.extract_batch to count calls and optionally fail on the n-th one."""

    def __init__(self, monkeypatch, fail_on: int | None = None):
        self.calls = 0
        self.fail_on = fail_on
        self._real = logmel.extract_batch
        monkeypatch.setattr(logmel, "extract_batch", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        return self._real(*args, **kwargs)


def test_cache_builds_then_reuses(tmp_path, word_wavs, monkeypatch):
    root = _corpus(tmp_path, word_wavs)
    counter = _Counter(monkeypatch)
    cfg = FeatureConfig()
    table = prepare_features(root, cfg, progress=False)
    assert counter.calls > 0 and not table.reused
    assert table.paths == sorted(f"audio/{w}.wav" for w in WORDS)
    assert isinstance(table.features, np.memmap) and table.features.dtype == np.float32
    assert table.features.shape == (len(WORDS), len(feature_names(cfg)))
    assert table.folder.parent == root / ".features" and table.skipped == []
    meta = json.loads((table.folder / "meta.json").read_text())
    assert meta["feature_names"] == feature_names(cfg) and meta["skipped"] == 0
    assert FeatureConfig.from_json(meta["config"]) == cfg
    # Each row is the clip's own features.
    i = table.paths.index("audio/no.wav")
    np.testing.assert_allclose(table.features[i], extract(load_audio(root / "audio/no.wav").samples, cfg), rtol=1e-6)

    counter.calls = 0
    again = prepare_features(root, cfg, progress=False)
    assert counter.calls == 0 and again.reused
    assert again.folder == table.folder and again.paths == table.paths
    np.testing.assert_array_equal(np.asarray(again.features), np.asarray(table.features))

    (table.folder / "meta.json").unlink()  # an entry that is not whole is rebuilt, not trusted
    rebuilt = prepare_features(root, cfg, progress=False)
    assert counter.calls > 0 and not rebuilt.reused and (rebuilt.folder / "meta.json").is_file()


def test_cache_invalidated_by_config_and_audio_changes(tmp_path, word_wavs, monkeypatch):
    root = _corpus(tmp_path, word_wavs)
    first = prepare_features(root, FeatureConfig(), progress=False)
    counter = _Counter(monkeypatch)
    other = prepare_features(root, FeatureConfig(n_mels=24), progress=False)
    assert counter.calls > 0 and other.folder != first.folder and other.features.shape[1] != first.features.shape[1]

    before = np.array(first.features)
    shutil.copy(word_wavs["yes"], root / "audio/no.wav")  # a clip's audio is replaced
    counter.calls = 0
    changed = prepare_features(root, FeatureConfig(), progress=False)
    assert counter.calls > 0 and changed.folder != first.folder
    i = changed.paths.index("audio/no.wav")
    j = changed.paths.index("audio/yes.wav")
    assert not np.array_equal(changed.features[i], before[i])
    np.testing.assert_array_equal(changed.features[i], changed.features[j])


def test_cache_write_is_atomic_on_interruption(tmp_path, word_wavs, monkeypatch):
    root = _corpus(tmp_path, word_wavs)
    cache = tmp_path / "cache"
    counter = _Counter(monkeypatch, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        prepare_features(root, FeatureConfig(), cache_dir=cache, progress=False)
    assert counter.calls == 3
    assert not cache.exists() or list(cache.iterdir()) == []  # no entry, not even a partial one

    counter.fail_on, counter.calls = None, 0
    table = prepare_features(root, FeatureConfig(), cache_dir=cache, progress=False)
    assert counter.calls > 0 and not table.reused and len(table.paths) == len(WORDS)
    assert [p.name for p in cache.iterdir()] == [table.folder.name]


def test_bad_audio_fail_and_skip(tmp_path, word_wavs):
    root = _corpus(tmp_path, word_wavs, bad=True)
    with pytest.raises(AudioError, match="zzz_corrupt.wav"):
        prepare_features(root, FeatureConfig(), progress=False)
    assert not (root / ".features").exists() or not any((root / ".features").iterdir())

    table = prepare_features(root, FeatureConfig(), on_bad_audio="skip", progress=False)
    assert "audio/zzz_corrupt.wav" not in table.paths and len(table.paths) == len(WORDS)
    assert len(table.skipped) == 1 and "zzz_corrupt.wav" in table.skipped[0]
    assert table.features.shape[0] == len(WORDS) and np.isfinite(np.asarray(table.features)).all()
    again = prepare_features(root, FeatureConfig(), on_bad_audio="skip", progress=False)
    assert again.reused and again.skipped == table.skipped
    with pytest.raises(AudioError, match="zzz_corrupt.wav"):  # a reused entry still honours "fail"
        prepare_features(root, FeatureConfig(), progress=False)


def test_two_workers_bit_identical_to_serial(tmp_path, word_wavs, recordings, monkeypatch):
    from mtl_edge.features import cache as cache_mod

    monkeypatch.setattr(cache_mod, "CHUNK", 3)  # several chunks from a small corpus
    root = _corpus(tmp_path, word_wavs)
    for p in recordings[:3]:  # resampled stereo recordings too
        write_wav(root / "audio" / f"rec_{p.stem}.wav", load_audio(p).samples)
    rows = [Row(f"audio/{w}.wav", "kws", "speech", "train") for w in WORDS]
    rows += [Row(f"audio/rec_{p.stem}.wav", "kws", "rec", "test") for p in recordings[:3]]
    make_manifest(root, rows).write(root)
    serial = prepare_features(root, FeatureConfig(), cache_dir=tmp_path / "serial", progress=False)
    parallel = prepare_features(root, FeatureConfig(), cache_dir=tmp_path / "parallel", workers=2, progress=False)
    assert serial.paths == parallel.paths and len(serial.paths) == 9
    assert np.asarray(serial.features).tobytes() == np.asarray(parallel.features).tobytes()


def test_cli_data_prepare(tmp_path, word_wavs):
    from mtl_edge.cli import app

    root = _corpus(tmp_path, word_wavs, bad=True)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "prepare", str(root), "--n-mels", "32"])
    assert result.exit_code == 1
    # rich may wrap a long tmp path: compare without whitespace
    assert "zzz_corrupt.wav" in "".join(result.output.split()) and "Traceback" not in result.output

    cache = tmp_path / "cli-cache"
    result = runner.invoke(app, ["data", "prepare", str(root), "--n-mels", "32", "--cache", str(cache),
                                 "--on-bad-audio", "skip"])
    assert result.exit_code == 0, result.output
    n = len(feature_names(FeatureConfig(n_mels=32)))
    assert f"{len(WORDS)} clips x {n} features" in result.output
    assert "skipped 1 bad audio file" in result.output
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    assert np.load(entry / "features.npy", mmap_mode="r").shape == (len(WORDS), n)
    current = json.loads((cache / "current.json").read_text())  # what `train` will use for this corpus
    assert current["features"]["key"] == entry.name and current["features"]["config"]["n_mels"] == 32


def test_batched_segment_statistics_equal_each_clip_on_its_own(speak):
    """The segment means come from one running sum over the batch, each clip with its own active region:
    they equal the straightforward slice-and-mean of each clip's segments, and each clip's batch row
    equals the clip extracted alone."""
    words = [_place(_spoken(speak, w), offset) for w, offset in (("left", 700), ("yes", 6000), ("down", 3000))]
    cfg = FeatureConfig(segment_stats=("mean", "std", "max"))
    batch = np.stack(words)
    lm = logmel.logmel(batch, cfg).astype(np.float64)
    lo, hi = logmel.active_region(lm, cfg)
    assert len(set(lo.tolist())) == 3  # three different regions
    n_clip = len(cfg.stats) * cfg.n_mels
    features = extract_batch(batch, cfg)
    for i, clip in enumerate(words):
        expected = []
        n = int(hi[i] - lo[i])
        for k in range(cfg.segments):
            a = min(k * n // cfg.segments, n - 1)
            b = max(a + 1, (k + 1) * n // cfg.segments)
            seg = lm[i, :, lo[i] + a:lo[i] + b]
            expected += [seg.mean(axis=1), seg.std(axis=1), seg.max(axis=1)]
        got = features[i, n_clip:n_clip + cfg.segments * 3 * cfg.n_mels]
        np.testing.assert_allclose(got, np.concatenate(expected).astype(np.float32), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(features[i], extract(clip, cfg), rtol=1e-5, atol=1e-5)
