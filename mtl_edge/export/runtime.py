"""Run an exported artefact in this process with its format's runtime from ``mtl_edge.runtimes``.

``load_artefact(entry, folder)`` takes a manifest entry and returns ``fn(inputs) -> {task: logits}``
for float32 inputs with any number of rows (a batch-1 TFLite graph is run row by row, through the
signature runner by output *name*). ``runners`` and ``measure_latency`` serve the export's own quick
latency figure; the benchmark measures on a device with ``mtl_edge.runtimes.runner``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from mtl_edge.errors import MtlEdgeError
from mtl_edge.runtimes import load_format
from mtl_edge.runtimes.runner import latency_stats

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def runners(fmt: str, path: str | Path, threads: int = 1) -> tuple[Runner, Runner]:
    """(all-rows runner, single-call runner) of ``path`` under the desktop runtime of ``fmt``."""
    loaded = load_format(fmt, path, threads)
    return loaded.run, loaded.call


def load_artefact(entry: dict, folder: str | Path, threads: int = 1) -> Runner:
    """``fn(inputs) -> {task: logits}`` for one manifest entry of the export in ``folder``.

    ``inputs``: features [N, F] float32, or waveforms [N, samples] for an entry whose ``input.name`` is
    ``waveform``.
    """
    if entry.get("status") == "unsupported" or not entry.get("path"):
        raise MtlEdgeError(f"{entry.get('model')} {entry.get('format')} {entry.get('precision')}: unsupported, no artefact "
                           f"({entry.get('reason')})")
    path = Path(folder) / entry["path"]
    if not path.is_file():
        raise MtlEdgeError(f"{path}: listed in the manifest but missing")
    return runners(entry["format"], path, threads)[0]


def measure_latency(call: Runner, row: np.ndarray, runs: int = 200, warmup: int = 20, threads: int = 1) -> dict:
    """Median / p90 wall time in ms of ``call(row)`` (one row), after ``warmup`` calls."""
    row = np.ascontiguousarray(row[None], dtype=np.float32)
    for _ in range(warmup):
        call(row)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call(row)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    stats = latency_stats(times)
    return {"median_ms": round(stats["p50_ms"], 5), "p90_ms": round(stats["p90_ms"], 5),
            "runs": runs, "warmup": warmup, "threads": threads, "batch": 1}
