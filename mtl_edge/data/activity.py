"""The manifest's ``activity`` column: where in a clip a label is active, as ``start-end;start-end`` in seconds.

One parser and one frame rule for every reader (``data describe`` counts labelled frames with it, a
``frame`` task's targets are built with it): frame k of hop h covers [k h, (k + 1) h) and is active
when its centre (k + 0.5) h lies in a segment [start, end).
"""

from __future__ import annotations

import math
import re

import numpy as np

ACTIVITY_COLUMN = "activity"
_SEGMENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*-\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


def parse_activity(text: str) -> list[tuple[float, float]]:
    """``"0.1-0.5;1.2-2"`` -> ``[(0.1, 0.5), (1.2, 2.0)]``; empty text -> no segments; ValueError otherwise."""
    segments = []
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _SEGMENT.match(part)
        if match is None:
            raise ValueError(f"bad activity segment {part.strip()!r} (expected start-end in seconds, e.g. 0.25-1.5)")
        start, end = float(match.group(1)), float(match.group(2))
        if end < start:
            raise ValueError(f"activity segment {part.strip()!r} ends before it starts")
        segments.append((start, end))
    return segments


def frame_span(start: float, end: float, hop_s: float) -> tuple[int, int]:
    """The frames [lo, hi) whose centre lies in [start, end)."""
    per_s = 1.0 / hop_s
    return math.ceil(start * per_s - 0.5), math.ceil(end * per_s - 0.5)


def activity_frames(segments: list[tuple[float, float]], frames: int, hop_s: float) -> np.ndarray:
    """``frames`` booleans: frame k is active when its centre lies in one of ``segments``."""
    out = np.zeros(frames, dtype=bool)
    for start, end in segments:
        lo, hi = frame_span(start, end, hop_s)
        out[max(lo, 0):max(min(hi, frames), 0)] = True
    return out


def frames_to_segments(active: np.ndarray, hop_s: float) -> list[tuple[float, float]]:
    """The runs of active frames as (onset, offset) in seconds: the inverse of ``activity_frames`` on the grid."""
    padded = np.concatenate([[False], np.asarray(active, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(round(float(a) * hop_s, 6), round(float(b) * hop_s, 6)) for a, b in zip(edges[::2], edges[1::2])]
