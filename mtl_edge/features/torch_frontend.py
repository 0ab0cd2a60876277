"""The training front-end (``logmel.extract``) as a torch module every exporter converts.

``FrontEnd`` re-implements ``mtl_edge.features.logmel.extract`` with ops every exporter takes
(matmul, elementwise maths, reductions, comparisons, ``where``): no FFT op, no sort, no Python
control flow on data, so the same module converts to ONNX and to LiteRT.

- STFT: the clip is framed by a constant index gather (librosa's centred, zero-padded frames) and
  multiplied by precomputed real/imaginary DFT matrices with the Hann window folded in; only the
  ``win_length`` non-zero samples of each ``n_fft`` frame are multiplied (the window is zero
  elsewhere). The mel and DCT matrices are logmel's own ``_mel_basis`` / ``_dct_matrix``.
- Percentiles: numpy's linear interpolation between order statistics, the order statistics found by
  counting (the k-th smallest value is the least x_i with at least k+1 values <= x_i). This is
  exact with ties and needs only comparisons and reductions, which every runtime (older
  interpreters included) has, where a sort lowers to format-specific ops (TopK). It costs a
  [bands, frames, frames] comparison: small for the ~100-frame clips of the corpora, quadratic in
  the clip length.
- Onset alignment: the active region is found with masks and constant band/triangular matrices
  (cumulative counts as matmuls), its bounds and the K segment bounds are tensors.

The clip length is fixed when the module is built (``n_samples``); the number of frames, the
percentile positions and the matrices depend on it. Everything is float32 (logmel summarises in
float64): on the demo corpus the features agree to ~2e-5 relative (worst on kurtosis), far below
what changes a prediction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.logmel import _PERCENTILE, FeatureConfig, _dct_matrix, _mel_basis
from mtl_edge.features.statistics import band_statistics


def _frames(n_samples: int, cfg: FeatureConfig) -> int:
    """librosa's frame count for centred frames: 1 + (n + 2 * (n_fft // 2) - n_fft) // hop."""
    n_fft = cfg.fft_size
    return 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // cfg.hop_length


class FrontEnd(nn.Module):
    """``forward(waveform [B, n_samples]) -> features [B, n_features]``, as ``logmel.extract_batch``."""

    def __init__(self, cfg: FeatureConfig, n_samples: int):
        super().__init__()
        if n_samples < 1:
            raise MtlEdgeError(f"the end-to-end front-end needs a clip length >= 1 sample, not {n_samples}")
        self.cfg = cfg
        self.n_samples = int(n_samples)
        n_fft, hop, win = cfg.fft_size, cfg.hop_length, cfg.win_length
        self.n_frames = n_frames = _frames(self.n_samples, cfg)

        # Framing: librosa pads n_fft // 2 zeros each side and centres the window in the n_fft frame
        # (pad_center); only the win samples under the window count, so frame t reads the padded
        # clip at t * hop + n for n < win, with `left` zeros in front of the clip.
        lpad = (n_fft - win) // 2
        left = n_fft // 2 - lpad
        right = max(0, (n_frames - 1) * hop + win - self.n_samples - left)
        self.pad = (left, right)
        index = np.arange(n_frames)[:, None] * hop + np.arange(win)[None, :]
        self.register_buffer("frame_index", torch.from_numpy(index.reshape(-1).astype(np.int64)), persistent=False)

        # DFT of the windowed frame at the n_fft bins 0..n_fft/2 (the sample's position in the n_fft frame
        # is n + lpad; the phase does not change the power but keeps the matrices librosa's).
        window = np.asarray(_hann(win), dtype=np.float64)
        n = (np.arange(win) + lpad)[:, None]
        k = np.arange(n_fft // 2 + 1)[None, :]
        angle = 2.0 * np.pi * ((n * k) % n_fft) / n_fft
        dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]  # [win, 2 * bins]
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("dft", torch.from_numpy(dft.astype(np.float32)), persistent=False)
        mel = _mel_basis(cfg.sample_rate, n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)  # [mels, bins]
        self.register_buffer("mel", torch.from_numpy(np.ascontiguousarray(mel.T, dtype=np.float32)), persistent=False)
        self.floor = float(np.float32(cfg.floor))

        # Percentiles: (name, lower order statistic, upper, fraction) with numpy's linear method.
        self.percentiles: dict[str, tuple[int, int, float]] = {}
        for s in cfg.stats:
            if s == "median" or _PERCENTILE.match(s):
                q = 50.0 if s == "median" else float(s[1:])
                pos = q / 100.0 * (n_frames - 1)
                lo = int(math.floor(pos))
                self.percentiles[s] = (lo, min(lo + 1, n_frames - 1), pos - lo)

        # Onset alignment: constant matrices for window counts and cumulative sums over frames.
        gap = cfg.align_gap_frames
        self.align = cfg.align_db is not None and cfg.segments > 0
        self.n_windows = max(0, n_frames - gap)  # windows of gap + 1 consecutive frames
        t = np.arange(n_frames)
        if self.align and self.n_windows:
            s = np.arange(self.n_windows)
            window_of = ((t[:, None] >= s[None, :]) & (t[:, None] <= s[None, :] + gap)).astype(np.float32)  # [T, S]
        else:
            window_of = np.zeros((n_frames, 1), np.float32)
        self.register_buffer("window_of", torch.from_numpy(window_of), persistent=False)
        self.register_buffer("cumulative", torch.from_numpy((t[:, None] <= t[None, :]).astype(np.float32)),
                             persistent=False)  # x @ cumulative = inclusive cumsum over frames
        self.register_buffer("frame_pos", torch.arange(n_frames, dtype=torch.float32), persistent=False)
        self.threshold_db = float(cfg.align_db * np.log(10.0) / 10.0) if cfg.align_db is not None else 0.0
        self.gap = gap
        if cfg.n_cepstra:
            dct = _dct_matrix(cfg.n_cepstra, cfg.n_mels)
            self.register_buffer("dct", torch.from_numpy(np.ascontiguousarray(dct, dtype=np.float32)), persistent=False)
        self.eval()

    # -- per-frame log mel filter banks ---------------------------------------------------------------
    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, n_samples] -> [B, n_mels, n_frames] (natural log of the floored mel power)."""
        return self.logmel_of_power(self.power(waveform))

    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, n_samples] -> [B, n_frames, n_fft // 2 + 1]: the power spectrum of each frame."""
        if waveform.dim() != 2 or waveform.shape[1] != self.n_samples:  # static shapes: checked at trace time too
            raise MtlEdgeError(f"the front-end takes [batch, {self.n_samples}] clips, not {list(waveform.shape)}")
        y = nn.functional.pad(waveform, self.pad)
        frames = y[:, self.frame_index].reshape(waveform.shape[0], self.n_frames, -1)  # [B, T, win]
        spec = torch.matmul(frames, self.dft)  # [B, T, 2 * bins]
        re, im = spec[..., : self.n_bins], spec[..., self.n_bins:]
        return re * re + im * im

    def logmel_of_power(self, power: torch.Tensor) -> torch.Tensor:
        """[B, n_frames, bins] power -> [B, n_mels, n_frames] log mel (a model may warp the power in between)."""
        mel = torch.matmul(power, self.mel)  # [B, T, mels]
        return torch.log(torch.clamp(mel, min=self.floor)).transpose(1, 2)

    # -- statistics --------------------------------------------------------------------------------------
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = self.logmel(waveform)  # [B, M, T]
        pct = self._percentiles(x) if self.percentiles else {}
        parts = band_statistics(cfg.stats, x, pct, _TorchOps)  # logmel's statistics, torch ops
        if cfg.segments:
            parts += self._segments(x)
        batch = waveform.shape[0]
        out = [torch.stack(parts, dim=1).reshape(batch, -1)] if parts else []
        if cfg.n_cepstra:
            cep = torch.matmul(self.dct, x)  # [B, C, T]
            out.append(torch.stack([_cepstral_stat(cep, s) for s in cfg.cepstral_stats], dim=1).reshape(batch, -1))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def _percentiles(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """numpy.percentile(x, q, axis=-1) (linear) for each configured q, without a sort."""
        # at_most[..., i] = how many frames are <= frame i; the k-th smallest (0-based) value is the
        # least value with at_most >= k + 1 (exact with ties).
        at_most = (x.unsqueeze(-2) <= x.unsqueeze(-1)).to(x.dtype).sum(dim=-1)  # [B, M, T]
        big = torch.full_like(x, torch.finfo(torch.float32).max)
        order: dict[int, torch.Tensor] = {}
        for lo, hi, _ in self.percentiles.values():
            for k in (lo, hi):
                if k not in order:
                    order[k] = torch.where(at_most >= k + 0.5, x, big).amin(dim=-1)
        out = {}
        for name, (lo, hi, frac) in self.percentiles.items():
            a, b = order[lo], order[hi]
            # numpy's _lerp: a + (b - a) t, from the upper end when t >= 0.5
            out[name] = a + (b - a) * frac if frac < 0.5 else b - (b - a) * (1.0 - frac)
        return out

    def active_region(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, end) frame of each clip's active region as float tensors [B] (see ``logmel.active_region``)."""
        top = x.amax(dim=-2, keepdim=True)
        energy = top[:, 0, :] + torch.log(torch.exp(x - top).mean(dim=-2))  # [B, T]
        peak_energy = energy.amax(dim=-1, keepdim=True)
        active = (energy >= peak_energy - self.threshold_db).to(x.dtype)
        # frames inside a run of more than `gap` quiet frames break the region
        if self.n_windows:
            quiet = torch.matmul(1.0 - active, self.window_of)  # quiet frames in each window of gap + 1
            long_gap = (quiet > self.gap + 0.5).to(x.dtype)
            breaking = (torch.matmul(long_gap, self.window_of.t()) > 0.5).to(x.dtype)  # [B, T]
        else:
            breaking = torch.zeros_like(active)
        run = torch.matmul(breaking, self.cumulative)  # frames with one run number share a run
        peak = (self.frame_pos == torch.argmax(energy, dim=-1, keepdim=True).to(x.dtype)).to(x.dtype)
        run_of_peak = (run * peak).sum(dim=-1, keepdim=True)
        member = (active > 0.5) & ((run - run_of_peak).abs() < 0.5)
        n = float(self.n_frames)
        start = torch.where(member, self.frame_pos, torch.full_like(run, n)).amin(dim=-1)
        end = torch.where(member, self.frame_pos, torch.full_like(run, -1.0)).amax(dim=-1) + 1.0
        return start, end

    def _segments(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Segment statistics, segment-major, each [B, M] (see ``logmel._segments``)."""
        cfg = self.cfg
        batch = x.shape[0]
        if self.align:
            start, end = self.active_region(x)
        else:
            start = torch.zeros(batch, dtype=x.dtype, device=x.device)
            end = torch.full((batch,), float(self.n_frames), dtype=x.dtype, device=x.device)
        length = end - start
        k = torch.arange(cfg.segments, dtype=x.dtype, device=x.device)
        lo = torch.minimum(torch.floor(k * length.unsqueeze(-1) / cfg.segments), length.unsqueeze(-1) - 1.0)
        hi = torch.maximum(lo + 1.0, torch.floor((k + 1.0) * length.unsqueeze(-1) / cfg.segments))
        lo, hi = lo + start.unsqueeze(-1), hi + start.unsqueeze(-1)  # [B, K]
        pos = self.frame_pos
        mask = ((pos >= lo.unsqueeze(-1)) & (pos < hi.unsqueeze(-1))).to(x.dtype)  # [B, K, T]
        count = mask.sum(dim=-1).unsqueeze(-1)  # [B, K, 1]
        xs = x.unsqueeze(1)  # [B, 1, M, T]
        m = mask.unsqueeze(2)  # [B, K, 1, T]
        stats: dict[str, torch.Tensor] = {}
        mean = (xs * m).sum(dim=-1) / count  # [B, K, M]
        for s in cfg.segment_stats:
            if s == "mean":
                stats[s] = mean
            elif s == "std":
                dev = (xs - mean.unsqueeze(-1)) * m
                stats[s] = torch.sqrt((dev * dev).sum(dim=-1) / count)
            elif s == "min":
                stats[s] = torch.where(m > 0.5, xs, torch.full_like(xs, torch.finfo(torch.float32).max)).amin(dim=-1)
            elif s == "max":
                stats[s] = torch.where(m > 0.5, xs, torch.full_like(xs, torch.finfo(torch.float32).min)).amax(dim=-1)
        return [stats[s][:, j] for j in range(cfg.segments) for s in cfg.segment_stats]


class _TorchOps:
    """``statistics.band_statistics``' array operations in exportable torch ops (last axis)."""

    mean = staticmethod(lambda a: a.mean(dim=-1))
    min = staticmethod(lambda a: a.amin(dim=-1))
    max = staticmethod(lambda a: a.amax(dim=-1))
    sqrt = staticmethod(torch.sqrt)
    at_least_one = staticmethod(lambda a: torch.clamp(a, min=1.0))
    pow_1_5 = staticmethod(lambda a: a * torch.sqrt(a))

    @staticmethod
    def where(cond: torch.Tensor, value: float, other: torch.Tensor) -> torch.Tensor:
        return torch.where(cond, torch.full_like(other, value), other)

    @staticmethod
    def delta_stat(x: torch.Tensor, s: str) -> torch.Tensor:
        return _delta_stat(x, s)


def _delta_stat(x: torch.Tensor, s: str) -> torch.Tensor:
    if x.shape[-1] < 2:
        return torch.zeros_like(x[..., 0])
    d = x[..., 1:] - x[..., :-1]
    if s == "dmeanabs":
        return d.abs().mean(dim=-1)
    mean = d.mean(dim=-1)
    if s == "dmean":
        return mean
    dev = d - mean.unsqueeze(-1)
    return torch.sqrt((dev * dev).mean(dim=-1))


def _cepstral_stat(cep: torch.Tensor, s: str) -> torch.Tensor:
    if s in ("dmeanabs", "dstd", "dmean"):
        return _delta_stat(cep, s)
    if s == "mean":
        return cep.mean(dim=-1)
    if s == "std":
        dev = cep - cep.mean(dim=-1, keepdim=True)
        return torch.sqrt((dev * dev).mean(dim=-1))
    if s == "min":
        return cep.amin(dim=-1)
    return cep.amax(dim=-1)


def _hann(n: int) -> np.ndarray:
    """The periodic Hann window librosa uses (``scipy.signal.get_window('hann', n, fftbins=True)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
