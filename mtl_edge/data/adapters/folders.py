"""Generic ``SRC/<label>/<file>`` folders: one task, named by the user, label = top folder.

Subfolders of a label folder belong to that label. Clips get a deterministic 80/10/10 split by
hash of path, as no split is given.
"""

from __future__ import annotations

from pathlib import Path

from mtl_edge.data.adapters.base import AUDIO_EXTENSIONS, Clip, Plan, corpus_path, hash_split, register_layout, warn
from mtl_edge.errors import MtlEdgeError

LAYOUT = "folders"


@register_layout(LAYOUT)
def plan_folders(src: Path, task: str | None) -> Plan:
    """Every audio file under ``SRC/<label>/`` -> one clip of ``task``."""
    if task is None or not task.strip():
        raise MtlEdgeError("--layout folders needs --task NAME (the task the folder names are labels of)")
    task = task.strip()
    labels = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not labels:
        raise MtlEdgeError(f"{src} does not look like a {LAYOUT} dataset: expected one folder per label (SRC/<label>/*.wav)")
    loose = [p for p in src.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
    if loose:
        warn(f"{src}: {len(loose)} audio file(s) directly in the source folder are not in a label folder and were left out")
    plan = Plan()
    for label_dir in labels:
        files = sorted(
            p for p in label_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(src).parts)
        )
        for f in files:
            path = corpus_path(f.relative_to(src))
            plan.clips.append(Clip(f, path, {task: label_dir.name}, hash_split(path)))
    if not plan.clips:
        raise MtlEdgeError(
            f"{src}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in its label folders for layout {LAYOUT}"
        )
    return plan
