"""The corpus manifest: ``manifest.csv`` with one row per clip per task.

Required columns are ``path,task,label,split``; any other column is kept as-is. Paths are
relative to the corpus folder. A classification task has one row per clip; a task that
``tasks.json`` declares ``multilabel`` or ``frame`` (``mtl_edge.data.task_kinds``) has one row per
clip and label (a frame task's rows carry the label's ``activity``). Every problem is reported with the manifest line it is on.
Splits are ``train``, ``validation`` and ``test``, plus any further held-out test split named
``test_<what>`` (``EXTRA_TEST_SPLIT``).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.data.activity import ACTIVITY_COLUMN, frame_span, parse_activity
from mtl_edge.data.task_kinds import CLASSIFICATION, MULTI_ROW_KINDS, TASKS_NAME, TaskKind, read_task_kinds, write_task_kinds
from mtl_edge.errors import ManifestError

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("path", "task", "label", "split")
SPLITS = ("train", "validation", "test")
# Further held-out test splits, named test_<what> (e.g. test_unseen_speakers: voices no training
# clip has): evaluated beside ``test``, never trained on and never used for model selection.
EXTRA_TEST_SPLIT = re.compile(r"test_[a-z0-9_]+")


def is_split(name: str) -> bool:
    return name in SPLITS or EXTRA_TEST_SPLIT.fullmatch(name) is not None


def order_splits(names) -> list[str]:
    """``names`` in the order train, validation, test, then the extra test splits by name."""
    return sorted(set(names), key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


class SingleExampleLabelWarning(UserWarning):
    """A label has one example only: it cannot appear in more than one split."""


@dataclass(frozen=True)
class Row:
    path: str
    task: str
    label: str
    split: str
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    line: int = field(default=0, compare=False, hash=False)


@dataclass
class Manifest:
    root: Path
    rows: list[Row]
    extra_columns: tuple[str, ...] = ()
    kinds: dict[str, TaskKind] = field(default_factory=dict)  # tasks.json's declarations (absent: classification)

    def kind(self, task: str) -> TaskKind:
        return self.kinds.get(task, CLASSIFICATION)

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.rows})

    @property
    def splits(self) -> list[str]:
        """train, validation and test (present or not), then the extra test splits the manifest has."""
        return order_splits([*SPLITS, *(r.split for r in self.rows)])

    @property
    def extra_test_splits(self) -> list[str]:
        return [s for s in self.splits if s not in SPLITS]

    def rows_for(self, task: str) -> list[Row]:
        rows = [r for r in self.rows if r.task == task]
        if not rows:
            raise ManifestError(f"unknown task {task!r}; this corpus has: {', '.join(self.tasks)}")
        return rows

    def labels(self, task: str) -> list[str]:
        return sorted({r.label for r in self.rows_for(task)})

    def clips(self) -> dict[str, str]:
        """Every clip path with its split."""
        return {r.path: r.split for r in self.rows}

    def audio_path(self, row_or_path: Row | str) -> Path:
        rel = row_or_path.path if isinstance(row_or_path, Row) else row_or_path
        return self.root / rel

    def check_files(self) -> None:
        """Fail on the first row whose audio file is missing."""
        seen: set[str] = set()
        for r in self.rows:
            if r.path in seen:
                continue
            seen.add(r.path)
            if not self.audio_path(r).is_file():
                raise ManifestError(f"{self.root / MANIFEST_NAME} line {r.line}: audio file missing: {r.path}")

    def to_csv(self) -> str:
        table = [[*REQUIRED_COLUMNS, *self.extra_columns]]
        table += [[r.path, r.task, r.label, r.split, *(r.extra.get(c, "") for c in self.extra_columns)] for r in self.rows]
        # csv quotes only the characters of lineterminator ("\n"): a lone "\r" left unquoted would end the row
        quoting = csv.QUOTE_ALL if any("\r" in v for row in table for v in row) else csv.QUOTE_MINIMAL
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n", quoting=quoting).writerows(table)
        return buf.getvalue()

    def write(self, folder: str | Path | None = None) -> Path:
        """Write ``manifest.csv`` (and ``tasks.json`` when the manifest declares kinds) atomically into ``folder``
        (default: the corpus root)."""
        target = Path(folder or self.root) / MANIFEST_NAME
        if self.kinds:
            write_task_kinds(target.parent, self.kinds)
        atomic.write_text(target, self.to_csv())
        return target


def make_manifest(root: str | Path, rows: list[Row], kinds: dict[str, TaskKind] | None = None) -> Manifest:
    """Build a manifest in memory, validated exactly as a file read from disk would be."""
    extra: list[str] = []
    for r in rows:
        for key in r.extra:
            if key not in extra:
                extra.append(key)
    # strip as parse_manifest does, so that a manifest built in memory reads back identically
    numbered = [
        Row(r.path.strip(), r.task.strip(), r.label.strip(), r.split.strip(), r.extra, i + 2) for i, r in enumerate(rows)
    ]
    manifest = Manifest(Path(root), numbered, tuple(extra), dict(kinds or {}))
    _validate(manifest, Path(root) / MANIFEST_NAME)
    return manifest


def read_manifest(corpus: str | Path, check_files: bool = True) -> Manifest:
    """Read and validate ``corpus/manifest.csv`` (or a manifest file given directly)."""
    corpus = Path(corpus)
    path = corpus / MANIFEST_NAME if corpus.is_dir() else corpus
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (a corpus folder needs a {MANIFEST_NAME})")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate the BOM of Excel's "CSV UTF-8"
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    manifest = parse_manifest(text, root=path.parent, source=str(path), kinds=read_task_kinds(path.parent))
    if check_files:
        manifest.check_files()
    return manifest


def parse_manifest(text: str, root: str | Path, source: str = MANIFEST_NAME,
                   kinds: dict[str, TaskKind] | None = None) -> Manifest:
    """Parse manifest CSV text (``kinds``: the corpus's ``tasks.json``); every malformed row raises a
    ManifestError naming its line."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{source}: empty manifest (expected a header {','.join(REQUIRED_COLUMNS)})") from None
    except csv.Error as exc:
        raise ManifestError(f"{source} line 1: malformed CSV ({exc})") from None
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ManifestError(f"{source} line 1: missing column(s) {', '.join(missing)}; header is {','.join(header)}")
    dupes = [c for c, n in Counter(header).items() if n > 1]
    if dupes:
        raise ManifestError(f"{source} line 1: repeated column(s) {', '.join(dupes)}")
    index = {c: header.index(c) for c in header}
    extra_columns = tuple(c for c in header if c not in REQUIRED_COLUMNS)
    rows: list[Row] = []
    try:
        for values in reader:
            line = reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line
            if len(values) != len(header):
                raise ManifestError(
                    f"{source} line {line}: {len(values)} fields, the header has {len(header)}"
                )
            get = lambda c: values[index[c]].strip()  # noqa: E731
            rows.append(
                Row(get("path"), get("task"), get("label"), get("split"),
                    {c: values[index[c]] for c in extra_columns}, line)
            )
    except csv.Error as exc:
        raise ManifestError(f"{source} line {reader.line_num}: malformed CSV ({exc})") from None
    manifest = Manifest(Path(root), rows, extra_columns, dict(kinds or {}))
    _validate(manifest, source)
    return manifest


def _validate(manifest: Manifest, source) -> None:
    if not manifest.rows:
        raise ManifestError(f"{source}: the manifest has a header but no rows")
    split_of: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for r in manifest.rows:
        where = f"{source} line {r.line}"
        for column in REQUIRED_COLUMNS:
            if not getattr(r, column):
                raise ManifestError(f"{where}: empty {column!r}" + (f" for {r.path}" if r.path else ""))
        if not is_split(r.split):
            raise ManifestError(f"{where}: unknown split {r.split!r} for {r.path} (expected one of {', '.join(SPLITS)}, "
                                "or test_<name> for a further held-out test split)")
        if Path(r.path).is_absolute() or ".." in Path(r.path).parts:
            raise ManifestError(f"{where}: path {r.path!r} must be relative to the corpus folder")
        multi_row = manifest.kind(r.task).kind in MULTI_ROW_KINDS
        key = (r.path, r.task, r.label if multi_row else "")
        if key in seen:
            what = f"label {r.label!r} of task {r.task!r}" if multi_row else f"task {r.task!r}"
            hint = "" if multi_row else (f" (a clip with several labels of one task needs the task declared multilabel "
                                         f"in {TASKS_NAME})")
            raise ManifestError(f"{where}: duplicated path {r.path} for {what} (first on line {seen[key]}){hint}")
        seen[key] = r.line
        first = split_of.setdefault(r.path, (r.split, r.line))
        if first[0] != r.split:
            raise ManifestError(
                f"{where}: {r.path} is in split {r.split!r} here but {first[0]!r} on line {first[1]}; "
                "a clip has one split for all its tasks"
            )
    _validate_kinds(manifest, source)
    counts: dict[str, Counter] = defaultdict(Counter)
    first_line: dict[tuple[str, str], int] = {}
    for r in manifest.rows:
        counts[r.task][r.label] += 1
        first_line.setdefault((r.task, r.label), r.line)
    for task, counter in counts.items():
        for label, n in counter.items():
            if n == 1:
                warnings.warn(
                    f"{source} line {first_line[(task, label)]}: label {label!r} of task {task!r} has a single example",
                    SingleExampleLabelWarning,
                    stacklevel=3,
                )


def _validate_kinds(manifest: Manifest, source) -> None:
    """Declared tasks have rows; frame rows have a well-formed ``activity`` within the frame grid; a
    multilabel task has the same label set in train, validation and test (a tag the model never
    trains on, or one it trains on and is never scored on, is a corpus error, not a metric)."""
    tasks = set(manifest.tasks)
    for task, kind in manifest.kinds.items():
        if task not in tasks:
            raise ManifestError(f"{manifest.root / TASKS_NAME}: declares task {task!r}, which has no manifest rows")
        if kind.kind == "frame" and ACTIVITY_COLUMN not in manifest.extra_columns:
            first = next(r for r in manifest.rows if r.task == task)
            raise ManifestError(f"{source} line {first.line}: task {task!r} is a frame task but the manifest has no "
                                f"{ACTIVITY_COLUMN!r} column (segments start-end;start-end in seconds per row)")
    by_split: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in manifest.rows:
        kind = manifest.kind(r.task)
        if kind.kind == "multilabel":
            by_split[r.task][r.split].add(r.label)
        if kind.kind != "frame":
            continue
        where = f"{source} line {r.line}"
        try:
            segments = parse_activity(r.extra.get(ACTIVITY_COLUMN, ""))
        except ValueError as exc:
            raise ManifestError(f"{where}: {ACTIVITY_COLUMN} of {r.path} for task {r.task!r}: {exc}") from None
        for start, end in segments:
            if frame_span(start, end, kind.hop_s)[1] > kind.frames:
                raise ManifestError(f"{where}: {ACTIVITY_COLUMN} segment {start:g}-{end:g} of {r.path} ends after the "
                                    f"{kind.frames} frames of {kind.hop_ms:g} ms that {TASKS_NAME} declares for {r.task!r}")
    for task, splits in by_split.items():
        train = splits.get("train", set())
        for split in order_splits(splits):
            labels = splits[split]
            missing, extra = sorted(train - labels), sorted(labels - train)
            if extra or (split in SPLITS and missing):
                parts = ([f"{split} lacks {', '.join(missing)}"] if missing and split in SPLITS else []) + \
                        ([f"{split} has {', '.join(extra)}, which train lacks"] if extra else [])
                raise ManifestError(f"{source}: the label set of multilabel task {task!r} differs between splits: "
                                    f"{'; '.join(parts)}")
