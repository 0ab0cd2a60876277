"""Import real datasets, in the layouts users have on disk, as mtl-edge corpora.

Each layout module registers an adapter that reads the source and returns a plan (file -> clip,
labels, split). :func:`import_corpus` then validates every audio file, copies or symlinks it under
``dst/audio/`` (mirroring the source) and writes ``manifest.csv``, all inside ``atomic_dir`` so
that a killed import leaves no half-written corpus.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mtl_edge.atomic import atomic_dir
from mtl_edge.data.adapters import esc50, folders, fsdkaggle2018, librispeech, ravdess, speech_commands  # noqa: F401  (register)
from mtl_edge.data.adapters.base import LAYOUTS, Chopped, Clip, LayoutWarning, Plan, hash_split, register_layout
from mtl_edge.data.audio import BAD_AUDIO_POLICIES, TARGET_RATE, AudioError, audio_info, load_or_skip, write_wav
from mtl_edge.data.manifest import SPLITS, Manifest, Row, make_manifest, order_splits
from mtl_edge.data.task_kinds import CLASSIFICATION
from mtl_edge.errors import MtlEdgeError
from mtl_edge.progress import progress_bar

__all__ = [
    "Chopped",
    "Clip",
    "ImportResult",
    "Plan",
    "LayoutWarning",
    "import_corpus",
    "known_layouts",
    "hash_split",
    "register_layout",
]


@dataclass
class ImportResult:
    layout: str
    destination: Path
    manifest: Manifest
    skipped: list[str] = field(default_factory=list)  # one problem per bad audio file left out
    notes: list[str] = field(default_factory=list)  # layout-specific remarks (e.g. files not imported)

    def summary(self) -> str:
        """One line of counts (plus one line of remarks when there are any)."""
        clips = self.manifest.clips()
        per_split = Counter(clips.values())
        tasks = ", ".join(f"{t} ({len(self.manifest.labels(t))} labels)" for t in self.manifest.tasks)
        splits = ", ".join(f"{s} {per_split.get(s, 0)}" for s in order_splits([*SPLITS, *per_split]))
        line = f"imported {self.layout}: {len(clips)} clips; tasks {tasks}; {splits} -> {self.destination}"
        remarks = list(self.notes)
        if self.skipped:
            remarks.append(f"skipped {len(self.skipped)} bad audio file(s)")
        return line + ("\n" + "; ".join(remarks) if remarks else "")


def known_layouts() -> list[str]:
    return sorted(LAYOUTS)


def import_corpus(
    layout: str,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    task: str | None = None,
    link: bool = False,
    on_bad_audio: str = "fail",
) -> ImportResult:
    """Write the corpus ``dst`` (manifest.csv + audio/) from the dataset ``src`` in ``layout``."""
    if layout not in LAYOUTS:
        raise MtlEdgeError(f"unknown layout {layout!r}; known layouts: {', '.join(known_layouts())}")
    if on_bad_audio not in BAD_AUDIO_POLICIES:
        raise MtlEdgeError(f"on_bad_audio must be one of {', '.join(BAD_AUDIO_POLICIES)}, not {on_bad_audio!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise MtlEdgeError(f"{src}: no such folder (the {layout} dataset to import)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise MtlEdgeError(f"{dst} already exists and is not an empty folder; choose a new destination or remove it")
    if dst.resolve() == src.resolve():
        raise MtlEdgeError(f"the destination {dst} is the source folder itself")

    plan = LAYOUTS[layout](src, task)
    if not plan.clips and not plan.chopped:
        raise MtlEdgeError(f"{src}: no audio found for layout {layout}")

    skipped: list[str] = []
    rows: list[Row] = []
    with atomic_dir(dst) as tmp, progress_bar() as bar:
        job = bar.add_task(f"importing {layout}", total=len(plan.clips) + len(plan.chopped))
        for clip in plan.clips:
            if _valid(clip.source, on_bad_audio, skipped):
                _place(clip.source, tmp / clip.path, link)
                rows.extend(_rows(clip.path, clip.labels, clip.split, clip.extra))
            bar.advance(job)
        for rec in plan.chopped:
            rows.extend(_chop(rec, tmp, on_bad_audio, skipped))
            bar.advance(job)
        if not rows:
            raise MtlEdgeError(f"{src}: every audio file was unusable; nothing to import")
        rows.sort(key=lambda r: (r.path, r.task))
        # every imported corpus declares its tasks' kinds (all of today's layouts: one label per clip and task)
        manifest = make_manifest(dst, rows, {t: CLASSIFICATION for t in sorted({r.task for r in rows})})
        manifest.write(tmp)
    return ImportResult(layout, dst, manifest, skipped, plan.notes)


def _rows(path: str, labels: Mapping[str, str], split: str, extra: Mapping[str, str]) -> list[Row]:
    return [Row(path, task, label, split, dict(extra)) for task, label in labels.items()]


def _valid(path: Path, on_bad_audio: str, skipped: list[str]) -> bool:
    """Decode the whole file at its own rate (no resampling cost) so broken files are caught now."""
    try:
        rate = audio_info(path).samplerate
    except AudioError as exc:
        if on_bad_audio == "fail":
            raise AudioError(f"{exc} (use --on-bad-audio skip to leave such files out)") from None
        skipped.append(str(exc))
        return False
    return load_or_skip(path, on_bad_audio, skipped, target_rate=rate) is not None


def _place(source: Path, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.symlink(source.absolute(), target)
    else:
        shutil.copyfile(source, target)


def _chop(rec: Chopped, tmp: Path, on_bad_audio: str, skipped: list[str]) -> list[Row]:
    """Cut a long recording into full ``rec.seconds`` clips at 16 kHz (a shorter tail is dropped)."""
    audio = load_or_skip(rec.source, on_bad_audio, skipped, target_rate=TARGET_RATE)
    if audio is None:
        return []
    n = int(round(rec.seconds * TARGET_RATE))
    rows: list[Row] = []
    for i in range(len(audio.samples) // n):
        path = f"{rec.prefix}_{i:04d}.wav"
        target = tmp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(target, audio.samples[i * n:(i + 1) * n], TARGET_RATE)
        rows.extend(_rows(path, rec.labels, hash_split(path, rec.validation, rec.test), rec.extra))
    return rows
