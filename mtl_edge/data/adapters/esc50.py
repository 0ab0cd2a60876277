"""ESC-50 (environmental sound classification): task ``event``, the official folds as splits.

``SRC/meta/esc50.csv`` (filename,fold,target,category,esc10,src_file,take) and ``SRC/audio/``.
Folds 1-3 train, fold 4 validation, fold 5 test: clips cut from one Freesound recording share a
fold, so this keeps near-duplicates out of the evaluation splits.
"""

from __future__ import annotations

from pathlib import Path

from mtl_edge.data.adapters.base import Clip, Plan, corpus_path, read_csv, register_layout, require_audio, require_dir, require_file
from mtl_edge.errors import MtlEdgeError

LAYOUT = "esc50"
FOLD_SPLITS = {"1": "train", "2": "train", "3": "train", "4": "validation", "5": "test"}
COLUMNS = ("filename", "fold", "category")


@register_layout(LAYOUT)
def plan_esc50(src: Path, task: str | None) -> Plan:
    """One ``event`` clip per row of meta/esc50.csv."""
    if task is not None:
        raise MtlEdgeError(f"--task applies to --layout folders only; {LAYOUT} imports the task event")
    meta = require_file(src / "meta" / "esc50.csv", LAYOUT, "the clip metadata, meta/esc50.csv")
    audio = require_dir(src / "audio", LAYOUT, "the clips")
    plan = Plan()
    for line, row in read_csv(meta, COLUMNS):
        split = FOLD_SPLITS.get(row["fold"])
        if split is None:
            raise MtlEdgeError(f"{meta} line {line}: fold {row['fold']!r} is not one of 1-5")
        wav = require_audio(audio / row["filename"], f"{meta} line {line}")
        plan.clips.append(
            Clip(wav, corpus_path(Path("audio") / row["filename"]), {"event": row["category"]}, split,
                 {"fold": row["fold"], "esc10": row.get("esc10", "")})
        )
    return plan
