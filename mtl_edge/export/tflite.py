"""TFLite (LiteRT) artefacts converted by litert-torch, without TensorFlow.

- ``fp32``: ``litert_torch.convert`` of the export graph (signature ``serving_default``, input
  ``features``, outputs named by task);
- ``fp16``: ai-edge-quantizer's FLOAT_CASTING weight-only recipe on the fp32 model (float16 weights,
  dequantised to float32 at load; compute stays float32) -- the LiteRT notion of an fp16 model;
- ``int8-dynamic``: PT2E dynamic quantisation (int8 weights, dynamic-range kernels);
- ``int8``: PT2E static quantisation, int8 weights and activations, calibrated on the recorded
  training rows (float32 input; the converter makes the outputs int8, so each output's ``scale`` and ``zero_point``
  are recorded in the manifest and ``load_artefact`` returns dequantised float32 logits).

The batch dimension is fixed at 1: litert-torch 0.10.0 fails to lower a dynamic batch through the
broadcast subtraction of the input standardisation (``Only non-negative indices are allowed when
broadcasting``). Run these artefacts through the signature runner, row by row, never by output index.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from mtl_edge.errors import MtlEdgeError, Unsupported
from mtl_edge.export.graph import ExportGraph, converter_message as _first_line

EXTENSION = ".tflite"
SIGNATURE = "serving_default"
BATCH = 1



@contextlib.contextmanager
def _quiet_native_stderr():
    """The MLIR converter logs to file descriptor 2 from C++; park it in a temporary file meanwhile."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _quiet():
    old = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_native_stderr():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        if old is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = old


def _sample(input_dim: int, name: str) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(BATCH, input_dim)}


def _convert(module, input_dim: int, path: Path, name: str, quant_config=None) -> None:
    import litert_torch

    edge = litert_torch.convert(module, sample_kwargs=_sample(input_dim, name), quant_config=quant_config)
    edge.export(str(path))


def _pt2e(graph: ExportGraph, input_dim: int, path: Path, *, dynamic: bool, per_channel: bool,
          calibration: np.ndarray | None) -> None:
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic))
    name = graph.input_name
    module = torch.export.export(graph, (), _sample(input_dim, name)).module()
    module = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        if calibration is not None:
            for row in calibration:  # the graph has batch 1
                module(**{name: torch.from_numpy(np.ascontiguousarray(row[None], dtype=np.float32))})
        else:
            module(**_sample(input_dim, name))  # per-channel weight observers need one pass
    module = convert_pt2e(module, fold_quantize=False)
    move_exported_model_to_eval(module)
    _convert(module, input_dim, path, name, quant_config.QuantConfig(pt2e_quantizer=quantizer))


def _fp16(fp32_path: Path, path: Path) -> None:
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(str(fp32_path))
    q.update_quantization_recipe(
        regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
        algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    result = q.quantize(enable_progress_report=False)
    path.write_bytes(result.quantized_model)


def build(graph: ExportGraph, input_dim: int, precision: str, path: Path, workdir: Path, label: str,
          calibration: np.ndarray | None = None, per_channel: bool = True) -> dict:
    """Write the ``precision`` artefact of ``graph`` to ``path``; return its manifest details."""
    base = workdir / f"{label.replace(':', '-')}.fp32.tflite"
    try:
        with _quiet():
            if precision in ("fp32", "fp16") and not base.exists():
                _convert(graph, input_dim, base, graph.input_name)
            if precision == "fp32":
                path.write_bytes(base.read_bytes())
                quant = {"scheme": "none", "per_channel": None, "calibration": None}
            elif precision == "fp16":
                try:
                    _fp16(base, path)
                except Exception as exc:
                    raise Unsupported(f"tflite fp16 (ai-edge-quantizer float casting) failed for {label}: {_first_line(exc)}") from None
                quant = {"scheme": "float16 weights (ai-edge-quantizer FLOAT_CASTING), float32 compute",
                         "per_channel": None, "calibration": None}
            elif precision == "int8-dynamic":
                _pt2e(graph, input_dim, path, dynamic=True, per_channel=per_channel, calibration=None)
                quant = {"scheme": "PT2E dynamic int8 (int8 weights, dynamic-range kernels)",
                         "per_channel": per_channel, "calibration": None}
            elif precision == "int8":
                if calibration is None:
                    raise MtlEdgeError("static int8 needs calibration features")
                _pt2e(graph, input_dim, path, dynamic=False, per_channel=per_channel, calibration=calibration)
                quant = {"scheme": "PT2E static int8 (int8 weights and activations, histogram calibration)",
                         "per_channel": per_channel, "calibration": None}
            else:
                raise MtlEdgeError(f"unknown precision {precision!r}")
    except MtlEdgeError:
        raise
    except Exception as exc:
        raise MtlEdgeError(f"tflite {precision} conversion of {label} failed (an op LiteRT cannot take?): "
                           f"{_first_line(exc)}") from None
    return {"quantization": quant, **describe(path)}


def describe(path: Path) -> dict:
    """Schema version, signature and input/output names, shapes and dtypes (outputs in graph order)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    sig = interp._get_full_signature_list().get(SIGNATURE)
    if sig is None:
        raise MtlEdgeError(f"{path.name}: no {SIGNATURE!r} signature in the converted model")
    runner = interp.get_signature_runner(SIGNATURE)
    by_index_in = {d["index"]: (name, d) for name, d in runner.get_input_details().items()}
    by_index_out = {d["index"]: (name, d) for name, d in runner.get_output_details().items()}

    def entry(name, d):
        e = {"name": name, "shape": [int(s) for s in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name}
        if np.issubdtype(np.dtype(d["dtype"]), np.integer):  # full-int8 graphs: dequantise with these
            scale, zero_point = d["quantization"]
            e["quantization"] = {"scale": float(scale), "zero_point": int(zero_point),
                                 "real_value": "scale * (q - zero_point)"}
        return e

    # the subgraph's output order is the torch dict order; the signature map itself is keyed by name
    outputs = [entry(*by_index_out[d["index"]]) for d in interp.get_output_details() if d["index"] in by_index_out]
    inputs = [entry(*by_index_in[d["index"]]) for d in interp.get_input_details() if d["index"] in by_index_in]
    schema = _schema_version(path)
    return {"schema": schema, "signature": SIGNATURE, "inputs": inputs, "outputs": outputs}


def _schema_version(path: Path) -> int | None:
    """The TFLite flatbuffer schema version (a uint32 at the root table's ``version`` field)."""
    try:
        from ai_edge_litert import schema_py_generated as schema  # type: ignore

        return int(schema.Model.GetRootAs(path.read_bytes(), 0).Version())
    except Exception:
        return None
