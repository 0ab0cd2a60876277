"""The class-overlap table of two tasks (``data overlap``): printed with rich, written as CSV, JSON and a PNG heatmap."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mtl_edge import atomic


def render_overlap(overlap, console=None) -> None:
    """The counts (rows: task a's labels, columns: task b's), then which labels of a are shared or exclusive."""
    from rich.table import Table

    from mtl_edge.progress import stdout_console

    console = console or stdout_console()
    a, b = overlap.task_a, overlap.task_b
    table = Table(title=f"{a} x {b}: clips carrying both ({overlap.clips}, {overlap.split or 'all'} split"
                        f"{'' if overlap.split else 's'}) in {overlap.corpus}")
    table.add_column(f"{a} \\ {b}", no_wrap=True)
    for label in overlap.labels_b:
        table.add_column(label, justify="right")
    table.add_column(f"{b} labels", justify="right")
    for label, row in zip(overlap.labels_a, overlap.counts):
        table.add_row(label, *(str(int(n)) if n else "." for n in row), str(len(overlap.partners(label))))
    console.print(table)
    lines = [f"shared ({a} labels with 2+ {b} labels): {', '.join(overlap.shared) or 'none'}",
             f"exclusive (one {b} label only): " +
             (", ".join(f"{x} ({y})" for x, y in overlap.exclusive.items()) or "none")]
    if overlap.unpaired:
        lines.append(f"on no clip with {b}: {', '.join(overlap.unpaired)}")
    for label in overlap.labels_b:
        lines.append(f"  {b} {label}: shares {', '.join(overlap.shared_by(label)) or 'nothing'}; only here: "
                     f"{', '.join(x for x, y in overlap.exclusive.items() if y == label) or 'nothing'}")
    for line in lines:
        console.print(line, highlight=False, markup=False)


def write_overlap(overlap, out: Path) -> list[Path]:
    """``overlap.csv`` (the counts), ``overlap.json`` (counts, shared, exclusive) and ``overlap.png`` in ``out``."""
    out = Path(out)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([overlap.task_a, *overlap.labels_b])
    for label, row in zip(overlap.labels_a, overlap.counts):
        writer.writerow([label, *(int(n) for n in row)])
    atomic.write_text(out / "overlap.csv", buf.getvalue())
    atomic.write_json(out / "overlap.json", overlap.to_json(), sort_keys=False)
    return [out / "overlap.csv", out / "overlap.json", _heatmap(overlap, out / "overlap.png")]


def _heatmap(overlap, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = overlap.counts
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(overlap.labels_b), 1.0 + 0.45 * len(overlap.labels_a)))
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                dark = counts[i, j] > 0.6 * counts.max()
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    shared = set(overlap.shared)
    ax.set_xticks(range(len(overlap.labels_b)), overlap.labels_b, rotation=30, ha="right")
    ax.set_yticks(range(len(overlap.labels_a)), [f"{x} *" if x in shared else x for x in overlap.labels_a])
    ax.set_xlabel(overlap.task_b)
    ax.set_ylabel(f"{overlap.task_a} (* shared)")
    ax.set_title(f"clips per label pair ({overlap.split or 'all splits'})")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return atomic.write_png(path, fig)
