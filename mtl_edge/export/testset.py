"""The test split shipped with an export (``testset.npz``) and the recorded calibration rows.

``testset.npz`` (``numpy.load(path)``, no pickle) holds:

- ``features``: float32 [N, F], one row per test clip of any exported task (clips in feature-cache order);
- ``paths``: str [N], the clip path (relative to the corpus) of each row;
- ``matrix_rows``: int64 [N], the row of each clip in the corpus feature cache;
- ``tasks``: str [T], the task order;
- ``rows__<task>``: int64, the test rows (indices into ``features``) of the task's samples;
- ``labels__<task>``: int64, the label id of each of those samples (-1: a label the model does not know);
  float32 0/1 targets for a multilabel task ([n, labels]) or a frame task ([n, frames, labels]);
- ``label_names__<task>``: str, the label names (id = index).

- with ``--end-to-end``, or for a model that takes waveforms: ``waveforms`` (float32 [N, samples], the
  test clips at ``sample_rate``), the input of the waveform-in graphs (``features`` is then [N, 0] for
  a waveform model: it has no summary features).

A task without labels (a reconstruction head) has every test clip as its rows and -1 labels.

Readers must ignore keys they do not know (``TestSet.extra`` keeps them).

``calibration_indices.json`` records, per exported model, the training-split feature-cache rows
used for static int8 calibration (drawn once with a seeded generator), so an artefact can be rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError

CALIBRATION_SIZE = 256
CALIBRATION_SEED = 0


@dataclass
class TaskTest:
    rows: np.ndarray  # indices into TestSet.features
    labels: np.ndarray  # label ids (-1 = unknown to the model); 0/1 targets of multilabel and frame tasks
    label_names: list[str]


@dataclass
class TestSet:
    features: np.ndarray
    paths: list[str]
    matrix_rows: np.ndarray
    tasks: dict[str, TaskTest]
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def keys(self) -> list[str]:
        keys = ["features", "paths", "matrix_rows", "tasks"]
        for t in self.tasks:
            keys += [f"rows__{t}", f"labels__{t}", f"label_names__{t}"]
        return keys + sorted(self.extra)


def build_testset(data, clip_paths: list[str] | None = None, split: str = "test") -> TestSet:
    """The ``split`` samples of every task of ``data`` (a TaskData) as one compact input matrix
    (``features``, or ``waveforms`` for a waveform model); ``clip_paths`` default to ``data.paths``."""
    clip_paths = data.paths if clip_paths is None else clip_paths
    used = np.unique(np.concatenate([t.rows[split] for t in data.tasks.values()])).astype(np.int64)
    if len(used) == 0:
        raise MtlEdgeError(f"{data.corpus}: the {split} split is empty; nothing to verify an export on")
    position = {int(r): i for i, r in enumerate(used)}
    tasks = {}
    for name, t in data.tasks.items():
        if len(t.rows[split]) == 0:
            raise MtlEdgeError(f"task {name!r} has no {split} examples in {data.corpus}; nothing to verify it on")
        tasks[name] = TaskTest(np.array([position[int(r)] for r in t.rows[split]], dtype=np.int64),
                               np.asarray(t.dense_targets(split), dtype=np.int64 if t.dense is None else np.float32),
                               list(t.labels))
    inputs = np.ascontiguousarray(data.inputs[used], dtype=np.float32)
    paths = [clip_paths[int(r)] for r in used]
    if data.input_kind == "waveform":
        extra = {"waveforms": inputs, "sample_rate": np.int64(data.feature_config["sample_rate"])}
        return TestSet(np.zeros((len(used), 0), dtype=np.float32), paths, used, tasks, extra)
    return TestSet(inputs, paths, used, tasks)


def write_testset(ts: TestSet, path: str | Path) -> None:
    arrays = {"features": ts.features, "paths": np.array(ts.paths, dtype=str), "matrix_rows": ts.matrix_rows,
              "tasks": np.array(list(ts.tasks), dtype=str)}
    for name, t in ts.tasks.items():
        arrays[f"rows__{name}"] = t.rows
        arrays[f"labels__{name}"] = t.labels
        arrays[f"label_names__{name}"] = np.array(t.label_names, dtype=str)
    arrays.update(ts.extra)
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_testset(path: str | Path) -> TestSet:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        tasks = {}
        for name in arrays.pop("tasks").tolist():
            tasks[name] = TaskTest(arrays.pop(f"rows__{name}"), arrays.pop(f"labels__{name}"),
                                   arrays.pop(f"label_names__{name}").tolist())
        return TestSet(arrays.pop("features"), arrays.pop("paths").tolist(), arrays.pop("matrix_rows"), tasks, arrays)
    except (OSError, KeyError, ValueError) as exc:
        raise MtlEdgeError(f"{path}: not a readable export test set ({type(exc).__name__}: {exc})") from None


def calibration_rows(data, tasks: list[str], size: int = CALIBRATION_SIZE, seed: int = CALIBRATION_SEED) -> list[int]:
    """``size`` distinct training-split feature-cache rows of ``tasks``' samples, drawn with ``seed``, sorted."""
    pool = np.unique(np.concatenate([data.tasks[t].rows["train"] for t in tasks])).astype(np.int64)
    if len(pool) == 0:
        raise MtlEdgeError(f"no training examples of {', '.join(tasks)} to calibrate int8 on")
    rng = np.random.default_rng(seed)
    chosen = pool if len(pool) <= size else rng.choice(pool, size=size, replace=False)
    return sorted(int(r) for r in chosen)
