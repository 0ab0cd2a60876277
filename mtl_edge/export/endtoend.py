"""Waveform in, answers out: the training front-end (``logmel.extract``) as an exportable torch graph.

A device runs from audio, so besides the ``features``-in artefacts an export can hold one graph per
format that takes the clip itself: ``waveform`` [batch, samples] float32 at the feature config's
sample rate -> log-mel filter banks -> summary statistics -> the network -> ``{task: logits}``.

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

The clip length is fixed when the graph is built (``n_samples``, taken from the corpus clips: the
test split's waveforms, all of one length); the number of frames, the percentile positions and the
matrices depend on it. A device pads or crops its audio to that length as the corpus clips were.

Everything is float32 (logmel summarises in float64): on the demo corpus the features agree to
~2e-5 relative (worst on kurtosis), far below what changes a prediction; the export measures it on
the test split with each format's runtime (``frontend_parity`` in the manifest).

Artefacts (``EndToEnd.builder``): ONNX fp32 is the whole graph exported by torch.onnx; ONNX fp16 /
int8 are the float32 front-end composed with the multi-task network artefact of that precision
(quantising the front-end makes no sense: its power spectrum spans ~1e-10..1e4); TFLite fp32 and fp16
(float16 weights) convert whole; TFLite int8 is recorded unsupported with the reason.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.logmel import _PERCENTILE, FeatureConfig, _dct_matrix, _mel_basis

WAVEFORM = "waveform"


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
        if waveform.dim() != 2 or waveform.shape[1] != self.n_samples:  # static shapes: checked at trace time too
            raise MtlEdgeError(f"the front-end takes [batch, {self.n_samples}] clips, not {list(waveform.shape)}")
        y = nn.functional.pad(waveform, self.pad)
        frames = y[:, self.frame_index].reshape(waveform.shape[0], self.n_frames, -1)  # [B, T, win]
        spec = torch.matmul(frames, self.dft)  # [B, T, 2 * bins]
        re, im = spec[..., : self.n_bins], spec[..., self.n_bins:]
        power = re * re + im * im
        mel = torch.matmul(power, self.mel)  # [B, T, mels]
        return torch.log(torch.clamp(mel, min=self.floor)).transpose(1, 2)

    # -- statistics --------------------------------------------------------------------------------------
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = self.logmel(waveform)  # [B, M, T]
        parts: list[torch.Tensor] = []
        if any(s in ("mean", "std", "skew", "kurt") for s in cfg.stats):
            mean = x.mean(dim=-1)
            dev = x - mean.unsqueeze(-1)
            sq = dev * dev
            m2 = sq.mean(dim=-1)
            limit = 1e-6 * torch.clamp(mean.abs(), min=1.0)
            flat = m2 <= limit * limit  # a constant band has skew and kurtosis 0, as in logmel
            safe = torch.where(flat, torch.ones_like(m2), m2)
        pct = self._percentiles(x) if self.percentiles else {}
        for s in cfg.stats:
            if s == "mean":
                parts.append(mean)
            elif s == "std":
                parts.append(torch.sqrt(m2))
            elif s == "min":
                parts.append(x.amin(dim=-1))
            elif s == "max":
                parts.append(x.amax(dim=-1))
            elif s in pct:
                parts.append(pct[s])
            elif s == "skew":
                skew = (sq * dev).mean(dim=-1) / (safe * torch.sqrt(safe))
                parts.append(torch.where(flat, torch.zeros_like(m2), skew))
            elif s == "kurt":
                parts.append(torch.where(flat, torch.zeros_like(m2), (sq * sq).mean(dim=-1) / (safe * safe) - 3.0))
            elif s in ("dmeanabs", "dstd", "dmean"):
                parts.append(_delta_stat(x, s))
            else:  # pragma: no cover - FeatureConfig validates the names
                raise MtlEdgeError(f"unknown statistic {s!r}")
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


class EndToEndGraph(nn.Module):
    """``forward(waveform) -> {task: logits}``: the front-end, then an ``ExportGraph`` (same outputs)."""

    def __init__(self, frontend: FrontEnd, graph: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.network = graph  # not `graph`: an fx GraphModule's own attribute (torch.export unlifting breaks)
        self.tasks = list(graph.tasks)
        self.eval()

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network(self.frontend(waveform))


# -- data ---------------------------------------------------------------------------------------------------

def load_waveforms(corpus: str | Path, paths: list[str], cfg: FeatureConfig) -> np.ndarray:
    """The clips ``paths`` (relative to the corpus root) at ``cfg.sample_rate``, float32 [N, samples].

    Loaded as the feature cache loads them (mono, resampled). The end-to-end graph has one clip
    length, so every clip must have it: MtlEdgeError naming the lengths otherwise.
    """
    from mtl_edge.data.audio import load_audio
    from mtl_edge.data.manifest import read_manifest as read_corpus_manifest

    root = read_corpus_manifest(corpus, check_files=False).root
    clips = [load_audio(root / rel, target_rate=cfg.sample_rate).samples for rel in paths]
    lengths = sorted({len(c) for c in clips})
    if len(lengths) != 1:
        shown = ", ".join(str(n) for n in lengths[:5]) + (" ..." if len(lengths) > 5 else "")
        raise MtlEdgeError(f"the end-to-end export needs clips of one length (the graph's input is [batch, samples]); "
                           f"the test split of {corpus} has {len(lengths)} lengths ({shown} samples at "
                           f"{cfg.sample_rate} Hz)")
    return np.ascontiguousarray(np.stack(clips), dtype=np.float32)


def parity(features: np.ndarray, reference: np.ndarray, names: list[str] | None = None) -> dict:
    """How far ``features`` are from the training front-end's ``reference`` ([N, F] each).

    ``max_abs_diff``; ``max_rel_diff`` = max |diff| / max(|reference|, 1) (relative for large
    values, absolute near 0, where skew and mean differences live); ``max_scaled_diff`` = max |diff|
    over the feature's standard deviation on these clips (the units the network sees).
    """
    got = np.asarray(features, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if got.shape != ref.shape:
        return {"rows": int(len(ref)), "error": f"shape {list(got.shape)} != {list(ref.shape)}"}
    diff = np.abs(got - ref)
    if not np.isfinite(diff).all():
        return {"rows": int(len(ref)), "error": "non-finite features"}
    scale = ref.std(axis=0)
    scaled = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    worst = int(diff.max(axis=0).argmax()) if diff.size else 0
    return {"rows": int(len(ref)), "max_abs_diff": float(diff.max(initial=0.0)),
            "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1.0)).max(initial=0.0)),
            "max_scaled_diff": float(scaled.max(initial=0.0)),
            "worst_feature": names[worst] if names and diff.size else None}


# -- building the artefacts ----------------------------------------------------------------------------------

_TFLITE_UNSUPPORTED = {
    "int8-dynamic": ("tflite int8-dynamic of the end-to-end graph: litert-torch's dynamic-range quantisation "
                     "takes every FULLY_CONNECTED weight, the front-end's DFT, mel and DCT matrices included "
                     "(an 8-bit spectrum: meaningless log-mel features); the network alone is the multi "
                     "tflite int8-dynamic artefact, with the front-end in float (this graph at fp32, or numpy)"),
    "int8": ("tflite int8 of the end-to-end graph: static int8 would quantise the front-end's activations (a "
             "power spectrum spanning ~1e-10..1e4, then its log: no int8 scale holds it), and litert-torch "
             "0.10.0 cannot restrict PT2E quantisation to the network (its QuantConfig needs a global config); "
             "the network alone is the multi tflite int8 artefact, with the front-end in float"),
}


class EndToEnd:
    """The waveform-in artefacts of one model: the graph, the reference features and the builders.

    ``waveforms`` are the test split's clips; ``features`` is ``logmel.extract_batch`` of them (the
    training front-end), the reference for the front-end parity and, through the PyTorch model, for
    the logits.
    """

    def __init__(self, cfg: FeatureConfig, network: nn.Module, waveforms: np.ndarray, workdir: Path):
        from mtl_edge.features.logmel import extract_batch, feature_names

        self.cfg = cfg
        self.n_samples = int(waveforms.shape[1])
        self.frontend = FrontEnd(cfg, self.n_samples)
        self.graph = EndToEndGraph(self.frontend, network)
        self.tasks = self.graph.tasks
        self.workdir = Path(workdir)
        self.names = feature_names(cfg)
        self.features = extract_batch(waveforms, cfg)
        self.waveforms = waveforms
        with torch.no_grad():
            self.torch_features = self.frontend(torch.from_numpy(waveforms)).numpy()
        self.torch_parity = parity(self.torch_features, self.features, self.names)
        self._parity: dict[tuple[str, str], dict] = {}

    def input_record(self) -> dict:
        return {"name": WAVEFORM, "dtype": "float32", "shape": ["batch", self.n_samples], "samples": self.n_samples,
                "sample_rate": self.cfg.sample_rate,
                "description": "mono clip at sample_rate, exactly `samples` long (the corpus clips' length); "
                               "the graph computes the log-mel summary features itself"}

    def builder(self, fmt: str, folder: Path, network_entries: dict[str, dict]):
        """An object with the onnx/tflite modules' ``EXTENSION`` and ``build`` for this graph.

        ``network_entries``: the multi-task model's manifest entries of ``fmt`` by precision (the
        ONNX fp16 / int8 graphs are the fp32 front-end composed with those artefacts).
        """
        if fmt == "onnx":
            return _OnnxBuilder(self, folder, network_entries)
        if fmt == "tflite":
            return _TfliteBuilder(self)
        raise MtlEdgeError(f"no end-to-end {fmt} artefacts (onnx and tflite only)")

    # the front-end alone, exported like the artefact's front-end and run by the same runtime
    def frontend_parity(self, fmt: str, precision: str) -> dict:
        """Parity of the artefact's front-end with ``logmel.extract_batch``, measured by the real runtime.

        The front-end is exported alone in the artefact's format (the same module, at the precision
        its front-end has in the artefact) and run on the test waveforms.
        """
        from mtl_edge.export.runtime import runners

        key = (fmt, "fp16" if (fmt, precision) == ("tflite", "fp16") else "fp32")
        if key not in self._parity:
            try:
                run, _ = runners(fmt, self._frontend_artefact(*key))
                (features,) = run(self.waveforms).values()
            except Exception as exc:  # the whole graph converted, so this should not happen; say so if it does
                from mtl_edge.export.graph import converter_message

                self._parity[key] = {"rows": len(self.features), "error": f"the front-end alone did not export "
                                     f"or run: {converter_message(exc)}"}
                return self._parity[key]
            self._parity[key] = {**parity(features, self.features, self.names),
                                 "measured_on": f"the front-end alone, {fmt} {key[1]} weights, run by "
                                                f"{'onnxruntime' if fmt == 'onnx' else 'ai-edge-litert'}"}
        return self._parity[key]

    def _frontend_artefact(self, fmt: str, precision: str) -> Path:
        if fmt == "onnx":
            path = self.workdir / "e2e-frontend.fp32.onnx"
            if not path.exists():
                _onnx_export(self.frontend, self.n_samples, path, ["features"])
            return path
        path = self.workdir / f"e2e-frontend.{precision}.tflite"
        if not path.exists():
            base = self.workdir / "e2e-frontend.fp32.tflite"
            if not base.exists():
                _tflite_convert(self.frontend, self.n_samples, base)
            if precision == "fp16":
                from mtl_edge.export import tflite as tflite_export

                with tflite_export._quiet():
                    tflite_export._fp16(base, path)
        return path


def _onnx_export(module: nn.Module, n_samples: int, path: Path, outputs: list[str]) -> None:
    from mtl_edge.export import onnx as onnx_export

    with onnx_export._quiet():
        torch.onnx.export(module, (torch.zeros(2, n_samples),), str(path), dynamo=True, external_data=False,
                          input_names=[WAVEFORM], output_names=outputs,
                          dynamic_shapes={WAVEFORM: {0: torch.export.Dim("batch")}})


def _tflite_convert(module: nn.Module, n_samples: int, path: Path) -> None:
    import litert_torch

    from mtl_edge.export import tflite as tflite_export

    with tflite_export._quiet():
        edge = litert_torch.convert(module, sample_kwargs={WAVEFORM: torch.zeros(tflite_export.BATCH, n_samples)})
        edge.export(str(path))


def _toposort(graph) -> None:
    """Order an ONNX graph's nodes so each follows its inputs' producers (float16 conversion appends
    its input Cast last, which onnxruntime tolerates but ``onnx.compose`` does not)."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise MtlEdgeError(f"onnx graph {graph.name!r} has a cycle or an undefined input")
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
        for n in ready:
            ordered.append(n)
            known.update(n.output)
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


class _OnnxBuilder:
    """fp32: the end-to-end graph exported in one piece by torch.onnx; fp16 / int8-dynamic / int8: the
    fp32 front-end composed (``onnx.compose``) with the multi-task network artefact of that precision,
    so the front-end stays float32 and the network is exactly the verified features-in artefact."""

    EXTENSION = ".onnx"

    def __init__(self, e2e: EndToEnd, folder: Path, network_entries: dict[str, dict]):
        self.e2e, self.folder, self.network_entries = e2e, folder, network_entries

    def build(self, graph, input_dim, precision, path, workdir, label, calibration=None, per_channel=True) -> dict:
        from mtl_edge.export import onnx as onnx_export
        from mtl_edge.export.graph import converter_message
        from mtl_edge.errors import Unsupported

        if precision == "fp32":
            try:
                _onnx_export(graph, input_dim, path, list(graph.tasks))
            except Exception as exc:
                raise Unsupported(f"onnx export of the end-to-end graph failed (an op ONNX cannot take?): "
                                  f"{converter_message(exc)}") from None
            frontend = "float32"
            quant = {"scheme": "none", "per_channel": None, "calibration": None}
            network = None
        else:
            net = self.network_entries.get(precision)
            if net is None or net.get("status") == "unsupported" or not net.get("path"):
                why = "not exported" if net is None else f"unsupported: {net.get('reason')}"
                raise Unsupported(f"onnx {precision} end-to-end graph: no multi onnx {precision} network artefact to "
                                  f"compose with ({why})")
            try:
                _compose(self.e2e._frontend_artefact("onnx", "fp32"), self.folder / net["path"], path)
            except MtlEdgeError:
                raise
            except Exception as exc:
                raise Unsupported(f"onnx {precision} end-to-end graph: composing the front-end with "
                                  f"{net['path']} failed: {converter_message(exc)}") from None
            frontend = "float32"
            network = net["path"]
            q = net.get("quantization") or {}
            quant = {"scheme": f"front-end float32; network: {q.get('scheme', 'none')}",
                     "per_channel": q.get("per_channel"), "calibration": None}
        return {"quantization": quant, "frontend_precision": frontend, "network_artefact": network,
                **onnx_export.describe(path)}


def _compose(frontend: Path, network: Path, path: Path) -> None:
    import onnx
    from onnx import compose

    fe = compose.add_prefix(onnx.load(str(frontend)), "frontend/", rename_inputs=False, rename_outputs=False)
    net = onnx.load(str(network))
    _toposort(net.graph)
    fe.ir_version = net.ir_version = max(fe.ir_version, net.ir_version)
    merged = compose.merge_models(fe, net, io_map=[("features", "features")], producer_name="mtl-edge",
                                  doc_string="waveform -> log-mel summary features (float32) -> multi-task network")
    onnx.save(merged, str(path))


class _TfliteBuilder:
    """fp32: litert-torch conversion of the end-to-end graph; fp16: ai-edge-quantizer float casting of
    its FULLY_CONNECTED weights (the front-end's DFT / mel / DCT matrices too; compute stays float32);
    int8-dynamic / int8: unsupported (see ``_TFLITE_UNSUPPORTED``)."""

    EXTENSION = ".tflite"

    def __init__(self, e2e: EndToEnd):
        self.e2e = e2e

    def build(self, graph, input_dim, precision, path, workdir, label, calibration=None, per_channel=True) -> dict:
        from mtl_edge.export import tflite as tflite_export
        from mtl_edge.export.graph import converter_message
        from mtl_edge.errors import Unsupported

        if precision in _TFLITE_UNSUPPORTED:
            raise Unsupported(_TFLITE_UNSUPPORTED[precision])
        base = Path(workdir) / "e2e-multi.fp32.tflite"
        if not base.exists():
            try:
                _tflite_convert(graph, input_dim, base)
            except Exception as exc:
                base.unlink(missing_ok=True)
                raise Unsupported(f"tflite conversion of the end-to-end graph failed (an op LiteRT cannot take?): "
                                  f"{converter_message(exc)}") from None
        if precision == "fp32":
            path.write_bytes(base.read_bytes())
            frontend = "float32"
            quant = {"scheme": "none", "per_channel": None, "calibration": None}
        elif precision == "fp16":
            try:
                with tflite_export._quiet():
                    tflite_export._fp16(base, path)
            except Exception as exc:
                raise Unsupported(f"tflite fp16 (ai-edge-quantizer float casting) of the end-to-end graph failed: "
                                  f"{converter_message(exc)}") from None
            frontend = "float16 weights (DFT, mel, DCT matrices), float32 compute"
            quant = {"scheme": "float16 weights (ai-edge-quantizer FLOAT_CASTING), front-end matrices included; "
                               "float32 compute", "per_channel": None, "calibration": None}
        else:
            raise MtlEdgeError(f"unknown precision {precision!r}")
        return {"quantization": quant, "frontend_precision": frontend, "network_artefact": None,
                **tflite_export.describe(path)}
