"""Wall time of one sweep on the local executor and on Ray, side by side, to benchmarks/results/sweep_executors.json.

Run: .venv/bin/python benchmarks/sweep_executors.py [--scale 0.05] [--steps 100] [--seeds 3] [--workers 2]

A corpus is built at ``--scale`` in a temporary folder; the same pair sweep (6 tasks: 15 pairs and
6 single-task baselines per seed) is trained with ``--executor local`` and with ``--executor ray``
(a local Ray instance, started and stopped inside the timed call, as a user without a cluster would
run it), ``--workers`` runs at a time each, one after the other in this process. The two sweeps'
``results.csv`` must be byte-identical (same seeds, one torch thread per run), which is recorded.
Refuses to write a committed result when the 1-minute load average is above 0.5 (a figure on a
busy machine is not a figure) unless ``--allow-busy``, which is then recorded in the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.bench.environment import local_environment
from mtl_edge.bench.load import gate, local_load, script_argv
from mtl_edge.data.demo.builder import DemoConfig, build_demo
from mtl_edge.research.sweep import run_sweep
from mtl_edge.train.trainer import TrainConfig

TASKS = ["kws", "speaker", "scene", "event", "instrument", "gender"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hidden", default="128,128,128")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the machine is busy (recorded)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "sweep_executors.json")
    args = parser.parse_args()

    started_load = gate(args.allow_busy, "sweep_executors.py", args.results)
    cfg = TrainConfig(hidden=tuple(int(h) for h in args.hidden.split(",")), steps=args.steps)
    root = Path(tempfile.mkdtemp(prefix="mtl-edge-sweep-bench-"))
    rows = {}
    try:
        corpus = build_demo(DemoConfig(scale=args.scale, seed=0), root / "corpus", workers=2).folder
        for executor in ("local", "ray"):
            out = root / executor
            loads = [local_load()[0]]
            started, cpu = time.perf_counter(), os.times()
            result = run_sweep(corpus, TASKS, out, cfg, combos=["pairs"], seeds=args.seeds, executor=executor,
                               workers=args.workers, cache_dir=root / "cache")
            wall = time.perf_counter() - started
            loads.append(local_load()[0])
            after = os.times()
            rows[executor] = {
                "runs": len(result.trained), "failed": len(result.failed), "wall_s": round(wall, 2),
                "s_per_run": round(wall / max(1, len(result.runs)), 3),
                # this process and its finished children (local worker processes; Ray's run elsewhere)
                "cpu_s_this_process_and_children": round(sum(after[:4]) - sum(cpu[:4]), 2),
                "load_average_1m_before_after": [round(x, 2) for x in loads],
            }
        identical = (root / "local" / "results.csv").read_bytes() == (root / "ray" / "results.csv").read_bytes()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record = {
        "benchmark": "sweep_executors",
        "tasks": TASKS, "combos": "pairs", "seeds": args.seeds, "steps": args.steps, "hidden": args.hidden,
        "scale": args.scale, "workers": args.workers,
        "executors": rows,
        "ray_vs_local_wall": round(rows["ray"]["wall_s"] / rows["local"]["wall_s"], 3),
        "results_identical": identical,
        **started_load, "load_1m_at_end": local_load()[0],
        "machine": {**local_environment(), "arch": platform.machine(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": script_argv(),
    }
    atomic.write_json(args.results, record)
    print(json.dumps(record, indent=2))
    if not identical:
        sys.exit("the two executors gave different results.csv files")


if __name__ == "__main__":
    main()
