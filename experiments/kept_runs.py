"""Copies of finished runs' small files into experiments/results/, without paths of this machine.

Imported by the summary scripts beside it (``python experiments/X.py`` puts this folder on the path).
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def portable(value):
    """``value`` with every absolute path inside the repository written relative to it."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and value.startswith(str(REPO) + "/"):
        return value[len(str(REPO)) + 1:]
    return value


def keep_run_files(run: Path, kept: Path, names=("metrics.json", "config.json")) -> None:
    """Write ``run``'s JSON files ``names`` into ``kept`` (no checkpoints, no curves), paths made portable."""
    kept.mkdir(parents=True, exist_ok=True)
    for name in names:
        (kept / name).write_text(json.dumps(portable(json.loads((run / name).read_text())), indent=2) + "\n")
