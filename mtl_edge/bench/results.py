"""Where benchmark records go: listeners, called outside the measuring loop (as TFLite's benchmark_model does).

The harness hands every finished record (a measurement or compare line) to each listener and tells them
when the benchmark ends; it never formats or writes results itself. ``JsonLines`` is the results file
(``RESULTS/<device>-<runtime>.jsonl``, one JSON object per line): each line is appended and fsync'd on
its own, so an interrupted benchmark keeps every finished line; a torn last line (the machine died
mid-write) is cut off when the file is opened again, so ``--resume`` redoes that record. ``Csv`` writes
the main fields of the measurement lines to one CSV file. The console table is
``mtl_edge.report.GeorgievTable``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Protocol

RECORD_KINDS = ("measurement", "compare")


class Listener(Protocol):
    """Receives each record (``bench.records``: ``to_json()`` is its line) once complete, and the end of the benchmark."""

    def record(self, results_file: Path, record) -> None: ...

    def close(self) -> None: ...


def read_lines(path: str | Path) -> list[dict]:
    """The complete JSON lines of a results file (a damaged or foreign line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("kind") in RECORD_KINDS:
            out.append(obj)
    return out


def cut_torn_line(path: Path) -> bool:
    """Remove an incomplete last line (no newline at the end) from ``path``; True when there was one."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return False
    if not data or data.endswith(b"\n"):
        return False
    with open(path, "rb+") as fh:
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())
    return True


class JsonLines:
    """The results files: one JSON line appended and fsync'd per record."""

    def __init__(self):
        self._opened: set[Path] = set()

    def open(self, results_file: Path) -> None:
        """Before the first record of a file (and before resume reads it): cut a torn last line."""
        results_file = Path(results_file)
        if results_file not in self._opened:
            results_file.parent.mkdir(parents=True, exist_ok=True)
            cut_torn_line(results_file)
            self._opened.add(results_file)

    def record(self, results_file: Path, record) -> None:
        self.open(results_file)
        line = (json.dumps(record.to_json(), sort_keys=False) + "\n").encode("utf-8")
        with open(results_file, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        pass


CSV_FIELDS = ("time", "device", "runtime", "runtime_version", "mode", "model", "format", "precision", "threads",
              "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "init_ms", "first_ms", "peak_rss_mb",
              "delta_rss_mb", "model_bytes", "answers_status", "emulated", "artefact", "artefact_sha256")


class Csv:
    """The main fields of every measurement line, one CSV row each, in one file for the whole benchmark."""

    def __init__(self, path: str | Path, fields: tuple[str, ...] = CSV_FIELDS):
        self.path, self.fields = Path(path), fields
        self._fh = None

    def record(self, results_file: Path, record) -> None:
        if record.kind != "measurement":
            return
        line = record.to_json()
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.is_file() or self.path.stat().st_size == 0
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._fh, self.fields, extrasaction="ignore")
            if fresh:
                self._writer.writeheader()
        self._writer.writerow({k: line.get(k) for k in self.fields})
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
