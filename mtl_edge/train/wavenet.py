"""WaveNet trunk on raw 16 kHz audio with self-supervised auxiliary heads (Lee et al. 2019).

The trunk: a causal 1x1 convolution, then ``blocks`` x ``layers`` dilated causal convolutions
(kernel 2, dilations 1, 2, ..., 2^(layers-1) within each block) with gated activations
tanh(W_f * x) * sigmoid(W_g * x) and residual connections; ``channels`` wide. The paper's
supplement: 3 blocks of 6 layers, 64 channels (the defaults).

Heads, each as small as the task allows (the paper's Table 3):

- a labelled task (audio tagging, or any classification task of the corpus): mean pool over time,
  one hidden layer of 512, the outputs;
- ``next_step``: two 1x1 convolutions (128, then 1) with a ReLU between; the output at sample t is
  the prediction made from the trunk at t-1, so the head "rebuilds the input" one step ahead and the
  reconstruction loss against the input is the next-step loss (sample 0 is predicted as 0);
- ``upsample``: its own trunk pass on the clip averaged down to 4 kHz and repeated back to 16 kHz,
  then two convolutions (128, filter width 11) back to the original samples;
- ``denoise``: its own trunk pass on the clip plus a real background recording at a random SNR
  (10-15 dB), the same head shape, back to the clean clip. The noise bank is the training split's
  background recordings (``TaskData.background_rows``: the manifest's ``kind=silence`` clips, the
  demo's ``_silence_`` stretches of its scenes' backgrounds), attached by the trainer
  (``attach_data``); it is no part of the checkpoint. In training the noise and SNR are drawn
  from torch's generator (seeded, saved with the resumable state); in evaluation from a fixed seed;
- any other reconstruction task: the same head on the clean trunk output (an autoencoder).

Training sees a random ``crop``-sample window of each clip (``training_view``, the paper's 2 s crops at
random offsets; offsets from torch's generator, saved with the resumable state); evaluation, export
and inference see the whole prepared clip, which the tagging head mean-pools whatever its length.
``crop=0`` (the default) trains on the whole clip. Clips shorter than the prepared length are
already zero-padded to it by the waveform front-end.

A task's head is chosen by its spec: ``TaskSpec.options["wavenet_head"]`` (``next_step``,
``upsample`` or ``denoise``: the self-supervised tasks of those names in ``mtl_edge.tasks``), else
by its kind.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import TaskSpec
from mtl_edge.train.models import MultiTaskModel, register_model

UPSAMPLING_FACTOR = 4  # 16 kHz -> 4 kHz -> 16 kHz
# mu of the input coding of new models: each clip scaled to an RMS of 1 and mu-law companded
# (WaveNet's own input coding); 0 = the samples as they are, what checkpoints from before the option
# hold. Measured on the demo corpus (clips peak at -20 to -1 dBFS), a 2x5x16 trunk learned scene in 150
# steps with a level scaling and mu-law, and nothing with either alone or neither (experiments/README.md).
# RMS rather than the paper's peak: onnxruntime's quantisation tooling cannot infer ReduceMax's shapes.
# Reconstruction heads predict at an RMS of 1 and are scaled back by the clip's RMS (``WaveNet.decode``):
# the trunk cannot know a level it never sees. Without that, a head learned to output near-zero samples
# built from O(1) activations, so float rounding of the activations was 1e-4 of the output (an fp32 ONNX
# export's upsample output differed from PyTorch by 1.04e-4 relative RMS); scaled back, it is float rounding.
DEFAULT_MULAW = 255
DENOISE_SNR_DB = (10.0, 15.0)  # the paper's range


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution whose output at t sees inputs up to t only (left zero padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left = dilation * (kernel_size - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, (self.left, 0)))


class GatedResidualLayer(nn.Module):
    """tanh(W_f * x) * sigmoid(W_g * x), projected by a 1x1 convolution and added to the input."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.filter = CausalConv1d(channels, channels, 2, dilation)
        self.gate = CausalConv1d(channels, channels, 2, dilation)
        self.project = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(torch.tanh(self.filter(x)) * torch.sigmoid(self.gate(x)))


class WaveNetTrunk(nn.Module):
    """(batch, samples) -> (batch, channels, samples), causal."""

    def __init__(self, channels: int = 64, blocks: int = 3, layers: int = 6):
        super().__init__()
        self.input = CausalConv1d(1, channels, 1)
        self.layers = nn.Sequential(*[GatedResidualLayer(channels, 2 ** i) for _ in range(blocks) for i in range(layers)])

    @property
    def receptive_field(self) -> int:
        return 1 + sum(layer.filter.left for layer in self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.input(x.unsqueeze(1)))


def downsample_repeat(x: torch.Tensor, factor: int = UPSAMPLING_FACTOR) -> torch.Tensor:
    """The clip averaged over ``factor`` samples and each mean repeated ``factor`` times (the paper's
    upsampling input); a tail shorter than ``factor`` keeps its own mean."""
    n = x.shape[-1]
    full = n - n % factor
    parts = [x[..., :full].reshape(*x.shape[:-1], -1, factor).mean(dim=-1).repeat_interleave(factor, dim=-1)]
    if full < n:
        parts.append(x[..., full:].mean(dim=-1, keepdim=True).expand(*x.shape[:-1], n - full))
    return torch.cat(parts, dim=-1)


def mulaw(x: torch.Tensor, mu: int) -> torch.Tensor:
    """sign(x) ln(1 + mu |x|) / ln(1 + mu): quiet samples spread over the range, sample by sample (causal);
    ``mu`` = 0 leaves ``x`` as it is."""
    if not mu:
        return x
    # log(1 + .) as ONNX computes it (it has no log1p), so that export and PyTorch agree to float rounding
    # mu as a float: an int becomes an int64 constant in the exported graph, which static int8 calibration
    # (a histogram observer per input of the multiplication) cannot take
    return torch.sign(x) * torch.log(1.0 + float(mu) * x.abs()) / float(np.log1p(mu))


def input_level(x: torch.Tensor) -> torch.Tensor:
    """The RMS of each clip (row), shape (batch, 1): what ``code_input`` divides by."""
    return x.pow(2).mean(dim=-1, keepdim=True).add(1e-8).sqrt()


def code_input(x: torch.Tensor, mu: int) -> torch.Tensor:
    """Each clip (row) scaled to an RMS of 1, then mu-law coded; ``mu`` = 0 leaves ``x`` as it is. The
    scaling is the one thing every sample sees of the whole clip (its RMS): the clip's level, which the
    demo corpus draws at random, carries no label."""
    if not mu:
        return x
    return mulaw(x / input_level(x), mu)


class ReconstructionHead(nn.Module):
    """Two convolutions (``hidden`` channels, then 1) with a ReLU between: trunk output -> samples."""

    def __init__(self, channels: int, hidden: int = 128, width: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(channels, hidden, width, padding=width // 2), nn.ReLU(),
                                 nn.Conv1d(hidden, 1, width, padding=width // 2))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(1)


class TaggingHead(nn.Module):
    """Mean over time, one hidden layer, the outputs."""

    def __init__(self, channels: int, outputs: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.mean(dim=-1))


class WaveNet(MultiTaskModel):
    """The shared WaveNet trunk with one head per task; ``heads_of`` says which input each head reads."""

    input_kind = "waveform"

    def __init__(self, input_dim: int, tasks: dict[str, dict], channels: int = 64, blocks: int = 3, layers: int = 6,
                 tag_hidden: int = 512, aux_hidden: int = 128, crop: int = 0, mulaw: int = 0):
        super().__init__()
        self.input_dim = int(input_dim)
        self.mulaw = int(mulaw)
        self.crop = int(crop) if 0 < int(crop) < self.input_dim else 0
        self.trunk = WaveNetTrunk(channels, blocks, layers)
        self.head_kinds = {t: _head_kind(spec) for t, spec in tasks.items()}
        heads = {}
        for task, spec in tasks.items():
            kind = self.head_kinds[task]
            if kind == "tagging":
                heads[task] = TaggingHead(channels, int(spec["outputs"]), tag_hidden)
            else:  # the paper: 1x1 convolutions for next-step, filter width 11 for the corrupted inputs
                heads[task] = ReconstructionHead(channels, aux_hidden, 1 if kind in ("next_step", "autoencoder") else 11)
        self.heads = nn.ModuleDict(heads)
        snr = [spec.get("snr_db") for t, spec in tasks.items() if self.head_kinds[t] == "denoise"]
        self.snr_db = tuple(snr[0] or DENOISE_SNR_DB) if snr else DENOISE_SNR_DB
        self.register_buffer("noise", torch.zeros(0, self.input_dim), persistent=False)  # see attach_data

    @property
    def predict_batch(self) -> int:
        """Clips per inference call, so that one activation tensor stays near 4 MB: larger ones are fresh
        memory maps each time (measured: 120 one-second clips at 8 channels, batch 120: 6.1 s wall of which
        3.6 s in the kernel zeroing pages; batch 8: 1.3 s)."""
        return max(1, 1_000_000 // (self.input_dim * self.trunk.input.out_channels))

    @property
    def train_chunk(self) -> int:
        """Clips per forward/backward pass in training (the trainer accumulates a batch's gradient over
        chunks): one activation near 4 MB, as in inference."""
        return max(1, 1_000_000 // ((self.crop or self.input_dim) * self.trunk.input.out_channels))

    def training_view(self, x: torch.Tensor) -> torch.Tensor:
        """In training, a random ``crop``-sample window of each clip (offsets from torch's generator);
        otherwise, or without a crop, ``x`` itself."""
        if not self.training or not self.crop:
            return x
        return _windows(x, self.crop, None)

    def attach_data(self, data) -> None:
        """Take the noise bank for ``denoise`` from the training split's background recordings."""
        if "denoise" not in self.head_kinds.values():
            return
        rows = getattr(data, "background_rows", None)
        if rows is None or len(rows) == 0:
            raise MtlEdgeError(
                f"task denoise needs background recordings in the training split of {data.corpus} (clips with "
                "kind=silence in the manifest's kind column, as the demo corpus's _silence_ clips); this corpus has none"
            )
        self.noise = torch.from_numpy(np.ascontiguousarray(data.inputs[rows]))

    def add_noise(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus a background recording of the bank at a random SNR within ``snr_db``."""
        if len(self.noise) == 0:
            raise MtlEdgeError("task denoise: no noise bank attached (WaveNet.attach_data with the training data)")
        generator = None if self.training else torch.Generator().manual_seed(0)
        pick = torch.randint(len(self.noise), (len(x),), generator=generator)
        snr = torch.rand(len(x), generator=generator) * (self.snr_db[1] - self.snr_db[0]) + self.snr_db[0]
        noise = _windows(self.noise[pick], x.shape[-1], generator)  # a cropped clip gets a window of its length

        def rms(a: torch.Tensor) -> torch.Tensor:
            return a.pow(2).mean(dim=-1).sqrt().clamp_min(1e-8)

        gain = rms(x) / rms(noise) * torch.pow(10.0, -snr / 20)
        return x + gain.unsqueeze(-1) * noise

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk of an input: the clip coded (``code_input``), then the WaveNet trunk."""
        return self.trunk(code_input(x, self.mulaw))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, self.input_dim)

    def decode(self, out: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """A reconstruction head's output back at the level of the input its trunk pass saw: the coded
        input has no level, so the head predicts samples at an RMS of 1 and the clip's RMS scales them."""
        return out * input_level(seen) if self.mulaw else out

    def _head(self, task: str, clean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        kind = self.head_kinds[task]
        if kind in ("upsample", "denoise"):  # its own trunk pass on the degraded input, as in the paper
            seen = downsample_repeat(x) if kind == "upsample" else self.add_noise(x)
            return self.decode(self.heads[task](self.encode(seen)), seen)
        if kind == "tagging":
            return self.heads[task](clean)
        out = self.decode(self.heads[task](clean), x)
        if kind == "next_step":  # output t = the prediction made at t-1
            return nn.functional.pad(out[..., :-1], (1, 0))
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_tasks(x, list(self.heads))

    def forward_tasks(self, x: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
        """Only ``tasks``' heads: the extra trunk passes of the corrupted inputs run only when asked for."""
        clean = self.encode(x)
        return {task: self._head(task, clean, x) for task in tasks}

    def task_outputs(self, x: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        clean = self.encode(x)
        return {task: self._head(task, clean[mask], x[mask]) for task, mask in masks.items()}


def _windows(x: torch.Tensor, length: int, generator: torch.Generator | None) -> torch.Tensor:
    """A window of ``length`` samples at a random offset in each row of ``x``."""
    if x.shape[-1] <= length:
        return x
    start = torch.randint(x.shape[-1] - length + 1, (len(x), 1), generator=generator)
    return x.gather(1, start + torch.arange(length))


def _head_kind(spec: dict) -> str:
    if spec["kind"] == "reconstruction":
        return spec.get("head") or "autoencoder"
    return "tagging"


SIZE_OPTIONS = ("channels", "blocks", "layers", "tag_hidden", "aux_hidden", "crop", "mulaw")


def _wavenet_args(input_dim, specs: dict[str, TaskSpec], cfg=None, **size) -> dict:
    """Build args: the task heads, and the size from ``TrainConfig.model_args`` (default: the paper's)."""
    size = {**(getattr(cfg, "model_args", None) or {}), **size}
    unknown = sorted(set(size) - set(SIZE_OPTIONS))
    if unknown:
        raise MtlEdgeError(f"wavenet: unknown model option(s) {', '.join(unknown)}; options: {', '.join(SIZE_OPTIONS)}")
    bad = [f"{k}={v!r}" for k, v in size.items() if not (isinstance(v, int) and v >= (0 if k == "mulaw" else 1))]
    if bad:
        raise MtlEdgeError(f"wavenet: model options are positive integers, not {', '.join(bad)} "
                           "(mulaw may be 0: the samples uncoded)")
    size.setdefault("mulaw", DEFAULT_MULAW)
    blocks, layers = size.get("blocks", 3), size.get("layers", 6)
    receptive_field = 1 + blocks * (2 ** layers - 1)
    for what, samples in (("a prepared clip", int(input_dim)), ("the crop", size.get("crop", int(input_dim)))):
        if samples < receptive_field:
            raise MtlEdgeError(
                f"wavenet: {what} of {samples} samples is shorter than the trunk's receptive field ({receptive_field} "
                f"samples for {blocks} blocks of {layers} layers): prepare longer waveform inputs, a longer crop, or fewer layers")
    return {"input_dim": int(input_dim), **size,
            "tasks": {t: {"kind": s.kind, "outputs": s.outputs, "head": s.options.get("wavenet_head", ""),
                          **({"snr_db": list(s.options["snr_db"])} if "snr_db" in s.options else {})}
                      for t, s in specs.items()}}


def _tiny_args(input_dim, specs):
    return _wavenet_args(input_dim, specs, channels=4, blocks=2, layers=3, tag_hidden=8, aux_hidden=8)


@register_model("wavenet", input_kind="waveform", task_kinds=("classification", "reconstruction"),
                build_args=_wavenet_args, tiny_args=_tiny_args, tiny_input_dim=400)
def wavenet(input_dim: int, tasks: dict[str, dict], channels: int = 64, blocks: int = 3, layers: int = 6,
            tag_hidden: int = 512, aux_hidden: int = 128, crop: int = 0, mulaw: int = 0) -> WaveNet:
    return WaveNet(input_dim, tasks, channels, blocks, layers, tag_hidden, aux_hidden, crop, mulaw)

