"""``mtl-edge plan``: which tasks should share which network on a device, within a latency and memory budget.

Scores come from a sweep or an affinity run (``scores``), costs from measured benchmark lines of the
device (``costs``), the grouping from an exact search (``search``); ``report`` writes ``OUT/plan.json``,
``plan.md``, ``pareto.csv`` and ``pareto.png``; ``check`` (``--train``) trains, exports and benchmarks the
chosen networks so the prediction can be checked against measured accuracy and cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mtl_edge.errors import MtlEdgeError

PLAN_FORMAT = "mtl-edge-plan"


@dataclass
class PlanOutcome:
    folder: Path
    record: dict
    result: object  # search.SearchResult
    scores: object  # scores.Scores
    costs: object  # costs.CostTable


def make_plan(gains: str | Path, bench_dirs: list[Path], device: str, out: str | Path, *, tasks: list[str] | None = None,
              max_latency_ms: float | None = None, max_memory_mb: float | None = None, metric: str = "macro_f1",
              runtimes: list[str] | None = None, precisions: list[str] | None = None, command: str = "") -> PlanOutcome:
    """Search the best grouping and write it (whether or not one fits the budget: the record says)."""
    from mtl_edge.plan.costs import load_costs
    from mtl_edge.plan.report import write_plan
    from mtl_edge.plan.scores import load_scores
    from mtl_edge.plan.search import search

    started = time.perf_counter()
    for name, value in (("--max-latency-ms", max_latency_ms), ("--max-memory-mb", max_memory_mb)):
        if value is not None and value <= 0:
            raise MtlEdgeError(f"{name} must be positive, not {value}")
    scores = load_scores(gains, metric)
    tasks = list(tasks) if tasks else list(scores.tasks)
    scores.check_tasks(tasks)
    costs = load_costs([Path(b) for b in bench_dirs], device, runtimes, precisions)
    if scores.corpus_fingerprint and costs.corpus_fingerprint and scores.corpus_fingerprint != costs.corpus_fingerprint:
        raise MtlEdgeError(f"the gains in {gains} were measured on another corpus than the benchmarked exports "
                           f"(corpus fingerprint {scores.corpus_fingerprint[:12]} against {costs.corpus_fingerprint[:12]}); "
                           f"plan with a sweep or affinity run of the exports' corpus")
    result = search(tasks, scores, costs, max_latency_ms, max_memory_mb)
    unmeasured = sorted({t for t in tasks if not any(t in m.accuracy for m in costs.choices.values())})
    notes = list(costs.notes)
    if unmeasured:
        notes.append(f"no bench line measured the accuracy of {', '.join(unmeasured)}: their precision and width are "
                     f"chosen on cost alone")
    if scores.corpus_fingerprint is None or costs.corpus_fingerprint is None:
        notes.append("the corpus of the gains or of the exports is not recorded: could not check they are the same")
    record = write_plan(Path(out), tasks, scores, costs, result, max_latency_ms, max_memory_mb, notes,
                        time.perf_counter() - started, command)
    return PlanOutcome(Path(out), record, result, scores, costs)
