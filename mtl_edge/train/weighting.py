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

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = list(tasks)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, losses: dict[str, torch.Tensor], shared: list[nn.Parameter]) -> torch.Tensor:
        total = self.combine(losses)
        total.backward()
        return total.detach()


@register_weighting("uniform")
class Uniform(Weighting):
    """Every sample's loss counts the same (the default of both seeds of this work)."""

    def combine(self, losses):
        return torch.stack(list(losses.values())).sum()


@register_weighting("uncertainty")
class Uncertainty(Weighting):
    """Kendall et al. 2018: a learned log-variance s_t per task; loss = sum_t exp(-s_t) L_t + s_t / 2."""

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def combine(self, losses):
        terms = [torch.exp(-self.log_vars[i]) * losses[t] + 0.5 * self.log_vars[i]
                 for i, t in enumerate(self.tasks) if t in losses]
        return torch.stack(terms).sum()


@register_weighting("pcgrad")
class PCGrad(Weighting):
    """Yu et al. 2020: where two tasks' gradients on the shared layers conflict (negative dot
    product), project each onto the normal plane of the other before summing. Heads get their own
    task's gradient unchanged."""

    def combine(self, losses):
        return torch.stack(list(losses.values())).sum()

    def backward(self, losses, shared):
        names = list(losses)
        if len(names) < 2:
            return super().backward(losses, shared)
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
