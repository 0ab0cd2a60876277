"""Model registry and the hard-parameter-sharing models.

``create_model(name, **build_args)`` builds any registered model and fails loudly on an unknown
name; a checkpoint stores ``name`` and ``build_args`` so the model rebuilds with no other file.
Every model's ``forward`` returns ``{task: logits}`` (softmax lives in the loss and the metrics).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorate(builder):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = builder
        return builder

    return decorate


def create_model(name: str, **build_args) -> nn.Module:
    if name not in MODELS:
        raise MtlEdgeError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**build_args)
    except TypeError as exc:
        raise MtlEdgeError(f"model {name!r} cannot be built with {sorted(build_args)}: {exc}") from None


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


class SharedDNN(nn.Module):
    """Georgiev et al. 2017: a feed-forward trunk shared by all tasks, one linear output layer per task."""

    def __init__(self, input_dim: int, tasks: dict[str, int], hidden: tuple[int, ...] = (256, 256, 256), dropout: float = 0.2):
        super().__init__()
        if not tasks:
            raise MtlEdgeError("a model needs at least one task")
        self.normalize = Standardize(input_dim)
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({task: nn.Linear(width, n) for task, n in tasks.items()})

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.embed(x)
        return {task: head(shared) for task, head in self.heads.items()}


@register_model("dnn")
def dnn(input_dim: int, tasks: dict[str, int], hidden: list[int] | tuple[int, ...] = (256, 256, 256), dropout: float = 0.2) -> SharedDNN:
    hidden = tuple(int(h) for h in hidden)
    if len(hidden) != 3 or len(set(hidden)) != 1 or hidden[0] not in (128, 256, 512):
        raise MtlEdgeError(f"the dnn model has 3 hidden layers of equal width 128, 256 or 512, not {list(hidden)}")
    return SharedDNN(int(input_dim), {str(k): int(v) for k, v in tasks.items()}, hidden, float(dropout))
