"""Training data: the cached input matrix plus, per task, its spec, target ids and rows per split.

A training *sample* is one (clip, task, target) row: a clip that carries several tasks is several
samples, each updating the trunk and only its own task's head. A labelled task's samples are its
manifest rows; a self-supervised task (``mtl_edge.tasks.register_task``) takes every clip of each
split, with target -1 (its target is derived from the input, e.g. the input itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_edge.data.manifest import read_manifest
from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import TaskSpec, corpus_task_spec, is_self_supervised, self_supervised_spec


@dataclass
class TaskRows:
    labels: list[str]  # sorted; a label's id is its index here (empty for tasks without labels)
    rows: dict[str, np.ndarray]  # split -> input-matrix row of each sample (train, validation, test, extra test splits)
    targets: dict[str, np.ndarray]  # split -> label id of each sample (-1: unknown label, or no label)
    spec: TaskSpec | None = None

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = corpus_task_spec("", self.labels)


@dataclass
class TaskData:
    corpus: Path
    inputs: np.ndarray  # [clips, input_dim] float32: summary features or waveforms (input_kind)
    feature_config: dict  # the input config's JSON (kind "features" when absent)
    tasks: dict[str, TaskRows]
    paths: list[str] = field(default_factory=list)  # clip path (relative to the corpus) of each input row

    @property
    def features(self) -> np.ndarray:
        """The input matrix (the name of the features-only days, kept for readers of that era)."""
        return self.inputs

    @property
    def input_kind(self) -> str:
        return self.feature_config.get("kind", "features")

    @property
    def input_dim(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def extra_test_splits(self) -> list[str]:
        """The held-out test splits beyond ``test`` (e.g. test_unseen_speakers) some task has samples in."""
        from mtl_edge.data.manifest import SPLITS, order_splits

        return order_splits(s for t in self.tasks.values() for s, r in t.rows.items() if s not in SPLITS and len(r))

    @property
    def specs(self) -> dict[str, TaskSpec]:
        return {t: r.spec for t, r in self.tasks.items()}

    def subset(self, tasks: list[str]) -> "TaskData":
        return TaskData(self.corpus, self.inputs, self.feature_config, {t: self.tasks[t] for t in tasks}, self.paths)

    def samples(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples of ``split`` of every task, task by task: (input rows, task ids, target ids)."""
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
                   labels: dict[str, list[str]] | None = None, on_bad_audio: str = "fail", progress: bool = True,
                   augment=None) -> TaskData:
    """Inputs (from the prepare-stage cache, for ``feature_config``: a FeatureConfig or WaveformConfig)
    and targets for ``tasks`` of ``corpus``.

    ``labels`` fixes the label ids (a checkpoint's label lists); samples whose label is not in it
    get id -1 so that callers can report them instead of silently dropping them. ``augment`` (an
    ``AugmentConfig``) adds its augmented copies of the training clips to the training split of
    the tasks it applies to (``mtl_edge.features.augment``).
    """
    from mtl_edge.features.cache import prepare_features
    from mtl_edge.features.logmel import FeatureConfig

    corpus = Path(corpus)
    manifest = read_manifest(corpus)
    unknown = [t for t in tasks if t not in manifest.tasks and not is_self_supervised(t)]
    if unknown:
        raise MtlEdgeError(f"unknown task(s) {', '.join(unknown)} in {corpus}; this corpus has: {', '.join(manifest.tasks)}")
    cfg = feature_config if feature_config is not None else FeatureConfig()
    table = prepare_features(corpus, cfg, cache_dir=cache_dir, workers=workers, on_bad_audio=on_bad_audio, progress=progress)
    index = {p: i for i, p in enumerate(table.paths)}
    split_of = {r.path: r.split for r in manifest.rows}
    out: dict[str, TaskRows] = {}
    for task in tasks:
        if task not in manifest.tasks:  # self-supervised: every clip, no label
            rows = {s: np.array([i for i, p in enumerate(table.paths) if split_of.get(p) == s], dtype=np.int64)
                    for s in manifest.splits}
            out[task] = TaskRows([], rows, {s: np.full(len(r), -1, dtype=np.int64) for s, r in rows.items()},
                                 self_supervised_spec(task))
            continue
        task_rows = [r for r in manifest.rows_for(task) if r.path in index]  # bad audio skipped by policy
        names = labels[task] if labels else sorted({r.label for r in task_rows})
        label_id = {name: i for i, name in enumerate(names)}
        rows, targets = {}, {}
        for split in manifest.splits:
            chosen = [r for r in task_rows if r.split == split]
            rows[split] = np.array([index[r.path] for r in chosen], dtype=np.int64)
            targets[split] = np.array([label_id.get(r.label, -1) for r in chosen], dtype=np.int64)
        if labels is None:
            if len(rows["train"]) == 0:
                raise MtlEdgeError(f"task {task!r} has no training examples in {corpus}")
            if len(names) < 2:
                raise MtlEdgeError(f"task {task!r} has a single label ({names[0]!r}): nothing to learn")
        out[task] = TaskRows(list(names), rows, targets, corpus_task_spec(task, list(names)))
    inputs = np.array(table.features, dtype=np.float32, order="C", copy=True)  # in memory, writable
    paths = list(table.paths)
    if augment is not None and augment.active:
        inputs, paths = _add_augmented(corpus, out, inputs, paths, cfg, augment, cache_dir, workers, progress)
    return TaskData(corpus, inputs, cfg.to_json(), out, paths)


def _add_augmented(corpus, tasks: dict[str, TaskRows], inputs: np.ndarray, paths: list[str], cfg, augment, cache_dir,
                   workers: int, progress: bool) -> tuple[np.ndarray, list[str]]:
    """Append the augmented copies of the augmented tasks' training clips; extend those tasks' train rows."""
    from mtl_edge.features.augment import augmented_inputs

    chosen = [t for t, rows in tasks.items() if rows.labels and augment.applies_to(t)]
    clip_rows = sorted({int(i) for t in chosen for i in tasks[t].rows["train"]})
    extra = augmented_inputs(corpus, [paths[i] for i in clip_rows], cfg, augment, cache_dir=cache_dir, workers=workers,
                             progress=progress)
    row_of = {item: len(paths) + j for j, item in enumerate(extra.items)}
    for task in chosen:
        rows = tasks[task]
        base = rows.rows["train"]
        copies = [np.array([row_of[(paths[i], k)] for i in base], dtype=np.int64) for k in range(augment.copies)]
        rows.rows["train"] = np.concatenate([base, *copies])
        rows.targets["train"] = np.concatenate([rows.targets["train"]] * (augment.copies + 1))
    new_paths = paths + [f"{rel}#augmented-{k}" for rel, k in extra.items]
    return np.concatenate([inputs, extra.inputs]), new_paths
