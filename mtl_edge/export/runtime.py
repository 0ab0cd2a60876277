"""Run an exported artefact with its real runtime: onnxruntime, the LiteRT interpreter or TorchScript.

``load_artefact(entry, folder)`` takes a manifest entry and returns ``fn(features) -> {task: logits}``
for a float32 [N, F] matrix (any N; a batch-1 TFLite graph is run row by row). TFLite artefacts are
run through the signature runner by output *name*, never by output index. TorchScript artefacts
(format ``torch``) are loaded with ``torch.jit.load`` and return their ``{task: logits}`` dict; their
``threads`` sets PyTorch's process-wide intra-op thread count (``torch.set_num_threads``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from mtl_edge.errors import MtlEdgeError

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def onnx_runner(path: str | Path, threads: int = 1) -> tuple[Runner, Runner]:
    """(batch runner, single-call runner) over an onnxruntime CPU session with ``threads`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise MtlEdgeError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0][:300]}") from None
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(features: np.ndarray) -> dict[str, np.ndarray]:
        outs = session.run(None, {input_name: np.ascontiguousarray(features, dtype=np.float32)})
        return dict(zip(names, outs))

    return run, run


def tflite_runner(path: str | Path, threads: int = 1, signature: str = "serving_default") -> tuple[Runner, Runner]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        runner = interp.get_signature_runner(signature)
    except Exception as exc:
        raise MtlEdgeError(f"{path}: the LiteRT interpreter cannot load it: {str(exc).splitlines()[0][:300]}") from None
    (input_name, detail), = runner.get_input_details().items()
    batch = int(detail["shape"][0])
    in_dtype = np.dtype(detail["dtype"])
    in_scale, in_zero = detail["quantization"]
    dequant = {name: d["quantization"] for name, d in runner.get_output_details().items()
               if np.issubdtype(np.dtype(d["dtype"]), np.integer)}

    def call(features: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if np.issubdtype(in_dtype, np.integer):  # a graph with a quantised input: quantise as the runtime expects
            info = np.iinfo(in_dtype)
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max).astype(in_dtype)
        out = runner(**{input_name: x})
        return {k: ((v.astype(np.float32) - dequant[k][1]) * np.float32(dequant[k][0]) if k in dequant else np.array(v))
                for k, v in out.items()}

    def run(features: np.ndarray) -> dict[str, np.ndarray]:
        if len(features) == batch:
            return call(features)
        if batch != 1:
            raise MtlEdgeError(f"{path}: fixed batch {batch} does not divide {len(features)} rows")
        parts = [call(features[i:i + 1]) for i in range(len(features))]
        return {k: np.concatenate([p[k] for p in parts]) for k in (parts[0] if parts else {})}

    return run, call


def torch_runner(path: str | Path, threads: int = 1) -> tuple[Runner, Runner]:
    """(batch runner, single-call runner) over a TorchScript module; sets torch's (process-wide) thread count."""
    import torch

    from mtl_edge.export.torchscript import load

    module, _ = load(path)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

    def run(features: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        with torch.inference_mode():
            out = module(x)
        return {k: v.numpy() for k, v in out.items()}

    return run, run


def runners(fmt: str, path: str | Path, threads: int = 1) -> tuple[Runner, Runner]:
    if fmt == "onnx":
        return onnx_runner(path, threads)
    if fmt == "tflite":
        return tflite_runner(path, threads)
    if fmt == "torch":
        return torch_runner(path, threads)
    raise MtlEdgeError(f"unknown artefact format {fmt!r} (onnx, tflite or torch)")


def load_artefact(entry: dict, folder: str | Path, threads: int = 1) -> Runner:
    """``fn(inputs) -> {task: logits}`` for one manifest entry of the export in ``folder``.

    ``inputs``: features [N, F] float32, or waveforms [N, samples] for an end-to-end entry (``input.name``
    ``waveform``).
    """
    if entry.get("status") == "unsupported" or not entry.get("path"):
        raise MtlEdgeError(f"{entry.get('model')} {entry.get('format')} {entry.get('precision')}: unsupported, no artefact "
                           f"({entry.get('reason')})")
    path = Path(folder) / entry["path"]
    if not path.is_file():
        raise MtlEdgeError(f"{path}: listed in the manifest but missing")
    return runners(entry["format"], path, threads)[0]


def measure_latency(call: Runner, row: np.ndarray, runs: int = 200, warmup: int = 20, threads: int = 1) -> dict:
    """Median / p90 wall time in ms of ``call(row)`` (one [1, F] row), after ``warmup`` calls."""
    row = np.ascontiguousarray(row.reshape(1, -1), dtype=np.float32)
    for _ in range(warmup):
        call(row)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call(row)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    return {"median_ms": round(statistics.median(times), 5), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 5),
            "runs": runs, "warmup": warmup, "threads": threads, "batch": 1}
