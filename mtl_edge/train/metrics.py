"""Per-task metrics on a split, chosen by the task's kind (scikit-learn for classification).

micro-F1 equals accuracy for single-label tasks; it is reported anyway because multi-label
tasks (tagging) will not have that property. ROC AUC is one-vs-rest, macro-averaged over the
classes that have both positives and negatives in ``y_true``. MAP@3 (FSDKaggle2018's metric, the
one Lee et al. 2019 report): 1, 1/2 or 1/3 when the true label is the first, second or third guess,
else 0, averaged; top-1 accuracy is ``accuracy``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "macro_f1", "micro_f1", "roc_auc", "map_at_3")
RECONSTRUCTION_METRICS = ("loss", "mse", "relative_rmse")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """Accuracy, macro-F1, micro-F1, one-vs-rest ROC AUC and MAP@3 for integer labels and class logits."""
    y_true = np.asarray(y_true)
    n_classes = logits.shape[1]
    y_pred = logits.argmax(axis=1)
    labels = np.arange(n_classes)
    present = np.unique(y_true)
    probs = softmax(logits.astype(np.float64))
    aucs = [roc_auc_score(y_true == k, probs[:, k]) for k in labels if 0 < (y_true == k).sum() < len(y_true)]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # over the classes present in y_true: a class absent from the test split has no F1 to average
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "map_at_3": map_at_k(y_true, logits, 3),
    }


def map_at_k(y_true: np.ndarray, logits: np.ndarray, k: int = 3) -> float:
    """Mean over samples of 1 / (rank of the true label) when it is among the top ``k``, else 0."""
    if len(y_true) == 0:
        return 0.0
    true_score = logits[np.arange(len(y_true)), y_true]
    rank = 1 + (logits > true_score[:, None]).sum(axis=1)  # ties count in the sample's favour
    return float(np.where(rank <= k, 1.0 / rank, 0.0).mean())


def reconstruction_metrics(spec, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The task's own loss (mean per sample), mean squared error and RMS error relative to the target's RMS."""
    import torch

    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(targets, dtype=np.float64).reshape(out.shape)
    loss = float(spec.loss_fn()(torch.from_numpy(out), torch.from_numpy(ref)).item() / max(len(out), 1))
    mse = float(np.mean((out - ref) ** 2)) if out.size else 0.0
    rms = float(np.sqrt(np.mean(ref ** 2))) if ref.size else 0.0
    return {"loss": loss, "mse": mse, "relative_rmse": float(np.sqrt(mse) / rms) if rms > 0 else None}


def task_metrics(spec, outputs: np.ndarray, targets: np.ndarray, inputs: np.ndarray | None = None) -> dict:
    """Metrics of one task: ``targets`` are label ids for labelled kinds; a task whose target is the
    input (reconstruction) is scored against ``inputs``."""
    from mtl_edge.errors import MtlEdgeError

    if spec.kind == "classification":
        return classification_metrics(targets, outputs)
    if spec.kind == "reconstruction":
        if inputs is None:
            raise MtlEdgeError(f"task {spec.name!r}: reconstruction metrics need the inputs")
        return reconstruction_metrics(spec, outputs, inputs)
    raise MtlEdgeError(f"task {spec.name!r}: metrics of {spec.kind} tasks are not implemented yet")


def delta(multi: dict, single: dict) -> dict[str, float | None]:
    """multi - single per metric (None where either is undefined)."""
    keys = [k for k in dict.fromkeys([*multi, *single]) if k in METRICS or k in RECONSTRUCTION_METRICS] or list(METRICS)
    return {k: (None if multi.get(k) is None or single.get(k) is None else multi[k] - single[k]) for k in keys}
