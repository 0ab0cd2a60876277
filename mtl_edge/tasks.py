"""What a task is, as data: its kind, labels, loss, metrics and how it selects models.

The trainer, the metrics, ``metrics.json``, evaluation and export verification read a task's
``TaskSpec`` instead of assuming single-label cross-entropy (LibMTL's "task" axis). A corpus task
(a ``task`` column value of the manifest) is ``classification`` unless registered otherwise;
self-supervised tasks (no labels: reconstruction heads such as next-step prediction) are
registered by name with ``register_task`` and need no manifest rows.

Kinds:

- ``classification``: one label per sample, logits ``[N, labels]``, cross-entropy;
- ``multilabel``: several labels per sample, logits ``[N, labels]`` (sigmoid outputs), binary cross-entropy;
- ``regression``: a target vector per sample, mean squared error;
- ``reconstruction``: the output has the shape of the model input it rebuilds, no labels; smooth L1;
- ``frame``: per-frame labels (frame-level activity), logits ``[N, frames, labels]``, binary cross-entropy
  per frame and label; ``options`` hold the frame grid (``frames``, ``hop_ms``, ``segment_ms``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError

KINDS = ("classification", "multilabel", "regression", "reconstruction", "frame")
LABELLED_KINDS = ("classification", "multilabel", "frame")


def _per_sample(loss: Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Elementwise loss -> the sum over samples of each sample's mean over its elements."""

    def fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(output, target.reshape(output.shape), reduction="none").reshape(len(output), -1).mean(dim=1).sum()

    return fn


# Losses summed over the samples: fn(output [N, ...], target) -> scalar. The trainer divides by the batch size.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": lambda output, target: nn.functional.cross_entropy(output, target, reduction="sum"),
    "binary_cross_entropy": _per_sample(nn.functional.binary_cross_entropy_with_logits),
    "mse": _per_sample(nn.functional.mse_loss),
    "smooth_l1": _per_sample(nn.functional.smooth_l1_loss),
}

# Defaults per kind: (loss, metrics reported, metric that selects models, higher is better, needs labels, selects)
_KIND_DEFAULTS = {
    "classification": ("cross_entropy", ("accuracy", "macro_f1", "micro_f1", "roc_auc"), "accuracy", True, True, True),
    "multilabel": ("binary_cross_entropy", ("map", "map_at_3", "micro_f1", "macro_f1"), "map", True, True, True),
    "regression": ("mse", ("mse", "rmse"), "mse", False, True, True),
    # an auxiliary that rebuilds the input serves the labelled tasks: it does not pick the model
    "reconstruction": ("smooth_l1", ("loss", "mse", "relative_rmse"), "loss", False, False, False),
    "frame": ("binary_cross_entropy", ("frame_f1", "error_rate", "segment_f1"), "frame_f1", True, True, True),
}


@dataclass(frozen=True)
class TaskSpec:
    """One task: everything the trainer, metrics, evaluation and export need to know of it."""

    name: str
    kind: str = "classification"
    labels: tuple[str, ...] = ()  # sorted label names (id = index); empty for kinds without labels
    loss: str = ""  # a LOSSES name; "" = the kind's default
    metrics: tuple[str, ...] = ()
    select_metric: str = ""  # the validation metric that selects models
    higher_is_better: bool = True  # of select_metric
    needs_labels: bool | None = None  # None: the kind's default
    selects: bool | None = None  # takes part in model selection (None: the kind's default; auxiliary
    #                              reconstruction heads do not)
    target: str = "label"  # "label" (manifest) or "input" (the model input itself, e.g. an autoencoder)
    options: dict = field(default_factory=dict)  # kind-specific settings (e.g. a corruption of the input)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MtlEdgeError(f"task {self.name!r}: unknown kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        loss, metrics, select, higher, needs, selects = _KIND_DEFAULTS[self.kind]
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "loss", self.loss or loss)
        object.__setattr__(self, "metrics", tuple(self.metrics) or metrics)
        if not self.select_metric:
            object.__setattr__(self, "select_metric", select)
            object.__setattr__(self, "higher_is_better", higher)
        if self.needs_labels is None:
            object.__setattr__(self, "needs_labels", needs)
        if self.selects is None:
            object.__setattr__(self, "selects", selects)
        if self.loss not in LOSSES:
            raise MtlEdgeError(f"task {self.name!r}: unknown loss {self.loss!r}; losses: {', '.join(LOSSES)}")
        if self.kind in LABELLED_KINDS and not self.needs_labels:
            raise MtlEdgeError(f"task {self.name!r}: a {self.kind} task needs labels")
        if not self.needs_labels and self.target == "label":
            object.__setattr__(self, "target", "input")

    @property
    def outputs(self) -> int:
        """Output units of a head of a labelled task (0 where the model decides, e.g. reconstruction);
        a frame head's are per frame (``frames``)."""
        return len(self.labels)

    @property
    def frames(self) -> int:
        """Frames per sample of a frame task's output (0 for other kinds)."""
        return int(self.options.get("frames", 0)) if self.kind == "frame" else 0

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return LOSSES[self.loss]

    def selection_score(self, value: float) -> float:
        """A validation metric turned so that higher is better (model selection maximises it)."""
        return value if self.higher_is_better else -value

    def to_json(self) -> dict:
        d = asdict(self)
        d["labels"], d["metrics"] = list(self.labels), list(self.metrics)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TaskSpec":
        return cls(**{**d, "labels": tuple(d.get("labels", ())), "metrics": tuple(d.get("metrics", ()))})


# Tasks that exist without manifest rows (self-supervised): name -> spec factory.
SELF_SUPERVISED: dict[str, Callable[[], TaskSpec]] = {}


def register_task(name: str):
    """Register a self-supervised task: ``@register_task("next_step") def f() -> TaskSpec``."""

    def decorate(factory: Callable[[], TaskSpec]):
        if name in SELF_SUPERVISED:
            raise ValueError(f"task {name!r} registered twice")
        SELF_SUPERVISED[name] = factory
        return factory

    return decorate


def is_self_supervised(name: str) -> bool:
    return name in SELF_SUPERVISED


def self_supervised_spec(name: str) -> TaskSpec:
    spec = SELF_SUPERVISED[name]()
    return spec if spec.name == name else replace(spec, name=name)


def corpus_task_spec(name: str, labels: list[str], kind: str = "classification", options: dict | None = None) -> TaskSpec:
    """The spec of a task the corpus labels (its label list fixed from the training split; ``kind`` and
    ``options`` as the corpus's ``tasks.json`` declares them, e.g. a frame task's frame grid)."""
    return TaskSpec(name=name, kind=kind, labels=tuple(labels), options=dict(options or {}))


def specs_from_checkpoint(info: dict) -> dict[str, TaskSpec]:
    """Task specs of a checkpoint; a checkpoint from before specs holds classification tasks only."""
    stored = info.get("task_specs")
    if stored:
        return {t: TaskSpec.from_json(d) for t, d in stored.items()}
    return {t: corpus_task_spec(t, list(names)) for t, names in info.get("labels", {}).items()}


# The WaveNet family's auxiliary tasks (Lee et al. 2019; mtl_edge.train.wavenet reads the head option).
@register_task("next_step")
def next_step() -> TaskSpec:
    """Predict sample t+1 from the trunk at t (MSE), on every clip of each split."""
    return TaskSpec("next_step", kind="reconstruction", loss="mse", options={"wavenet_head": "next_step"})


@register_task("upsample")
def upsample() -> TaskSpec:
    """Rebuild the 16 kHz clip from its 4 kHz version (smooth L1), on every clip of each split."""
    return TaskSpec("upsample", kind="reconstruction", loss="smooth_l1", options={"wavenet_head": "upsample"})


@register_task("denoise")
def denoise() -> TaskSpec:
    """Rebuild the clean clip from the clip plus a real background recording of the training split
    at 10-15 dB SNR (smooth L1), on every clip of each split."""
    return TaskSpec("denoise", kind="reconstruction", loss="smooth_l1",
                    options={"wavenet_head": "denoise", "snr_db": [10.0, 15.0]})
