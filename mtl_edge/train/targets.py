"""Targets of the tasks with one manifest row per clip *and label* (``multilabel``, ``frame``).

Why a table: a classification sample's target is one label id, and the trainer shuffles every
task's samples together as int64 ids. A multilabel sample's target is a 0/1 vector over the labels,
a frame sample's a [frames, labels] 0/1 matrix; so such a task's sample carries the id of its row in
``TaskRows.dense`` instead, and the losses, metrics and test sets look the row up
(``TaskRows.dense_targets``). One sample per clip (its rows grouped by path).
"""

from __future__ import annotations

import numpy as np

from mtl_edge.data.activity import ACTIVITY_COLUMN, activity_frames, parse_activity
from mtl_edge.data.manifest import Manifest, Row
from mtl_edge.errors import MtlEdgeError


def multi_row_targets(manifest: Manifest, task: str, task_rows: list[Row], index: dict[str, int],
                      names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """(input rows per split, target ids per split, the dense target table) of a multilabel or frame task.

    ``names``: the label list (its order gives the columns); a row whose label is not in it (a
    checkpoint's label list on another corpus) adds nothing to its clip's target."""
    kind = manifest.kind(task)
    column = {name: i for i, name in enumerate(names)}
    rows, targets, dense = {}, {}, []
    for split in manifest.splits:
        by_clip: dict[str, list[Row]] = {}
        for r in task_rows:
            if r.split == split:
                by_clip.setdefault(r.path, []).append(r)
        rows[split] = np.array([index[p] for p in by_clip], dtype=np.int64)
        targets[split] = np.arange(len(dense), len(dense) + len(by_clip), dtype=np.int64)
        for clip_rows in by_clip.values():
            dense.append(_frame_target(manifest, kind, clip_rows, column) if kind.kind == "frame"
                         else _tags(clip_rows, column))
    shape = (0, kind.frames, len(names)) if kind.kind == "frame" else (0, len(names))
    table = np.stack(dense).astype(np.float32) if dense else np.zeros(shape, np.float32)
    return rows, targets, table


def _tags(clip_rows: list[Row], column: dict[str, int]) -> np.ndarray:
    out = np.zeros(len(column), dtype=np.float32)
    for r in clip_rows:
        if r.label in column:
            out[column[r.label]] = 1.0
    return out


def _frame_target(manifest: Manifest, kind, clip_rows: list[Row], column: dict[str, int]) -> np.ndarray:
    out = np.zeros((kind.frames, len(column)), dtype=np.float32)
    for r in clip_rows:
        if r.label not in column:
            continue
        try:  # the manifest validated it; a Manifest built by hand may not have been
            segments = parse_activity(r.extra[ACTIVITY_COLUMN])
        except (KeyError, ValueError) as exc:
            raise MtlEdgeError(f"{manifest.root} line {r.line}: no valid {ACTIVITY_COLUMN} for {r.path} "
                               f"(task {r.task!r}): {exc}") from None
        out[:, column[r.label]] = activity_frames(segments, kind.frames, kind.hop_s)
    return out
