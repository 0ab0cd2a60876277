"""Audio loading: any file, any rate, any channel count -> float32 mono at the target rate.

The original rate and channel count are kept beside the samples so that nothing is
silently misread: a 44.1 kHz file is resampled (and recorded as such), never played at 16 kHz.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mtl_edge.errors import AudioError

TARGET_RATE = 16_000


class LowSampleRateWarning(UserWarning):
    """The file's rate is below the target: it was upsampled and its top band is empty."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, mono, in [-1, 1] for PCM sources
    sample_rate: int  # the rate of ``samples`` (the target rate)
    original_rate: int
    original_channels: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header information, with a clear error for a file soundfile cannot parse."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return info


def load_audio(path: str | Path, target_rate: int = TARGET_RATE) -> Audio:
    """Read ``path``, mix to mono and resample to ``target_rate`` (soxr, high quality)."""
    path = Path(path)
    info = audio_info(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: corrupt audio data ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    if _is_truncated(path, info, data.shape[0]):
        raise AudioError(f"{path}: truncated (its header declares more audio than the file holds)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} samples are NaN or infinite")
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != target_rate:
        if rate < target_rate:
            warnings.warn(
                f"{path}: sample rate {rate} Hz is below {target_rate} Hz; upsampled, its top band is empty",
                LowSampleRateWarning,
                stacklevel=2,
            )
        mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    if not np.isfinite(mono).all():  # huge but finite float samples can overflow float32 when mixed or resampled
        raise AudioError(f"{path}: samples overflow when mixed down or resampled (peak {float(np.abs(data).max()):.3g})")
    return Audio(np.ascontiguousarray(mono), target_rate, int(rate), int(data.shape[1]))


def _is_truncated(path: Path, info, frames_read: int) -> bool:
    """A WAV whose data chunk claims more bytes than the file has was cut short (e.g. a killed copy)."""
    if frames_read < info.frames:
        return True
    if info.format not in ("WAV", "WAVEX"):
        return False
    declared = _wav_data_chunk_size(path)
    if declared is None:
        return False
    bytes_per_frame = info.channels * _SUBTYPE_BYTES.get(info.subtype, 0)
    return bytes_per_frame > 0 and declared // bytes_per_frame > frames_read


_SUBTYPE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def _wav_data_chunk_size(path: Path) -> int | None:
    """Size the WAV header declares for its ``data`` chunk (None when unknown or streamed)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"data":
                return None if size in (0, 0xFFFFFFFF) else size
            fh.seek(size + (size & 1), 1)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = TARGET_RATE) -> None:
    """Write 16-bit PCM mono (the corpus format)."""
    sf.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")


BAD_AUDIO_POLICIES = ("fail", "skip")


def load_or_skip(path: str | Path, on_bad_audio: str, skipped: list[str], target_rate: int = TARGET_RATE) -> Audio | None:
    """Load ``path``; under ``on_bad_audio="skip"`` record the problem in ``skipped`` and return None."""
    if on_bad_audio not in BAD_AUDIO_POLICIES:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO_POLICIES}, not {on_bad_audio!r}")
    try:
        return load_audio(path, target_rate)
    except AudioError as exc:
        if on_bad_audio == "fail":
            raise AudioError(f"{exc} (use --on-bad-audio skip to leave such files out)") from None
        skipped.append(str(exc))
        return None
