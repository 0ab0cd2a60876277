"""Features that may predict multi-task gain (Bingel & Søgaard 2017): per task, from its training
data and from its single-task learning curve; per (main, auxiliary) pair, both tasks' and their ratio.

Dataset features come from ``describe_corpus`` over the training split only: a feature that saw
validation or test labels would leak the evaluation into the predictor.

Learning-curve features come from a single-task run's ``curves.csv`` (the per-batch training loss):

* ``curve_grad_<p>``: slope of the loss against the fraction of training, at ``p`` % of the batches,
  from a least-squares line over the batches within ±5 % of training around that point (one
  batch's loss is noisy; a window's slope is not);
* ``curve_a`` .. ``curve_d``: ``L(i) = a·ln(c·i + d) + b`` fitted with ``scipy.optimize.curve_fit``
  over the batch index ``i`` (0-based, scaled to [0, 1]), with ``curve_fit_r2`` its coefficient of
  determination; a failed fit leaves them missing (None) and says why in ``curve_fit_error``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

GRADIENT_POINTS = (10, 20, 30, 50, 70)  # % of batches, as Bingel & Søgaard
GRADIENT_WINDOW = 0.05  # ± fraction of training around each point
DATA_FEATURES = ("clips", "labels", "type_token_ratio", "label_entropy_bits", "label_kurtosis_excess",
                 "labelled_frames", "mean_length_s", "total_length_s", "sample_rate_hz", "snr_db_mean")
CURVE_FEATURES = (*(f"curve_grad_{p}" for p in GRADIENT_POINTS), "curve_a", "curve_b", "curve_c", "curve_d",
                  "curve_fit_r2")


def dataset_features(corpus: str | Path, tasks: list[str]) -> dict[str, dict[str, float | None]]:
    """Per task: the numeric ``data describe`` measurements over its training rows."""
    from mtl_edge.data.describe import describe_corpus

    report = describe_corpus(corpus, splits=("train",))
    out = {}
    for task in tasks:
        d = report["tasks"].get(task)
        if d is None:  # a self-supervised task has no manifest rows
            out[task] = {k: None for k in DATA_FEATURES}
            continue
        rates = d.get("sample_rates_hz") or {}
        rate = max(rates, key=lambda r: rates[r]) if rates else None  # the most common original rate
        out[task] = {k: d.get(k) for k in DATA_FEATURES if k != "sample_rate_hz"} | {
            "sample_rate_hz": None if rate is None else float(rate)}
    return out


def read_curve(path: str | Path, task: str) -> np.ndarray:
    """The task's per-batch training loss, in training order."""
    with open(path, newline="") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f) if r["task"] == task], dtype=np.float64)


def log_curve(i, a, b, c, d):
    return a * np.log(c * i + d) + b


def curve_features(losses: np.ndarray) -> dict[str, float | None | str]:
    """Gradients of the loss curve and the fitted logarithmic curve (see the module docstring)."""
    n = len(losses)
    out: dict[str, float | None | str] = {k: None for k in CURVE_FEATURES}
    if n < 10:
        out["curve_fit_error"] = f"{n} batch(es): too few for curve features"
        return out
    x = np.arange(n) / (n - 1)
    half = max(2, int(round(GRADIENT_WINDOW * n)))
    for p in GRADIENT_POINTS:
        centre = int(round(p / 100 * (n - 1)))
        lo, hi = max(0, centre - half), min(n, centre + half + 1)
        out[f"curve_grad_{p}"] = float(np.polyfit(x[lo:hi], losses[lo:hi], 1)[0])
    out.update(fit_log_curve(x, losses))
    return out


def fit_log_curve(x: np.ndarray, y: np.ndarray) -> dict[str, float | None | str]:
    """``a·ln(c·x + d) + b`` by least squares, with c, d > 0 so that the logarithm is defined."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    keys = ("curve_a", "curve_b", "curve_c", "curve_d")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            params, _ = curve_fit(log_curve, x, y, p0=(-(y[0] - y[-1]) / 3, y[0], 20.0, 1.0),
                                  bounds=([-np.inf, -np.inf, 1e-6, 1e-6], [np.inf, np.inf, 1e6, 1e6]), maxfev=20000)
    except (RuntimeError, ValueError, OptimizeWarning) as exc:
        return {k: None for k in keys} | {"curve_fit_r2": None, "curve_fit_error": f"{type(exc).__name__}: {exc}"}
    residual = y - log_curve(x, *params)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum(residual ** 2)) / total if total > 0 else None
    if not all(math.isfinite(v) for v in params):
        return {k: None for k in keys} | {"curve_fit_r2": None, "curve_fit_error": "non-finite parameters"}
    return dict(zip(keys, (float(v) for v in params))) | {"curve_fit_r2": r2}


def pair_features(main: dict, aux: dict) -> dict[str, float | None]:
    """``main_<f>``, ``aux_<f>`` and ``ratio_<f>`` = main / aux (None where either is missing or aux is 0)."""
    out: dict[str, float | None] = {}
    for key in main:
        if key.endswith("_error"):
            continue
        a, b = main.get(key), aux.get(key)
        out[f"main_{key}"] = a
        out[f"aux_{key}"] = b
        out[f"ratio_{key}"] = None if a is None or b is None or b == 0 else float(a) / float(b)
    return out
