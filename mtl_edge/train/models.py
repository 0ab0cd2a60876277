"""Model registry and the contract every hard-parameter-sharing model keeps.

``create_model(name, **build_args)`` builds any registered model and fails loudly on an unknown
name; a checkpoint stores ``name`` and ``build_args`` so the model rebuilds with no other file.

A registry entry (``ModelEntry``) declares:

- ``input_kind``: ``features`` (a summary vector) or ``waveform`` (N samples); see ``mtl_edge.features.inputs``;
- ``task_kinds``: the task kinds its heads can serve (a reconstruction task on a features-only model is refused);
- ``build_args(input_dim, specs, train_config)``: the stored build arguments for a task set;
- ``tiny_args(specs)``: build arguments small enough for the registry tests (forward, backward,
  checkpoint round trip and export of every registered model run on these).

A model (``MultiTaskModel``) returns ``{task: output}`` from ``forward``; ``task_outputs`` runs each
task's head on its own samples only (a sample updates the trunk and its own head);
``fit_input_statistics`` is an optional hook for input statistics (the DNN's z-scoring);
``example_input`` gives an input of the right shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_kind: str
    task_kinds: tuple[str, ...]
    build_args: Callable[..., dict]  # (input_dim, specs: {task: TaskSpec}, train_config) -> build args
    tiny_args: Callable[..., dict]  # (input_dim, specs) -> small build args for the registry tests
    tiny_input_dim: int  # the input size the registry tests use


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, input_kind: str = "features", task_kinds=("classification",), build_args=None,
                   tiny_args=None, tiny_input_dim: int = 16):
    """Register a builder; ``build_args`` / ``tiny_args`` default to ``{"input_dim", "tasks": {task: outputs}}``."""

    def default_args(input_dim, specs, cfg=None):
        return {"input_dim": int(input_dim), "tasks": {t: s.outputs for t, s in specs.items()}}

    def decorate(builder):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelEntry(name, builder, input_kind, tuple(task_kinds), build_args or default_args,
                                  tiny_args or default_args, tiny_input_dim)
        return builder

    return decorate


def unregister_model(name: str) -> None:
    """Remove a registration (tests that register a throwaway model clean up with it)."""
    MODELS.pop(name, None)


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise MtlEdgeError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def create_model(name: str, **build_args) -> nn.Module:
    entry = model_entry(name)
    try:
        return entry.builder(**build_args)
    except TypeError as exc:
        raise MtlEdgeError(f"model {name!r} cannot be built with {sorted(build_args)}: {exc}") from None


def check_tasks(name: str, specs: dict) -> None:
    """A clear error when model ``name`` cannot serve a task's kind."""
    entry = model_entry(name)
    bad = [f"{t} ({s.kind})" for t, s in specs.items() if s.kind not in entry.task_kinds]
    if bad:
        raise MtlEdgeError(f"model {name!r} ({entry.input_kind} input) has no head for {', '.join(bad)}; "
                           f"it serves {', '.join(entry.task_kinds)} tasks")


class MultiTaskModel(nn.Module):
    """Base of the registered models: a shared ``embed`` (the trunk) and ``heads``, one per task."""

    input_kind = "features"
    input_dim: int
    heads: nn.ModuleDict

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attach_data(self, data) -> None:
        """Take what the model needs of the training data beyond its weights (e.g. a noise bank); nothing by default."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task updates (PCGrad de-conflicts their gradients)."""
        raise NotImplementedError

    def training_view(self, x: torch.Tensor) -> torch.Tensor:
        """What a training batch's inputs become before the losses (e.g. random crops); the inputs by default.
        A task whose target is the input rebuilds this view."""
        return x

    def fit_input_statistics(self, x: torch.Tensor) -> None:
        """Optional hook: learn input statistics from the training inputs (default: none)."""

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, self.input_dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.embed(x)
        return {task: head(shared) for task, head in self.heads.items()}

    def task_outputs(self, x: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's output on its own samples only (``masks``: task -> bool [batch]): the trunk runs once."""
        shared = self.embed(x)
        return {task: self.heads[task](shared[mask]) for task, mask in masks.items()}

    def forward_tasks(self, x: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
        """``forward`` for some of the heads only (an export of the inference heads computes no others)."""
        out = self.forward(x)
        return {task: out[task] for task in tasks}


class Standardize(nn.Module):
    """Input z-scoring with training-set statistics, kept in the model so exports take raw features."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FrameHead(nn.Module):
    """A frame task's head on a clip embedding: one linear layer to ``frames x labels`` logits, as [N, frames, labels].

    Why this shape: it keeps the one shared trunk of the summary-feature DNN (the frame head is one
    more linear output layer); what the trunk knows of *where* in the clip a sound is comes from the
    summary vector (its K segment statistics, over the active region or, with ``align_db`` off, the
    whole clip), so its frame resolution is learnt, not measured."""

    def __init__(self, width: int, frames: int, labels: int):
        super().__init__()
        self.frames, self.labels = int(frames), int(labels)
        self.linear = nn.Linear(width, self.frames * self.labels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).reshape(-1, self.frames, self.labels)


class SharedDNN(MultiTaskModel):
    """Georgiev et al. 2017: a feed-forward trunk shared by all tasks, one linear output layer per task
    (a frame task's outputs per frame: ``FrameHead``)."""

    def __init__(self, input_dim: int, tasks: dict[str, int], hidden: tuple[int, ...] = (256, 256, 256), dropout: float = 0.2,
                 frames: dict[str, int] | None = None):
        super().__init__()
        if not tasks:
            raise MtlEdgeError("a model needs at least one task")
        self.input_dim = input_dim
        self.normalize = Standardize(input_dim)
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.trunk = nn.Sequential(*layers)
        frames = frames or {}
        self.heads = nn.ModuleDict({task: FrameHead(width, frames[task], n) if task in frames else nn.Linear(width, n)
                                    for task, n in tasks.items()})

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def fit_input_statistics(self, x: torch.Tensor) -> None:
        self.normalize.fit(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))


def _dnn_args(input_dim, specs, cfg=None) -> dict:
    hidden = list(cfg.hidden) if cfg is not None else [128, 128, 128]
    frames = {t: s.frames for t, s in specs.items() if s.kind == "frame"}
    return {"input_dim": int(input_dim), "tasks": {t: s.outputs for t, s in specs.items()}, "hidden": hidden,
            "dropout": cfg.dropout if cfg is not None else 0.2,
            **({"frames": frames} if frames else {})}  # build args of models without frame heads stay as they were


@register_model("dnn", input_kind="features", task_kinds=("classification", "multilabel", "frame"), build_args=_dnn_args,
                tiny_args=lambda input_dim, specs: _dnn_args(input_dim, specs), tiny_input_dim=24)
def dnn(input_dim: int, tasks: dict[str, int], hidden: list[int] | tuple[int, ...] = (256, 256, 256), dropout: float = 0.2,
        frames: dict[str, int] | None = None) -> SharedDNN:
    hidden = tuple(int(h) for h in hidden)
    if len(hidden) != 3 or len(set(hidden)) != 1 or hidden[0] not in (128, 256, 512):
        raise MtlEdgeError(f"the dnn model has 3 hidden layers of equal width 128, 256 or 512, not {list(hidden)}")
    unknown = sorted(set(frames or {}) - set(tasks))
    if unknown:
        raise MtlEdgeError(f"the dnn model has frame heads for tasks it does not have: {', '.join(unknown)}")
    return SharedDNN(int(input_dim), {str(k): int(v) for k, v in tasks.items()}, hidden, float(dropout),
                     {str(k): int(v) for k, v in (frames or {}).items()})


# The other model families register themselves in their own modules (imported here, after the registry exists).
from mtl_edge.train import logmel_cnn, wavenet  # noqa: E402,F401
