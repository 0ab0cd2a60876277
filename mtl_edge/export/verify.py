"""Verification of an artefact by its real runtime on the whole shipped test split, against PyTorch.

Per task: top-1 agreement with the PyTorch model, accuracy of the artefact and of PyTorch (samples
with a label unknown to the model are left out of accuracy), the largest absolute logit
difference. An artefact fails when its outputs are not the model's tasks in order, when a task's
agreement is below the precision's threshold, or when an int8 artefact loses more than
``accuracy_drop`` accuracy against the float32 PyTorch model.

A task without labels (a reconstruction head: its test set entry has no label names) has no top-1:
its output is checked by the RMS of the difference relative to the RMS of PyTorch's output, at most
``rms_<precision>`` (1e-4 at fp32).
"""

from __future__ import annotations

import numpy as np

from mtl_edge.errors import MtlEdgeError

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


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float | None:
    known = labels >= 0
    return float(np.mean(pred[known] == labels[known])) if known.any() else None


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
                              "torch_accuracy": _accuracy(ref.argmax(1), tt.labels), "max_abs_diff": None,
                              "error": "no output of this name"}
            continue
        got = np.asarray(outputs[task], dtype=np.float32)[tt.rows]
        pred, ref_pred = got.argmax(1), ref.argmax(1)
        entry = {"n": int(len(tt.rows)), "agreement": float(np.mean(pred == ref_pred)),
                 "accuracy": _accuracy(pred, tt.labels), "torch_accuracy": _accuracy(ref_pred, tt.labels),
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
    scale = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64)))) or 1.0
    return {**entry, "relative_rms_error": float(np.sqrt(np.mean(diff ** 2)) / scale),
            "max_abs_diff": float(np.abs(diff).max()) if diff.size else 0.0}


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
                    thresholds: dict | None = None, allow_degraded: bool = False, artefact: str | None = None) -> dict:
    """Run ``path`` with its runtime on every test row and check it; raise MtlEdgeError on a failure.

    Returns the verification record with ``status`` ("ok" or, with ``allow_degraded``, "degraded")
    and ``problems`` (the failure messages).
    """
    from mtl_edge.export.runtime import runners

    thresholds = resolve_thresholds(thresholds)
    run, _ = runners(fmt, path)
    outputs = run(testset.features)
    order = output_names(fmt, path)
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


def output_names(fmt: str, path) -> list[str]:
    """Output names in graph order, as the runtime reports them."""
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        return [o.name for o in ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).get_outputs()]
    if fmt == "torch":
        from mtl_edge.export.torchscript import describe as describe_torch

        return [o["name"] for o in describe_torch(path)["outputs"]]
    from mtl_edge.export.tflite import describe

    return [o["name"] for o in describe(path)["outputs"]]


def render_markdown(rows: list[dict]) -> str:
    """The verification table: one line per (artefact, task)."""
    head = ("| artefact | model | format | precision | status | task | n | agreement | accuracy | torch acc | "
            "Δacc | max abs Δlogit | KB | params | latency ms |")
    lines = [head, "|" + "---|" * 15]

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    for a in rows:
        ver = a.get("verification") or {}
        lat = (a.get("latency") or {}).get("median_ms")
        if not ver.get("tasks"):
            lines.append(f"| {a.get('path') or '-'} | {a['model']} | {a['format']} | {a['precision']} | {a['status']} | "
                         f"- | - | - | - | - | - | - | - | - | - |")
            continue
        for task, e in ver["tasks"].items():
            acc, torch_acc = e.get("accuracy"), e.get("torch_accuracy")
            dacc = None if acc is None or torch_acc is None else acc - torch_acc
            agreement = (f(e["agreement"]) if "agreement" in e  # a reconstruction output: its relative RMS error
                         else f"rms {f(e.get('relative_rms_error'), '{:.1e}')}")
            lines.append(f"| {a['path']} | {a['model']} | {a['format']} | {a['precision']} | {a['status']} | {task} | {e['n']} | "
                         f"{agreement} | {f(acc)} | {f(torch_acc)} | {f(dacc, '{:+.3f}')} | "
                         f"{f(e['max_abs_diff'], '{:.2e}')} | {a['bytes'] / 1024:.1f} | {a.get('parameters', '-')} | {f(lat, '{:.4f}')} |")
    notes = [f"- {a['model']} {a['format']} {a['precision']}: {a['status']}: {a.get('reason')}"
             for a in rows if a["status"] != "ok"]
    e2e = [a for a in rows if a.get("end_to_end") and a["status"] != "unsupported"]
    if e2e:
        notes += ["", "end-to-end artefacts (model e2e:...): waveform in, the front-end inside the graph, so their "
                      "latency includes it; front-end parity against logmel.extract on the test clips:", ""]
        for a in e2e:
            p, inp = a.get("frontend_parity") or {}, a.get("input") or {}
            parity = (f"error: {p['error']}" if p.get("error") else
                      f"max abs {f(p.get('max_abs_diff'), '{:.2e}')}, max rel {f(p.get('max_rel_diff'), '{:.2e}')}, "
                      f"max {f(p.get('max_scaled_diff'), '{:.2e}')} feature std ({p.get('worst_feature')})")
            notes.append(f"- {a['path']}: input {inp.get('name')} [batch, {inp.get('samples')}] at "
                         f"{inp.get('sample_rate')} Hz; front-end parity: {parity}")
    checked = [a for a in rows if a.get("tflite_runtime")]
    if checked:
        notes += ["", "tflite-runtime cross-check (top-1 agreement with ai-edge-litert on the same file, "
                  "whole test split):", ""]
        for a in checked:
            c = a["tflite_runtime"]
            agreement = ", ".join(f"{t} {v:.3f}" for t, v in (c.get("agreement") or {}).items()) or "-"
            notes.append(f"- {a['path']}: tflite-runtime {c['version']}: {c['status']} ({agreement})"
                         + (f": {c['reason']}" if c.get("reason") else ""))
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"
