"""TorchScript artefacts (format ``torch``): the export graph traced and frozen, loadable by ``torch.jit.load``.

- ``fp32`` only: ``torch.jit.trace`` of the export graph on a [2, F] input (batch dimension free),
  then ``torch.jit.freeze`` (weights become constants, no autograd state), saved with
  ``torch.jit.save``. ``forward(features)`` returns a dict ``{task: logits}`` in the checkpoint's task
  order; the file also carries ``extra/mtl_edge.json`` (input name and size, output names in order),
  readable with ``torch.jit.load(path, _extra_files={"mtl_edge.json": ""})``. The file is TorchScript,
  not a pickle: it loads in any PyTorch (or libtorch) without mtl_edge.
- ``fp16``, ``int8-dynamic``, ``int8``: recorded as unsupported with the reason (not produced, never
  faked): PyTorch has no CPU deployment path for them that this toolkit verifies -- use the ONNX or
  TFLite artefacts at those precisions.

TorchScript is deprecated upstream (PyTorch 2.5+) in favour of ``torch.export``; its deprecation
warnings are silenced here and in the runtime loaders, the format itself still loads and runs.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.graph import INPUT_NAME, ExportGraph, converter_message as _first_line

EXTENSION = ".pt"
METADATA = "mtl_edge.json"
_UNSUPPORTED = {
    "fp16": "the torch format is exported at fp32 only: PyTorch's CPU float16 kernels are not a deployment path "
            "this toolkit verifies (use the onnx or tflite fp16 artefacts)",
    "int8-dynamic": "the torch format is exported at fp32 only: torch.ao int8 quantisation of TorchScript is not "
                    "produced here (use the onnx or tflite int8-dynamic artefacts)",
    "int8": "the torch format is exported at fp32 only: torch.ao static int8 quantisation of TorchScript is not "
            "produced here (use the onnx or tflite int8 artefacts)",
}


@contextlib.contextmanager
def quiet():
    """TorchScript's own deprecation warnings (trace, save, load) are not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        yield


def build(graph: ExportGraph, input_dim: int, precision: str, path: Path, workdir: Path, label: str,
          calibration: np.ndarray | None = None, per_channel: bool = True) -> dict:
    """Write the ``precision`` artefact of ``graph`` to ``path``; return its manifest details."""
    from mtl_edge.errors import Unsupported

    if precision in _UNSUPPORTED:
        raise Unsupported(f"torch {precision} of {label}: {_UNSUPPORTED[precision]}")
    if precision != "fp32":
        raise MtlEdgeError(f"unknown precision {precision!r}")
    tasks = list(graph.tasks)
    meta = {"input": graph.input_name, "input_features": int(input_dim), "outputs": tasks,
            "returns": "dict {task: float32 logits [batch, labels]} in task order", "torch_version": torch.__version__}
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(graph.eval(), (torch.zeros(2, input_dim),), strict=False, check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
            torch.jit.save(frozen, str(path), _extra_files={METADATA: json.dumps(meta)})
    except Exception as exc:
        raise MtlEdgeError(f"torch {precision} (TorchScript trace) of {label} failed (an op TorchScript cannot take?): "
                           f"{_first_line(exc)}") from None
    quant = {"scheme": "none", "per_channel": None, "calibration": None}
    return {"quantization": quant, "torchscript": {"method": "torch.jit.trace + torch.jit.freeze",
                                                   "torch_version": torch.__version__}, **describe(path)}


def load(path: str | Path):
    """``(module, metadata)`` of a TorchScript artefact, on the CPU, in eval mode."""
    extra = {METADATA: ""}
    try:
        with quiet():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise MtlEdgeError(f"{path}: torch.jit.load cannot load it: {str(exc).splitlines()[0][:300]}") from None
    module.eval()
    try:
        meta = json.loads(extra[METADATA] or "{}")
    except ValueError:
        meta = {}
    return module, meta


def describe(path: Path) -> dict:
    """Input and output names, shapes and dtypes: outputs as the loaded module returns them on one zero row."""
    module, meta = load(path)
    features = meta.get("input_features")
    if not features:
        raise MtlEdgeError(f"{path}: no {METADATA} with the input size in the TorchScript file")
    with quiet(), torch.inference_mode():
        out = module(torch.zeros(1, int(features)))
    if not isinstance(out, dict):
        raise MtlEdgeError(f"{path}: forward returns {type(out).__name__}, not a dict of task logits")
    return {"inputs": [{"name": meta.get("input", INPUT_NAME), "shape": ["batch", int(features)], "dtype": "float32"}],
            "outputs": [{"name": k, "shape": ["batch", *(int(d) for d in v.shape[1:])], "dtype": str(v.dtype).removeprefix("torch.")}
                        for k, v in out.items()]}
