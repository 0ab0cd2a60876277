"""ONNX artefacts: torch.onnx (dynamo exporter) fp32, then onnxruntime's fp16 and int8 tooling.

- ``fp32``: ``torch.onnx.export(..., dynamo=True)``, batch dimension dynamic;
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``
  (float32 input and outputs, float16 weights and compute inside);
- ``int8-dynamic``: ``quant_pre_process`` then ``quantize_dynamic`` (8-bit weights, activations
  quantised at run time): signed int8 weights for a graph of MatMuls (the DNN), unsigned for a graph
  with convolutions (``DYNAMIC_WEIGHT_TYPE``; measured in ``benchmarks/wavenet_cost.py``: with int8
  weights onnxruntime's ConvInteger made the WaveNet 3.5-5x slower than fp32, with uint8 1.1-1.25x
  fp32);
- ``int8``: ``quant_pre_process`` then ``quantize_static`` in QDQ format with MinMax calibration on
  the recorded training rows, int8 activations and weights, per-channel weights unless per-tensor.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.graph import ExportGraph, converter_message as _first_line

EXTENSION = ".onnx"
_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64"}



@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings; keep the user's terminal for our own output."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_fp32(graph: ExportGraph, input_dim: int, path: Path, label: str) -> None:
    try:
        with _quiet():
            torch.onnx.export(graph, (torch.zeros(2, input_dim),), str(path), dynamo=True, external_data=False,
                              input_names=[graph.input_name], output_names=list(graph.tasks),
                              dynamic_shapes={graph.input_name: {0: torch.export.Dim("batch")}})
    except Exception as exc:
        raise MtlEdgeError(f"onnx export of {label} failed (an op ONNX cannot take?): {_first_line(exc)}") from None


class _Reader:
    """onnxruntime CalibrationDataReader over a fixed feature matrix, in fixed-size batches."""

    def __init__(self, features: np.ndarray, input_name: str, batch: int = 64):
        self._batches = iter([{input_name: np.ascontiguousarray(features[i:i + batch], dtype=np.float32)}
                              for i in range(0, len(features), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # not needed by MinMax, kept for the protocol
        pass


# dynamic quantisation's weight type -> what the manifest says; chosen per graph by ``dynamic_weight_type``
DYNAMIC_WEIGHT_TYPE = {"QInt8": "int8", "QUInt8": "uint8 (the graph has convolutions: ConvInteger is slow with int8 weights)"}


def dynamic_weight_type(path: Path) -> str:
    """``QUInt8`` for a graph with convolutions, else ``QInt8`` (see the module docstring for the measurement)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return "QUInt8" if any(node.op_type in ("Conv", "ConvTranspose") for node in graph.node) else "QInt8"


def build(graph: ExportGraph, input_dim: int, precision: str, path: Path, workdir: Path, label: str,
          calibration: np.ndarray | None = None, per_channel: bool = True) -> dict:
    """Write the ``precision`` artefact of ``graph`` to ``path``; return its manifest details."""
    import onnx

    base = workdir / f"{label.replace(':', '-')}.fp32.onnx"
    if not base.exists():
        export_fp32(graph, input_dim, base, label)
    quant: dict = {"scheme": "none", "per_channel": None, "calibration": None}
    try:
        with _quiet():
            if precision == "fp32":
                shutil.copyfile(base, path)
            elif precision == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                model16 = convert_float_to_float16(onnx.load(str(base)), keep_io_types=True)
                onnx.save(model16, str(path))
                quant = {"scheme": "float16 weights and compute (float32 input/outputs)", "per_channel": None, "calibration": None}
            else:
                from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
                from onnxruntime.quantization.shape_inference import quant_pre_process

                pre = workdir / f"{label.replace(':', '-')}.pre.onnx"
                if not pre.exists():
                    quant_pre_process(str(base), str(pre))
                if precision == "int8-dynamic":
                    weights = dynamic_weight_type(pre)
                    quantize_dynamic(str(pre), str(path), per_channel=per_channel, weight_type=getattr(QuantType, weights))
                    quant = {"scheme": f"dynamic int8 ({DYNAMIC_WEIGHT_TYPE[weights]} weights, activations quantised at run time)",
                             "weight_type": weights, "per_channel": per_channel, "calibration": None}
                elif precision == "int8":
                    if calibration is None:
                        raise MtlEdgeError("static int8 needs calibration features")
                    quantize_static(str(pre), str(path), _Reader(calibration, graph.input_name), quant_format=QuantFormat.QDQ,
                                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
                    quant = {"scheme": "static int8 QDQ (MinMax calibration)", "per_channel": per_channel,
                             "calibration": None}  # the caller fills in the calibration file
                else:
                    raise MtlEdgeError(f"unknown precision {precision!r}")
    except MtlEdgeError:
        raise
    except Exception as exc:
        raise MtlEdgeError(f"onnx {precision} conversion of {label} failed: {_first_line(exc)}") from None
    return {"quantization": quant, **describe(path)}


def describe(path: Path) -> dict:
    """Opset and input/output names, shapes and dtypes, read from the written file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def io_list(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": _DTYPES.get(t.elem_type, str(t.elem_type))})
        return out

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "inputs": io_list(model.graph.input), "outputs": io_list(model.graph.output)}
