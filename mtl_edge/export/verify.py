"""Verification of an artefact by its real runtime on the whole shipped test split, against PyTorch.

Per task: top-1 agreement with the PyTorch model, accuracy of the artefact and of PyTorch (samples
with a label unknown to the model are left out of accuracy), the largest absolute logit
difference. An artefact fails when its outputs are not the model's tasks in order, when a task's
agreement is below the precision's threshold, or when an int8 artefact loses more than
``accuracy_drop`` accuracy against the float32 PyTorch model.

A multilabel or frame task (its test set labels are 0/1 targets, not ids) is checked per element:
agreement is the share of yes/no answers (logit > 0) equal to PyTorch's, accuracy the share equal to
the targets; the thresholds are the same.

A task without labels (a reconstruction head: its test set entry has no label names) has no top-1:
its output is checked by the RMS of the difference relative to the RMS of PyTorch's output, at most
``rms_<precision>`` (1e-4 at fp32).
"""

from __future__ import annotations

import numpy as np

from mtl_edge.errors import MtlEdgeError
from mtl_edge.runtimes.agreement import accuracy as _accuracy
from mtl_edge.runtimes.agreement import agreement as _agreement
from mtl_edge.runtimes.agreement import decision_accuracy, decisions
from mtl_edge.runtimes.agreement import relative_rms
from mtl_edge.runtimes.agreement import top1

DEFAULT_THRESHOLDS: dict[str, float] = {"fp32": 0.99, "fp16": 0.99, "int8-dynamic": 0.95, "int8": 0.95,
                                        "accuracy_drop": 0.02,
                                        "rms_fp32": 1e-4, "rms_fp16": 1e-2, "rms_int8-dynamic": 0.1, "rms_int8": 0.1}


def resolve_thresholds(thresholds: dict | None) -> dict[str, float]:
    out = dict(DEFAULT_THRESHOLDS)
    for key, value in (thresholds or {}).items():
        if key not in DEFAULT_THRESHOLDS:
            raise MtlEdgeError(f"unknown threshold {key!r}; known: {', '.join(DEFAULT_THRESHOLDS)}")
        out[key] = float(value)
    return out


def compare(outputs: dict[str, np.ndarray], output_order: list[str], reference: dict[str, np.ndarray],
            testset, tasks: list[str]) -> dict:
    """The verification record of an artefact's outputs on the test set (all rows) against ``reference``."""
    per_task = {}
    for task in tasks:
        tt = testset.tasks[task]
        ref = reference[task][tt.rows]
        if not tt.label_names:  # no labels: an output compared by its relative error, not by top-1
            per_task[task] = _compare_unlabelled(outputs.get(task), ref, tt.rows)
            continue
        if task not in outputs:
            per_task[task] = {"n": int(len(tt.rows)), "agreement": 0.0, "accuracy": None,
                              "torch_accuracy": _accuracy(top1(ref), tt.labels), "max_abs_diff": None,
                              "error": "no output of this name"}
            continue
        got = np.asarray(outputs[task], dtype=np.float32)[tt.rows]
        if tt.labels.ndim > 1:  # multilabel / frame: a yes/no answer per element
            answer, score = decisions, decision_accuracy
        else:
            answer, score = top1, _accuracy
        pred = answer(got) if got.shape == ref.shape else np.zeros(ref.shape[:1], dtype=bool)
        ref_pred = answer(ref)
        entry = {"n": int(len(tt.rows)), "agreement": _agreement(pred, ref_pred) if pred.shape == ref_pred.shape else 0.0,
                 "accuracy": score(pred, tt.labels) if pred.shape == ref_pred.shape else None,
                 "torch_accuracy": score(ref_pred, tt.labels),
                 "max_abs_diff": float(np.abs(got - ref).max()) if got.shape == ref.shape else None}
        if got.shape != ref.shape:
            entry["error"] = f"shape {list(got.shape[1:])} != {list(ref.shape[1:])} (labels of {task!r})"
        elif not np.isfinite(got).all():
            entry["error"] = "non-finite logits"
            entry["agreement"] = min(entry["agreement"], 0.0)
        per_task[task] = entry
    return {"rows": int(len(testset)), "output_order": list(output_order), "tasks": per_task}


def _compare_unlabelled(output, ref: np.ndarray, rows: np.ndarray) -> dict:
    entry = {"n": int(len(rows)), "relative_rms_error": None, "max_abs_diff": None}
    if output is None:
        return {**entry, "error": "no output of this name"}
    got = np.asarray(output, dtype=np.float32)[rows]
    if got.shape != ref.shape:
        return {**entry, "error": f"shape {list(got.shape[1:])} != {list(ref.shape[1:])}"}
    if not np.isfinite(got).all():
        return {**entry, "error": "non-finite outputs"}
    diff = got.astype(np.float64) - ref
    return {**entry, "relative_rms_error": relative_rms(got, ref), "max_abs_diff": float(np.abs(diff).max()) if diff.size else 0.0}


def failures(verification: dict, tasks: list[str], precision: str, thresholds: dict[str, float], artefact: str) -> list[str]:
    """Clean messages naming the artefact, task, value and threshold for every failed check."""
    msgs = []
    if verification["output_order"] != list(tasks):
        msgs.append(f"{artefact}: outputs {verification['output_order']} are not the tasks {list(tasks)} in order")
    floor = thresholds[precision]
    for task, e in verification["tasks"].items():
        if e.get("error"):
            msgs.append(f"{artefact}: task {task!r}: {e['error']}")
        if "relative_rms_error" in e:
            limit = thresholds[f"rms_{precision}"]
            if e["relative_rms_error"] is not None and e["relative_rms_error"] > limit:
                msgs.append(f"{artefact}: task {task!r} output differs from PyTorch by {e['relative_rms_error']:.2e} "
                            f"relative RMS, above the {precision} threshold {limit:.0e}")
            continue
        if e["agreement"] < floor:
            msgs.append(f"{artefact}: task {task!r} top-1 agreement with PyTorch {e['agreement']:.3f} "
                        f"is below the {precision} threshold {floor:.3f}")
        if precision.startswith("int8") and e["accuracy"] is not None and e["torch_accuracy"] is not None:
            drop = e["torch_accuracy"] - e["accuracy"]
            if drop > thresholds["accuracy_drop"] + 1e-9:
                msgs.append(f"{artefact}: task {task!r} accuracy {e['accuracy']:.3f} is {100 * drop:.1f} points below "
                            f"fp32 {e['torch_accuracy']:.3f} (allowed {100 * thresholds['accuracy_drop']:.1f})")
    return msgs


def verify_artefact(fmt: str, path, reference: dict[str, np.ndarray], testset, tasks: list[str], precision: str,
                    thresholds: dict | None = None, allow_degraded: bool = False, artefact: str | None = None,
                    runtime: str | None = None) -> dict:
    """Run ``path`` with its runtime on every test row and check it; raise MtlEdgeError on a failure.

    ``runtime``: a runtime of the ``mtl_edge.runtimes`` registry (default: the desktop one for ``fmt``).

    Returns the verification record with ``status`` ("ok" or, with ``allow_degraded``, "degraded")
    and ``problems`` (the failure messages).
    """
    from mtl_edge import runtimes

    thresholds = resolve_thresholds(thresholds)
    loaded = runtimes.load(runtime, path) if runtime else runtimes.load_format(fmt, path)
    outputs = loaded.run(testset.features)
    order = loaded.output_names
    record = compare(outputs, order, reference, testset, tasks)
    problems = failures(record, tasks, precision, thresholds, artefact or str(path))
    if problems and not allow_degraded:
        raise MtlEdgeError("verification failed: " + "; ".join(problems)
                           + " (use --allow-degraded to keep it, marked degraded)")
    record["status"] = "degraded" if problems else "ok"
    record["problems"] = problems
    record["thresholds"] = {"agreement": thresholds[precision], "accuracy_drop": thresholds["accuracy_drop"]
                            if precision.startswith("int8") else None}
    if any("relative_rms_error" in e for e in record["tasks"].values()):
        record["thresholds"]["relative_rms_error"] = thresholds[f"rms_{precision}"]
    return record
