"""Wall time to build the demo corpus, written to benchmarks/results/demo_corpus.json.

Run: .venv/bin/python benchmarks/demo_corpus.py [--scale 1] [--workers 2] [--out DIR] [--results FILE] [--allow-busy]
Without --out the corpus is built in a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.bench.environment import local_environment
from mtl_edge.bench.load import gate, local_load, script_argv
from mtl_edge.data.demo.builder import DemoConfig, build_demo
from mtl_edge.data.describe import describe_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the corpus here (default: temporary)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "demo_corpus.json")
    parser.add_argument("--allow-busy", action="store_true",
                        help="write a committed result even when the 1-minute load is above 0.5 (recorded)")
    args = parser.parse_args()
    started_load = gate(args.allow_busy, "demo_corpus.py", args.results)

    folder = args.out or Path(tempfile.mkdtemp(prefix="mtl-edge-demo-bench-")) / "demo"
    try:
        started = time.perf_counter()
        result = build_demo(DemoConfig(scale=args.scale, seed=args.seed), folder, workers=args.workers, force=True)
        build_wall_s = time.perf_counter() - started
        started = time.perf_counter()
        report = describe_corpus(folder)
        describe_wall_s = time.perf_counter() - started
    finally:
        if args.out is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
    audio_s = report["corpus"]["total_length_s"]
    record = {
        "benchmark": "demo_corpus_build",
        "argv": script_argv(),
        **started_load, "load_1m_at_end": local_load()[0],
        "scale": args.scale,
        "seed": args.seed,
        "workers": args.workers,
        "clips": result.clips,
        "manifest_rows": result.rows,
        "audio_s": audio_s,
        "build_wall_s": round(build_wall_s, 2),
        "clips_per_s": round(result.clips / build_wall_s, 1),
        "describe_wall_s": round(describe_wall_s, 2),
        "duplicate_audio_across_splits": report["corpus"]["duplicate_audio_across_splits"],
        "machine": {**local_environment(), "arch": platform.machine(), "python": platform.python_version(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python benchmarks/demo_corpus.py " + " ".join(
            f"--{k} {v}" for k, v in (("scale", args.scale), ("seed", args.seed), ("workers", args.workers))),
    }
    atomic.write_json(args.results, record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
