"""Google Speech Commands (v0.02 layout; v0.01 is the same): tasks ``kws`` and ``speaker``.

``SRC/<word>/<speakerhash>_nohash_<n>.wav``, ``SRC/_background_noise_/*.wav`` (long recordings),
``SRC/validation_list.txt`` and ``SRC/testing_list.txt`` (``word/file.wav`` per line). The kws task
follows the standard 12-class benchmark: ten core words, every other word as ``_unknown_``, and
1 s ``_silence_`` clips cut from the background noise.
"""

from __future__ import annotations

import re
from pathlib import Path

from mtl_edge.data.adapters.base import Chopped, Clip, Plan, corpus_path, register_layout, require_audio, require_file
from mtl_edge.errors import MtlEdgeError

LAYOUT = "speech-commands"
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
BACKGROUND = "_background_noise_"
LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_NAME = re.compile(r"^(?P<speaker>[0-9A-Za-z]+)_nohash_(?P<n>\d+)\.wav$")


def speaker_of(filename: str) -> str | None:
    """The speaker hash of ``<hash>_nohash_<n>.wav`` (None for any other name)."""
    m = _NAME.match(filename)
    return m.group("speaker") if m else None


def kws_label(word: str) -> str:
    return word if word in CORE_WORDS else UNKNOWN


def _read_list(src: Path, split: str) -> dict[str, str]:
    """``word/file.wav`` -> split, failing on entries whose file is missing."""
    path = require_file(src / LISTS[split], LAYOUT, f"the {split} file list")
    listed: dict[str, str] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip().replace("\\", "/")
        if not entry:
            continue
        require_audio(src / entry, f"{path} line {line_no}")
        listed[entry] = split
    return listed


@register_layout(LAYOUT)
def plan_speech_commands(src: Path, task: str | None) -> Plan:
    """Word folders -> kws + speaker clips; background noise -> 1 s silence clips."""
    if task is not None:
        raise MtlEdgeError(f"--task applies to --layout folders only; {LAYOUT} imports the tasks kws and speaker")
    split_of = _read_list(src, "validation")
    for entry, split in _read_list(src, "test").items():
        if entry in split_of:
            raise MtlEdgeError(f"{entry} is listed in both {LISTS['validation']} and {LISTS['test']}")
        split_of[entry] = split

    plan = Plan()
    words = sorted(d for d in src.iterdir() if d.is_dir() and d.name != BACKGROUND and not d.name.startswith("."))
    for word_dir in words:
        for wav in sorted(word_dir.glob("*.wav")):
            speaker = speaker_of(wav.name)
            if speaker is None:
                raise MtlEdgeError(
                    f"{wav}: cannot read the speaker (Speech Commands files are named <speakerhash>_nohash_<n>.wav)"
                )
            rel = f"{word_dir.name}/{wav.name}"
            plan.clips.append(
                Clip(wav, corpus_path(rel), {"kws": kws_label(word_dir.name), "speaker": speaker},
                     split_of.get(rel, "train"), {"word": word_dir.name})
            )
    if not plan.clips:
        raise MtlEdgeError(f"{src} does not look like a {LAYOUT} dataset: expected word folders holding <hash>_nohash_<n>.wav files")

    background = src / BACKGROUND
    if background.is_dir():
        for wav in sorted(background.glob("*.wav")):
            plan.chopped.append(Chopped(wav, corpus_path(f"{SILENCE}/{wav.stem}"), {"kws": SILENCE}, seconds=1.0))
    else:
        plan.notes.append(f"no {BACKGROUND}/ folder: no {SILENCE} clips")
    return plan
