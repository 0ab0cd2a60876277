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

Onset alignment (``align_db``, default 10 dB): the K segments span the clip's *active region*
rather than the whole clip, so that a word placed anywhere in the clip gives (nearly) the same
segment statistics. Frame energy is the log of the mean mel power of the frame; the active
region is the run of frames around the loudest frame whose energy is within ``align_db`` dB of
it, bridging dips below the threshold of up to ``align_gap_ms`` (a stop closure inside a word).
``align_db=None`` spreads the segments over the whole clip. Clip-wide statistics always use
every frame.

Cepstral summaries (``n_cepstra`` C > 0, default 20): per frame, the orthonormal DCT-II of the
log mel bands over the band axis (MFCC-like; coefficient 0 is the scaled mean log energy), and
``cepstral_stats`` (``mean``, ``std``, ``dmeanabs``, ``dstd``, ``dmean``, ``min``, ``max``) of the
first C coefficients over the clip's frames. Names: ``cep03_std``.

Vector order: clip-wide statistics, then segments, then cepstral statistics.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from dataclasses import dataclass

import numpy as np

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.statistics import NumpyOps, band_statistics

DEFAULT_STATS: tuple[str, ...] = (
    "mean", "std", "min", "max", "p10", "p50", "p90", "skew", "kurt", "dmeanabs", "dstd",
)
_SIMPLE_STATS = {"mean", "std", "min", "max", "median", "skew", "kurt", "dmeanabs", "dstd", "dmean"}
_SEGMENT_STATS = {"mean", "std", "min", "max"}
_CEPSTRAL_STATS = {"mean", "std", "min", "max", "dmeanabs", "dstd", "dmean"}
DEFAULT_CEPSTRAL_STATS: tuple[str, ...] = ("mean", "std", "dmeanabs")
# What a config JSON written before a field existed meant (from_json fills these in, so that an
# old cache entry or model keeps describing the features it was built with).
_LEGACY_DEFAULTS = {"align_db": None, "align_gap_ms": 50.0, "n_cepstra": 0, "cepstral_stats": DEFAULT_CEPSTRAL_STATS}
_PERCENTILE = re.compile(r"^p(\d{1,3})$")


class FeatureConfigError(MtlEdgeError, ValueError):
    """A feature configuration that cannot work (bad window, unknown statistic, ...)."""


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that determines the features; its JSON is part of the cache key."""

    n_mels: int = 40
    win_ms: float = 40.0
    hop_ms: float = 10.0
    fmin: float = 20.0
    fmax: float | None = None  # None: Nyquist
    n_fft: int | None = None  # None: next power of two >= the window
    floor: float = 1e-10  # power floor before the log
    sample_rate: int = 16_000
    stats: tuple[str, ...] = DEFAULT_STATS
    segments: int = 8
    segment_stats: tuple[str, ...] = ("mean",)
    align_db: float | None = 10.0  # segments over the active region (None: over the whole clip)
    align_gap_ms: float = 50.0  # dips below the threshold up to this long stay inside the region
    n_cepstra: int = 20  # DCT coefficients of the per-frame log mel bands summarised (0: none)
    cepstral_stats: tuple[str, ...] = DEFAULT_CEPSTRAL_STATS

    def __post_init__(self) -> None:
        # Tuples, not lists: the config is hashable and its JSON is stable.
        object.__setattr__(self, "stats", tuple(self.stats))
        object.__setattr__(self, "segment_stats", tuple(self.segment_stats))
        object.__setattr__(self, "cepstral_stats", tuple(self.cepstral_stats))
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
        if not self.stats and not self.segments and not self.n_cepstra:
            raise FeatureConfigError("no statistics: give stats, segments > 0 or n_cepstra > 0")
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
        if len(set(self.segment_stats)) != len(self.segment_stats):
            raise FeatureConfigError(f"repeated statistic in segment_stats={self.segment_stats}")
        if self.align_db is not None and not self.align_db > 0:
            raise FeatureConfigError(f"align_db must be positive (or None: no alignment), not {self.align_db}")
        if not self.align_gap_ms >= 0:
            raise FeatureConfigError(f"align_gap_ms must be >= 0, not {self.align_gap_ms}")
        if not 0 <= self.n_cepstra <= self.n_mels:
            raise FeatureConfigError(f"n_cepstra must be between 0 and n_mels={self.n_mels}, not {self.n_cepstra}")
        if self.n_cepstra and not self.cepstral_stats:
            raise FeatureConfigError("n_cepstra > 0 needs at least one cepstral statistic")
        for s in self.cepstral_stats:
            if s not in _CEPSTRAL_STATS:
                raise FeatureConfigError(
                    f"unknown cepstral statistic {s!r} (one of {', '.join(sorted(_CEPSTRAL_STATS))})"
                )
        if len(set(self.cepstral_stats)) != len(self.cepstral_stats):
            raise FeatureConfigError(f"repeated statistic in cepstral_stats={self.cepstral_stats}")

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
        return (self.n_mels * (len(self.stats) + self.segments * len(self.segment_stats))
                + self.n_cepstra * len(self.cepstral_stats))

    @property
    def align_gap_frames(self) -> int:
        return int(round(self.align_gap_ms / self.hop_ms))

    def to_json(self) -> dict:
        """Plain JSON-able dict (for meta.json and the cache key)."""
        d = dataclasses.asdict(self)
        d["stats"] = list(self.stats)
        d["segment_stats"] = list(self.segment_stats)
        d["cepstral_stats"] = list(self.cepstral_stats)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        for k, v in _LEGACY_DEFAULTS.items():
            args.setdefault(k, v)
        return cls(**args)


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
    cwidth = max(2, len(str(cfg.n_cepstra - 1)))
    if cfg.n_cepstra:
        names += [f"cep{c:0{cwidth}d}_{s}" for s in cfg.cepstral_stats for c in range(cfg.n_cepstra)]
    return names


@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """The mel filter matrix, built once per configuration (librosa rebuilds it on every call)."""
    import librosa

    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=16)
def _dct_matrix(n_cepstra: int, n_mels: int) -> np.ndarray:
    """Rows of the orthonormal DCT-II over ``n_mels`` points (as ``scipy.fft.dct(norm="ortho")``)."""
    k = np.arange(n_cepstra)[:, None]
    n = np.arange(n_mels)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    m[0] /= np.sqrt(2.0)
    m.setflags(write=False)
    return m


def frame_log_energy(logmels: np.ndarray) -> np.ndarray:
    """Log of the mean mel power of each frame: ``(..., n_mels, n_frames)`` -> ``(..., n_frames)``."""
    x = np.asarray(logmels, dtype=np.float64)
    top = x.max(axis=-2, keepdims=True)
    return top[..., 0, :] + np.log(np.exp(x - top).mean(axis=-2))


def active_region(logmels: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) frame of each clip's active region: ``(...)`` int arrays.

    The frames around the loudest one whose energy is within ``cfg.align_db`` dB of it, bridging
    runs of quieter frames up to ``cfg.align_gap_ms`` long. Without alignment (``align_db`` None)
    the whole clip.
    """
    x = np.asarray(logmels)
    lead, n_frames = x.shape[:-2], x.shape[-1]
    if cfg.align_db is None:
        return np.zeros(lead, np.int64), np.full(lead, n_frames, np.int64)
    energy = frame_log_energy(x).reshape(-1, n_frames)
    threshold = energy.max(axis=-1) - cfg.align_db * np.log(10.0) / 10.0
    gap = cfg.align_gap_frames
    lo = np.empty(len(energy), np.int64)
    hi = np.empty(len(energy), np.int64)
    for i, e in enumerate(energy):
        active = np.flatnonzero(e >= threshold[i])  # never empty: holds the loudest frame
        peak = int(np.argmax(e))
        # runs of active frames separated by more than `gap` quiet frames
        breaks = np.flatnonzero(np.diff(active) > gap + 1)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [len(active) - 1]])
        run = np.searchsorted(active[ends], peak)  # the run holding the peak
        lo[i], hi[i] = active[starts[run]], active[ends[run]] + 1
    return lo.reshape(lead), hi.reshape(lead)


@functools.lru_cache(maxsize=16)
def _window(win_length: int, n_fft: int) -> np.ndarray:
    """librosa's STFT window: periodic Hann of ``win_length``, zero-padded to ``n_fft`` at the centre."""
    import librosa

    w = librosa.util.pad_center(librosa.filters.get_window("hann", win_length, fftbins=True), size=n_fft)
    w = w.astype(np.float32)
    w.setflags(write=False)
    return w


CLIPS_PER_CHUNK = 8  # frames of 8 one-second clips (~3 MB of float32) stay in the cache through the FFT


def logmel(samples: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Per-frame log mel filter banks: ``(..., n_samples)`` -> ``(..., n_mels, n_frames)`` float32.

    Equal (to float32 rounding) to ``log(max(librosa.feature.melspectrogram(...), floor))`` with the
    same parameters (centred frames, zero padding, periodic Hann); leading axes are a batch of clips of
    equal length. Computed here rather than through ``librosa.stft``, a few clips at a time: the
    frames are a strided view of the padded signal, one real FFT per frame (scipy), and the mel
    projection one matrix product over every frame of the chunk (about 4x faster, profiled).
    """
    from scipy import fft

    y = np.asarray(samples, dtype=np.float32)
    if y.shape[-1] == 0:
        raise ValueError("cannot compute features of an empty clip")
    lead, n = y.shape[:-1], y.shape[-1]
    flat = y.reshape(-1, n)
    n_fft, hop = cfg.fft_size, cfg.hop_length
    window = _window(cfg.win_length, n_fft)
    basis_t = np.ascontiguousarray(_mel_basis(cfg.sample_rate, n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).T)
    n_frames = 1 + (n + 2 * (n_fft // 2) - n_fft) // hop
    out = np.empty((len(flat), cfg.n_mels, n_frames), dtype=np.float32)
    floor = np.float32(cfg.floor)
    for start in range(0, len(flat), CLIPS_PER_CHUNK):
        padded = np.pad(flat[start:start + CLIPS_PER_CHUNK], ((0, 0), (n_fft // 2, n_fft // 2)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop] * window
        spec = fft.rfft(frames, axis=-1, workers=1)  # (clips, frames, bins) complex64
        power = spec.real * spec.real
        power += spec.imag * spec.imag
        mel = power @ basis_t  # (clips, frames, n_mels)
        np.maximum(mel, floor, out=mel)
        np.log(mel, out=mel)
        out[start:start + len(mel)] = mel.transpose(0, 2, 1)
    return out.reshape(*lead, cfg.n_mels, n_frames)


def summarise(logmels: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Statistics over time per band: ``(..., n_mels, n_frames)`` -> ``(..., n_features)`` float32.

    Computed in float64 (moments of float32 log values lose digits otherwise), returned as float32.
    """
    x = np.asarray(logmels, dtype=np.float64)
    pct: dict[str, np.ndarray] = {}
    percentiles = [s for s in cfg.stats if _PERCENTILE.match(s) or s == "median"]
    if percentiles:
        qs = [50.0 if s == "median" else float(s[1:]) for s in percentiles]
        pct = dict(zip(percentiles, np.percentile(x, qs, axis=-1)))
    parts = band_statistics(cfg.stats, x, pct, NumpyOps)  # each (..., n_mels)
    if cfg.segments:
        parts += _segments(x, cfg)
    if cfg.n_cepstra:
        cep = np.matmul(_dct_matrix(cfg.n_cepstra, cfg.n_mels), x)  # (..., n_cepstra, n_frames)
        cparts = [_cepstral_stat(cep, s) for s in cfg.cepstral_stats]
    out = np.stack(parts, axis=-2) if parts else np.zeros((*x.shape[:-2], 0, cfg.n_mels))  # (..., n_parts, n_mels): stat-major once flattened
    out = out.reshape(*out.shape[:-2], -1)
    if cfg.n_cepstra:
        cout = np.stack(cparts, axis=-2)
        out = np.concatenate([out, cout.reshape(*cout.shape[:-2], -1)], axis=-1)
    return out.astype(np.float32)


def _cepstral_stat(cep: np.ndarray, s: str) -> np.ndarray:
    if s in ("dmeanabs", "dstd", "dmean"):
        return NumpyOps.delta_stat(cep, s)
    return getattr(cep, s)(axis=-1)


def _segments(x: np.ndarray, cfg: FeatureConfig) -> list[np.ndarray]:
    """Segment statistics, segment-major: K x len(segment_stats) arrays of shape (..., n_mels)."""
    n_frames = x.shape[-1]
    if cfg.align_db is None:  # the same frame ranges for every clip
        parts = []
        for lo, hi in _segment_bounds(n_frames, cfg.segments):
            seg = x[..., lo:hi]
            parts += [getattr(seg, s)(axis=-1) for s in cfg.segment_stats]
        return parts
    lead = x.shape[:-2]
    flat = x.reshape(-1, *x.shape[-2:])
    starts, ends = active_region(flat, cfg)
    # each clip's K segment bounds, as absolute frame indices (n_clips, K)
    bounds = np.array([_segment_bounds(int(e - s), cfg.segments) for s, e in zip(starts, ends)], dtype=np.int64)
    lo, hi = bounds[..., 0] + starts[:, None], bounds[..., 1] + starts[:, None]
    means = None
    if "mean" in cfg.segment_stats:  # a running sum gives every segment's mean in one pass
        run = np.zeros((*flat.shape[:-1], n_frames + 1))
        np.cumsum(flat, axis=-1, out=run[..., 1:])
        means = (np.take_along_axis(run, hi[:, None, :], -1) - np.take_along_axis(run, lo[:, None, :], -1)) \
            / (hi - lo)[:, None, :]  # (n_clips, n_mels, K)
    out = np.empty((len(flat), cfg.segments * len(cfg.segment_stats), x.shape[-2]))
    for k in range(cfg.segments):
        for j, s in enumerate(cfg.segment_stats):
            row = k * len(cfg.segment_stats) + j
            if s == "mean":
                out[:, row] = means[..., k]
            else:  # std / min / max: per clip (a two-pass std, exact for nearly constant bands)
                for i in range(len(flat)):
                    out[i, row] = getattr(flat[i, :, lo[i, k]:hi[i, k]], s)(axis=-1)
    return [out[:, j].reshape(*lead, x.shape[-2]) for j in range(out.shape[1])]


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
