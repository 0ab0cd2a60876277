"""Thesis experiment 3 as a table: each main task's gain from each auxiliary task, and the auxiliaries' gains from each other.

Usage: python experiments/aux_tasks.py ANALYSIS_FOLDER   (the folder `mtl-edge analyze --out` wrote)

Reads ANALYSIS_FOLDER/gains.csv and writes ANALYSIS_FOLDER/main_aux.md: the mean gain over seeds of the
main task's test metric (95 % CI in brackets; * where significant after Holm correction over all the
analysis's pairs), one table with the main tasks as rows and the auxiliaries as columns, one for the
auxiliaries among themselves.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

MAIN = ["kws", "speaker", "scene", "event"]
AUX = ["music_speech", "vad", "gender", "instrument", "tagging", "event_activity"]


def cell(row: dict | None) -> str:
    if row is None:
        return "-"
    mark = "*" if row["significant"] in ("True", "true", "1") else ""
    return f"{float(row['gain']):+.3f}{mark} [{float(row['ci_low']):+.3f}, {float(row['ci_high']):+.3f}]"


def table(gains: dict, rows: list[str], columns: list[str]) -> list[str]:
    lines = ["| main \\ auxiliary | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for main in rows:
        metric = next((g["metric"] for (m, _), g in gains.items() if m == main), "")
        lines.append(f"| {main} ({metric}) | " + " | ".join("" if a == main else cell(gains.get((main, a))) for a in columns) + " |")
    return lines


def main(folder: Path) -> None:
    with open(folder / "gains.csv", newline="") as f:
        gains = {(g["main"], g["aux"]): g for g in csv.DictReader(f)}
    lines = ["# Auxiliary tasks: gain of the main task (multi - single), mean over seeds [95 % CI]", "",
             "`*`: significant after Holm correction over every directed pair of the analysis.", "",
             "## Main tasks with each auxiliary", "", *table(gains, MAIN, AUX), "",
             "## Auxiliaries with each other", "", *table(gains, AUX, AUX), ""]
    (folder / "main_aux.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
