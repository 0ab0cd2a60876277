"""Summarise the unseen-speaker runs: accuracy on the test split (seen voices) and on test_unseen_speakers.

Usage: python experiments/unseen_speakers.py RUNS_FOLDER OUT_FOLDER

RUNS_FOLDER holds one run per variant and seed, named VARIANT-sSEED (see experiments/README.md).
Writes OUT_FOLDER/table.csv (one row per run and task), OUT_FOLDER/table.md (mean and spread per
variant), OUT_FOLDER/paired.md (the comparisons of PAIRS whose variants both ran: per-seed
differences and a paired t-test over the seeds) and copies each run's metrics.json and config.json
(no checkpoints).

The gap is taken like for like: test_unseen_speakers has no _silence_ clips (no voice speaks in
them), so the seen-voice figure beside it is the test split over the same labels (metrics.json's
``seen_same_labels``; computed from the run's checkpoint for runs older than that entry). The test
split with every label is kept in the table too.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from kept_runs import keep_run_files

from mtl_edge.train.checkpoint import load_checkpoint
from mtl_edge.train.run import same_labels_view

TASKS = ("kws", "gender")
UNSEEN = "test_unseen_speakers"
# (variant, against): what one change does, seed by seed (experiments/README.md quotes these)
PAIRS = (
    ("cnn-10voices", "dnn-10voices"),
    ("cnn-10voices-aug4-vtlp", "cnn-10voices"),
    ("cnn-10voices-aug", "cnn-10voices"),
    ("cnn-10voices-vtlp", "cnn-10voices"),
    ("cnn-10voices-aug-vtlp", "cnn-10voices-aug"),
    ("cnn-10voices-aug4", "cnn-10voices-aug"),
    ("cnn-10voices-aug4-vtlp", "cnn-10voices-aug4"),
    ("cnn-10voices-aug4-vtlp", "cnn-10voices-aug-vtlp"),
)


def seen_same_labels_accuracy(run: Path, metrics: dict, task: str) -> float:
    """The multi-task model's test accuracy over the labels test_unseen_speakers has."""
    entry = metrics["tasks"][task][UNSEEN]
    if "seen_same_labels" in entry:
        return entry["seen_same_labels"]["multi"]["accuracy"]
    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import split_metrics

    model, info = load_checkpoint(run / "multi" / "model.pt")
    corpus = Path(metrics["corpus"])
    data = load_task_data(corpus, [task], config_from_json(info["feature_config"]), labels={task: info["labels"][task]}, progress=False)
    found = same_labels_view(data, task, UNSEEN)
    if found is None:
        return metrics["tasks"][task]["multi"]["accuracy"]
    view, name, _ = found
    return split_metrics(model, view, name)[task]["accuracy"]


def main(runs: Path, out: Path) -> None:
    rows = []
    for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
        variant, _, seed = run.name.rpartition("-s")
        metrics = json.loads((run / "metrics.json").read_text())
        for task in TASKS:
            entry = metrics["tasks"].get(task)
            if entry is None or UNSEEN not in entry:
                continue
            rows.append({"variant": variant, "seed": int(seed), "task": task,
                         "seen_accuracy": entry["multi"]["accuracy"],
                         "seen_same_labels_accuracy": seen_same_labels_accuracy(run, metrics, task),
                         "unseen_accuracy": entry[UNSEEN]["multi"]["accuracy"],
                         "seen_samples": entry["test_samples"], "unseen_samples": entry[UNSEEN]["samples"]})
        keep_run_files(run, out / "runs" / run.name)  # corpus paths relative to the repository
    if not rows:
        raise SystemExit(f"no finished runs with {UNSEEN} metrics in {runs}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["variant"], r["task"])].append(r)

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = ["| variant | task | seeds | seen voices (test, all labels) | seen voices (test, same labels) | unseen voices "
             "| gap (points, same labels) |", "|---|---|---|---|---|---|---|"]
    for (variant, task), group in sorted(groups.items()):
        seen = [r["seen_accuracy"] for r in group]
        like = [r["seen_same_labels_accuracy"] for r in group]
        unseen = [r["unseen_accuracy"] for r in group]
        gap = 100 * (statistics.mean(like) - statistics.mean(unseen))
        lines.append(f"| {variant} | {task} | {len(group)} | {spread(seen)} | {spread(like)} | {spread(unseen)} | {gap:.1f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    (out / "paired.md").write_text(paired_table(rows) + "\n")


def paired_table(rows: list[dict]) -> str:
    """PAIRS over the seeds both variants ran: per-seed differences, their mean and a paired t-test."""
    from scipy.stats import ttest_rel

    by = {(r["variant"], r["task"], r["seed"]): r for r in rows}
    lines = ["| variant | against | task | measure | per seed (points) | mean (points) | p (paired t) |",
             "|---|---|---|---|---|---|---|"]
    for variant, against in PAIRS:
        for task in TASKS:
            seeds = sorted(s for (v, t, s) in by if v == variant and t == task and (against, task, s) in by)
            if len(seeds) < 2:
                continue
            for label, key in (("unseen voices", "unseen_accuracy"), ("seen voices, same labels", "seen_same_labels_accuracy")):
                a = [by[(variant, task, s)][key] for s in seeds]
                b = [by[(against, task, s)][key] for s in seeds]
                diffs = " / ".join(f"{100 * (x - y):+.1f}" for x, y in zip(a, b))
                mean = 100 * statistics.mean(x - y for x, y in zip(a, b))
                lines.append(f"| {variant} | {against} | {task} | {label} | {diffs} | {mean:+.1f} | {ttest_rel(a, b).pvalue:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
