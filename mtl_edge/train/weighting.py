"""How the task losses of one batch become one update (LibMTL's "weighting" axis).

Each task loss is ``sum of that task's per-sample losses / batch size``, so the uniform sum is the
plain mean over every sample of the batch: each sample counts once, flows through the shared
trunk and only its own task's head.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError

WEIGHTINGS: dict[str, type["Weighting"]] = {}


def register_weighting(name: str):
    def decorate(cls):
        WEIGHTINGS[name] = cls
        cls.name = name
        return cls

    return decorate


def create_weighting(name: str, tasks: list[str]) -> "Weighting":
    if name not in WEIGHTINGS:
        raise MtlEdgeError(f"unknown loss weighting {name!r}; choose from {', '.join(sorted(WEIGHTINGS))}")
    return WEIGHTINGS[name](tasks)


class Weighting(nn.Module):
    """Base: combine the task losses into one scalar and backpropagate it."""

    name = "base"
    chunkable = False  # True: the gradient is a fixed sum of the task losses, so a batch may be accumulated in chunks

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = list(tasks)

    def combine(self, losses: dict[str, torch.Tensor], counts: dict[str, int] | None = None) -> torch.Tensor:
        """One scalar from the task losses; ``counts``: each task's samples in the whole batch."""
        raise NotImplementedError

    def backward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter],
                 counts: dict[str, int] | None = None) -> torch.Tensor:
        total = self.combine(losses, counts)
        total.backward()
        return total.detach()


@register_weighting("uniform")
class Uniform(Weighting):
    """Every sample's loss counts the same (the default of both seeds of this work)."""

    chunkable = True

    def combine(self, losses, counts=None):
        return torch.stack(list(losses.values())).sum()


@register_weighting("sum")
class Sum(Weighting):
    """The sum over tasks of each task's mean loss over its own samples of the batch (Lee et al.
    2019's total loss): a task with few samples in a batch counts as much as one with many."""

    chunkable = True  # the per-task factors come from the whole batch's counts

    def combine(self, losses, counts=None):
        if counts is None:
            raise MtlEdgeError("the sum weighting needs each task's sample count in the batch")
        batch = sum(counts.values())
        return torch.stack([loss * (batch / counts[t]) for t, loss in losses.items()]).sum()


@register_weighting("uncertainty")
class Uncertainty(Weighting):
    """Kendall et al. 2018: a learned log-variance s_t per task; loss = sum_t exp(-s_t) L_t + s_t / 2."""

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def combine(self, losses, counts=None):
        terms = [torch.exp(-self.log_vars[i]) * losses[t] + 0.5 * self.log_vars[i]
                 for i, t in enumerate(self.tasks) if t in losses]
        return torch.stack(terms).sum()


@register_weighting("pcgrad")
class PCGrad(Weighting):
    """Yu et al. 2020: where two tasks' gradients on the shared layers conflict (negative dot
    product), project each onto the normal plane of the other before summing. Heads get their own
    task's gradient unchanged."""

    def combine(self, losses, counts=None):
        return torch.stack(list(losses.values())).sum()

    def backward(self, losses, shared, counts=None):
        names = list(losses)
        if len(names) < 2:
            return super().backward(losses, shared, counts)
        grads = []
        for name in names:
            g = torch.autograd.grad(losses[name], shared, retain_graph=True, allow_unused=True)
            grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, shared)]))
        # a fixed task order keeps the update deterministic for a seed (the paper shuffles it)
        projected = []
        for i, g in enumerate(grads):
            g = g.clone()
            for j, other in enumerate(grads):
                if i != j:
                    dot = torch.dot(g, other)
                    if dot < 0:
                        g -= dot / other.dot(other).clamp_min(1e-12) * other
            projected.append(g)
        merged = torch.stack(projected).sum(0)
        total = self.combine(losses)
        total.backward()  # heads (each depends on its own task only) get their ordinary gradient
        offset = 0
        for p in shared:  # the shared layers get the de-conflicted sum instead
            n = p.numel()
            p.grad = merged[offset:offset + n].view_as(p).clone()
            offset += n
        return total.detach()
