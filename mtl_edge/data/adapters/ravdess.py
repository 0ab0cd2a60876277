"""RAVDESS (emotional speech and song): tasks ``emotion``, ``intensity``, ``gender``, ``speaker``.

``Actor_NN/MM-VV-EE-II-SS-RR-AA.wav``: modality, vocal channel, emotion, intensity, statement,
repetition, actor. Everything is in the file name, so the labels are decoded from it. Only
audio-only files (modality 03) are imported; the video files are counted in the summary.
"""

from __future__ import annotations

import re
from pathlib import Path

from mtl_edge.data.adapters.base import Clip, Plan, corpus_path, hash_split, register_layout
from mtl_edge.errors import MtlEdgeError

LAYOUT = "ravdess"
AUDIO_ONLY = "03"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
INTENSITIES = {"01": "normal", "02": "strong"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.[A-Za-z0-9]+$")


def decode(filename: str) -> dict[str, str] | None:
    """Labels of an audio-only file name; None for a video file; MtlEdgeError for a bad code."""
    m = _NAME.match(filename)
    if m is None:
        raise MtlEdgeError(f"{filename}: expected a RAVDESS name MM-VV-EE-II-SS-RR-AA (7 two-digit codes)")
    modality, channel, emotion, intensity, _statement, _repetition, actor = m.groups()
    if modality != AUDIO_ONLY:
        return None
    for code, table, what in ((channel, VOCAL_CHANNELS, "vocal channel"), (emotion, EMOTIONS, "emotion"),
                              (intensity, INTENSITIES, "intensity")):
        if code not in table:
            raise MtlEdgeError(f"{filename}: unknown {what} code {code} (expected {', '.join(table)})")
    if int(actor) < 1:
        raise MtlEdgeError(f"{filename}: actor code {actor} must be 01 or more")
    return {
        "emotion": EMOTIONS[emotion],
        "intensity": INTENSITIES[intensity],
        "gender": "male" if int(actor) % 2 else "female",
        "speaker": f"actor_{actor}",
    }


def _actor_dirs(src: Path) -> list[Path]:
    """``Actor_NN`` folders in SRC, or one level down (the speech and song zips unpack that way)."""
    found = sorted(d for d in src.glob("Actor_*") if d.is_dir())
    return found or sorted(d for d in src.glob("*/Actor_*") if d.is_dir())


@register_layout(LAYOUT)
def plan_ravdess(src: Path, task: str | None) -> Plan:
    """Audio-only files -> four tasks, split 80/10/10 by hash of path."""
    if task is not None:
        raise MtlEdgeError(f"--task applies to --layout folders only; {LAYOUT} imports emotion, intensity, gender, speaker")
    actors = _actor_dirs(src)
    if not actors:
        raise MtlEdgeError(f"{src} does not look like a {LAYOUT} dataset: expected Actor_NN/ folders")
    plan = Plan()
    not_audio = 0
    for actor in actors:
        for f in sorted(p for p in actor.iterdir() if p.is_file() and not p.name.startswith(".")):
            labels = decode(f.name)
            if labels is None:
                not_audio += 1
                continue
            path = corpus_path(f.relative_to(src))
            channel = VOCAL_CHANNELS[f.name[3:5]]
            plan.clips.append(Clip(f, path, labels, hash_split(path), {"vocal_channel": channel}))
    if not_audio:
        plan.notes.append(f"skipped {not_audio} non-audio-only file(s) (modality 01/02, video)")
    return plan
