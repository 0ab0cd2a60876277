"""The corpus manifest: ``manifest.csv`` with one row per clip per task.

Required columns are ``path,task,label,split``; any other column is kept as-is. Paths are
relative to the corpus folder. Every problem is reported with the manifest line it is on.
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
        """Write ``manifest.csv`` atomically into ``folder`` (default: the corpus root)."""
        target = Path(folder or self.root) / MANIFEST_NAME
        atomic.write_text(target, self.to_csv())
        return target


def make_manifest(root: str | Path, rows: list[Row]) -> Manifest:
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
    manifest = Manifest(Path(root), numbered, tuple(extra))
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
    manifest = parse_manifest(text, root=path.parent, source=str(path))
    if check_files:
        manifest.check_files()
    return manifest


def parse_manifest(text: str, root: str | Path, source: str = MANIFEST_NAME) -> Manifest:
    """Parse manifest CSV text; every malformed row raises a ManifestError naming its line."""
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
    manifest = Manifest(Path(root), rows, extra_columns)
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
        key = (r.path, r.task)
        if key in seen:
            raise ManifestError(f"{where}: duplicated path {r.path} for task {r.task!r} (first on line {seen[key]})")
        seen[key] = r.line
        first = split_of.setdefault(r.path, (r.split, r.line))
        if first[0] != r.split:
            raise ManifestError(
                f"{where}: {r.path} is in split {r.split!r} here but {first[0]!r} on line {first[1]}; "
                "a clip has one split for all its tasks"
            )
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
