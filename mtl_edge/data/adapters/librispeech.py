"""LibriSpeech: tasks ``speaker`` and ``gender`` (from SPEAKERS.TXT).

``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``. SRC is the LibriSpeech folder
(holding subsets such as train-clean-100, dev-clean) or one subset folder. The official subsets
have disjoint speakers, useless for speaker identification, so clips get a deterministic
80/10/10 split by hash of path instead; the subset is kept as a column.
"""

from __future__ import annotations

import re
from pathlib import Path

from mtl_edge.data.adapters.base import Clip, Plan, corpus_path, hash_split, register_layout, warn
from mtl_edge.errors import MtlEdgeError

LAYOUT = "librispeech"
SPEAKERS_FILE = "SPEAKERS.TXT"
GENDERS = {"F": "female", "M": "male"}
_UTT = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utt>\d+)\.flac$")


def _is_subset(folder: Path) -> bool:
    """A subset folder holds ``<speaker>/<chapter>/`` folders of digits."""
    return any(d.is_dir() and d.name.isdigit() for d in folder.iterdir()) if folder.is_dir() else False


def read_speakers(path: Path) -> dict[str, str]:
    """SPEAKERS.TXT -> {speaker id: "female"/"male"}; ``;`` lines are comments."""
    genders: dict[str, str] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 2 or not fields[0].isdigit():
            raise MtlEdgeError(f"{path} line {line_no}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line.strip()!r}")
        sex = fields[1].upper()
        if sex not in GENDERS:
            raise MtlEdgeError(f"{path} line {line_no}: sex {fields[1]!r} is not F or M")
        genders[fields[0]] = GENDERS[sex]
    return genders


@register_layout(LAYOUT)
def plan_librispeech(src: Path, task: str | None) -> Plan:
    """Every ``.flac`` utterance -> speaker (+ gender) clip, split by hash of its path."""
    if task is not None:
        raise MtlEdgeError(f"--task applies to --layout folders only; {LAYOUT} imports the tasks speaker and gender")
    if _is_subset(src):
        subsets, root = [src], src.parent
    else:
        subsets = sorted(d for d in src.iterdir() if d.is_dir() and _is_subset(d))
        root = src
    if not subsets:
        raise MtlEdgeError(
            f"{src} does not look like a {LAYOUT} dataset: expected subset folders (e.g. dev-clean/) holding "
            "<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac, or one such subset folder"
        )
    speakers_txt = next((p for p in (src / SPEAKERS_FILE, root / SPEAKERS_FILE) if p.is_file()), None)
    genders = read_speakers(speakers_txt) if speakers_txt else None
    plan = Plan()
    if genders is None:
        warn(f"{src}: no {SPEAKERS_FILE} here or in {root}, so no gender task")
        plan.notes.append(f"no {SPEAKERS_FILE}: no gender task")

    for subset in subsets:
        for flac in sorted(subset.glob("*/*/*.flac")):
            m = _UTT.match(flac.name)
            speaker_dir, chapter_dir = flac.parent.parent.name, flac.parent.name
            if m is None or m.group("speaker") != speaker_dir or m.group("chapter") != chapter_dir:
                raise MtlEdgeError(f"{flac}: expected <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac")
            speaker = m.group("speaker")
            labels = {"speaker": speaker}
            if genders is not None:
                if speaker not in genders:
                    raise MtlEdgeError(f"{speakers_txt}: no row for speaker {speaker} (needed for {flac})")
                labels["gender"] = genders[speaker]
            # The subset is part of the path so that importing LibriSpeech/ or LibriSpeech/dev-clean/
            # gives the same corpus paths, hence the same split.
            path = corpus_path(Path(subset.name) / flac.relative_to(subset))
            plan.clips.append(Clip(flac, path, labels, hash_split(path), {"subset": subset.name}))
    if not plan.clips:
        raise MtlEdgeError(f"{src}: no <speaker>-<chapter>-<utt>.flac files found for layout {LAYOUT}")
    return plan
