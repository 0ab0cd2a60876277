"""Benchmark reports: Markdown + PNG from the JSON lines written by ``mtl_edge.bench``.

``render_report([RESULTS...], OUT)`` reads result files (``*.jsonl``) or folders of them and writes
``OUT/report.md`` with ``latency.png`` (latency distribution of every measured artefact),
``compare.png`` (multi-task model against the sum of the single-task models: runtime and memory),
``pareto.png`` (per-task accuracy against latency) and the environment the numbers were taken in.
When an artefact was measured several times with the same settings, the latest line is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError

__all__ = ["Report", "load_results", "render_report", "georgiev_table"]

_ENV = ("device", "transport", "machine", "emulated", "answers_status", "cpu_model", "cpu_count", "cpu_governor", "cpu_freq_mhz",
        "temperature_c", "threads", "cpu_affinity", "python_version", "numpy_version")
_SETTINGS = ("warmup_runs", "min_runs", "min_secs", "max_secs")


@dataclass
class Report:
    markdown: Path
    images: list[Path] = field(default_factory=list)
    measurements: int = 0
    compares: int = 0


def load_results(paths) -> tuple[list[dict], list[dict]]:
    """(measurements, compares) from result files or folders; the latest line per artefact and settings."""
    from mtl_edge.bench.results import read_lines

    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise MtlEdgeError(f"{p}: no such results file or folder")
    if not files:
        raise MtlEdgeError(f"no results files (*.jsonl) in {', '.join(map(str, paths))}")
    latest: dict = {}
    for f in files:
        for line in read_lines(f):
            if line["kind"] == "measurement":
                key = ("m", line.get("device"), line.get("runtime"), line.get("mode"), line.get("artefact_sha256"),
                       *(line.get(k) for k in ("threads", "cpu_affinity", *_SETTINGS)))
            else:
                key = ("c", line.get("device"), line.get("runtime"), line.get("multi_sha256"),
                       tuple(line.get("single_sha256") or ()),
                       *(line.get(k) for k in ("threads", "cpu_affinity", *_SETTINGS)))
            latest[key] = line
    lines = list(latest.values())
    measurements = [x for x in lines if x["kind"] == "measurement"]
    compares = [x for x in lines if x["kind"] == "compare"]
    if not measurements and not compares:
        raise MtlEdgeError(f"no measurement or compare lines in {', '.join(map(str, files))}")
    return measurements, compares


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# The columns of the Georgiev table: the headline (one shared front-end on each side, as a user deploys
# single-task models trained from one config), then the model-only ratios, then the per-model front-end variant.
GEORGIEV_RATIOS = ("runtime_ratio_shared_frontend", "memory_ratio_shared_frontend",
                   "runtime_ratio_coresident_shared_frontend", "runtime_ratio", "runtime_ratio_coresident",
                   "memory_ratio", "memory_ratio_peak", "runtime_ratio_frontend_per_model",
                   "memory_ratio_frontend_per_model", "size_ratio")
_OLD_NAMES = {"runtime_ratio_frontend_per_model": "runtime_ratio_with_frontend",  # lines written before the rename
              "memory_ratio_frontend_per_model": "memory_ratio_with_frontend"}


def ratio(line: dict, key: str):
    """A ratio of a compare line; lines written before the shared front-end figures have the per-model ones under
    their old names (``*_with_frontend``)."""
    return line.get(key, line.get(_OLD_NAMES.get(key, key)))


def georgiev_table(compares: list[dict]) -> str:
    """The Markdown table of the comparison lines (one row per device, runtime and precision)."""
    head = ["device", "runtime", "precision", "multi p50 ms", "Σ single p50 ms", "co-resident p50 ms", "front-end p50 ms",
            "multi Δ MB", "Σ single Δ MB", *GEORGIEV_RATIOS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in sorted(compares, key=lambda c: (c["device"], c["runtime"], _prec_order(c["precision"]))):
        rows.append("| " + " | ".join([c["device"], f"{c['runtime']} {c.get('runtime_version', '')}", c["precision"],
                                       _f(c["multi_p50_ms"], 4), _f(c["single_p50_sum_ms"], 4),
                                       _f(c["coresident_p50_ms"], 4), _f(c.get("frontend_p50_ms"), 4),
                                       _f(c["multi_delta_rss_mb"], 2), _f(c["single_delta_rss_sum_mb"], 2),
                                       *(_f(ratio(c, k)) for k in GEORGIEV_RATIOS)]) + " |")
    return "\n".join(rows) + "\n"


def _prec_order(p: str) -> int:
    order = ["fp32", "fp16", "int8-dynamic", "int8"]
    return order.index(p) if p in order else len(order)


def _accuracy_table(compares: list[dict]) -> str:
    tasks = list(dict.fromkeys(t for c in compares for t in c.get("tasks", [])))
    head = ("| runtime | precision | " + " | ".join(f"{t} multi | {t} single" for t in tasks) + " |\n|"
            + "---|" * (2 + 2 * len(tasks)) + "\n")
    rows = []
    for c in sorted(compares, key=lambda c: (c["runtime"], _prec_order(c["precision"]))):
        cells = [c["runtime"], c["precision"]]
        for t in tasks:
            cells += [_f(c.get(f"accuracy_multi_{t}")), _f(c.get(f"accuracy_single_{t}"))]
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def _measurement_table(ms: list[dict]) -> str:
    head = ("| device | runtime | precision | model | mode | runs | init ms | first ms | p50 ms | p90 ms | p99 ms | "
            "window p50 ms (min–max) | after-import MB | peak MB | Δ MB | bytes | status |\n|" + "---|" * 17 + "\n")
    rows = []
    for m in _sorted(ms):
        rows.append("| " + " | ".join([
            m["device"], m["runtime"], m["precision"], m["model"], m["mode"], str(m["runs"]), _f(m["init_ms"], 2),
            _f(m["first_ms"], 3), _f(m["p50_ms"], 4), _f(m["p90_ms"], 4), _f(m["p99_ms"], 4),
            f"{_f(m['window_p50_ms'], 4)} ({_f(m.get('window_min_p50_ms'), 4)}–{_f(m.get('window_max_p50_ms'), 4)})",
            _f(m["rss_after_import_mb"], 1), _f(m["peak_rss_mb"], 1), _f(m["delta_rss_mb"], 2), str(m["model_bytes"]),
            m.get("status", "")]) + " |")
    return head + "\n".join(rows) + "\n"


def _sorted(ms: list[dict]) -> list[dict]:
    return sorted(ms, key=lambda m: (m["device"], m["runtime"], _prec_order(m["precision"]), m["mode"] != "alone",
                                     m["model"] != "multi", m["model"]))


def _short(m: dict) -> str:
    model = "co-resident singles" if m["mode"] == "coresident" else m["model"]
    return f"{m['runtime']} {m['precision']}\n{model}"


def _latency_plot(ms: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in _sorted(ms) if m.get("latencies_ms")]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(ms) + 2), 5))
    if ms:
        ax.boxplot([m["latencies_ms"] for m in ms], showfliers=False, whis=(1, 99))
        ax.set_xticks(range(1, len(ms) + 1), [_short(m) for m in ms], rotation=90, fontsize=7)
    ax.set_ylabel("latency per inference (ms), whiskers p1–p99")
    ax.set_yscale("log")
    ax.set_title("Latency distribution per artefact")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _compare_plot(compares: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cs = sorted(compares, key=lambda c: (c["device"], c["runtime"], _prec_order(c["precision"])))
    labels = [f"{c['runtime']}\n{c['precision']}" for c in cs]
    x = np.arange(len(cs))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.4 * len(cs) + 4), 4.5))
    series = [(("multi_p50_ms", "multi"), ("single_p50_sum_ms", "Σ single (own processes)"),
               ("coresident_p50_ms", "single, co-resident")),
              (("multi_delta_rss_mb", "multi"), ("single_delta_rss_sum_mb", "Σ single (own processes)"),
               ("coresident_delta_rss_mb", "single, co-resident"))]
    for ax, group, ylabel in zip(axes, series, ("p50 latency (ms)", "memory Δ over runtime import (MB)")):
        for i, (key, name) in enumerate(group):
            ax.bar(x + (i - 1) * 0.27, [c.get(key) or 0 for c in cs], 0.27, label=name)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_title("Runtime: multi vs sum of single")
    axes[1].set_title("Memory: multi vs sum of single")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _pareto_plot(ms: list[dict], compares: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(t for c in compares for t in c.get("tasks", [])))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.8), squeeze=False)
    colors = {"fp32": "tab:blue", "fp16": "tab:green", "int8-dynamic": "tab:orange", "int8": "tab:red"}
    by_key = {(m["runtime"], m["precision"], m["model"]): m for m in ms if m["mode"] == "alone"}
    for ax, task in zip(axes[0], tasks):
        for c in compares:
            multi = by_key.get((c["runtime"], c["precision"], "multi"))
            single = by_key.get((c["runtime"], c["precision"], f"single:{task}"))
            marker = "o" if c["runtime"] == "onnxruntime" else "s"
            color = colors.get(c["precision"], "k")
            if multi and c.get(f"accuracy_multi_{task}") is not None:
                ax.scatter(multi["p50_ms"], c[f"accuracy_multi_{task}"], marker=marker, color=color, edgecolor="k")
            if single and c.get(f"accuracy_single_{task}") is not None:
                ax.scatter(single["p50_ms"], c[f"accuracy_single_{task}"], marker=marker, facecolor="none",
                           edgecolor=color)
        ax.set_title(task)
        ax.set_xlabel("p50 latency (ms)")
        ax.set_ylabel("test accuracy")
    fig.suptitle("Per-task accuracy vs latency (filled: multi-task model, hollow: single-task model; "
                 "o onnxruntime, s litert)", fontsize=8)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _environment(ms: list[dict]) -> str:
    out = []
    for device in sorted({m["device"] for m in ms}):
        first = next(m for m in ms if m["device"] == device)
        env = ", ".join(f"{k}={_f(first.get(k))}" for k in _ENV if k != "device")
        versions = sorted({f"{m['runtime']} {m['runtime_version']}" for m in ms if m["device"] == device})
        settings = sorted({", ".join(f"{k}={m.get(k)}" for k in _SETTINGS) for m in ms if m["device"] == device})
        temps = [m["temperature_c"] for m in ms if m["device"] == device and m.get("temperature_c") is not None]
        out.append(f"- **{device}**: {env}; runtimes: {', '.join(versions)}; settings: {' / '.join(settings)}; "
                   f"temperature range: {f'{min(temps):.1f}–{max(temps):.1f} °C' if temps else 'not exposed'}; "
                   f"measured {min(m['time'] for m in ms if m['device'] == device)} – "
                   f"{max(m['time'] for m in ms if m['device'] == device)}")
    return "\n".join(out) + "\n"


def render_report(results_paths, out_dir=None) -> Report:
    """Write ``report.md`` and its PNGs to ``out_dir`` (default: ``report/`` beside the first results path)."""
    if isinstance(results_paths, (str, Path)):
        results_paths = [results_paths]
    ms, cs = load_results(results_paths)
    first = Path(results_paths[0])
    out = Path(out_dir) if out_dir is not None else (first if first.is_dir() else first.parent) / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = []
    parts = ["# Benchmark report\n",
             "Runner: one process per measurement importing only numpy and the runtime; batch-1 inferences on the "
             "export's real test clips; p50/p90/p99 over every measured run, window p50 = median of per-window "
             "medians; memory: the runner's own VmHWM and VmRSS after importing the runtime (Δ = peak − "
             "after-import).\n",
             "## Environment\n", _environment(ms) if ms else "(no measurements)\n"]
    emulated = sorted({m["device"] for m in ms if m.get("emulated")})
    if emulated:
        parts.insert(1, f"> **EMULATED device(s): {', '.join(emulated)}.** These ran under qemu (aarch64 user-mode "
                        "emulation): their answers are real, their timings and memory are NOT performance figures "
                        "(emulation is 26x to 1600x slower than the hardware and qemu inflates memory).\n")
    disagree = [m for m in ms if m.get("answers_status") == "disagrees"]
    if disagree:
        parts.insert(1, "> **Artefacts answering differently on the device than on the desktop:** "
                        + "; ".join(f"{m['artefact']} on {m['device']} ({m['runtime']}, agreement "
                                    f"{m.get('answers_agreement_min')})" for m in disagree) + "\n")
    if cs:
        parts += ["## Multi-task model vs the single-task models (Georgiev et al.)\n",
                  "Headline: runtime_ratio_shared_frontend = (multi p50 + front-end p50) / (Σ single p50 + "
                  "front-end p50): single-task models trained from one config take the same features, computed "
                  "once; memory_ratio_shared_frontend likewise with Δ; runtime_ratio_coresident_shared_frontend "
                  "against the singles loaded in one process and run back to back. Model only: runtime_ratio = "
                  "multi p50 / Σ single p50 (each single in its own process); runtime_ratio_coresident; "
                  "memory_ratio = multi Δ / Σ single Δ; memory_ratio_peak = multi peak / Σ single peaks. "
                  "*_frontend_per_model: the front-end counted once per single-task model.\n",
                  georgiev_table(cs), "\n![multi vs single](compare.png)\n",
                  "### Per-task accuracy (export verification, test split)\n", _accuracy_table(cs),
                  "\n![accuracy vs latency](pareto.png)\n"]
        _compare_plot(cs, out / "compare.png")
        _pareto_plot(ms, cs, out / "pareto.png")
        images += [out / "compare.png", out / "pareto.png"]
    if ms:
        parts += ["## Measurements\n", _measurement_table(ms), "\n![latency distributions](latency.png)\n"]
        _latency_plot(ms, out / "latency.png")
        images.append(out / "latency.png")
    parts.append(f"\nSources: {', '.join(str(Path(p)) for p in results_paths)}\n")
    atomic.write_text(out / "report.md", "\n".join(parts))
    return Report(out / "report.md", images, len(ms), len(cs))
