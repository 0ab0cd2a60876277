"""Measure the feature front-end (``mtl_edge.features.logmel.extract`` on one clip) in its own process.

The exported graphs take the clip-level feature vector, so the front-end's cost is paid once per
model that runs on its own and once for models that share it (``*_shared_frontend`` and
``*_frontend_per_model`` fields of the compare line). Run as::

    python -m mtl_edge.bench.frontend JOB.json

with a job ``{"clips": [paths...], "feature_config": {...}, "warmup": N, "min_runs": N, "min_secs": S,
"max_secs": S}``. The clips are decoded first (decoding is not counted), then numpy and the
front-end are imported and the memory high-water mark is reset, as in the model runner; the
output has the runner's format (JSON on stdout, then the end marker).
"""

from __future__ import annotations

import json
import platform
import sys
import time

from mtl_edge.runtimes.runner import END_MARKER, _reset_hwm, _status_kb, _step, percentile


def run_job(job: dict) -> dict:
    import numpy as np

    from mtl_edge.data.audio import load_audio
    from mtl_edge.features.logmel import FeatureConfig, extract

    cfg = FeatureConfig.from_json(job["feature_config"])
    _step("decode", "frontend")
    clips = [load_audio(p, cfg.sample_rate).samples for p in job["clips"]]
    _step("first", "frontend")
    t0 = time.perf_counter_ns()
    extract(clips[0], cfg)  # the first call imports what the front-end needs lazily: part of the baseline
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    hwm_reset = _reset_hwm()
    after_import = _status_kb()
    _step("warmup", "frontend")
    for i in range(int(job.get("warmup", 3))):
        extract(clips[i % len(clips)], cfg)
    _step("measure", "frontend")
    times = []
    start = time.perf_counter_ns()
    i = 0
    while True:
        t0 = time.perf_counter_ns()
        extract(clips[i % len(clips)], cfg)
        t1 = time.perf_counter_ns()
        times.append((t1 - t0) / 1e6)
        i += 1
        if t1 - start >= job["max_secs"] * 1e9 or (i >= job["min_runs"] and t1 - start >= job["min_secs"] * 1e9):
            break
    end = _status_kb()
    ordered = sorted(times)
    return {"runtime": "numpy", "runtime_version": np.__version__, "machine": platform.machine(),
            "hwm_reset": hwm_reset, "rss_after_import_kb": after_import.get("VmRSS"), "peak_rss_kb": end.get("VmHWM"),
            "first_ms": first_ms, "runs": len(times), "p50_ms": percentile(ordered, 50),
            "p90_ms": percentile(ordered, 90), "mean_ms": sum(times) / len(times),
            "clip_seconds": float(np.mean([len(c) for c in clips]) / cfg.sample_rate), "clips": len(clips)}


def main(argv: list[str]) -> int:
    job = json.load(open(argv[1]))
    sys.stdout.write(json.dumps(run_job(job)) + "\n" + END_MARKER + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
