"""The audio loader's bad-input contract: finite float32 mono at 16 kHz, or an AudioError naming the file."""

from __future__ import annotations

import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_edge.data.audio import TARGET_RATE, LowSampleRateWarning, audio_info, load_audio, load_or_skip, write_wav
from mtl_edge.errors import AudioError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def recording(recordings: list[Path], name: str) -> Path:
    return next(p for p in recordings if p.name == name)


def load_or_error(path: Path):
    """The contract under test: a finite float32 mono Audio, or AudioError; anything else propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            audio = load_audio(path)
        except AudioError as exc:
            assert str(path) in str(exc)
            return None
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert np.isfinite(audio.samples).all(), f"{path}: load_audio returned non-finite samples"
    assert audio.sample_rate == TARGET_RATE and audio.original_rate > 0 and audio.original_channels >= 1
    return audio


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory, speak) -> bytes:
    """The bytes of a real espeak-ng WAV (22.05 kHz mono PCM_16)."""
    return speak("seven", out=tmp_path_factory.mktemp("speech") / "seven.wav").read_bytes()


# ---------------------------------------------------------------- valid audio


def test_espeak_wav_is_resampled_to_16k(speak):
    path = speak("hello")
    info = sf.info(str(path))
    audio = load_or_error(path)
    assert (audio.original_rate, audio.original_channels) == (22050, 1)
    assert audio.duration == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    assert np.abs(audio.samples).max() <= 1.0


def test_44k1_recording_resampled_with_original_rate_and_duration(recordings):
    path = recording(recordings, "complete.oga")  # 44.1 kHz stereo
    info = sf.info(str(path))
    audio = load_or_error(path)
    assert audio.original_rate == 44100 and audio.sample_rate == 16000
    assert audio.duration == pytest.approx(info.frames / 44100, abs=1e-3)
    assert len(audio.samples) == pytest.approx(info.frames * 16000 / 44100, abs=2)


def test_44k1_wav_from_real_speech(tmp_path, speech_samples):
    speech_44k = soxr.resample(speech_samples, 16000, 44100)
    sf.write(str(tmp_path / "s.wav"), speech_44k, 44100, subtype="PCM_16")
    audio = load_or_error(tmp_path / "s.wav")
    assert audio.original_rate == 44100 and audio.duration == pytest.approx(1.0, abs=1e-3)
    # resampled back it is the same speech (correlation, not equality: two resamplings and 16-bit rounding)
    assert np.corrcoef(audio.samples[: len(speech_samples)], speech_samples)[0, 1] > 0.99


def test_stereo_mixdown_is_the_mean_of_channels(tmp_path, speech_samples, speak):
    other = load_audio(speak("nine")).samples
    other = np.pad(other, (0, max(0, len(speech_samples) - len(other))))[: len(speech_samples)]
    stereo = np.stack([speech_samples, other], axis=1)
    sf.write(str(tmp_path / "st.wav"), stereo, 16000, subtype="FLOAT")
    audio = load_or_error(tmp_path / "st.wav")
    assert audio.original_channels == 2
    np.testing.assert_allclose(audio.samples, stereo.mean(axis=1), atol=1e-7)


def test_stereo_recording_mixdown_without_resampling(recordings):
    path = recording(recordings, "alarm-clock-elapsed.oga")  # 48 kHz stereo
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = load_audio(path, target_rate=rate)
    assert audio.original_channels == 2 and data.shape[1] == 2
    np.testing.assert_allclose(audio.samples, data.mean(axis=1), atol=1e-7)


def test_8k_recording_accepted_with_warning(recordings):
    path = recording(recordings, "phone-outgoing-calling.oga")  # 8 kHz mono
    with pytest.warns(LowSampleRateWarning, match="8000 Hz"):
        audio = load_audio(path)
    assert audio.original_rate == 8000 and audio.sample_rate == 16000
    info = sf.info(str(path))
    assert audio.duration == pytest.approx(info.frames / 8000, abs=1e-3)


def test_8k_wav_from_real_speech(tmp_path, speech_samples):
    sf.write(str(tmp_path / "nb.wav"), soxr.resample(speech_samples, 16000, 8000), 8000, subtype="PCM_16")
    with pytest.warns(LowSampleRateWarning):
        audio = load_audio(tmp_path / "nb.wav")
    assert audio.original_rate == 8000 and np.isfinite(audio.samples).all()


def test_write_wav_round_trip(tmp_path, speech_samples):
    write_wav(tmp_path / "w.wav", speech_samples)
    audio = load_audio(tmp_path / "w.wav")
    np.testing.assert_allclose(audio.samples, speech_samples, atol=1 / 32768 + 1e-7)


# ---------------------------------------------------------------- bad audio


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"e\.wav: empty file"):
        load_audio(tmp_path / "e.wav")


def test_corrupt_bytes(tmp_path, speech_wav):
    # real audio bytes without their header: not a format soundfile can recognise
    (tmp_path / "c.wav").write_bytes(speech_wav[44:])
    with pytest.raises(AudioError, match=r"c\.wav: not readable as audio"):
        load_audio(tmp_path / "c.wav")


def test_header_only_wav(tmp_path, speech_wav):
    header = bytearray(speech_wav[:44])
    struct.pack_into("<I", header, 4, 36)  # RIFF size: the header alone
    struct.pack_into("<I", header, 40, 0)  # data chunk: empty
    (tmp_path / "h.wav").write_bytes(bytes(header))
    with pytest.raises(AudioError, match=r"h\.wav: contains no samples"):
        load_audio(tmp_path / "h.wav")


def test_header_only_wav_written_by_soundfile(tmp_path):
    sf.write(str(tmp_path / "z.wav"), np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="contains no samples"):
        load_audio(tmp_path / "z.wav")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_wav(tmp_path, speech_wav, keep):
    (tmp_path / "t.wav").write_bytes(speech_wav[: int(len(speech_wav) * keep)])
    with pytest.raises(AudioError, match=r"t\.wav: truncated"):
        load_audio(tmp_path / "t.wav")


def test_truncated_at_odd_byte(tmp_path, speech_wav):
    (tmp_path / "t.wav").write_bytes(speech_wav[:1001])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(tmp_path / "t.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_non_finite_samples(tmp_path, speech_samples, bad, subtype):
    samples = speech_samples.astype(np.float64).copy()
    samples[[100, 5000]] = bad
    sf.write(str(tmp_path / "n.wav"), samples, 16000, subtype=subtype)
    with pytest.raises(AudioError, match=r"n\.wav: 2 samples are NaN or infinite"):
        load_audio(tmp_path / "n.wav")


def test_double_beyond_float32_range_is_rejected(tmp_path, speech_samples):
    sf.write(str(tmp_path / "d.wav"), speech_samples.astype(np.float64) * 1e300, 16000, subtype="DOUBLE")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(tmp_path / "d.wav")


@pytest.mark.parametrize("channels, rate", [(2, 16000), (1, 8000)])
def test_huge_finite_float_samples_never_come_back_infinite(tmp_path, speech_samples, channels, rate):
    loud = np.sign(speech_samples) * np.float32(3e38)
    data = np.stack([loud] * channels, axis=1) if channels > 1 else loud
    sf.write(str(tmp_path / "loud.wav"), data, rate, subtype="FLOAT")
    load_or_error(tmp_path / "loud.wav")


def test_load_or_skip(tmp_path, speak):
    good = speak("yes")
    (tmp_path / "bad.wav").write_bytes(b"RIFF")
    skipped: list[str] = []
    assert load_or_skip(good, "skip", skipped) is not None
    assert load_or_skip(tmp_path / "bad.wav", "skip", skipped) is None
    assert len(skipped) == 1 and "bad.wav" in skipped[0]
    with pytest.raises(AudioError, match="--on-bad-audio skip"):
        load_or_skip(tmp_path / "bad.wav", "fail", skipped)
    with pytest.raises(ValueError):
        load_or_skip(good, "ignore", skipped)


def test_audio_info_on_a_folder(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        audio_info(tmp_path)


# ---------------------------------------------------------------- property-based: never another exception


def _check_bytes(data: bytes, suffix: str = ".wav") -> None:
    folder = Path(tempfile.mkdtemp(prefix="mtl_edge_audio_"))
    try:
        path = folder / f"fuzz{suffix}"
        path.write_bytes(data)
        load_or_error(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_audio_or_audio_error(data):
    _check_bytes(data)


@FAST
@given(st.binary(max_size=512))
def test_riff_wave_prefix_then_garbage(data):
    """Garbage behind a plausible header start gets past the format sniffing into the parser."""
    _check_bytes(b"RIFF" + struct.pack("<I", len(data) + 4) + b"WAVE" + data)


@FAST
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=6), st.integers(44, 4000))
def test_mutated_real_wav_header(speech_wav, mutations, keep):
    """A real espeak-ng WAV, cut somewhere and with a few header bytes overwritten (rate, channels, sizes...)."""
    data = bytearray(speech_wav[:keep])
    for offset, value in mutations:
        if offset < len(data):
            data[offset] = value
    _check_bytes(bytes(data))


@FAST
@given(st.binary(min_size=4, max_size=800))
def test_float_wav_with_arbitrary_sample_bits(speech_samples, payload):
    """A valid float WAV header (from real speech) whose sample bytes are arbitrary: NaN/inf bit patterns included."""
    payload = payload[: len(payload) // 4 * 4]
    folder = Path(tempfile.mkdtemp(prefix="mtl_edge_audio_"))
    try:
        path = folder / "f.wav"
        sf.write(str(path), speech_samples[: len(payload) // 4], 16000, subtype="FLOAT")
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) - len(payload)] + payload)
        load_or_error(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
