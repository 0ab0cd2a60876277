"""Top-1 agreement, accuracy and relative RMS error: the one implementation export and bench share.

Multilabel and frame outputs answer yes or no per element (``decisions``): their agreement and
accuracy are over elements (every tag of every sample, every frame and label)."""

from __future__ import annotations

import numpy as np


def top1(logits) -> np.ndarray:
    """The top-1 class per row of ``[N, labels]`` logits."""
    return np.asarray(logits).argmax(axis=1)


def agreement(pred, reference) -> float:
    """The share of rows whose top-1 answers are equal."""
    return float(np.mean(np.asarray(pred) == np.asarray(reference)))


def accuracy(pred, labels) -> float | None:
    """Top-1 accuracy over the rows with a known label (``labels >= 0``); None when there are none."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    known = labels >= 0
    return float(np.mean(pred[known] == labels[known])) if known.any() else None


def decisions(logits) -> np.ndarray:
    """The yes/no answers of multilabel and frame outputs (sigmoid > 0.5, i.e. logit > 0), one per element."""
    return np.asarray(logits) > 0


def decision_accuracy(pred, targets) -> float | None:
    """The share of elements whose answer equals the 0/1 target; None without targets."""
    pred, targets = np.asarray(pred), np.asarray(targets) > 0.5
    return float(np.mean(pred == targets)) if targets.size else None


def relative_rms(got, reference) -> float:
    """RMS of ``got - reference`` over the RMS of ``reference`` (inf on a shape mismatch or non-finite output)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if got.shape != ref.shape or not np.isfinite(got).all():
        return float("inf")
    scale = float(np.sqrt(np.mean(ref ** 2))) if ref.size else 0.0
    err = float(np.sqrt(np.mean((got - ref) ** 2))) if ref.size else 0.0
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
