"""The measurement runner: a standalone script that imports only the standard library, numpy and one runtime.

It never imports mtl_edge, so the same file can be copied to a device (Raspberry Pi, Android/Termux) and
run there by a transport. Usage::

    python runner.py JOB.json      # or: python runner.py - < JOB.json

The job (JSON)::

    {"runtime": "onnxruntime" | "litert" | "tflite-runtime" | "torch",
     "artefacts": [{"name": "multi", "path": "/abs/multi.fp32.onnx"}, ...],   # several = co-resident
     "features": "/abs/features.npy",        # float32 [N, F]: real test clips, one row per inference
     "threads": 1, "warmup": 10, "min_runs": 50, "min_secs": 1.0, "max_secs": 10.0, "windows": 10,
     "answers": true}                         # optional: also return each artefact's top-1 answer per row

What it does, as TFLite's benchmark_model and onnxruntime_perf_test do:

1. load the features, import numpy and the runtime, then reset the memory high-water mark
   (``echo 5 > /proc/self/clear_refs``) and read ``VmRSS``: the resident size after import;
2. per artefact: time the load/init (session or interpreter + signature runner), then the first
   inference on its own;
3. ``warmup`` runs, then measured runs until both ``min_runs`` and ``min_secs`` are reached, capped by
   ``max_secs``. With several artefacts (co-resident mode) one run is every artefact back to back on
   the same clip; the run time is their sum and each artefact's own times are kept too. Clips cycle
   through the feature rows (batch 1);
4. ``VmHWM`` (the process's own peak since the reset) and ``VmRSS`` at the end;
5. with ``answers``: every artefact's top-1 answer per task on every feature row (``predictions``),
   so the harness can check a device answers like the desktop (after the clock and memory readings).

TFLite artefacts run through the signature runner by input/output name; a quantised input is
quantised before the clock starts (the graph's own cost is measured). TorchScript artefacts (runtime
``torch``) are loaded with ``torch.jit.load`` on the CPU, with ``torch.set_num_threads(threads)``, one
inter-op thread and autograd off for the whole process; the numpy row is wrapped by
``torch.from_numpy`` (no copy) before the clock starts. Progress goes to stderr as
``STEP <step> <artefact>`` lines (the harness names the step of a hang or crash from them); the result
is one JSON object on stdout followed by the line ``MTL-EDGE-RUNNER-END``. The process's own
``/proc/self/status`` is read; ``ru_maxrss`` is never used.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

END_MARKER = "MTL-EDGE-RUNNER-END"
RUNNER_VERSION = 1


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


def _onnx_loader(threads: int):
    import onnxruntime as ort

    def load(path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        output_names = [o.name for o in session.get_outputs()]
        run = session.run

        def prepare(row):
            return {input_name: row}

        def call(feed):
            return run(None, feed)

        def named(out):
            return dict(zip(output_names, out))

        return prepare, call, named

    return load, ort.__version__


def _litert_loader(threads: int, package: str = "ai-edge-litert"):
    """LiteRT (ai-edge-litert) or the older tflite-runtime that many Raspberry Pi images carry."""
    import numpy as np

    if package == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        from ai_edge_litert.interpreter import Interpreter

    try:
        from importlib.metadata import version

        runtime_version = version(package)
    except Exception:  # noqa: BLE001 - a device install without metadata
        runtime_version = "unknown"

    def load(path: str):
        interp = Interpreter(model_path=path, num_threads=threads)
        runner = interp.get_signature_runner("serving_default")
        (input_name, detail), = runner.get_input_details().items()
        in_dtype = np.dtype(detail["dtype"])
        scale, zero = detail["quantization"]

        def prepare(row):
            if np.issubdtype(in_dtype, np.integer):
                info = np.iinfo(in_dtype)
                row = np.clip(np.round(row / scale) + zero, info.min, info.max).astype(in_dtype)
            return {input_name: row}

        def call(feed):
            return runner(**feed)

        def named(out):
            return out  # already {output name: array}; int8 outputs keep their order under dequantisation

        return prepare, call, named

    return load, runtime_version


def _torch_loader(threads: int):
    import warnings

    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only possible before any parallel work)
        pass
    torch.set_grad_enabled(False)  # the process only runs inference

    def load(path: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            module = torch.jit.load(path, map_location="cpu")
        module.eval()

        def prepare(row):
            return torch.from_numpy(row)

        def call(feed):
            return module(feed)

        def named(out):
            return {k: v.numpy() for k, v in out.items()}

        return prepare, call, named

    return load, torch.__version__.split("+")[0]


def _percentile(sorted_values: list[float], q: float) -> float:
    """numpy's default (linear interpolation) percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def run_job(job: dict) -> dict:
    import numpy as np

    _step("features")
    features = np.load(job["features"], allow_pickle=False).astype(np.float32, copy=False)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [N, F] matrix, got shape {features.shape}")
    rows = [np.ascontiguousarray(features[i:i + 1]) for i in range(features.shape[0])]
    threads = int(job.get("threads", 1))
    runtime = job["runtime"]

    _step("import", runtime)
    t0 = time.perf_counter_ns()
    if runtime == "onnxruntime":
        loader, runtime_version = _onnx_loader(threads)
    elif runtime == "litert":
        loader, runtime_version = _litert_loader(threads)
    elif runtime == "tflite-runtime":
        loader, runtime_version = _litert_loader(threads, "tflite-runtime")
    elif runtime == "torch":
        loader, runtime_version = _torch_loader(threads)
    else:
        raise ValueError(f"unknown runtime {runtime!r} (onnxruntime, litert, tflite-runtime or torch)")
    import_ms = (time.perf_counter_ns() - t0) / 1e6
    hwm_reset = _reset_hwm()
    after_import = _status_kb()

    models = []
    for art in job["artefacts"]:
        name = art["name"]
        _step("load", name)
        t0 = time.perf_counter_ns()
        prepare, call, named = loader(art["path"])
        init_ms = (time.perf_counter_ns() - t0) / 1e6
        feeds = [prepare(r) for r in rows]
        _step("first", name)
        t0 = time.perf_counter_ns()
        call(feeds[0])
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        models.append({"name": name, "call": call, "named": named, "feeds": feeds, "init_ms": init_ms,
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
    if job.get("answers"):  # after the clock and the memory reading: the answers cost neither
        predictions = {}
        for m in models:
            _step("answers", m["name"])
            per_task: dict = {}
            for feed in m["feeds"]:
                for task, logits in m["named"](m["call"](feed)).items():
                    per_task.setdefault(task, []).append(int(np.argmax(np.asarray(logits).reshape(-1))))
            predictions[m["name"]] = per_task
    _step("report")

    def summary(ns: list[int]) -> dict:
        ms = [v / 1e6 for v in ns]
        n_win = max(1, min(int(job.get("windows", 10)), len(ms) // 5 or 1))
        size = len(ms) / n_win
        medians = []
        for w in range(n_win):
            chunk = sorted(ms[int(w * size):int((w + 1) * size)])
            if chunk:
                medians.append(_percentile(chunk, 50))
        ordered = sorted(ms)
        mean = sum(ms) / len(ms)
        std = (sum((v - mean) ** 2 for v in ms) / (len(ms) - 1)) ** 0.5 if len(ms) > 1 else 0.0
        return {"runs": len(ms), "mean_ms": mean, "std_ms": std, "min_ms": ordered[0], "max_ms": ordered[-1],
                "p50_ms": _percentile(ordered, 50), "p90_ms": _percentile(ordered, 90),
                "p99_ms": _percentile(ordered, 99), "window_p50_ms": _percentile(sorted(medians), 50),
                "window_min_p50_ms": min(medians), "window_max_p50_ms": max(medians), "windows": len(medians),
                "times_ms": ms}

    return {
        "runner_version": RUNNER_VERSION,
        "runtime": runtime,
        "runtime_version": runtime_version,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy_version": np.__version__,
        "pid": os.getpid(),
        "threads": threads,
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
                       **({k: v for k, v in summary(m["times"]).items() if k != "times_ms"}
                          if len(models) > 1 else {})} for m in models],
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
