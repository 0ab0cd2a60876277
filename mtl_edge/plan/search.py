"""Exact search for the grouping of tasks into networks that scores best within a latency and memory budget.

Every set partition of the tasks is a candidate grouping (Bell(10) = 115,975 for 10 tasks, the limit);
its score does not depend on how its networks are built, so partitions are visited best score first.
For each, and each runtime (one process runs one runtime), every network gets a choice of width and
precision: a depth-first search with bounds (the cheapest remaining latency and memory must still fit;
the best remaining accuracy must still beat the best assignment found) finds the assignment within
budget with the highest summed per-task accuracy, ties to the lower latency. The first partition with
a feasible assignment fixes the best score; partitions tied with it are searched too.

The Pareto front: each partition and runtime at its lowest-latency assignment, kept when no other
scores at least as high with no more latency and no more memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

from mtl_edge.errors import MtlEdgeError
from mtl_edge.plan.costs import Choice, Cost, CostTable
from mtl_edge.plan.scores import Scores

MAX_TASKS = 10
TIE = 1e-12


@dataclass(frozen=True)
class Network:
    tasks: tuple[str, ...]
    choice: Choice
    cost: Cost
    quality: float  # summed accuracy of its tasks at this choice (0 where not measured)


@dataclass
class Grouping:
    networks: list[Network]
    runtime: str
    score: float
    latency_ms: float
    memory_mb: float
    quality: float

    def fits(self, max_latency: float | None, max_memory: float | None) -> bool:
        return (max_latency is None or self.latency_ms <= max_latency) and (max_memory is None or self.memory_mb <= max_memory)

    @property
    def label(self) -> str:
        return " / ".join("+".join(n.tasks) for n in self.networks)


@dataclass
class SearchResult:
    best: Grouping | None
    cheapest_latency: Grouping
    cheapest_memory: Grouping
    front: list[Grouping]
    partitions: int
    assignments_tried: int
    notes: list[str] = field(default_factory=list)


def partitions(items: list[str]) -> Iterator[list[tuple[str, ...]]]:
    """Every set partition of ``items`` (groups and members in the order given)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in partitions(rest):
        yield [(first,), *smaller]
        for i, group in enumerate(smaller):
            yield [*smaller[:i], (first, *group), *smaller[i + 1:]]


def _options(group: tuple[str, ...], runtime: str, costs: CostTable) -> list[Network]:
    """The non-dominated ways to build a network for ``group`` with ``runtime``."""
    networks = []
    for choice, measured in costs.choices.items():
        if choice.runtime != runtime:
            continue
        quality = sum(measured.accuracy.get(t, 0.0) for t in group)
        networks.append(Network(group, choice, costs.network(choice, len(group)), quality))
    kept = []
    for n in networks:
        dominated = any(o is not n and o.cost.latency_ms <= n.cost.latency_ms and o.cost.memory_mb <= n.cost.memory_mb
                        and o.quality >= n.quality and (o.cost.latency_ms, o.cost.memory_mb, -o.quality)
                        < (n.cost.latency_ms, n.cost.memory_mb, -n.quality) for o in networks)
        if not dominated:
            kept.append(n)
    return sorted(kept, key=lambda n: (-n.quality, n.cost.latency_ms, n.choice))


def _total(networks: list[Network], runtime: str, score: float, costs: CostTable) -> Grouping:
    return Grouping(list(networks), runtime, score,
                    costs.frontend_ms() + sum(n.cost.latency_ms for n in networks),
                    costs.base_mb.get(runtime, 0.0) + costs.frontend_mb() + sum(n.cost.memory_mb for n in networks),
                    sum(n.quality for n in networks))


def _assign(options: list[list[Network]], lat_left: float, mem_left: float, counter: list[int]) -> list[Network] | None:
    """The highest-quality choice per network within the latency and memory left (ties: lower latency)."""
    k = len(options)
    min_lat = [min(n.cost.latency_ms for n in o) for o in options]
    min_mem = [min(n.cost.memory_mb for n in o) for o in options]
    max_q = [max(n.quality for n in o) for o in options]
    rest_lat = [sum(min_lat[i:]) for i in range(k + 1)]
    rest_mem = [sum(min_mem[i:]) for i in range(k + 1)]
    rest_q = [sum(max_q[i:]) for i in range(k + 1)]
    if rest_lat[0] > lat_left + TIE or rest_mem[0] > mem_left + TIE:
        return None
    best: list = [None, -math.inf, math.inf]  # networks, quality, latency
    chosen: list[Network] = []

    def visit(i: int, lat: float, mem: float, q: float) -> None:
        counter[0] += 1
        if i == k:
            if q > best[1] + TIE or (abs(q - best[1]) <= TIE and lat < best[2]):
                best[:] = [list(chosen), q, lat]
            return
        for n in options[i]:
            nl, nm = lat + n.cost.latency_ms, mem + n.cost.memory_mb
            if nl + rest_lat[i + 1] > lat_left + TIE or nm + rest_mem[i + 1] > mem_left + TIE:
                continue
            if q + n.quality + rest_q[i + 1] < best[1] - TIE:
                continue
            chosen.append(n)
            visit(i + 1, nl, nm, q + n.quality)
            chosen.pop()

    visit(0, 0.0, 0.0, 0.0)
    return best[0]


def _better(a: Grouping, b: Grouping) -> bool:
    """Higher score; at an equal score, higher summed accuracy, then lower latency."""
    if abs(a.score - b.score) > TIE:
        return a.score > b.score
    if abs(a.quality - b.quality) > TIE:
        return a.quality > b.quality
    return a.latency_ms < b.latency_ms


def search(tasks: list[str], scores: Scores, costs: CostTable, max_latency_ms: float | None,
           max_memory_mb: float | None) -> SearchResult:
    if len(tasks) > MAX_TASKS:
        raise MtlEdgeError(f"{len(tasks)} tasks: the exact search covers up to {MAX_TASKS} (Bell({MAX_TASKS}) groupings); "
                           f"plan a subset with --tasks")
    if len(set(tasks)) != len(tasks):
        raise MtlEdgeError(f"--tasks names a task twice: {', '.join(tasks)}")
    runtimes = costs.runtimes()
    if not runtimes:
        raise MtlEdgeError("no usable measurement to cost the networks with")
    ranked = sorted(((sum(scores.group_score(g) for g in p), p) for p in partitions(tasks)), key=lambda sp: -sp[0])
    options: dict[tuple[tuple[str, ...], str], list[Network]] = {}

    def opts(group, runtime):
        if (group, runtime) not in options:
            options[group, runtime] = _options(group, runtime, costs)
        return options[group, runtime]

    lat_budget = math.inf if max_latency_ms is None else max_latency_ms
    mem_budget = math.inf if max_memory_mb is None else max_memory_mb
    counter = [0]
    best: Grouping | None = None
    front_points: list[Grouping] = []
    for score, part in ranked:
        for runtime in runtimes:
            per_network = [opts(g, runtime) for g in part]
            fastest = _total([min(o, key=lambda n: (n.cost.latency_ms, n.cost.memory_mb)) for o in per_network],
                             runtime, score, costs)
            front_points.append(fastest)
            if best is not None and score < best.score - TIE:
                continue
            fixed = costs.frontend_ms(), costs.base_mb.get(runtime, 0.0) + costs.frontend_mb()
            found = _assign(per_network, lat_budget - fixed[0], mem_budget - fixed[1], counter)
            if found is None:
                continue
            candidate = _total(found, runtime, score, costs)
            if best is None or _better(candidate, best):
                best = candidate
    cheapest_latency = min(front_points, key=lambda g: (g.latency_ms, g.memory_mb, -g.score))
    cheapest_memory = min((_total([min(opts(g, r), key=lambda n: (n.cost.memory_mb, n.cost.latency_ms)) for g in p],
                                  r, s, costs) for s, p in ranked for r in runtimes),
                          key=lambda g: (g.memory_mb, g.latency_ms, -g.score))
    return SearchResult(best, cheapest_latency, cheapest_memory, pareto_front(front_points), len(ranked), counter[0])


def pareto_front(points: list[Grouping]) -> list[Grouping]:
    """The groupings no other beats on score without costing more latency or memory (by latency)."""
    import numpy as np

    if not points:
        return []
    s = np.array([p.score for p in points])
    lat = np.array([p.latency_ms for p in points])
    mem = np.array([p.memory_mb for p in points])
    keep = []
    for i in range(len(points)):
        no_worse = (s >= s[i] - TIE) & (lat <= lat[i] + TIE) & (mem <= mem[i] + TIE)
        better = (s > s[i] + TIE) | (lat < lat[i] - TIE) | (mem < mem[i] - TIE)
        if not (no_worse & better).any():
            keep.append(i)
    # identical points (same score and cost from different runtimes or groupings): keep the first of each
    seen, out = set(), []
    for i in sorted(keep, key=lambda i: (lat[i], mem[i], -s[i])):
        key = (round(s[i], 12), round(lat[i], 9), round(mem[i], 9))
        if key not in seen:
            seen.add(key)
            out.append(points[i])
    return out
