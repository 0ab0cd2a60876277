"""What every layout adapter shares: the registry, the import plan, the hash split, CSV helpers.

An adapter only *reads* the source layout and returns a :class:`Plan` (which file becomes which
clip, with which labels and split); copying, validation and the atomic write happen once, in
:func:`mtl_edge.data.adapters.import_corpus`, so that every layout behaves the same way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from mtl_edge.errors import MtlEdgeError

AUDIO_DIR = "audio"  # every imported clip lives under dst/audio/, mirroring its place in the source
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")


class LayoutWarning(UserWarning):
    """The source is usable but something is missing (e.g. no SPEAKERS.TXT: no gender task)."""


@dataclass(frozen=True)
class Clip:
    """One source audio file that becomes one corpus clip (copied or symlinked as-is)."""

    source: Path
    path: str  # corpus-relative POSIX path
    labels: Mapping[str, str]  # task -> label
    split: str
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Chopped:
    """A long recording cut into ``seconds``-long clips written as new 16 kHz WAVs.

    Clip ``i`` is written to ``f"{prefix}_{i:04d}.wav"``; its split comes from the hash of that
    path, so it does not depend on how many clips the other recordings produced.
    """

    source: Path
    prefix: str  # corpus-relative POSIX path without the index and suffix
    labels: Mapping[str, str]
    seconds: float = 1.0
    validation: float = 0.1
    test: float = 0.1
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """What an adapter found: clips to copy, recordings to cut, and lines for the summary."""

    clips: list[Clip] = field(default_factory=list)
    chopped: list[Chopped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Adapter = Callable[[Path, "str | None"], Plan]
LAYOUTS: dict[str, Adapter] = {}


def register_layout(name: str) -> Callable[[Adapter], Adapter]:
    """Register ``fn(src, task) -> Plan`` as the adapter for ``--layout name``."""

    def decorate(fn: Adapter) -> Adapter:
        if name in LAYOUTS:
            raise ValueError(f"layout {name!r} registered twice")
        LAYOUTS[name] = fn
        return fn

    return decorate


def hash_split(key: str, validation: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split for layouts without an official one: sha1 of ``key`` (a relative path).

    Stable across runs, machines and Python versions (unlike ``hash()``), and a clip keeps its
    split when other clips are added or removed.
    """
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def corpus_path(rel: Path | str) -> str:
    """Corpus path of a source file given by its path relative to the source root."""
    return f"{AUDIO_DIR}/{Path(rel).as_posix()}"


def require_dir(path: Path, layout: str, what: str) -> Path:
    if not path.is_dir():
        raise MtlEdgeError(f"{path.parent} does not look like a {layout} dataset: expected the folder {path.name}/ ({what})")
    return path


def require_file(path: Path, layout: str, what: str) -> Path:
    if not path.is_file():
        raise MtlEdgeError(f"{path.parent} does not look like a {layout} dataset: expected the file {path.name} ({what})")
    return path


def first_existing(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """The first of ``candidates`` (paths relative to ``root``) that exists."""
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    return None


def read_csv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)`` from a metadata CSV, failing clearly on missing columns or fields."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MtlEdgeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise MtlEdgeError(f"{path} line 1: missing column(s) {', '.join(missing)}; header is {','.join(header)}")
    reader.fieldnames = header
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # blank line
        clean = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str) and isinstance(v, str)}
        empty = [c for c in required if not clean.get(c)]
        if empty:
            raise MtlEdgeError(f"{path} line {line}: empty {', '.join(empty)}")
        yield line, clean


def require_audio(path: Path, where: str) -> Path:
    """An audio file named by the metadata must exist (a typo or partial download fails here)."""
    if not path.is_file():
        raise MtlEdgeError(f"{where}: audio file {path} does not exist")
    return path


def warn(message: str) -> None:
    warnings.warn(message, LayoutWarning, stacklevel=3)
