"""A corpus's declaration of its tasks' kinds: ``tasks.json`` beside ``manifest.csv``.

Why a file of its own: the manifest alone cannot tell two tags of one clip from a duplicated row,
nor give a frame task's frame grid (the head's output size). ``{"tasks": {"tagging": {"kind":
"multilabel"}, "event_activity": {"kind": "frame", "hop_ms": 10, "frames": 100}}}``. A task the
file does not name, or a corpus without the file (every corpus before it existed), is
``classification``: one row per clip and task.

- ``multilabel``: one row per clip, task and label (the clip's tags; a clip without a tag has no row);
- ``frame``: one row per clip, task and label, whose ``activity`` cell gives where that label is
  active (``start-end;...`` in seconds, ``mtl_edge.data.activity``; empty: never active); ``frames``
  frames of ``hop_ms`` each from the clip's start; ``segment_ms`` (default 1000, DCASE's) is the
  segment length of the segment-based error rate and F1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import ManifestError

TASKS_NAME = "tasks.json"
CORPUS_KINDS = ("classification", "multilabel", "frame")
MULTI_ROW_KINDS = ("multilabel", "frame")  # kinds with one row per clip, task and label


@dataclass(frozen=True)
class TaskKind:
    kind: str = "classification"
    hop_ms: float = 0.0  # frame tasks: the frame hop ...
    frames: int = 0  # ... and the frames per clip (the head's output size)
    segment_ms: float = 1000.0  # frame tasks: the segment length of the segment-based metrics (DCASE's 1 s)

    @property
    def hop_s(self) -> float:
        return self.hop_ms / 1000.0

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k == "kind" or self.kind == "frame"}

    def spec_options(self) -> dict:
        """What a ``TaskSpec`` carries of it (the model's frame head and the frame metrics need the grid)."""
        return {"hop_ms": self.hop_ms, "frames": self.frames, "segment_ms": self.segment_ms} if self.kind == "frame" else {}


CLASSIFICATION = TaskKind()


def parse_task_kinds(data, source: str) -> dict[str, TaskKind]:
    """The declarations of a ``tasks.json`` object; a ManifestError naming the task on anything malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ManifestError(f'{source}: expected {{"tasks": {{TASK: {{"kind": KIND, ...}}}}}}')
    out = {}
    for task, decl in data["tasks"].items():
        where = f"{source}: task {task!r}"
        if not isinstance(decl, dict) or decl.get("kind") not in CORPUS_KINDS:
            raise ManifestError(f"{where}: kind must be one of {', '.join(CORPUS_KINDS)} (got {decl!r})")
        unknown = sorted(set(decl) - {"kind", "hop_ms", "frames", "segment_ms"})
        if unknown or (decl["kind"] != "frame" and len(decl) > 1):
            raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown or sorted(set(decl) - {'kind'}))} "
                                f"for a {decl['kind']} task")
        if decl["kind"] == "frame":
            hop, frames = decl.get("hop_ms"), decl.get("frames")
            if not isinstance(hop, (int, float)) or isinstance(hop, bool) or not hop > 0:
                raise ManifestError(f"{where}: a frame task needs hop_ms > 0 (got {hop!r})")
            if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
                raise ManifestError(f"{where}: a frame task needs frames >= 1 (got {frames!r})")
            segment = decl.get("segment_ms", 1000.0)
            if not isinstance(segment, (int, float)) or isinstance(segment, bool) or not segment > 0:
                raise ManifestError(f"{where}: segment_ms must be > 0 (got {segment!r})")
            out[task] = TaskKind("frame", float(hop), frames, float(segment))
        else:
            out[task] = TaskKind(decl["kind"])
    return out


def read_task_kinds(folder: str | Path) -> dict[str, TaskKind]:
    """``folder/tasks.json``'s declarations; {} when the corpus has none (every task classification)."""
    path = Path(folder) / TASKS_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not a JSON file ({exc})") from None
    return parse_task_kinds(data, str(path))


def write_task_kinds(folder: str | Path, kinds: dict[str, TaskKind]) -> Path:
    target = Path(folder) / TASKS_NAME
    atomic.write_json(target, {"tasks": {t: k.to_json() for t, k in sorted(kinds.items())}})
    return target
