"""Evaluate a run's checkpoints on another corpus with the same label space (a held-out corpus).

Samples whose label the model never saw are counted as errors in ``accuracy_all`` and reported in
``unseen_labels``; the other metrics cover the samples with known labels. A corpus that carries only
some of the run's tasks is evaluated on those; the others are listed in ``absent_tasks``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path


from mtl_edge import atomic
from mtl_edge.data.manifest import SPLITS, is_split, read_manifest
from mtl_edge.errors import MtlEdgeError
from mtl_edge.train.checkpoint import load_checkpoint
from mtl_edge.train.data import load_task_data
from mtl_edge.tasks import is_self_supervised, specs_from_checkpoint
from mtl_edge.train.metrics import classification_metrics, delta, task_metrics
from mtl_edge.train.trainer import predict


def run_checkpoints(run: Path) -> dict[str, Path]:
    found = {}
    if (run / "multi" / "model.pt").is_file():
        found["multi"] = run / "multi" / "model.pt"
    for path in sorted((run / "single").glob("*/model.pt")):
        found[f"single:{path.parent.name}"] = path
    if not found:
        raise MtlEdgeError(f"{run}: no checkpoints (multi/model.pt or single/*/model.pt); is it a finished run?")
    return found


def tasks_in_corpus(tasks: list[str], corpus_tasks: list[str]) -> tuple[list[str], list[str]]:
    """(present, absent): the run's tasks the corpus carries (self-supervised ones need no labels) and the rest."""
    present = [t for t in tasks if t in corpus_tasks or is_self_supervised(t)]
    return present, [t for t in tasks if t not in present]


def evaluate_checkpoint(path: Path, corpus: Path, split: str) -> dict[str, dict]:
    """Metrics of one checkpoint's tasks that ``corpus`` carries (absent tasks are left out)."""
    from mtl_edge.features.inputs import config_from_json

    model, info = load_checkpoint(path)
    manifest = read_manifest(corpus, check_files=False)
    present, _ = tasks_in_corpus(list(info["labels"]), manifest.tasks)
    if not present:
        return {}
    labels = {t: info["labels"][t] for t in present}
    specs = specs_from_checkpoint(info)
    data = load_task_data(corpus, present, config_from_json(info["feature_config"]), labels=labels)
    model.attach_data(data)
    logits = predict(model, data.inputs)
    out = {}
    for task, rows in data.tasks.items():
        if split not in rows.rows:
            raise MtlEdgeError(f"{corpus} has no {split!r} split (it has: {', '.join(manifest.splits)})")
        targets, idx = rows.targets[split], rows.rows[split]
        if not specs[task].needs_labels:  # self-supervised: scored against the inputs, no label space
            out[task] = {"kind": specs[task].kind, "metrics": task_metrics(specs[task], logits[task][idx], targets, data.inputs[idx]),
                         "samples": int(len(idx)), "unseen_samples": 0, "unseen_labels": {}}
            continue
        corpus_labels = set(manifest.labels(task))
        if not corpus_labels & set(labels[task]):
            raise MtlEdgeError(
                f"task {task!r}: the label space of {corpus} ({', '.join(sorted(corpus_labels)[:8])}...) shares no label "
                f"with the checkpoint's ({', '.join(labels[task][:8])}...)"
            )
        if len(idx) == 0:  # e.g. speaker in test_unseen_speakers: listed by evaluate_run as without examples
            continue
        if rows.dense is not None:  # multilabel / frame: tags or frames the checkpoint does not know add nothing
            unseen_names = Counter(r.label for r in manifest.rows_for(task) if r.split == split and r.label not in labels[task])
            out[task] = {"kind": specs[task].kind, "metrics": task_metrics(specs[task], logits[task][idx], rows.dense_targets(split)),
                         "samples": int(len(idx)), "unseen_samples": 0, "unseen_labels": dict(sorted(unseen_names.items()))}
            continue
        seen = targets >= 0
        unseen_names = Counter(r.label for r in manifest.rows_for(task) if r.split == split and r.label not in labels[task])
        task_logits = logits[task][idx]
        metrics = classification_metrics(targets[seen], task_logits[seen]) if seen.any() else {}
        metrics["accuracy_all"] = float((task_logits.argmax(1) == targets).mean())  # unseen labels count as errors
        out[task] = {"kind": specs[task].kind, "metrics": metrics, "samples": int(len(idx)), "unseen_samples": int((~seen).sum()),
                     "unseen_labels": dict(sorted(unseen_names.items()))}
    return out


def evaluate_run(run: str | Path, corpus: str | Path, split: str = "test") -> dict:
    run, corpus = Path(run), Path(corpus)
    if not is_split(split):
        raise MtlEdgeError(f"unknown split {split!r} (one of {', '.join(SPLITS)}, or a test_<name> split the corpus has)")
    checkpoints = run_checkpoints(run)
    run_tasks = list(load_checkpoint(checkpoints["multi"])[1]["labels"]) if "multi" in checkpoints else []
    run_tasks += [n.split(":", 1)[1] for n in checkpoints if n.startswith("single:") and n.split(":", 1)[1] not in run_tasks]
    corpus_tasks = read_manifest(corpus, check_files=False).tasks
    present, absent = tasks_in_corpus(run_tasks, corpus_tasks)
    if not present:
        raise MtlEdgeError(f"{corpus} carries none of the run's tasks ({', '.join(run_tasks)}); it has: {', '.join(corpus_tasks)}")
    report: dict = {"run": str(run), "corpus": str(corpus.resolve()), "split": split, "tasks": {}, "absent_tasks": absent}
    for name, path in checkpoints.items():
        side = "multi" if name == "multi" else "single"
        for task, result in evaluate_checkpoint(path, corpus, split).items():
            entry = report["tasks"].setdefault(task, {"kind": result["kind"], "samples": result["samples"],
                                                      "unseen_samples": result["unseen_samples"],
                                                      "unseen_labels": result["unseen_labels"]})
            entry[side] = result["metrics"]
    report["tasks_without_examples"] = [t for t in present if t not in report["tasks"]]
    if not report["tasks"]:
        raise MtlEdgeError(f"none of the run's tasks has {split} examples in {corpus}")
    for entry in report["tasks"].values():
        if "multi" in entry and "single" in entry:
            entry["delta"] = delta(entry["multi"], entry["single"])
    target = run / "evaluations" / f"{corpus.resolve().name}-{split}.json"
    atomic.write_json(target, report, sort_keys=False)
    report["written_to"] = str(target)
    return report
