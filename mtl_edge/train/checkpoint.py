"""Checkpoints that rebuild their model with no other file (nanoGPT's habit).

A checkpoint holds the state dict, the model name and build arguments, the label list of every
task, the feature config and the training config. It holds only tensors and plain containers,
so it loads with ``torch.load(weights_only=True)``: no code from a checkpoint file ever runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError

FORMAT = "mtl-edge-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, model_name: str, build_args: dict,
                    labels: dict[str, list[str]], feature_config: dict, train_config: dict, extra: dict | None = None) -> Path:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "build_args": build_args,
        "state_dict": model.state_dict(),
        "labels": labels,
        "feature_config": feature_config,
        "train_config": train_config,
        **(extra or {}),
    }
    save_atomic(path, payload)
    return Path(path)


def save_atomic(path: str | Path, payload: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_payload(path: str | Path, expected_format: str = FORMAT) -> dict:
    """Read a checkpoint-like file safely; a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise MtlEdgeError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or unsafe file
        raise MtlEdgeError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise MtlEdgeError(f"{path}: not an {expected_format} file (a foreign checkpoint?)")
    if payload.get("version") != VERSION:
        raise MtlEdgeError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    return payload


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint; returns (model in eval mode, the checkpoint's metadata)."""
    from mtl_edge.train.models import create_model

    payload = load_payload(path)
    model = create_model(payload["model"], **payload["build_args"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise MtlEdgeError(f"{path}: weights do not fit model {payload['model']!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}
