"""Training data: the cached feature matrix plus, per task, label ids and rows per split.

A training *sample* is one (clip, task, label) row of the manifest: a clip that carries several
tasks is several samples, each updating the trunk and only its own task's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_edge.data.manifest import SPLITS, read_manifest
from mtl_edge.errors import MtlEdgeError


@dataclass
class TaskRows:
    labels: list[str]  # sorted; a label's id is its index here
    rows: dict[str, np.ndarray]  # split -> feature-matrix row of each sample
    targets: dict[str, np.ndarray]  # split -> label id of each sample


@dataclass
class TaskData:
    corpus: Path
    features: np.ndarray  # [clips, features] float32
    feature_config: dict
    tasks: dict[str, TaskRows]

    @property
    def input_dim(self) -> int:
        return int(self.features.shape[1])

    def subset(self, tasks: list[str]) -> "TaskData":
        return TaskData(self.corpus, self.features, self.feature_config, {t: self.tasks[t] for t in tasks})

    def samples(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples of ``split`` of every task, task by task: (feature rows, task ids, label ids)."""
        rows, task_ids, targets = [], [], []
        for i, task in enumerate(self.tasks.values()):
            rows.append(task.rows[split])
            task_ids.append(np.full(len(task.rows[split]), i, dtype=np.int64))
            targets.append(task.targets[split])
        return np.concatenate(rows), np.concatenate(task_ids), np.concatenate(targets)


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise MtlEdgeError("no task given (e.g. --tasks kws,speaker,scene,instrument)")
    if len(set(tasks)) != len(tasks):
        raise MtlEdgeError(f"a task is listed twice in {text!r}")
    return tasks


def load_task_data(corpus: str | Path, tasks: list[str], feature_config=None, cache_dir=None, workers: int = 2,
                   labels: dict[str, list[str]] | None = None, on_bad_audio: str = "fail", progress: bool = True) -> TaskData:
    """Features (from the prepare-stage cache) and label ids for ``tasks`` of ``corpus``.

    ``labels`` fixes the label ids (a checkpoint's label lists); samples whose label is not in it
    get id -1 so that callers can report them instead of silently dropping them.
    """
    from mtl_edge.features.cache import prepare_features
    from mtl_edge.features.logmel import FeatureConfig

    corpus = Path(corpus)
    manifest = read_manifest(corpus)
    unknown = [t for t in tasks if t not in manifest.tasks]
    if unknown:
        raise MtlEdgeError(f"unknown task(s) {', '.join(unknown)} in {corpus}; this corpus has: {', '.join(manifest.tasks)}")
    cfg = feature_config if feature_config is not None else FeatureConfig()
    table = prepare_features(corpus, cfg, cache_dir=cache_dir, workers=workers, on_bad_audio=on_bad_audio, progress=progress)
    index = {p: i for i, p in enumerate(table.paths)}
    out: dict[str, TaskRows] = {}
    for task in tasks:
        task_rows = [r for r in manifest.rows_for(task) if r.path in index]  # bad audio skipped by policy
        names = labels[task] if labels else sorted({r.label for r in task_rows})
        label_id = {name: i for i, name in enumerate(names)}
        rows, targets = {}, {}
        for split in SPLITS:
            chosen = [r for r in task_rows if r.split == split]
            rows[split] = np.array([index[r.path] for r in chosen], dtype=np.int64)
            targets[split] = np.array([label_id.get(r.label, -1) for r in chosen], dtype=np.int64)
        if labels is None:
            if len(rows["train"]) == 0:
                raise MtlEdgeError(f"task {task!r} has no training examples in {corpus}")
            if len(names) < 2:
                raise MtlEdgeError(f"task {task!r} has a single label ({names[0]!r}): nothing to learn")
        out[task] = TaskRows(list(names), rows, targets)
    features = np.array(table.features, dtype=np.float32, order="C", copy=True)  # in memory, writable
    return TaskData(corpus, features, cfg.to_json(), out)
