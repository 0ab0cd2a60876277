"""A small 2-D CNN on each clip's log mel filter banks, normalised per clip: words that generalise to new voices.

The Georgiev DNN reads clip-wide statistics of the log mel bands, which blur a word's sequence of
sounds and keep the speaker's long-term spectrum: on the demo corpus its ``kws`` accuracy falls from
about 0.87 on the training voices to about 0.5 on voices it never heard (experiments/README.md).
Keyword spotting in the field reads the time-frequency image instead, with each band's mean and
spread over the clip taken out (cepstral mean and variance normalisation, which removes most of a
voice's and a channel's fixed colouring), and SpecAugment's time and frequency masks in training.

- Front-end: ``features.torch_frontend.FrontEnd.logmel`` (the project's log mel filter banks, with
  ops every exporter converts), so the model reads raw audio (input kind ``waveform``) and the
  exported artefact is audio in, answers out on every runtime.
- Per clip and band: ``(x - mean_t) / sqrt(var_t + 1e-6)``.
- Training only: one frequency mask of up to ``FREQ_MASK`` bands and one time mask of up to
  ``TIME_MASK`` frames per clip (drawn from torch's generator, which the trainer seeds and saves).
- Training only, with ``vtlp`` > 0: vocal tract length perturbation (Jaitly and Hinton 2013), each
  clip's power spectrum warped along frequency by a factor within 1 +- vtlp %, as if a longer or
  shorter vocal tract spoke the clip (``warp_frequency``).
- Trunk: three blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling (``channels``,
  2x and 4x as many), a fourth convolution, the mean over the remaining time-frequency cells, dropout.
- One linear head per task on the pooled vector.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.logmel import FeatureConfig
from mtl_edge.features.torch_frontend import FrontEnd, _frames
from mtl_edge.tasks import TaskSpec
from mtl_edge.train.models import MultiTaskModel, register_model

FREQ_MASK = 8  # SpecAugment's widest frequency mask (bands) and time mask (frames), as in the field's
TIME_MASK = 12  # small keyword models (Park et al. 2019's LibriSpeech policy scaled to 40 bands, 1 s)
POOLINGS = 3  # 2x2 max poolings: a clip needs 2**3 frames and bands
VTLP_BOUNDARY_HZ = 4800.0  # Jaitly and Hinton's F_hi: below it the warp is f * alpha, above it linear to Nyquist
SIZE_OPTIONS = ("channels", "n_mels", "spec_augment", "vtlp")


def frontend_config(n_mels: int) -> FeatureConfig:
    """The project's log mel settings (40 ms windows, 10 ms hop) with ``n_mels`` bands; no summaries."""
    return FeatureConfig(n_mels=n_mels, segments=0, n_cepstra=0)


def warp_frequency(power: torch.Tensor, alpha: torch.Tensor, boundary_bin: float) -> torch.Tensor:
    """VTLP: power [B, T, bins] as spoken by a vocal tract scaled by ``alpha`` [B] (a tone at bin k moves to k * alpha).

    The warp is Jaitly and Hinton's piecewise-linear one: f -> f * alpha up to
    ``boundary_bin * min(alpha, 1) / alpha``, then the straight line that keeps Nyquist at Nyquist.
    Each output bin reads its source position (the warp's inverse) by linear interpolation.
    """
    bins = power.shape[-1]
    nyquist = float(bins - 1)
    a = alpha.to(power.dtype)[:, None]  # [B, 1]
    knee_in = boundary_bin * torch.clamp(a, max=1.0) / a
    knee_out = knee_in * a
    out = torch.arange(bins, dtype=power.dtype)[None, :]  # [1, bins]
    source = torch.where(out <= knee_out, out / a, nyquist - (nyquist - out) * (nyquist - knee_in) / (nyquist - knee_out))
    source = source.clamp(0.0, nyquist)
    low = source.floor()
    weight = (source - low)[:, None, :]  # [B, 1, bins]
    index_low = low.long()[:, None, :].expand(-1, power.shape[1], -1)
    index_high = torch.clamp(index_low + 1, max=bins - 1)
    return torch.gather(power, 2, index_low) * (1.0 - weight) + torch.gather(power, 2, index_high) * weight


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class LogMelCNN(MultiTaskModel):
    """Log mel front-end, per-clip band normalisation, a 4-layer CNN trunk and linear task heads."""

    input_kind = "waveform"

    def __init__(self, input_dim: int, tasks: dict[str, int], channels: int = 16, n_mels: int = 40, spec_augment: int = 1,
                 vtlp: int = 0, dropout: float = 0.3):
        super().__init__()
        self.input_dim = int(input_dim)
        self.spec_augment = bool(spec_augment)
        self.vtlp = int(vtlp)
        cfg = frontend_config(n_mels)
        self.frontend = FrontEnd(cfg, self.input_dim)
        self.vtlp_boundary_bin = VTLP_BOUNDARY_HZ * cfg.fft_size / cfg.sample_rate
        c = int(channels)
        self.trunk = nn.Sequential(_block(1, c), _block(c, 2 * c), _block(2 * c, 4 * c),
                                   nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({task: nn.Linear(4 * c, int(outputs)) for task, outputs in tasks.items()})

    def bands(self, x: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> [B, mels, frames]: log mel, each band standardised over the clip's frames."""
        if self.training and self.vtlp:
            alpha = 1.0 + (2.0 * torch.rand(x.shape[0]) - 1.0) * (self.vtlp / 100.0)
            logmel = self.frontend.logmel_of_power(warp_frequency(self.frontend.power(x), alpha, self.vtlp_boundary_bin))
        else:
            logmel = self.frontend.logmel(x)
        centred = logmel - logmel.mean(dim=-1, keepdim=True)
        return centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + 1e-6)

    def _masked(self, bands: torch.Tensor) -> torch.Tensor:
        """SpecAugment: one frequency and one time mask per clip, set to the band mean (0)."""
        batch, mels, frames = bands.shape

        def mask(size: int, widest: int) -> torch.Tensor:
            width = torch.randint(0, min(widest, size) + 1, (batch, 1))
            start = (torch.rand(batch, 1) * (size - width + 1)).floor()
            position = torch.arange(size)[None, :]
            return (position >= start) & (position < start + width)

        hidden = mask(mels, FREQ_MASK)[:, :, None] | mask(frames, TIME_MASK)[:, None, :]
        return bands.masked_fill(hidden, 0.0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        bands = self.bands(x)
        if self.training and self.spec_augment:
            bands = self._masked(bands)
        return self.dropout(self.trunk(bands.unsqueeze(1)).mean(dim=(2, 3)))

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())


def _cnn_args(input_dim, specs: dict[str, TaskSpec], cfg=None, **size) -> dict:
    """Build args: the task heads and the size from ``TrainConfig.model_args`` (channels, n_mels, spec_augment, vtlp)."""
    size = {**(getattr(cfg, "model_args", None) or {}), **size}
    unknown = sorted(set(size) - set(SIZE_OPTIONS))
    if unknown:
        raise MtlEdgeError(f"logmel_cnn: unknown model option(s) {', '.join(unknown)}; options: {', '.join(SIZE_OPTIONS)}")
    allowed = {"spec_augment": range(2), "vtlp": range(50)}
    bad = [f"{k}={v!r}" for k, v in size.items() if not (isinstance(v, int) and (v in allowed[k] if k in allowed else v >= 1))]
    if bad:
        raise MtlEdgeError("logmel_cnn: channels and n_mels are positive integers, spec_augment is 0 or 1 and vtlp a "
                           f"percentage from 0 to 49, not {', '.join(bad)}")
    n_mels = size.get("n_mels", 40)
    frames = _frames(int(input_dim), frontend_config(n_mels)) if int(input_dim) > 0 else 0  # no matrices built
    if frames < 2 ** POOLINGS or n_mels < 2 ** POOLINGS:
        raise MtlEdgeError(f"logmel_cnn: a clip of {input_dim} samples gives {frames} frames of {n_mels} bands; its "
                           f"{POOLINGS} poolings need at least {2 ** POOLINGS} of each (prepare longer waveform inputs or more bands)")
    return {"input_dim": int(input_dim), **size, "tasks": {t: s.outputs for t, s in specs.items()}}


def _tiny_args(input_dim, specs):
    return _cnn_args(input_dim, specs, channels=2, n_mels=8)


@register_model("logmel_cnn", input_kind="waveform", task_kinds=("classification",), build_args=_cnn_args,
                tiny_args=_tiny_args, tiny_input_dim=1600)
def logmel_cnn(input_dim: int, tasks: dict[str, int], channels: int = 16, n_mels: int = 40, spec_augment: int = 1,
               vtlp: int = 0) -> LogMelCNN:
    return LogMelCNN(input_dim, tasks, channels, n_mels, spec_augment, vtlp)
