"""The Georgiev table: the multi-task model against the sum of the single-task models, every runtime and precision.

For an export folder this runs ``mtl_edge.bench.bench(EXPORT, "desktop", runtime="onnxruntime,litert",
compare="single")`` over every precision the export holds (and ``runtime="torch"`` too when the export
has TorchScript artefacts), then collects the ``compare`` lines: runtime_ratio (multi p50 / Σ single
p50, each single model in its own process), runtime_ratio_coresident (the singles loaded together in one
process), memory_ratio (multi ΔRSS / Σ single ΔRSS, the runtime's import baseline not counted N times),
memory_ratio_peak (peak RSS), the ratios with the feature front-end -- the headline ``*_shared_frontend``
(one front-end on each side: the single-task models of one config share it) and the variant
``*_frontend_per_model`` (once per single-task model) -- and the per-task accuracies of both sides from the
export verification. It refuses to start when the 1-minute load average is above 0.5 (``--allow-busy``:
measure anyway, recorded in the result); the exact argv is recorded.

    .venv/bin/python benchmarks/georgiev.py [--export runs/demo/export] [--results DIR] [--resume]
        [--min-secs 2] [--max-secs 20] [--min-runs 100] [--out FILE] [--allow-busy]

The bench JSON lines go to ``--results`` (default ``EXPORT/bench``); the table goes to
``benchmarks/results/<name>-<machine>-<cpu>-<N>cpu.json`` (``--name``, default ``georgiev``; ``--out``
overrides) and, as Markdown, to stdout.
Goal of issue 5 for the 4-task demo DNN: runtime_ratio <= 0.35 and memory_ratio <= 0.35 (Georgiev et al.
report about 1/2.1 = 0.48).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

# headline first: one feature front-end on each side (single-task models of one config share it)
RATIOS = ("runtime_ratio_shared_frontend", "memory_ratio_shared_frontend", "runtime_ratio_coresident_shared_frontend",
          "runtime_ratio", "runtime_ratio_coresident", "memory_ratio", "memory_ratio_peak",
          "runtime_ratio_frontend_per_model", "memory_ratio_frontend_per_model")
KEEP = ("runtime", "runtime_version", "format", "precision", "tasks", "n_single", "multi_status", "single_status",
        *RATIOS[:3], "multi_p50_ms", "single_p50_sum_ms", "coresident_p50_ms", "frontend_p50_ms",
        "frontend_delta_rss_mb", *RATIOS[3:5], "multi_delta_rss_mb", "single_delta_rss_sum_mb",
        "coresident_delta_rss_mb", "memory_ratio", "memory_ratio_coresident", "multi_peak_rss_mb",
        "single_peak_rss_sum_mb", "memory_ratio_peak", "multi_model_bytes", "single_model_bytes_sum", "size_ratio",
        *RATIOS[7:], "busy", "threads", "cpu_affinity", "cpu_model", "cpu_governor", "cpu_freq_mhz", "temperature_c",
        "time")
PRECISION_ORDER = ("fp32", "fp16", "int8-dynamic", "int8")


def _f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)


def markdown(rows: list[dict], tasks: list[str]) -> str:
    head = ["runtime", "precision", "multi p50 ms", "Σ single p50 ms", "front-end p50 ms", *RATIOS,
            *[f"acc {t} multi/single" for t in tasks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["runtime"], r["precision"], _f(r["multi_p50_ms"], "{:.4f}"), _f(r["single_p50_sum_ms"], "{:.4f}"),
                 _f(r.get("frontend_p50_ms"), "{:.4f}"), *[_f(r.get(k)) for k in RATIOS]]
        cells += [f"{_f(r['accuracy_multi'].get(t))}/{_f(r['accuracy_single'].get(t))}" for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=Path("runs/demo/export"))
    ap.add_argument("--results", type=Path, help="where the bench JSON lines go (default EXPORT/bench)")
    ap.add_argument("--resume", action="store_true", help="skip measurements already in --results")
    ap.add_argument("--min-runs", type=int, default=100)
    ap.add_argument("--min-secs", type=float, default=2.0)
    ap.add_argument("--max-secs", type=float, default=20.0)
    ap.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/NAME-<env>.json)")
    ap.add_argument("--name", default="georgiev", help="the result's name, e.g. georgiev-wavenet for another model family")
    ap.add_argument("--allow-busy", action="store_true",
                    help="measure even when the 1-minute load average is above 0.5 (recorded in the result)")
    args = ap.parse_args()
    from mtl_edge.bench.environment import local_environment
    from mtl_edge.bench.load import gate, local_load, script_argv

    argv = script_argv()  # as typed, from the repository root: no machine paths
    env = local_environment()
    cpu = re.sub(r"[^a-z0-9]+", "-", (env["cpu_model"] or "cpu").lower()).strip("-")
    out = args.out or (Path(__file__).parent / "results" /
                       f"{args.name}-{platform.machine()}-{cpu}-{os.cpu_count()}cpu.json")
    started = gate(args.allow_busy, "georgiev.py", out)

    import numpy as np

    from mtl_edge import atomic
    from mtl_edge.bench import bench, load_device
    from mtl_edge.export.manifest import entries, read_manifest

    manifest = read_manifest(args.export)
    runtimes = ["onnxruntime", "litert"] + (["torch"] if entries(manifest, fmt="torch") else [])
    device = load_device("desktop")
    t0 = time.perf_counter()
    res = bench(args.export, "desktop", runtime=",".join(runtimes), compare="single", results=args.results,
                resume=args.resume, min_runs=args.min_runs, min_secs=args.min_secs, max_secs=args.max_secs)
    wall = time.perf_counter() - t0
    # every compare line of these runtimes and settings (with --resume: also the ones written before)
    from mtl_edge.bench import read_lines

    compares = {}
    for path in res.results:
        for line in read_lines(path):
            if (line["kind"] == "compare" and line.get("min_runs") == args.min_runs
                    and line.get("min_secs") == args.min_secs and line.get("max_secs") == args.max_secs):
                compares[(line["runtime"], line["precision"])] = line  # the latest per runtime/precision
    tasks = list(manifest["tasks"])
    rows = []
    for (rt, prec), c in sorted(compares.items(), key=lambda kv: (runtimes.index(kv[0][0]),
                                                                  PRECISION_ORDER.index(kv[0][1]))):
        row = {k: c.get(k) for k in KEEP}
        row["accuracy_multi"] = {t: c.get(f"accuracy_multi_{t}") for t in tasks}
        row["accuracy_single"] = {t: c.get(f"accuracy_single_{t}") for t in tasks}
        rows.append(row)

    versions = {}
    for name in ("onnxruntime", "ai-edge-litert", "torch"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001
            versions[name] = None
    parameters = {}
    for label in manifest.get("checkpoint_sha256") or {}:
        a = next((x for x in manifest["artefacts"] if x["model"] == label and x.get("parameters")), None)
        parameters[label] = a["parameters"] if a else None
    result = {
        "benchmark": "georgiev",
        "argv": argv,
        "export": str(args.export),  # as given: no path of this machine in committed results
        "results": [str(p) for p in res.results],
        "tasks": tasks,
        "parameters": parameters,
        "settings": {"device": "desktop", "threads": device.threads, "cpu_affinity": device.cpu_affinity,
                     "min_runs": args.min_runs, "min_secs": args.min_secs, "max_secs": args.max_secs},
        "goal": {"runtime_ratio": 0.35, "memory_ratio": 0.35, "georgiev_reported": 0.48},
        "wall_s": round(wall, 1),
        **started, "load_1m_at_end": local_load()[0],
        "busy_lines": sum(1 for r in rows if r.get("busy")),
        "rows": rows,
        "machine": {"uname_m": platform.machine(), **env, "python": platform.python_version(),
                    "numpy": np.__version__, **versions},
    }
    atomic.write_json(out, result, sort_keys=False)
    print(f"Georgiev comparison of {args.export} on {env['cpu_model']} ({os.cpu_count()} CPUs, "
          f"{device.threads} thread, taskset {device.cpu_affinity or '-'}):\n")
    print(markdown(rows, tasks))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
