"""The plan's files: ``plan.json`` (everything), ``plan.md`` (tables), ``pareto.csv`` and ``pareto.png``."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path

from mtl_edge import atomic


def grouping_json(g, scores) -> dict | None:
    if g is None:
        return None
    networks = []
    for n in g.networks:
        per_task = {}
        for t in n.tasks:
            value, how = scores.task_score(t, n.tasks)
            per_task[t] = {"score": round(value, 6), "from": how}
        networks.append({"tasks": list(n.tasks), **n.choice.to_json(), "latency_ms": round(n.cost.latency_ms, 5),
                         "memory_mb": round(n.cost.memory_mb, 3), "cost_from": n.cost.basis,
                         "score": round(sum(v["score"] for v in per_task.values()), 6), "task_scores": per_task,
                         "accuracy_sum": round(n.quality, 4)})
    return {"grouping": g.label, "networks_count": len(g.networks), "runtime": g.runtime, "score": round(g.score, 6),
            "latency_ms": round(g.latency_ms, 5), "memory_mb": round(g.memory_mb, 3),
            "mean_accuracy": round(g.quality / max(1, sum(len(n.tasks) for n in g.networks)), 4), "networks": networks}


def write_plan(out: Path, tasks, scores, costs, result, max_latency_ms, max_memory_mb, notes, wall_s, command) -> dict:
    from mtl_edge.plan import PLAN_FORMAT

    record = {
        "format": PLAN_FORMAT, "version": 1, "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tasks": tasks, "device": costs.device, "emulated": costs.emulated,
        "budget": {"max_latency_ms": max_latency_ms, "max_memory_mb": max_memory_mb},
        "gains": scores.to_json(),
        "costs": {
            "rule": "latency = front-end p50 + sum of network p50; memory = runtime process after import + front-end "
                    "delta + sum of network deltas (front-end counted once); a network's cost: the measured line of "
                    "its head count, else interpolated in the head count",
            "exports": costs.exports, "frontend": costs.frontend, "runtime_base_mb": costs.base_mb,
            "choices": [{**c.to_json(), "heads": {str(h): {"p50_ms": v[0], "delta_rss_mb": v[1]} for h, v in m.by_heads.items()},
                         "accuracy": {t: round(a, 4) for t, a in m.accuracy.items()}} for c, m in costs.choices.items()],
        },
        "feasible": result.best is not None,
        "chosen": grouping_json(result.best, scores),
        "cheapest": {"latency": grouping_json(result.cheapest_latency, scores),
                     "memory": grouping_json(result.cheapest_memory, scores)},
        "front": [grouping_json(g, scores) for g in result.front],
        "partitions": result.partitions, "assignments_tried": result.assignments_tried,
        "notes": notes, "wall_s": round(wall_s, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "pareto.csv", _front_csv(result.front))
    _plot(out / "pareto.png", result, max_latency_ms, scores, costs)
    atomic.write_text(out / "plan.md", markdown(record))
    atomic.write_json(out / "plan.json", record, sort_keys=False)
    return record


def _front_csv(front) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["grouping", "networks", "runtime", "choices", "score", "latency_ms", "memory_mb"])
    for g in front:
        writer.writerow([g.label, len(g.networks), g.runtime, " | ".join(n.choice.label for n in g.networks),
                         f"{g.score:.6g}", f"{g.latency_ms:.5g}", f"{g.memory_mb:.5g}"])
    return buf.getvalue()


def _network_lines(chosen: dict) -> list[str]:
    rows = ["| network | tasks | runtime | precision | width | p50 ms | memory MB | score | cost from |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, n in enumerate(chosen["networks"], 1):
        rows.append(f"| {i} | {'+'.join(n['tasks'])} | {n['runtime']} | {n['precision']} | {n['width']} | "
                    f"{n['latency_ms']:.4f} | {n['memory_mb']:.2f} | {n['score']:+.4f} | {n['cost_from']} |")
    return rows


def markdown(record: dict) -> str:
    budget = record["budget"]
    limits = ", ".join(f"{k.replace('max_', '').replace('_', ' ')} <= {v}" for k, v in budget.items() if v is not None) or "none"
    lines = [f"# Task grouping for {record['device']}{' (EMULATED: costs are not performance figures)' if record['emulated'] else ''}",
             "", f"Command: `{record['command']}` ({record['wall_s']} s)", "",
             f"Tasks: {', '.join(record['tasks'])}. Budget: {limits}.", "",
             f"Scores ({record['gains']['source']} {record['gains']['path']}, unit: {record['gains']['unit']}): "
             f"{record['gains']['rule']}.", "", f"Costs: {record['costs']['rule']}.", ""]
    fe = record["costs"]["frontend"]
    if fe:
        lines += [f"Front-end (counted once): {fe['p50_ms']:.3f} ms, {fe['delta_rss_mb']:.2f} MB.", ""]
    chosen = record["chosen"]
    if chosen:
        lines += [f"## Chosen: {chosen['grouping']}", "",
                  f"{chosen['networks_count']} network(s) on {chosen['runtime']}: predicted score {chosen['score']:+.4f}, "
                  f"latency {chosen['latency_ms']:.4f} ms, memory {chosen['memory_mb']:.2f} MB, mean measured accuracy "
                  f"of the chosen precisions {chosen['mean_accuracy']:.4f}.", "", *_network_lines(chosen), ""]
    else:
        cheap = record["cheapest"]
        lines += ["## No grouping meets the budget", "",
                  f"Cheapest in latency: {cheap['latency']['grouping']} ({cheap['latency']['runtime']}): "
                  f"{cheap['latency']['latency_ms']:.4f} ms, {cheap['latency']['memory_mb']:.2f} MB.",
                  f"Cheapest in memory: {cheap['memory']['grouping']} ({cheap['memory']['runtime']}): "
                  f"{cheap['memory']['latency_ms']:.4f} ms, {cheap['memory']['memory_mb']:.2f} MB.", ""]
    lines += [f"## Pareto front ({len(record['front'])} of {record['partitions']} groupings, each runtime at its "
              f"lowest-latency choices)", "", "| grouping | networks | runtime | score | latency ms | memory MB |",
              "|---|---|---|---|---|---|"]
    for g in record["front"]:
        lines.append(f"| {g['grouping']} | {g['networks_count']} | {g['runtime']} | {g['score']:+.4f} | "
                     f"{g['latency_ms']:.4f} | {g['memory_mb']:.2f} |")
    if record["notes"]:
        lines += ["", "Notes:", *(f"- {n}" for n in record["notes"])]
    return "\n".join(lines) + "\n"


def _plot(path: Path, result, max_latency_ms, scores, costs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = result.front
    ax.plot([g.latency_ms for g in front], [g.score for g in front], "o-", color="tab:blue", label="Pareto front")
    for g in front:
        ax.annotate(str(len(g.networks)), (g.latency_ms, g.score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if result.best is not None:
        ax.plot([result.best.latency_ms], [result.best.score], "*", color="tab:red", markersize=14, label="chosen")
    if max_latency_ms is not None:
        ax.axvline(max_latency_ms, color="grey", linestyle="--", label="latency budget")
    ax.set_xlabel(f"plan latency on {costs.device}, ms (front-end once + networks)")
    ax.set_ylabel(f"predicted score ({scores.unit})")
    ax.set_title("groupings: predicted score against latency (labels: networks)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
