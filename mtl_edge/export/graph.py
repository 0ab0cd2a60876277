"""The module that every exporter converts: one [batch, D] float32 input, one output tensor per task.

A checkpoint's model is wrapped so that (1) the graph input is named after the model's input kind,
``features`` [batch, F] or ``waveform`` [batch, samples] (the argument name becomes the ONNX input
and the TFLite signature input) and (2) the outputs are a dict in the checkpoint's task order (ONNX
output names and TFLite signature output names are the task names).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError

INPUT_NAME = "features"
INPUT_NAMES = {"features": "features", "waveform": "waveform"}  # model input kind -> graph input name


class ExportGraph(nn.Module):
    """``forward(features) -> {task: output}`` in the given task order (eval mode, no dropout)."""

    input_name = INPUT_NAME

    def __init__(self, model: nn.Module, tasks: list[str]):
        super().__init__()
        self.model = model
        self.tasks = list(tasks)
        self.eval()

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return _outputs(self.model, features, self.tasks)


class WaveformExportGraph(ExportGraph):
    """``forward(waveform) -> {task: output}``: the same graph for a model that reads samples."""

    input_name = INPUT_NAMES["waveform"]

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        return _outputs(self.model, waveform, self.tasks)


def _outputs(model: nn.Module, x: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
    """The exported heads only (a registered model computes no others); any ``{task: output}`` module otherwise."""
    if hasattr(model, "forward_tasks"):
        return model.forward_tasks(x, tasks)
    out = model(x)
    return {task: out[task] for task in tasks}


def export_graph(model: nn.Module, tasks: list[str], input_dim: int, label: str, input_kind: str = "features") -> ExportGraph:
    """Wrap ``model`` and check once, in PyTorch, that it takes [batch, D] and returns every task."""
    if input_kind not in INPUT_NAMES:
        raise MtlEdgeError(f"{label}: no export graph for input kind {input_kind!r}")
    graph = (WaveformExportGraph if input_kind == "waveform" else ExportGraph)(model, tasks).eval()
    with torch.no_grad():
        try:
            out = graph(torch.zeros(2, input_dim))
        except Exception as exc:  # a model of another family / input layout
            raise MtlEdgeError(f"{label}: the model does not take [batch, {input_dim}] {input_kind}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(out, dict) or set(tasks) - set(out):
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise MtlEdgeError(f"{label}: the model must return {{task: logits}} for tasks {tasks}, got {got}")
    return graph


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (the Standardize mean/std buffers are not counted)."""
    return int(sum(p.numel() for p in model.parameters()))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TELLING = ("No ONNX function found", "Lowering not found", "not supported", "Unsupported", "failed to legalize",
            "Verification failed", "could not be")


def converter_message(exc: BaseException) -> str:
    """The line of a converter's (long) exception that names the op, else its first line."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    telling = next((ln for ln in lines if any(k.lower() in ln.lower() for k in _TELLING)), None)
    line = telling or (lines[0] if lines else "")
    line = re.sub(r"^<class '[\w.]+\.(\w+)'>:\s*", r"\1: ", line)
    return f"{type(exc).__name__}: {line[:400]}"
