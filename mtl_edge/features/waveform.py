"""Fixed-length raw-waveform crops for models that read samples rather than summaries.

Training takes a random window (a numpy Generator gives the offset, so a seed reproduces an
epoch) when a clip is longer than the model's input; evaluation takes a fixed window (the centre
by default, or the first samples) so that scores are repeatable. A clip shorter than the window
is zero-padded at the end, in every mode: training and evaluation then see shorter clips in the
same place.

Scaling: samples are kept as they are when they already lie in [-1, 1] (the loudness of a clip
is information, e.g. for scenes and events); only a clip whose peak exceeds 1 (float sources,
resampling overshoot) is divided by its peak. Non-finite samples are an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mtl_edge.errors import MtlEdgeError

CLIP_SAMPLES = 16_000  # the corpus clip length: 1 s at 16 kHz
POSITIONS = ("centre", "first")


def crop_offset(n_samples: int, length: int = CLIP_SAMPLES, rng: np.random.Generator | None = None,
                position: str = "centre") -> int:
    """Start of the window in a clip of ``n_samples``: uniform in ``[0, n_samples - length]`` with
    ``rng``, else the centre (``(n - length) // 2``) or 0 for ``position="first"``; 0 when shorter."""
    if length < 1:
        raise ValueError(f"crop length must be >= 1, not {length}")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, not {position!r}")
    spare = n_samples - length
    if spare <= 0:
        return 0
    if rng is not None:
        return int(rng.integers(0, spare + 1))
    return spare // 2 if position == "centre" else 0


def scale_waveform(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1]: unchanged when the peak is <= 1, divided by the peak otherwise."""
    x = np.asarray(samples, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise ValueError("waveform has NaN or infinite samples")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 1.0:
        x = x / np.float32(peak)
        np.clip(x, -1.0, 1.0, out=x)  # float rounding of x / peak may land a hair above 1
    return x


def crop_waveform(samples: np.ndarray, length: int = CLIP_SAMPLES, rng: np.random.Generator | None = None,
                  position: str = "centre") -> np.ndarray:
    """One clip -> exactly ``length`` float32 samples in [-1, 1] (see the module docstring)."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"crop_waveform takes mono 1-D samples, not shape {x.shape}")
    start = crop_offset(len(x), length, rng, position)
    window = x[start:start + length]
    out = np.zeros(length, dtype=np.float32)
    out[:len(window)] = window
    return scale_waveform(out)


def crop_batch(clips: Iterable[np.ndarray], length: int = CLIP_SAMPLES, rng: np.random.Generator | None = None,
               position: str = "centre") -> np.ndarray:
    """Clips of any lengths -> ``(n_clips, length)`` float32; one offset drawn per clip, in order."""
    rows = [crop_waveform(c, length, rng, position) for c in clips]
    return np.stack(rows) if rows else np.zeros((0, length), dtype=np.float32)


def typical_clip_samples(paths: Sequence[str | Path], sample_rate: int = 16_000) -> int:
    """The median clip length in samples at ``sample_rate`` (headers only: cheap); the natural
    crop length for a corpus. CLIP_SAMPLES when no file is readable."""
    import soundfile as sf

    lengths = []
    for p in paths:
        try:
            info = sf.info(str(p))
        except Exception:  # unreadable files are the loader's business, not the length estimate's
            continue
        if info.samplerate > 0 and info.frames > 0:
            lengths.append(round(info.frames * sample_rate / info.samplerate))
    return int(np.median(lengths)) if lengths else CLIP_SAMPLES


@dataclass(frozen=True)
class WaveformConfig:
    """The input of a waveform model: every clip as ``samples`` float32 samples at ``sample_rate``.

    Evaluation and the prepare stage take the fixed window ``position``; a model that trains on
    random crops draws them itself from longer clips.
    """

    samples: int = CLIP_SAMPLES
    sample_rate: int = 16_000
    position: str = "centre"

    def __post_init__(self) -> None:
        if self.samples < 1 or self.sample_rate < 1:
            raise MtlEdgeError(f"a waveform input needs samples >= 1 and a positive rate (got {self.samples}, {self.sample_rate})")
        if self.position not in POSITIONS:
            raise MtlEdgeError(f"waveform position must be one of {', '.join(POSITIONS)}, not {self.position!r}")

    @property
    def n_features(self) -> int:
        return self.samples

    def to_json(self) -> dict:
        return {"kind": "waveform", **asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> "WaveformConfig":
        return cls(**{k: v for k, v in d.items() if k != "kind"})
