"""Per-band statistics over time, written once for the numpy features and the export's torch front-end.

``band_statistics(stats, x, pct, ops)`` takes the array operations it needs from ``ops``
(``NumpyOps`` here; ``mtl_edge.features.torch_frontend`` passes torch ones), so the statistics that
training sees and the ones an exported graph computes come from one definition.
"""

from __future__ import annotations

import numpy as np

from mtl_edge.errors import MtlEdgeError


class NumpyOps:
    """The array operations ``band_statistics`` needs, over the last axis (numpy; the export's torch
    front-end passes its own)."""

    mean = staticmethod(lambda a: a.mean(axis=-1))
    min = staticmethod(lambda a: a.min(axis=-1))
    max = staticmethod(lambda a: a.max(axis=-1))
    sqrt = staticmethod(np.sqrt)
    at_least_one = staticmethod(lambda a: np.maximum(1.0, a))
    where = staticmethod(lambda cond, value, other: np.where(cond, value, other))
    pow_1_5 = staticmethod(lambda a: a**1.5)

    @staticmethod
    def delta_stat(x: np.ndarray, s: str) -> np.ndarray:
        if x.shape[-1] < 2:
            return np.zeros(x.shape[:-1])
        delta = np.diff(x, axis=-1)
        return np.abs(delta).mean(axis=-1) if s == "dmeanabs" else delta.std(axis=-1) if s == "dstd" else delta.mean(axis=-1)


def band_statistics(stats, x, pct: dict, ops) -> list:
    """The statistics ``stats`` over time of every band of ``x`` (..., bands, frames), in order.

    Written once for the numpy features and the export's torch front-end (``ops`` gives the array
    operations); ``pct`` holds the percentiles already computed (each backend has its own method).
    A (numerically) constant band has no shape: its skew and kurtosis are defined as 0.
    """
    if any(s in ("mean", "std", "skew", "kurt") for s in stats):
        mean = ops.mean(x)
        dev = x - mean[..., None]
        sq = dev * dev
        m2 = ops.mean(sq)
        limit = 1e-6 * ops.at_least_one(abs(mean))
        flat = m2 <= limit * limit
        safe = ops.where(flat, 1.0, m2)
    parts = []
    for s in stats:
        if s == "mean":
            parts.append(mean)
        elif s == "std":
            parts.append(ops.sqrt(m2))
        elif s == "min":
            parts.append(ops.min(x))
        elif s == "max":
            parts.append(ops.max(x))
        elif s in pct:
            parts.append(pct[s])
        elif s == "skew":
            parts.append(ops.where(flat, 0.0, ops.mean(sq * dev) / ops.pow_1_5(safe)))
        elif s == "kurt":
            parts.append(ops.where(flat, 0.0, ops.mean(sq * sq) / (safe * safe) - 3.0))
        elif s in ("dmeanabs", "dstd", "dmean"):
            parts.append(ops.delta_stat(x, s))
        else:  # pragma: no cover - FeatureConfig validates the names
            raise MtlEdgeError(f"unknown statistic {s!r}")
    return parts
