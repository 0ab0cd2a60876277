"""Log mel filter banks summarised into one fixed-size vector per clip.

As in Georgiev et al. 2017 (shared multi-task DNNs for audio sensing on mobile devices), a clip
is described by statistical summaries of its log mel filter banks over time, so that a small
feed-forward network sees a fixed-size input whatever the clip length.

Per frame: a Hann-windowed STFT (``win_ms`` window, ``hop_ms`` hop, ``n_fft`` = the next power
of two >= the window, centred frames with zero padding, exactly librosa's defaults), power
spectrum, ``n_mels`` Slaney-normalised mel bands between ``fmin`` and ``fmax``, and the natural
log with a floor: ``log(max(power, floor))``. The floor keeps digital silence finite.

Per band, over the clip's frames (``stats``, in this order in the vector, stat-major: all bands
of the first stat, then all bands of the next):

``mean``, ``std`` (population, ddof=0), ``min``, ``max``, ``median``, ``pNN`` (the NN-th
percentile, numpy's linear interpolation; e.g. ``p10``, ``p90``), ``skew`` (Fisher skewness,
biased, as ``scipy.stats.skew``), ``kurt`` (excess kurtosis, biased, as
``scipy.stats.kurtosis``), ``dmeanabs`` and ``dstd`` (mean absolute value and std of the first
difference between consecutive frames: how fast the band changes), ``dmean`` (mean first
difference: the overall rise or fall).

A band that is constant over the clip (e.g. digital silence at the floor) has skew and kurt 0
rather than NaN; a one-frame clip has delta statistics 0. Every value is finite.

Then, for coarse temporal structure (a keyword is a sequence of sounds, which clip-wide
statistics blur), ``segments`` K > 0 adds ``segment_stats`` (default the mean) of each band over
K equal consecutive time segments. Names: ``mel03_mean``, ``mel03_p90``, ``mel03_seg1_mean``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from dataclasses import dataclass

import numpy as np

from mtl_edge.errors import MtlEdgeError

DEFAULT_STATS: tuple[str, ...] = (
    "mean", "std", "min", "max", "p10", "p50", "p90", "skew", "kurt", "dmeanabs", "dstd",
)
_SIMPLE_STATS = {"mean", "std", "min", "max", "median", "skew", "kurt", "dmeanabs", "dstd", "dmean"}
_SEGMENT_STATS = {"mean", "std", "min", "max"}
_PERCENTILE = re.compile(r"^p(\d{1,3})$")


class FeatureConfigError(MtlEdgeError, ValueError):
    """A feature configuration that cannot work (bad window, unknown statistic, ...)."""


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the features; its JSON is part of the cache key."""

    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    fmin: float = 20.0
    fmax: float | None = None  # None: Nyquist
    n_fft: int | None = None  # None: next power of two >= the window
    floor: float = 1e-10  # power floor before the log
    sample_rate: int = 16_000
    stats: tuple[str, ...] = DEFAULT_STATS
    segments: int = 4
    segment_stats: tuple[str, ...] = ("mean",)

    def __post_init__(self) -> None:
        # Tuples, not lists: the config is hashable and its JSON is stable.
        object.__setattr__(self, "stats", tuple(self.stats))
        object.__setattr__(self, "segment_stats", tuple(self.segment_stats))
        if self.n_mels < 1:
            raise FeatureConfigError(f"n_mels must be >= 1, not {self.n_mels}")
        if self.sample_rate <= 0:
            raise FeatureConfigError(f"sample_rate must be positive, not {self.sample_rate}")
        if not (self.win_ms > 0 and self.hop_ms > 0):
            raise FeatureConfigError(f"win_ms and hop_ms must be positive (got {self.win_ms}, {self.hop_ms})")
        if self.win_length < 2:
            raise FeatureConfigError(f"a {self.win_ms} ms window is under 2 samples at {self.sample_rate} Hz")
        if self.n_fft is not None and self.n_fft < self.win_length:
            raise FeatureConfigError(f"n_fft {self.n_fft} is shorter than the window ({self.win_length} samples)")
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        if not (0 <= self.fmin < top <= self.sample_rate / 2):
            raise FeatureConfigError(
                f"need 0 <= fmin < fmax <= {self.sample_rate / 2:g} Hz (got fmin={self.fmin}, fmax={self.fmax})"
            )
        if not self.floor > 0:
            raise FeatureConfigError(f"floor must be positive, not {self.floor}")
        if not self.stats and not self.segments:
            raise FeatureConfigError("no statistics: give stats or segments > 0")
        for s in self.stats:
            _check_stat(s)
        if len(set(self.stats)) != len(self.stats):
            raise FeatureConfigError(f"repeated statistic in stats={self.stats}")
        if self.segments < 0:
            raise FeatureConfigError(f"segments must be >= 0, not {self.segments}")
        if self.segments and not self.segment_stats:
            raise FeatureConfigError("segments > 0 needs at least one segment statistic")
        for s in self.segment_stats:
            if s not in _SEGMENT_STATS:
                raise FeatureConfigError(f"unknown segment statistic {s!r} (one of {', '.join(sorted(_SEGMENT_STATS))})")

    @property
    def win_length(self) -> int:
        return int(round(self.win_ms * self.sample_rate / 1000))

    @property
    def hop_length(self) -> int:
        return max(1, int(round(self.hop_ms * self.sample_rate / 1000)))

    @property
    def fft_size(self) -> int:
        return self.n_fft if self.n_fft is not None else 1 << (self.win_length - 1).bit_length()

    @property
    def n_features(self) -> int:
        return self.n_mels * (len(self.stats) + self.segments * len(self.segment_stats))

    def to_json(self) -> dict:
        """Plain JSON-able dict (for meta.json and the cache key)."""
        d = dataclasses.asdict(self)
        d["stats"] = list(self.stats)
        d["segment_stats"] = list(self.segment_stats)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


def _check_stat(name: str) -> None:
    m = _PERCENTILE.match(name)
    if m:
        if not 0 <= int(m.group(1)) <= 100:
            raise FeatureConfigError(f"percentile out of range in {name!r}")
        return
    if name not in _SIMPLE_STATS:
        raise FeatureConfigError(
            f"unknown statistic {name!r} (one of {', '.join(sorted(_SIMPLE_STATS))} or pNN for a percentile)"
        )


def feature_names(cfg: FeatureConfig) -> list[str]:
    """Names of the vector's entries, in order: ``mel03_mean``, ..., ``mel03_seg1_mean``."""
    width = max(2, len(str(cfg.n_mels - 1)))
    names = [f"mel{b:0{width}d}_{s}" for s in cfg.stats for b in range(cfg.n_mels)]
    for k in range(cfg.segments):
        names += [f"mel{b:0{width}d}_seg{k}_{s}" for s in cfg.segment_stats for b in range(cfg.n_mels)]
    return names


@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """The mel filter matrix, built once per configuration (librosa rebuilds it on every call)."""
    import librosa

    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32)
    basis.setflags(write=False)
    return basis


def logmel(samples: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Per-frame log mel filter banks: ``(..., n_samples)`` -> ``(..., n_mels, n_frames)`` float32.

    Equal to ``log(max(librosa.feature.melspectrogram(...), floor))`` with the same parameters;
    leading axes are a batch of clips of equal length.
    """
    import librosa

    y = np.asarray(samples, dtype=np.float32)
    if y.shape[-1] == 0:
        raise ValueError("cannot compute features of an empty clip")
    with warnings.catch_warnings():
        # A clip shorter than n_fft is fine here (centred frames are zero-padded); librosa warns anyway.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        spec = librosa.stft(y, n_fft=cfg.fft_size, hop_length=cfg.hop_length, win_length=cfg.win_length,
                            window="hann", center=True, pad_mode="constant")
    power = spec.real * spec.real
    power += spec.imag * spec.imag
    mel = np.matmul(_mel_basis(cfg.sample_rate, cfg.fft_size, cfg.n_mels, cfg.fmin, cfg.fmax), power)
    np.maximum(mel, np.float32(cfg.floor), out=mel)
    return np.log(mel, out=mel)


def summarise(logmels: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Statistics over time per band: ``(..., n_mels, n_frames)`` -> ``(..., n_features)`` float32.

    Computed in float64 (moments of float32 log values lose digits otherwise), returned as float32.
    """
    x = np.asarray(logmels, dtype=np.float64)
    n_frames = x.shape[-1]
    parts: list[np.ndarray] = []  # each (..., n_mels)
    need_moments = any(s in ("mean", "std", "skew", "kurt") for s in cfg.stats)
    if need_moments:
        mean = x.mean(axis=-1)
        dev = x - mean[..., None]
        sq = dev * dev
        m2 = sq.mean(axis=-1)
        # A (numerically) constant band has no shape: its skew and kurtosis are defined as 0.
        flat = m2 <= (1e-6 * np.maximum(1.0, np.abs(mean))) ** 2
        safe_m2 = np.where(flat, 1.0, m2)
    pct: dict[str, np.ndarray] = {}
    percentiles = [s for s in cfg.stats if _PERCENTILE.match(s) or s == "median"]
    if percentiles:
        qs = [50.0 if s == "median" else float(s[1:]) for s in percentiles]
        pct = dict(zip(percentiles, np.percentile(x, qs, axis=-1)))
    if any(s.startswith("d") for s in cfg.stats):
        delta = np.diff(x, axis=-1)
    for s in cfg.stats:
        if s == "mean":
            parts.append(mean)
        elif s == "std":
            parts.append(np.sqrt(m2))
        elif s == "min":
            parts.append(x.min(axis=-1))
        elif s == "max":
            parts.append(x.max(axis=-1))
        elif s in pct:
            parts.append(pct[s])
        elif s == "skew":
            parts.append(np.where(flat, 0.0, (sq * dev).mean(axis=-1) / safe_m2**1.5))
        elif s == "kurt":
            parts.append(np.where(flat, 0.0, (sq * sq).mean(axis=-1) / safe_m2**2 - 3.0))
        elif s in ("dmeanabs", "dstd", "dmean"):
            if n_frames < 2:
                parts.append(np.zeros(x.shape[:-1]))
            elif s == "dmeanabs":
                parts.append(np.abs(delta).mean(axis=-1))
            elif s == "dstd":
                parts.append(delta.std(axis=-1))
            else:
                parts.append(delta.mean(axis=-1))
        else:  # pragma: no cover - FeatureConfig validates the names
            raise FeatureConfigError(f"unknown statistic {s!r}")
    for lo, hi in _segment_bounds(n_frames, cfg.segments):
        seg = x[..., lo:hi]
        for s in cfg.segment_stats:
            parts.append(getattr(seg, s)(axis=-1))
    out = np.stack(parts, axis=-2)  # (..., n_parts, n_mels): stat-major once flattened
    return out.reshape(*out.shape[:-2], -1).astype(np.float32)


def _segment_bounds(n_frames: int, segments: int) -> list[tuple[int, int]]:
    """K equal consecutive frame ranges; each holds at least one frame even when n_frames < K."""
    bounds = []
    for k in range(segments):
        lo = min(k * n_frames // segments, n_frames - 1)
        hi = max(lo + 1, (k + 1) * n_frames // segments)
        bounds.append((lo, hi))
    return bounds


def extract(samples: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """One clip (float32 mono at ``cfg.sample_rate``) -> its ``(n_features,)`` float32 vector."""
    y = np.asarray(samples)
    if y.ndim != 1:
        raise ValueError(f"extract takes one mono clip (1-D samples), not shape {y.shape}")
    return summarise(logmel(y, cfg), cfg)


def extract_batch(clips: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Many clips of equal length ``(n_clips, n_samples)`` -> ``(n_clips, n_features)`` in one pass."""
    y = np.asarray(clips)
    if y.ndim != 2:
        raise ValueError(f"extract_batch takes a 2-D array (n_clips, n_samples), not shape {y.shape}")
    if y.shape[0] == 0:
        return np.zeros((0, cfg.n_features), dtype=np.float32)
    return summarise(logmel(y, cfg), cfg)
