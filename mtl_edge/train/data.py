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
from mtl_edge.data.task_kinds import MULTI_ROW_KINDS
from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import TaskSpec, corpus_task_spec, is_self_supervised, self_supervised_spec
from mtl_edge.train.targets import multi_row_targets


@dataclass
class TaskRows:
    labels: list[str]  # sorted; a label's id is its index here (empty for tasks without labels)
    rows: dict[str, np.ndarray]  # split -> input-matrix row of each sample (train, validation, test, extra test splits)
    targets: dict[str, np.ndarray]  # split -> label id of each sample (-1: unknown label, or no label)
    spec: TaskSpec | None = None
    dense: np.ndarray | None = None  # multilabel / frame tasks: targets are ids of rows of this table (train.targets)

    def __post_init__(self) -> None:
        if self.spec is None:
            self.spec = corpus_task_spec("", self.labels)

    def dense_targets(self, split: str) -> np.ndarray:
        """The targets of ``split`` as the losses and metrics take them: label ids, or rows of ``dense``."""
        return self.targets[split] if self.dense is None else self.dense[self.targets[split]]


@dataclass
class TaskData:
    corpus: Path
    inputs: np.ndarray  # [clips, input_dim] float32: summary features or waveforms (input_kind)
    feature_config: dict  # the input config's JSON (kind "features" when absent)
    tasks: dict[str, TaskRows]
    paths: list[str] = field(default_factory=list)  # clip path (relative to the corpus) of each input row
    # input rows of the training split's background recordings (manifest kind=silence): noise for denoising
    background_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

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
        return TaskData(self.corpus, self.inputs, self.feature_config, {t: self.tasks[t] for t in tasks}, self.paths,
                        self.background_rows)

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
    if any("@" in t for t in tasks):  # train and sweep parse TASK@CORPUS themselves (mtl_edge.train.corpora)
        raise MtlEdgeError(f"TASK@CORPUS ({text!r}) is for train and sweep; this command reads one corpus (--corpus)")
    if len(set(tasks)) != len(tasks):
        raise MtlEdgeError(f"a task is listed twice in {text!r}")
    return tasks


def parse_exclude(text: str) -> dict[str, list[str]]:
    """``event:door,event:footsteps`` -> {"event": ["door", "footsteps"]} (tasks and labels sorted, once each)."""
    out: dict[str, set[str]] = {}
    for part in (p.strip() for p in text.split(",")):
        task, sep, label = part.partition(":")
        if not sep or not task.strip() or not label.strip():
            raise MtlEdgeError(f"--exclude takes TASK:LABEL[,TASK:LABEL...] such as event:door,event:footsteps, "
                               f"not {part!r}")
        out.setdefault(task.strip(), set()).add(label.strip())
    return {t: sorted(labels) for t, labels in sorted(out.items())}


def check_exclude(exclude: dict[str, list[str]], labels: dict[str, list[str]]) -> None:
    """Refuse an ``--exclude`` naming a task that is not in ``labels`` (the run's tasks and their labels)
    or a label its task does not have."""
    for task, names in exclude.items():
        if task not in labels:
            raise MtlEdgeError(f"--exclude names task {task!r}, which is not trained here (tasks: {', '.join(labels)})")
        if not labels[task]:
            raise MtlEdgeError(f"--exclude names task {task!r}, which has no labels to exclude")
        unknown = [n for n in names if n not in labels[task]]
        if unknown:
            raise MtlEdgeError(f"--exclude: task {task!r} has no label {', '.join(map(repr, unknown))}; its labels: "
                               f"{', '.join(labels[task])}")


def exclude_instances(data: "TaskData", exclude: dict[str, list[str]]) -> "TaskData":
    """``data`` without the training samples of ``exclude``'s labels (task -> labels; tasks ``data`` does
    not hold are skipped: a sweep's single-task runs share one config). Validation and test keep them,
    so runs with and without the exclusion are scored on the same clips; the label list (the head) is kept."""
    present = {t: labels for t, labels in exclude.items() if t in data.tasks}
    if not present:
        return data
    check_exclude(present, {t: data.tasks[t].labels for t in present})
    tasks = dict(data.tasks)
    for task, names in present.items():
        rows = tasks[task]
        if rows.dense is not None:
            raise MtlEdgeError(f"--exclude applies to classification tasks; {task!r} is a {rows.spec.kind} task")
        ids = [rows.labels.index(n) for n in names]
        keep = ~np.isin(rows.targets["train"], ids)
        if not keep.any():
            raise MtlEdgeError(f"--exclude leaves task {task!r} without training examples")
        tasks[task] = TaskRows(rows.labels, {**rows.rows, "train": rows.rows["train"][keep]},
                               {**rows.targets, "train": rows.targets["train"][keep]}, rows.spec, rows.dense)
    return TaskData(data.corpus, data.inputs, data.feature_config, tasks, data.paths, data.background_rows)


def load_training_data(corpus: str | Path, tasks: list[str], cfg, input_config, **load) -> "TaskData":
    """What a run trains on: ``load_task_data`` with the config's augmentation, then its label budget
    (``apply_budget``) and its exclusions (``exclude_instances``)."""
    data = load_task_data(corpus, tasks, input_config, augment=cfg.augment_config(), **load)
    return exclude_instances(apply_budget(data, cfg.label_fraction, cfg.unlabeled_seconds, cfg.seed), cfg.exclude)


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
        kind, dense = manifest.kind(task), None
        if kind.kind in MULTI_ROW_KINDS:  # one sample per clip, its target a row of a table (train.targets)
            rows, targets, dense = multi_row_targets(manifest, task, task_rows, index, list(names))
        else:
            label_id = {name: i for i, name in enumerate(names)}
            rows, targets = {}, {}
            for split in manifest.splits:
                chosen = [r for r in task_rows if r.split == split]
                rows[split] = np.array([index[r.path] for r in chosen], dtype=np.int64)
                targets[split] = np.array([label_id.get(r.label, -1) for r in chosen], dtype=np.int64)
        if labels is None:
            if len(rows["train"]) == 0:
                raise MtlEdgeError(f"task {task!r} has no training examples in {corpus}")
            if len(names) < 2 and kind.kind != "frame":  # a frame task's one label is active or not per frame
                raise MtlEdgeError(f"task {task!r} has a single label ({names[0]!r}): nothing to learn")
        out[task] = TaskRows(list(names), rows, targets, corpus_task_spec(task, list(names), kind.kind, kind.spec_options()),
                             dense)
    inputs = np.array(table.features, dtype=np.float32, order="C", copy=True)  # in memory, writable
    paths = list(table.paths)
    from mtl_edge.data.backgrounds import background_rels

    backgrounds = np.array([index[p] for p in background_rels(manifest) if p in index], dtype=np.int64)
    if augment is not None and augment.active:
        inputs, paths = _add_augmented(corpus, out, inputs, paths, cfg, augment, cache_dir, workers, progress)
    return TaskData(corpus, inputs, cfg.to_json(), out, paths, backgrounds)


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


def apply_budget(data: TaskData, label_fraction: float = 1.0, unlabeled_seconds: float = 0.0, seed: int = 0) -> TaskData:
    """``data`` with fewer training samples: ``label_fraction`` of each labelled task's (per class,
    at least one each; a class left without any is an error) and, for the self-supervised tasks, a
    pool of training clips holding at most ``unlabeled_seconds`` of audio (0: all). Validation and
    test are untouched; the same seed gives the same subset, so single-task baselines see the same data."""
    if not 0.0 < label_fraction <= 1.0:
        raise MtlEdgeError(f"--label-fraction must be in (0, 1], not {label_fraction}")
    if unlabeled_seconds < 0:
        raise MtlEdgeError(f"--unlabeled-seconds must be >= 0, not {unlabeled_seconds}")
    if label_fraction == 1.0 and not unlabeled_seconds:
        return data
    import zlib

    tasks = {}
    for name, rows in data.tasks.items():
        rng = np.random.default_rng([seed, 7, zlib.crc32(name.encode())])  # per task: a baseline draws the same
        train, targets = rows.rows["train"], rows.targets["train"]
        if rows.labels and label_fraction < 1.0:
            if rows.dense is not None:
                raise MtlEdgeError(f"--label-fraction applies to classification tasks; {name!r} is a {rows.spec.kind} task")
            keep = []
            for label_id in range(len(rows.labels)):
                members = np.flatnonzero(targets == label_id)
                n = int(np.floor(label_fraction * len(members)))
                if n == 0:
                    raise MtlEdgeError(f"--label-fraction {label_fraction} leaves class {rows.labels[label_id]!r} of task "
                                       f"{name!r} without a training example ({len(members)} in the training split)")
                keep.append(rng.choice(members, n, replace=False))
            chosen = np.sort(np.concatenate(keep))
        elif not rows.labels and unlabeled_seconds:
            seconds_per_clip = _clip_seconds(data)
            n = min(len(train), int(unlabeled_seconds // seconds_per_clip))
            if n == 0:
                raise MtlEdgeError(f"--unlabeled-seconds {unlabeled_seconds:g} holds no clip of {seconds_per_clip:g} s")
            chosen = np.sort(rng.choice(len(train), n, replace=False))
        else:
            tasks[name] = rows
            continue
        tasks[name] = TaskRows(rows.labels, {**rows.rows, "train": train[chosen]}, {**rows.targets, "train": targets[chosen]},
                               rows.spec, rows.dense)
    return TaskData(data.corpus, data.inputs, data.feature_config, tasks, data.paths, data.background_rows)


def _clip_seconds(data: TaskData) -> float:
    """Audio seconds per input row of a waveform input (its samples at its rate); 1 s for summary features."""
    cfg = data.feature_config
    if cfg.get("kind") == "waveform":
        return float(cfg["samples"]) / float(cfg["sample_rate"])
    return 1.0
