"""Which input an artefact takes and where the export's test set holds it, whatever the input kind.

An entry's ``input`` record names its input (``waveform`` for the waveform-in artefacts), else the
manifest's top-level ``input`` does (``features``). ``testset.npz`` keeps the arrays by input name:
``features`` -> ``features``, ``waveform`` -> ``waveforms``; any other name is its own key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_edge.errors import MtlEdgeError

TESTSET_KEYS = {"features": "features", "waveform": "waveforms"}


def input_name(manifest: dict, entry: dict) -> str:
    return (entry.get("input") or {}).get("name") or (manifest.get("input") or {}).get("name") or "features"


def testset_inputs(testset: str | Path, name: str) -> np.ndarray:
    """The test clips as input ``name`` takes them: float32, one row per clip."""
    key = TESTSET_KEYS.get(name, name)
    with np.load(testset, allow_pickle=False) as ts:
        if key not in ts:
            raise MtlEdgeError(f"{testset}: no {key!r} array for the artefacts with input {name!r} "
                               f"(the test set holds {', '.join(ts.files)})")
        return np.ascontiguousarray(ts[key], dtype=np.float32)


def task_kind(manifest: dict, task: str) -> str:
    """A task's output kind from the manifest's ``task_specs`` (absent: classification)."""
    return ((manifest.get("task_specs") or {}).get(task) or {}).get("kind", "classification")
