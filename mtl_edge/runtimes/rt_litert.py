"""The TFLite interpreter behind the runtime-module contract of ``mtl_edge.runtimes``.

``package="ai-edge-litert"`` (LiteRT) or ``package="tflite-runtime"`` (the older interpreter many
Raspberry Pi images carry): the same signature-runner API. Imports only numpy and that package: the
benchmark ships this file to a device beside the runner. Inputs and outputs go through the signature
runner by *name*; a quantised input is quantised in ``prepare`` (before a timer starts) and integer
outputs are dequantised in ``named`` (after it stops).
"""

from __future__ import annotations

SIGNATURE = "serving_default"


def _interpreter(package: str):
    if package == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter
    elif package == "ai-edge-litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        raise ValueError(f"unknown TFLite interpreter package {package!r}")
    return Interpreter


def version(package: str = "ai-edge-litert", **options) -> str:
    _interpreter(package)
    try:
        from importlib.metadata import version as dist_version

        return dist_version(package)
    except Exception:  # noqa: BLE001 - a device install without metadata
        return "unknown"


class Model:
    """One interpreter and its signature runner."""

    def __init__(self, path: str, threads: int = 1, package: str = "ai-edge-litert", **options):
        import numpy as np

        self._np = np
        interp = _interpreter(package)(model_path=str(path), num_threads=threads)
        self.runner = interp.get_signature_runner(SIGNATURE)
        inputs = self.runner.get_input_details()
        outputs = self.runner.get_output_details()
        self.input_names = list(inputs)
        # the subgraph's output order is the graph's (the torch dict order); the signature map is keyed by name
        by_index = {d["index"]: name for name, d in outputs.items()}
        order = [by_index[d["index"]] for d in interp.get_output_details() if d["index"] in by_index]
        self.output_names = order + [name for name in outputs if name not in order]
        self.batch = int(next(iter(inputs.values()))["shape"][0]) if inputs else None
        self._quant_in = {k: (np.dtype(d["dtype"]), *d["quantization"]) for k, d in inputs.items()
                          if np.issubdtype(np.dtype(d["dtype"]), np.integer)}
        self._dequant = {k: d["quantization"] for k, d in outputs.items()
                         if np.issubdtype(np.dtype(d["dtype"]), np.integer)}

    def prepare(self, inputs: dict) -> dict:
        np = self._np
        feed = {}
        for name, x in inputs.items():
            x = np.ascontiguousarray(x, dtype=np.float32)
            if name in self._quant_in:  # a graph with a quantised input: quantise as the runtime expects
                dtype, scale, zero = self._quant_in[name]
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
            feed[name] = x
        return feed

    def call(self, feed: dict):
        return self.runner(**feed)

    def named(self, raw: dict) -> dict:
        np = self._np
        return {k: ((v.astype(np.float32) - self._dequant[k][1]) * np.float32(self._dequant[k][0])
                    if k in self._dequant else np.asarray(v)) for k, v in raw.items()}


load = Model
