"""The Pareto view of an export: per-task accuracy against latency and against size (PNG, Agg backend).

End-to-end artefacts (model ``e2e:multi``, waveform in) are drawn as stars: their latency and size
include the front-end (STFT, statistics), so they sit right of the features-in points by its cost.
"""

from __future__ import annotations

from pathlib import Path

from mtl_edge import atomic

_COLORS = {"fp32": "tab:blue", "fp16": "tab:green", "int8-dynamic": "tab:orange", "int8": "tab:red"}
_MARKERS = {"onnx": "o", "tflite": "s", "torch": "^"}
_E2E_MARKER = "*"


def _is_e2e(a: dict) -> bool:
    return bool(a.get("end_to_end")) or a["model"].startswith("e2e:")


def _points(artefacts: list[dict], tasks: list[str]):
    """Per task: (artefact, accuracy, latency, size); plus an 'all tasks' view (mean accuracy; the
    single-task baselines of one format/precision summed: what serving every task with them costs)."""
    per_task = {t: [] for t in tasks}
    for a in artefacts:
        if a["status"] == "unsupported" or not a.get("verification"):
            continue
        for t, e in a["verification"]["tasks"].items():
            if e.get("accuracy") is not None and t in per_task:
                per_task[t].append((a, e.get("accuracy"), a["latency"]["median_ms"], a["bytes"] / 1024))
    combined = []
    for a in artefacts:
        if a["model"] in ("multi", "e2e:multi") and a["status"] != "unsupported" and a.get("verification"):
            accs = [e.get("accuracy") for e in a["verification"]["tasks"].values() if e.get("accuracy") is not None]
            combined.append(("e2e" if _is_e2e(a) else "multi", a, sum(accs) / len(accs), a["latency"]["median_ms"],
                             a["bytes"] / 1024))
    groups: dict = {}
    for a in artefacts:
        if a["model"].startswith("single:") and a["status"] != "unsupported" and a.get("verification"):
            groups.setdefault((a["format"], a["precision"]), []).append(a)
    for (fmt, prec), group in groups.items():
        if len(group) == len(tasks):
            accs = [next(iter(a["verification"]["tasks"].values())).get("accuracy") or 0.0 for a in group]
            combined.append(("singles", group[0], sum(accs) / len(accs), sum(a["latency"]["median_ms"] for a in group),
                             sum(a["bytes"] for a in group) / 1024))
    return per_task, combined


def pareto_plot(artefacts: list[dict], tasks: list[str], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    per_task, combined = _points(artefacts, tasks)
    # waveform-in latencies (front-end included) are ~100x the features-in ones: a log axis keeps both readable
    log_latency = any(_is_e2e(a) and a["status"] != "unsupported" and a.get("latency") for a in artefacts)
    rows = len(tasks) + 1
    fig, axes = plt.subplots(rows, 2, figsize=(10, 2.6 * rows), squeeze=False)
    for r, task in enumerate(tasks):
        for c, (xi, xlabel) in enumerate(((2, "latency (median ms, 1 thread, batch 1)"), (3, "size (KB)"))):
            ax = axes[r][c]
            for p in per_task[task]:
                a = p[0]
                single = a["model"].startswith("single:")
                ax.scatter(p[xi], p[1], c="none" if single else _COLORS.get(a["precision"], "k"),
                           edgecolors=_COLORS.get(a["precision"], "k"),
                           marker=_E2E_MARKER if _is_e2e(a) else _MARKERS.get(a["format"], "^"),
                           s=70 if _is_e2e(a) else 40)
            ax.set_title(f"{task}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            if c == 0 and log_latency:
                ax.set_xscale("log")
            ax.set_ylabel("accuracy", fontsize=8)
            ax.tick_params(labelsize=7)
    for c, (xi, xlabel) in enumerate(((3, "latency (median ms; singles summed)"), (4, "size (KB; singles summed)"))):
        ax = axes[-1][c]
        for kind, a, acc, lat, kb in combined:
            x = (lat, kb)[c]
            ax.scatter(x, acc, c="none" if kind == "singles" else _COLORS.get(a["precision"], "k"),
                       edgecolors=_COLORS.get(a["precision"], "k"),
                       marker=_E2E_MARKER if kind == "e2e" else _MARKERS.get(a["format"], "^"),
                       s=80 if kind == "e2e" else 50)
        ax.set_title("all tasks: mean accuracy", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if c == 0 and log_latency:
            ax.set_xscale("log")
        ax.set_ylabel("mean accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=col, label=prec) for prec, col in _COLORS.items()]
    handles += [Line2D([], [], marker=m, ls="", color="gray", label=fmt) for fmt, m in _MARKERS.items()]
    handles += [Line2D([], [], marker="o", ls="", color="gray", label="multi-task (filled)"),
                Line2D([], [], marker="o", ls="", mfc="none", color="gray", label="single-task (hollow)")]
    if any(_is_e2e(a) and a["status"] != "unsupported" for a in artefacts):
        handles.append(Line2D([], [], marker=_E2E_MARKER, ls="", color="gray", label="waveform in (front-end incl.)"))
    fig.suptitle(title, fontsize=9, y=0.998)
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.985))
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
