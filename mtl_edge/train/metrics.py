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
MULTILABEL_METRICS = ("map", "map_at_3", "micro_f1", "macro_f1")
FRAME_METRICS = ("frame_f1", "error_rate", "segment_f1")
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


def multilabel_metrics(targets: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """mAP (scikit-learn's average precision per label, averaged over the labels with a positive),
    MAP@3 (Kaggle's: sum over the top 3 guesses of precision at k where the k-th is a true tag, over
    min(tags, 3); 1 / rank for one tag, so FSDKaggle2018's single-label MAP@3 is the same number),
    micro- and macro-F1 of the decisions sigmoid > 0.5 (logit > 0; macro over labels with a positive)."""
    from sklearn.metrics import average_precision_score

    y, logits = np.asarray(targets) > 0.5, np.asarray(logits, dtype=np.float64)
    present = np.flatnonzero(y.any(axis=0))
    aps = [average_precision_score(y[:, k], logits[:, k]) for k in present]
    return {
        "map": float(np.mean(aps)) if aps else None,
        "map_at_3": multilabel_map_at_k(y, logits, 3),
        "micro_f1": float(f1_score(y, logits > 0, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y[:, present], logits[:, present] > 0, average="macro", zero_division=0))
        if len(present) else None,
    }


def multilabel_map_at_k(y: np.ndarray, logits: np.ndarray, k: int = 3) -> float:
    """Mean over samples with a tag of sum_{i <= k} precision@i * [guess i is a tag] / min(tags, k)."""
    keep = y.any(axis=1)
    if not keep.any():
        return 0.0
    y, logits = y[keep], logits[keep]
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(y, top, axis=1).astype(np.float64)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return float(((precision * hits).sum(axis=1) / np.minimum(y.sum(axis=1), k)).mean())


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
    """Metrics of one task: ``targets`` are label ids (classification), 0/1 tags [N, labels]
    (multilabel) or 0/1 frames [N, frames, labels] (frame); a task whose target is the input
    (reconstruction) is scored against ``inputs``."""
    from mtl_edge.errors import MtlEdgeError

    if spec.kind == "classification":
        return classification_metrics(targets, outputs)
    if spec.kind == "multilabel":
        return multilabel_metrics(targets, outputs)
    if spec.kind == "frame":
        from mtl_edge.train.frame_metrics import frame_metrics

        return frame_metrics(spec, outputs, targets)
    if spec.kind == "reconstruction":
        if inputs is None:
            raise MtlEdgeError(f"task {spec.name!r}: reconstruction metrics need the inputs")
        return reconstruction_metrics(spec, outputs, inputs)
    raise MtlEdgeError(f"task {spec.name!r}: metrics of {spec.kind} tasks are not implemented yet")


def delta(multi: dict, single: dict) -> dict[str, float | None]:
    """multi - single per metric (None where either is undefined)."""
    known = {*METRICS, *RECONSTRUCTION_METRICS, *MULTILABEL_METRICS, *FRAME_METRICS}
    keys = [k for k in dict.fromkeys([*multi, *single]) if k in known] or list(METRICS)
    return {k: (None if multi.get(k) is None or single.get(k) is None else multi[k] - single[k]) for k in keys}
