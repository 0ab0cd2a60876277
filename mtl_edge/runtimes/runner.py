"""The measurement runner: a standalone script that imports only the standard library, numpy and one runtime.

It never imports mtl_edge, so the same file can be copied to a device (Raspberry Pi, Android/Termux) and
run there by a transport, with the runtime's module of ``mtl_edge.runtimes`` beside it (the job names
its path). Usage::

    python runner.py JOB.json      # or: python runner.py - < JOB.json

The job (JSON)::

    {"runtime": "onnxruntime", "runtime_module": "/abs/rt_onnxruntime.py", "runtime_options": {},
     "artefacts": [{"name": "multi", "path": "/abs/multi.fp32.onnx"}, ...],   # several = co-resident
     "inputs": "/abs/inputs.npy", "input_name": "features",  # float32 [N, ...]: one test clip per inference
     "threads": 1, "warmup": 10, "min_runs": 50, "min_secs": 1.0, "max_secs": 10.0, "windows": 10,
     "answers": {"kws": "top1", "denoise": "values"}}    # optional: also return each artefact's answers

What it does, as TFLite's benchmark_model and onnxruntime_perf_test do:

1. load the inputs, import numpy and the runtime, then reset the memory high-water mark
   (``echo 5 > /proc/self/clear_refs``) and read ``VmRSS``: the resident size after import;
2. per artefact: time the load/init (session or interpreter + signature runner), then the first
   inference on its own;
3. ``warmup`` runs, then measured runs until both ``min_runs`` and ``min_secs`` are reached, capped by
   ``max_secs``. With several artefacts (co-resident mode) one run is every artefact back to back on
   the same clip; the run time is their sum and each artefact's own times are kept too. Clips cycle
   through the input rows (batch 1: a feature row or one clip's waveform);
4. ``VmHWM`` (the process's own peak since the reset) and ``VmRSS`` at the end;
5. with ``answers``: per artefact, task and input row the top-1 answer (``"top1"``, or ``true`` for
   every output) or the output values (``"values"``), so the harness can check a device answers like
   the desktop (after the clock and memory readings).

Every input conversion (a quantised TFLite input, ``torch.from_numpy``) happens in the runtime module's
``prepare``, before the clock starts: only ``call`` is timed. Progress goes to stderr as
``STEP <step> <artefact>`` lines (the harness names the step of a hang or crash from them); the result
is one JSON object on stdout followed by the line ``MTL-EDGE-RUNNER-END`` (``parse_report`` reads it).
The process's own ``/proc/self/status`` is read; ``ru_maxrss`` is never used. ``latency_stats`` is the
benchmark's one implementation of its latency statistics.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

END_MARKER = "MTL-EDGE-RUNNER-END"
RUNNER_VERSION = 3


def _step(step: str, name: str = "-") -> None:
    sys.stderr.write(f"STEP {step} {name}\n")
    sys.stderr.flush()


def _status_kb() -> dict:
    """VmRSS / VmHWM / VmPeak of this process in kB (empty where /proc is missing)."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "VmPeak"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def load_module(path: str, name: str = "runtime"):
    """Import a runtime module (see ``mtl_edge.runtimes``) from its file, shipped beside this script."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"mtl_edge_runtime_{name.replace('-', '_')}", path)
    if spec is None:
        raise ValueError(f"cannot import the runtime module {path!r}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def percentile(sorted_values: list[float], q: float) -> float:
    """numpy's default (linear interpolation) percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_stats(ms, windows: int = 10) -> dict:
    """mean, std (sample), min, max, p50/p90/p99 (linear interpolation) and the median of per-window medians.

    Windows split the runs in order as ``numpy.array_split`` does, at most one window per 5 runs.
    """
    ms = [float(v) for v in ms]
    if not ms:
        raise ValueError("no latencies")
    n_win = max(1, min(int(windows), len(ms) // 5 or 1))
    base, extra = divmod(len(ms), n_win)
    medians, at = [], 0
    for w in range(n_win):
        size = base + (1 if w < extra else 0)
        medians.append(percentile(sorted(ms[at:at + size]), 50))
        at += size
    ordered = sorted(ms)
    mean = sum(ms) / len(ms)
    std = (sum((v - mean) ** 2 for v in ms) / (len(ms) - 1)) ** 0.5 if len(ms) > 1 else 0.0
    return {"runs": len(ms), "mean_ms": mean, "std_ms": std, "min_ms": ordered[0], "max_ms": ordered[-1],
            "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90), "p99_ms": percentile(ordered, 99),
            "window_p50_ms": percentile(sorted(medians), 50), "window_min_p50_ms": min(medians),
            "window_max_p50_ms": max(medians), "windows": len(medians)}


def parse_report(stdout: str) -> dict:
    """The JSON report of a finished runner from its stdout (ValueError when there is none)."""
    if END_MARKER not in stdout:
        raise ValueError("the runner's output has no end marker")
    body = stdout[:stdout.rindex(END_MARKER)].strip().splitlines()
    report = json.loads(body[-1]) if body else None
    if not isinstance(report, dict):
        raise ValueError("the runner's report is not a JSON object")
    return report


def _answer(kind: str, output, np):
    """A top-1 class (classification) or the output values themselves (any other task kind)."""
    values = np.asarray(output)
    if kind == "top1":
        return int(np.argmax(values.reshape(-1)))
    return [float(v) for v in values.astype(np.float64).reshape(-1)]


def run_job(job: dict) -> dict:
    import numpy as np

    _step("inputs")
    inputs = np.load(job.get("inputs") or job["features"], allow_pickle=False).astype(np.float32, copy=False)
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty [N, ...] array, got shape {inputs.shape}")
    rows = [np.ascontiguousarray(inputs[i:i + 1]) for i in range(inputs.shape[0])]
    threads = int(job.get("threads", 1))
    runtime = job["runtime"]
    options = job.get("runtime_options") or {}

    _step("import", runtime)
    t0 = time.perf_counter_ns()
    if not job.get("runtime_module"):
        raise ValueError(f"the job names no runtime_module for runtime {runtime!r}")
    rt = load_module(job["runtime_module"], runtime)
    runtime_version = rt.version(**options)
    if hasattr(rt, "configure"):
        rt.configure(threads)
    thread_pool = "per-session"
    if len(job["artefacts"]) > 1 and hasattr(rt, "share_threads"):  # co-resident: the runtime's shared pool
        thread_pool = rt.share_threads(threads)
    import_ms = (time.perf_counter_ns() - t0) / 1e6
    hwm_reset = _reset_hwm()
    after_import = _status_kb()

    models = []
    for art in job["artefacts"]:
        name = art["name"]
        _step("load", name)
        t0 = time.perf_counter_ns()
        model = rt.load(art["path"], threads, **options)
        init_ms = (time.perf_counter_ns() - t0) / 1e6
        wanted = job.get("input_name") or "features"
        input_name = wanted if wanted in model.input_names or len(model.input_names) != 1 else model.input_names[0]
        feeds = [model.prepare({input_name: r}) for r in rows]
        _step("first", name)
        t0 = time.perf_counter_ns()
        model.call(feeds[0])
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        models.append({"name": name, "call": model.call, "named": model.named, "feeds": feeds, "init_ms": init_ms,
                       "first_ms": first_ms, "times": []})

    n_rows = len(rows)
    _step("warmup", "+".join(m["name"] for m in models))
    for i in range(int(job.get("warmup", 10))):
        for m in models:
            m["call"](m["feeds"][i % n_rows])

    min_runs, min_secs, max_secs = int(job["min_runs"]), float(job["min_secs"]), float(job["max_secs"])
    _step("measure", "+".join(m["name"] for m in models))
    clock = time.perf_counter_ns
    totals: list[float] = []
    start = clock()
    min_ns, max_ns = min_secs * 1e9, max_secs * 1e9
    i = 0
    if len(models) == 1:  # the common case: no per-model bookkeeping inside the timed loop
        call, feeds = models[0]["call"], models[0]["feeds"]
        while True:
            feed = feeds[i % n_rows]
            t0 = clock()
            call(feed)
            t1 = clock()
            totals.append(t1 - t0)
            i += 1
            elapsed = t1 - start
            if elapsed >= max_ns or (i >= min_runs and elapsed >= min_ns):
                break
        models[0]["times"] = totals
    else:
        while True:
            total = 0
            for m in models:
                t0 = clock()
                m["call"](m["feeds"][i % n_rows])
                dt = clock() - t0
                m["times"].append(dt)
                total += dt
            totals.append(total)
            i += 1
            elapsed = clock() - start
            if elapsed >= max_ns or (i >= min_runs and elapsed >= min_ns):
                break
    wall_s = (clock() - start) / 1e9
    end = _status_kb()
    predictions = None
    kinds = job.get("answers")
    if kinds:  # after the clock and the memory reading: the answers cost neither
        predictions = {}
        for m in models:
            _step("answers", m["name"])
            per_task: dict = {}
            for feed in m["feeds"]:
                for task, output in m["named"](m["call"](feed)).items():
                    kind = "top1" if kinds is True else kinds.get(task, "top1")
                    per_task.setdefault(task, []).append(_answer(kind, output, np))
            predictions[m["name"]] = per_task
    _step("report")
    windows = int(job.get("windows", 10))

    def summary(ns: list[int]) -> dict:
        ms = [v / 1e6 for v in ns]
        return {**latency_stats(ms, windows), "times_ms": ms}

    return {
        "runner_version": RUNNER_VERSION,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy_version": np.__version__,
        "pid": os.getpid(),
        "threads": threads,
        "thread_pool": thread_pool,
        "clips": n_rows,
        "import_ms": import_ms,
        "hwm_reset": hwm_reset,
        "rss_after_import_kb": after_import.get("VmRSS"),
        "peak_rss_kb": end.get("VmHWM"),
        "rss_end_kb": end.get("VmRSS"),
        "warmup_runs": int(job.get("warmup", 10)),
        "wall_s": wall_s,
        "capped": bool(i < min_runs or wall_s < min_secs),
        "total": summary(totals),
        "artefacts": [{"name": m["name"], "init_ms": m["init_ms"], "first_ms": m["first_ms"],
                       **(latency_stats([v / 1e6 for v in m["times"]], windows) if len(models) > 1 else {})}
                      for m in models],
        **({"predictions": predictions} if predictions is not None else {}),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: runner.py JOB.json | -\n")
        return 2
    job = json.load(sys.stdin) if argv[1] == "-" else json.load(open(argv[1]))
    result = run_job(job)
    sys.stdout.write(json.dumps(result) + "\n" + END_MARKER + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
