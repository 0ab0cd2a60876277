"""FSDKaggle2018 (Freesound general-purpose tagging): task ``tagging``.

The official test set (``test_post_competition_scoring_clips.csv``) is the test split; the train
clips get a deterministic 90/10 train/validation split by hash of path. ``manually_verified`` is
kept as a column because half the train labels are unverified and users may want to filter them.
Names differ between the Zenodo release and the Kaggle download, so several places are accepted.
"""

from __future__ import annotations

from pathlib import Path

from mtl_edge.data.adapters.base import Clip, Plan, corpus_path, first_existing, hash_split, read_csv, register_layout, require_audio, warn
from mtl_edge.errors import MtlEdgeError

LAYOUT = "fsdkaggle2018"
META_DIRS = ("FSDKaggle2018.meta", "meta", "")
TRAIN_CSVS = tuple(f"{d}/{n}".lstrip("/") for d in META_DIRS for n in ("train_post_competition.csv", "train.csv"))
TEST_CSVS = tuple(f"{d}/test_post_competition_scoring_clips.csv".lstrip("/") for d in META_DIRS)
TRAIN_AUDIO = ("FSDKaggle2018.audio_train", "audio_train")
TEST_AUDIO = ("FSDKaggle2018.audio_test", "audio_test")


def _audio_dir(src: Path, candidates: tuple[str, ...], csv_path: Path) -> Path:
    found = first_existing(src, candidates)
    if found is None or not found.is_dir():
        raise MtlEdgeError(
            f"{src} does not look like a {LAYOUT} dataset: {csv_path.name} is there but no audio folder "
            f"({' or '.join(c + '/' for c in candidates)})"
        )
    return found


@register_layout(LAYOUT)
def plan_fsdkaggle2018(src: Path, task: str | None) -> Plan:
    """Train csv -> train/validation clips, test csv -> test clips, all in task ``tagging``."""
    if task is not None:
        raise MtlEdgeError(f"--task applies to --layout folders only; {LAYOUT} imports the task tagging")
    train_csv = first_existing(src, TRAIN_CSVS)
    if train_csv is None:
        raise MtlEdgeError(
            f"{src} does not look like a {LAYOUT} dataset: expected the file "
            f"FSDKaggle2018.meta/train_post_competition.csv (or train.csv at the root or in the meta folder)"
        )
    plan = Plan()
    train_audio = _audio_dir(src, TRAIN_AUDIO, train_csv)
    for line, row in read_csv(train_csv, ("fname", "label")):
        wav = require_audio(train_audio / row["fname"], f"{train_csv} line {line}")
        path = corpus_path(wav.relative_to(src))
        plan.clips.append(
            Clip(wav, path, {"tagging": row["label"]}, hash_split(path, validation=0.1, test=0.0),
                 {"manually_verified": row.get("manually_verified", "")})
        )
    test_csv = first_existing(src, TEST_CSVS)
    if test_csv is None:
        warn(f"{src}: no test_post_competition_scoring_clips.csv, so the corpus has no test split")
        plan.notes.append("no test csv: no test split")
        return plan
    test_audio = _audio_dir(src, TEST_AUDIO, test_csv)
    for line, row in read_csv(test_csv, ("fname", "label")):
        wav = require_audio(test_audio / row["fname"], f"{test_csv} line {line}")
        # Every FSDKaggle2018 test label was manually verified (the dataset's documentation says so).
        plan.clips.append(
            Clip(wav, corpus_path(wav.relative_to(src)), {"tagging": row["label"]}, "test", {"manually_verified": "1"})
        )
    return plan
