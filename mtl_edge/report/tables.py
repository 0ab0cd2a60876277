"""Every table the toolkit shows or writes: training metrics, corpus description, export verification, Georgiev.

``train``, ``export`` and ``describe`` return data; the CLI (and ``export`` for its ``verification.md``)
renders it with these. ``GeorgievTable`` is a benchmark listener (``mtl_edge.bench.results``): it
collects the compare lines and prints the table when the benchmark ends, outside the measuring loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _extra_splits(entry: dict) -> list[str]:
    """The held-out test splits beyond ``test`` in one task's metrics entry (keys test_<what>)."""
    from mtl_edge.data.manifest import EXTRA_TEST_SPLIT

    return [k for k in entry if EXTRA_TEST_SPLIT.fullmatch(k) and isinstance(entry[k], dict)]


def render_metrics(metrics: dict, console=None) -> None:
    """The per-task table: single, multi and their difference."""
    from rich.table import Table

    from mtl_edge.progress import stdout_console

    console = console or stdout_console()
    has_single = any("single" in e for e in metrics["tasks"].values())
    where = (", ".join(f"{t} {v['corpus']}" for t, v in metrics["task_corpora"].items()) if "task_corpora" in metrics
             else metrics.get("corpus", ""))
    table = Table(title=f"test split ({where}); indented rows: further held-out test splits")
    if not any(_extra_splits(e) for e in metrics["tasks"].values()):
        table.title = f"test split ({where})"
    table.add_column("task", no_wrap=True)
    table.add_column("n", justify="right")
    for side in (["single", "multi", "delta"] if has_single else ["multi"]):
        table.add_column(f"{side} acc", justify="right")
        table.add_column(f"{side} macro-F1", justify="right")
    others = []  # tasks without accuracy (reconstruction heads): their own metrics below the table
    for task, entry in metrics["tasks"].items():
        if "accuracy" not in entry.get("multi", entry.get("single", {})):
            others.append(task)
            continue
        # the test split, then each further held-out test split the task was scored on, preceded by the
        # test split over that split's labels when it lacks some (the like-for-like comparison)
        parts = [(task, entry)]
        for s in _extra_splits(entry):
            if "seen_same_labels" in entry[s]:
                parts.append((f"  {task} (test, labels of {s})", entry[s]["seen_same_labels"]))
            parts.append((f"  {task} ({s})", entry[s]))
        for name, part in parts:
            cells = [name, str(part.get("test_samples", part.get("samples", "")))]
            for side in (["single", "multi", "delta"] if has_single else ["multi"]):
                for metric in ("accuracy", "macro_f1"):
                    value = part.get(side, {}).get(metric)
                    cells.append("-" if value is None else (f"{value:+.3f}" if side == "delta" else f"{value:.3f}"))
            table.add_row(*cells)
    console.print(table)
    for task in others:
        entry = metrics["tasks"][task]
        for name, part in [(task, entry), *((f"  {task} ({s})", entry[s]) for s in _extra_splits(entry))]:
            sides = [f"{side} " + ", ".join(f"{k} {v:.4g}" for k, v in part[side].items() if isinstance(v, (int, float)))
                     for side in ("single", "multi") if side in part]
            console.print(f"{name} ({entry.get('kind', 'reconstruction')}): {'; '.join(sides)}", highlight=False)


def render_table(report: dict[str, Any]) -> None:
    """Print one row per task (rich table on stdout) and a corpus summary line."""
    from rich import box
    from rich.table import Table

    from mtl_edge.data.manifest import SPLITS
    from mtl_edge.progress import stdout_console

    def fmt(value, digits: int = 2) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    corpus = report["corpus"]
    table = Table(
        title="corpus measurements per task", box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
        pad_edge=False, caption="lab labels, TTR labels/clips, H label entropy, kurt excess kurtosis of the label counts, "
        "frames labelled 10 ms frames, len s mean/total, kHz original rates, ch mono/stereo+, "
        "SNR dB mean/median, splits train/validation/test(+extra test splits)",
    )
    table.add_column("task", no_wrap=True, overflow="fold")
    for name in ("clips", "lab", "TTR", "H bits", "kurt", "frames", "len s", "kHz", "ch", "SNR dB", "splits"):
        table.add_column(name, justify="right", overflow="fold")
    for task, m in sorted(report["tasks"].items()):
        split, ch = m["clips_per_split"], m["channels"]
        table.add_row(
            task, fmt(m["clips"]), fmt(m["labels"]), fmt(m["type_token_ratio"]),
            fmt(m["label_entropy_bits"]), fmt(m["label_kurtosis_excess"]), fmt(m["labelled_frames"]),
            f"{fmt(m['mean_length_s'])}/{fmt(m['total_length_s'], 1)}",
            ",".join(f"{int(r) / 1000:g}" for r in m["sample_rates_hz"]) or "-",
            f"{ch['mono']}/{ch['stereo'] + ch['multichannel']}",
            f"{fmt(m['snr_db_mean'], 1)}/{fmt(m['snr_db_median'], 1)}",
            "/".join(str(split.get(s, 0)) for s in SPLITS) + "".join(f"+{n}" for s, n in split.items() if s not in SPLITS),
        )
    console = stdout_console()
    console.print(table)
    split = corpus["clips_per_split"]
    console.print(
        f"{corpus['clips']} clips ({'/'.join(str(split[s]) for s in SPLITS)} train/validation/test"
        + "".join(f", {n} {s}" for s, n in split.items() if s not in SPLITS) + "), "
        f"{fmt(corpus['total_length_s'], 1)} s, {corpus['skipped_clips']} skipped",
        highlight=False,
    )
    leaks = corpus["duplicate_audio_across_splits"]
    style = "bold red" if leaks else "green"
    console.print(f"[{style}]duplicate audio across splits: {leaks}[/{style}]", highlight=False)
    for example in corpus["duplicate_examples"]:
        console.print(f"  {', '.join(example['paths'])} ({'/'.join(example['splits'])})", markup=False, highlight=False)


def render_markdown(rows: list[dict]) -> str:
    """The verification table: one line per (artefact, task)."""
    head = ("| artefact | model | format | precision | status | task | n | agreement | accuracy | torch acc | "
            "Δacc | max abs Δlogit | KB | params | latency ms |")
    lines = [head, "|" + "---|" * 15]

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    for a in rows:
        ver = a.get("verification") or {}
        lat = (a.get("latency") or {}).get("median_ms")
        if not ver.get("tasks"):
            lines.append(f"| {a.get('path') or '-'} | {a['model']} | {a['format']} | {a['precision']} | {a['status']} | "
                         f"- | - | - | - | - | - | - | - | - | - |")
            continue
        for task, e in ver["tasks"].items():
            acc, torch_acc = e.get("accuracy"), e.get("torch_accuracy")
            dacc = None if acc is None or torch_acc is None else acc - torch_acc
            agreement = (f(e["agreement"]) if "agreement" in e  # a reconstruction output: its relative RMS error
                         else f"rms {f(e.get('relative_rms_error'), '{:.1e}')}")
            lines.append(f"| {a['path']} | {a['model']} | {a['format']} | {a['precision']} | {a['status']} | {task} | {e['n']} | "
                         f"{agreement} | {f(acc)} | {f(torch_acc)} | {f(dacc, '{:+.3f}')} | "
                         f"{f(e['max_abs_diff'], '{:.2e}')} | {a['bytes'] / 1024:.1f} | {a.get('parameters', '-')} | {f(lat, '{:.4f}')} |")
    notes = [f"- {a['model']} {a['format']} {a['precision']}: {a['status']}: {a.get('reason')}"
             for a in rows if a["status"] != "ok"]
    e2e = [a for a in rows if a.get("end_to_end") and a["status"] != "unsupported"]
    if e2e:
        notes += ["", "end-to-end artefacts (model e2e:...): waveform in, the front-end inside the graph, so their "
                      "latency includes it; front-end parity against logmel.extract on the test clips:", ""]
        for a in e2e:
            p, inp = a.get("frontend_parity") or {}, a.get("input") or {}
            parity = (f"error: {p['error']}" if p.get("error") else
                      f"max abs {f(p.get('max_abs_diff'), '{:.2e}')}, max rel {f(p.get('max_rel_diff'), '{:.2e}')}, "
                      f"max {f(p.get('max_scaled_diff'), '{:.2e}')} feature std ({p.get('worst_feature')})")
            notes.append(f"- {a['path']}: input {inp.get('name')} [batch, {inp.get('samples')}] at "
                         f"{inp.get('sample_rate')} Hz; front-end parity: {parity}")
    checked = [a for a in rows if a.get("tflite_runtime")]
    if checked:
        notes += ["", "tflite-runtime cross-check (top-1 agreement with ai-edge-litert on the same file, "
                  "whole test split):", ""]
        for a in checked:
            c = a["tflite_runtime"]
            agreement = ", ".join(f"{t} {v:.3f}" for t, v in (c.get("agreement") or {}).items()) or "-"
            notes.append(f"- {a['path']}: tflite-runtime {c['version']}: {c['status']} ({agreement})"
                         + (f": {c['reason']}" if c.get("reason") else ""))
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def print_georgiev(compares: list[dict]) -> None:
    """The console table of the compare lines: the multi-task model over the sum of the single-task models."""
    if not compares:
        return
    from rich.table import Table

    from mtl_edge.progress import stdout_console

    from mtl_edge.report import ratio

    keys = ("runtime_ratio_shared_frontend", "memory_ratio_shared_frontend", "runtime_ratio_coresident_shared_frontend",
            "runtime_ratio", "runtime_ratio_coresident", "memory_ratio", "runtime_ratio_frontend_per_model")
    table = Table(title="multi-task model / sum of single-task models (lower is better; *_shared_frontend: one "
                        "feature front-end on each side, as deployed)")
    for column in ("runtime", "precision", *keys):
        table.add_column(column, justify="right" if "ratio" in column else "left")
    for line in compares:
        cells = [str(line.get("runtime")), str(line.get("precision"))]
        for key in keys:
            value = ratio(line, key)
            cells.append("-" if value is None else f"{value:.3f}")
        table.add_row(*cells)
    stdout_console().print(table)


class GeorgievTable:
    """Benchmark listener: the console table of the compare lines, printed when the benchmark ends."""

    def __init__(self):
        self.compares: list[dict] = []

    def record(self, results_file: Path, record) -> None:
        if record.kind == "compare":
            self.compares.append(record.to_json())

    def close(self) -> None:
        print_georgiev(self.compares)
