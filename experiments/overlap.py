"""Experiment 5: per-class F1 of scene+event with and without the events shared between scenes.

Usage: python experiments/overlap.py SWEEP_ALL SWEEP_EXCLUDED OUT_FOLDER

SWEEP_ALL and SWEEP_EXCLUDED are two sweeps of `scene,event` (singles and the pair, the same seeds) on
the same corpus, the second with `--exclude` of the shared events (see experiments/README.md). Every
run's checkpoint is scored on the test split; per class of both tasks it reports, as the mean over
seeds with a 95 % interval:

- the pair's gain over the single-task model trained on the same data, in each sweep;
- the change of the pair's F1 when the shared events are excluded (excluded - all).

Intervals: a bootstrap over the test clips (2,000 resamples, stratified by true class so that every
class keeps its clip count; the same resample for every run, so differences are paired), of the
mean over seeds. They cover the sampling of the few test clips per class, not the spread from
training seeds; the seeds' own range of the change is reported beside them.

Writes OUT_FOLDER/table.csv, table.md, change.png and, per sweep, sweep.json, results.csv and each
run's metrics.json and status.json (no checkpoints, no curves).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from mtl_edge import atomic

TASKS = ("scene", "event")
RESAMPLES = 2000
ARMS = ("all", "excluded")


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class; rows of ``y_true``/``y_pred`` may be a batch of resamples ([..., clips])."""
    f1 = []
    for k in range(n_classes):
        tp = ((y_true == k) & (y_pred == k)).sum(-1)
        fp = ((y_true != k) & (y_pred == k)).sum(-1)
        fn = ((y_true == k) & (y_pred != k)).sum(-1)
        f1.append(np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0))
    return np.stack(f1, -1)


def predictions(sweep: Path, data, seeds: list[int]) -> dict:
    """(combo, task, seed) -> logits of the task's test clips."""
    from mtl_edge.train.checkpoint import load_checkpoint
    from mtl_edge.train.trainer import predict

    out = {}
    for combo in [(t,) for t in TASKS] + [TASKS]:
        for seed in seeds:
            model, info = load_checkpoint(sweep / "runs" / "+".join(combo) / f"seed{seed}" / "model.pt")
            outputs = predict(model, data.inputs)
            for task in combo:
                assert info["labels"][task] == data.tasks[task].labels, (sweep, combo, task)
                out[(combo, task, seed)] = outputs[task][data.tasks[task].rows["test"]]
    return out


def stratified_resamples(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[RESAMPLES, clips] indices: each class's clips drawn with replacement, as many as it has."""
    columns = [rng.choice(np.flatnonzero(y == k), (RESAMPLES, int((y == k).sum()))) for k in np.unique(y)]
    return np.concatenate(columns, axis=1)


def main(sweep_all: Path, sweep_excluded: Path, out: Path) -> None:
    from mtl_edge.data.overlap import co_occurrence
    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.train.data import load_task_data

    configs = {arm: json.loads((p / "sweep.json").read_text()) for arm, p in zip(ARMS, (sweep_all, sweep_excluded))}
    a, b = ({k: v for k, v in configs[arm].items() if k != "train"} for arm in ARMS)
    if a != b or {k: v for k, v in configs["all"]["train"].items()} != \
            {k: v for k, v in configs["excluded"]["train"].items() if k != "exclude"}:
        raise SystemExit("the two sweeps differ in more than --exclude")
    excluded = configs["excluded"]["train"].get("exclude", {})
    if not excluded:
        raise SystemExit(f"{sweep_excluded} has no --exclude")
    seeds = configs["all"]["seeds"]
    data = load_task_data(configs["all"]["corpus"], list(TASKS), config_from_json(configs["all"]["features"]))
    logits = {arm: predictions(p, data, seeds) for arm, p in zip(ARMS, (sweep_all, sweep_excluded))}
    overlap = co_occurrence(configs["all"]["corpus"], "event", "scene", "train")
    roles = {"event": {**{e: "shared" for e in overlap.shared}, **{e: f"only {s}" for e, s in overlap.exclusive.items()}}}
    rng = np.random.default_rng(0)
    rows = []
    for task in TASKS:
        labels = data.tasks[task].labels
        y = data.tasks[task].targets["test"]
        kept = [k for k, label in enumerate(labels) if label not in excluded.get(task, [])]
        every = list(range(len(labels)))
        views = [("all test clips", every, np.ones(len(y), bool))]
        if len(kept) < len(labels):  # the kept classes' clips, each model answering among the kept classes only
            views.append(("kept classes only", kept, np.isin(y, kept)))
        if task == "scene":  # the clips the overlap is about: those that carry an event
            views.append(("event clips only", every, np.isin(data.tasks["scene"].rows["test"], data.tasks["event"].rows["test"])))
        for view, classes, clips in views:
            rows += compare(task, view, labels, classes, clips, y, logits, seeds, roles.get(task, {}),
                            excluded.get(task, []), rng)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    wall = {arm: sum(json.loads(s.read_text()).get("wall_s", 0) for s in p.glob("runs/*/seed*/status.json"))
            for arm, p in zip(ARMS, (sweep_all, sweep_excluded))}
    (out / "table.md").write_text(markdown(rows, excluded, seeds, wall))
    plot(rows, out / "change.png")
    for arm, sweep in zip(ARMS, (sweep_all, sweep_excluded)):
        keep(sweep, out / arm)
    print((out / "table.md").read_text())


def compare(task: str, view: str, labels: list[str], classes: list[int], clips: np.ndarray, y: np.ndarray, logits: dict,
            seeds: list[int], roles: dict, excluded: list[str], rng: np.random.Generator) -> list[dict]:
    """One row per class of ``classes``: single and pair F1 in both sweeps, gains and change, with intervals.

    Only the test clips where ``clips`` is true count (all of them of ``classes``), and every model's
    answer is its best-scoring class among ``classes``."""
    y = np.searchsorted(classes, y[clips])  # positions in ``classes``
    idx = stratified_resamples(y, rng)
    pair = TASKS

    def answers(arm, combo, seed):
        return logits[arm][(combo, task, seed)][clips][:, classes].argmax(axis=1)

    def f1(arm, combo):  # (point [classes], bootstrap [resamples, classes]): mean over seeds
        runs = [answers(arm, combo, s) for s in seeds]
        point = np.mean([per_class_f1(y, p, len(classes)) for p in runs], axis=0)
        boot = np.mean([per_class_f1(y[idx], p[idx], len(classes)) for p in runs], axis=0)
        return point, boot

    single = {arm: f1(arm, (task,)) for arm in ARMS}
    multi = {arm: f1(arm, pair) for arm in ARMS}
    values = {"gain_all": [m - s for m, s in zip(multi["all"], single["all"])],
              "gain_excluded": [m - s for m, s in zip(multi["excluded"], single["excluded"])],
              "change": [e - a for e, a in zip(multi["excluded"], multi["all"])]}
    per_seed_change = np.array([per_class_f1(y, answers("excluded", pair, s), len(classes)) -
                                per_class_f1(y, answers("all", pair, s), len(classes)) for s in seeds])
    rows = []
    for j, k in enumerate(classes):
        label = labels[k]
        role = ", ".join(x for x in (roles.get(label, ""), "excluded" if label in excluded else "") if x)
        row = {"task": task, "view": view, "label": label, "role": role, "test_clips": int((y == j).sum()),
               "single_all": single["all"][0][j], "pair_all": multi["all"][0][j],
               "single_excluded": single["excluded"][0][j], "pair_excluded": multi["excluded"][0][j]}
        for name, (point, boot) in values.items():
            lo, hi = np.percentile(boot[:, j], [2.5, 97.5])
            row.update({name: point[j], f"{name}_lo": lo, f"{name}_hi": hi})
        row.update(change_seed_min=per_seed_change[:, j].min(), change_seed_max=per_seed_change[:, j].max())
        rows.append(row)
    return rows


def _ci(row: dict, name: str) -> str:
    return f"{row[name]:+.3f} [{row[name + '_lo']:+.3f}, {row[name + '_hi']:+.3f}]"


def markdown(rows: list[dict], excluded: dict, seeds: list[int], wall: dict) -> str:
    spec = ",".join(f"{t}:{label}" for t, labels in excluded.items() for label in labels)
    lines = [f"# Experiment 5: scene+event with and without the shared events (`--exclude {spec}`)", "",
             f"Per-class test F1, mean over seeds {', '.join(map(str, seeds))}; 95 % intervals from a bootstrap over "
             f"the test clips ({RESAMPLES} resamples, stratified by class, paired across runs). gain = pair - single "
             "trained on the same data; change = pair (excluded) - pair (all). Training time of the runs: "
             + ", ".join(f"{arm} {s:.0f} s" for arm, s in wall.items()) + ".", "",
             "| task | scored on | label | role | clips | single all | pair all | gain all [95 % CI] | single excl. | "
             "pair excl. | gain excl. [95 % CI] | change of pair [95 % CI] | seeds' change min..max |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['view']} | {r['label']} | {r['role']} | {r['test_clips']} | {r['single_all']:.3f} | "
                     f"{r['pair_all']:.3f} | {_ci(r, 'gain_all')} | {r['single_excluded']:.3f} | {r['pair_excluded']:.3f} | "
                     f"{_ci(r, 'gain_excluded')} | {_ci(r, 'change')} | "
                     f"{r['change_seed_min']:+.3f}..{r['change_seed_max']:+.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['task']}: {r['label']}" + (" (excluded)" if r["role"].endswith("excluded") else "") +
             (f" [{r['view']}]" if r["view"] != "all test clips" else "") for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    y = np.arange(len(rows))
    for offset, (name, colour, text) in zip((-0.25, 0.0, 0.25), (("gain_all", "tab:blue", "gain of the pair, all"),
                                                                  ("gain_excluded", "tab:orange", "gain of the pair, excluded"),
                                                                  ("change", "tab:red", "pair: excluded - all"))):
        values = np.array([r[name] for r in rows])
        err = np.array([[r[name] - r[f"{name}_lo"] for r in rows], [r[f"{name}_hi"] - r[name] for r in rows]])
        ax.errorbar(values, y + offset, xerr=err, fmt="o", color=colour, label=text, markersize=4, capsize=2)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("test F1 difference (mean over seeds, 95 % bootstrap CI)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    atomic.write_png(path, fig)


def keep(sweep: Path, out: Path) -> None:
    """The sweep's settings, results and each run's metrics and status (no checkpoints, no curves); the
    corpus path made relative to the working directory (the repository root)."""
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((sweep / "sweep.json").read_text())
    config["corpus"] = relative(config["corpus"])
    for entry in config.get("task_corpora", {}).values():  # a sweep over several corpora (Experiment 4)
        entry["corpus"] = relative(entry["corpus"])
    (out / "sweep.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copy2(sweep / "results.csv", out / "results.csv")
    for run in sorted(sweep.glob("runs/*/seed*")):
        kept = out / "runs" / run.parent.name / run.name
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / "status.json", kept / "status.json")
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["corpus"] = relative(metrics["corpus"])
        if "task_corpora" in metrics:
            metrics["task_corpora"] = {t: relative(c) for t, c in metrics["task_corpora"].items()}
        (kept / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
