"""Model input kinds: one config type per kind, one JSON form, and per-clip extraction for the prepare stage.

- ``features``: the clip-level log-mel summary vector (``logmel.FeatureConfig``);
- ``waveform``: the clip's samples, cropped or zero-padded to a fixed length (``waveform.WaveformConfig``).

A model registry entry declares its input kind; the prepare stage caches the inputs of every clip
for a config of that kind, and the config's JSON (stored in checkpoints as ``feature_config``)
names its kind (a config without ``kind`` is a log-mel config: every checkpoint before kinds).
"""

from __future__ import annotations

import numpy as np

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.logmel import FeatureConfig
from mtl_edge.features.waveform import WaveformConfig

INPUT_KINDS = {"features": FeatureConfig, "waveform": WaveformConfig}
InputConfig = FeatureConfig | WaveformConfig
# Bump a kind's format when its code changes the output for the same config: old cache entries stop matching.
CACHE_FORMATS = {"features": "logmel-summary-v1", "waveform": "waveform-crop-v1"}


def input_kind(cfg: InputConfig) -> str:
    return "waveform" if isinstance(cfg, WaveformConfig) else "features"


def default_config(kind: str) -> InputConfig:
    if kind not in INPUT_KINDS:
        raise MtlEdgeError(f"unknown model input kind {kind!r}; kinds: {', '.join(INPUT_KINDS)}")
    return INPUT_KINDS[kind]()


def config_from_json(d: dict) -> InputConfig:
    kind = d.get("kind", "features")
    if kind not in INPUT_KINDS:
        raise MtlEdgeError(f"unknown input kind {kind!r} in a stored config; kinds: {', '.join(INPUT_KINDS)}")
    return INPUT_KINDS[kind].from_json(d)


def input_names(cfg: InputConfig) -> list[str] | None:
    """Names of the input's columns (the log-mel statistics), None where columns are samples."""
    if isinstance(cfg, FeatureConfig):
        from mtl_edge.features.logmel import feature_names

        return feature_names(cfg)
    return None


def extract_clips(cfg: InputConfig, clips: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """One input row per clip (None stays None); equal-length clips go through the log-mel batch together."""
    rows: list[np.ndarray | None] = [None] * len(clips)
    if isinstance(cfg, WaveformConfig):
        from mtl_edge.features.waveform import crop_waveform

        return [None if c is None else crop_waveform(c, cfg.samples, position=cfg.position) for c in clips]
    from mtl_edge.features import logmel

    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        if c is not None:
            by_length.setdefault(len(c), []).append(i)
    for idx in by_length.values():
        batch = logmel.extract_batch(np.stack([clips[i] for i in idx]), cfg)
        for row, i in enumerate(idx):
            rows[i] = batch[row]
    return rows
