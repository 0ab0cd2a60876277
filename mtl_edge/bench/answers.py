"""Does the device answer like the desktop? A device run's answers against the same artefact run here.

A benchmark number is worthless if the artefact computes something else on the device (an old
interpreter misreading a quantised model, an op version it half supports). The runner returns, per
artefact, task and test row, the top-1 answer of a classification output and the output values of any
other task kind (``task_specs`` in the manifest: multilabel, regression, reconstruction, frame).
``DesktopAnswers`` runs the same artefact with this machine's runtime for its format (through
``mtl_edge.runtimes``) on the same inputs and records per task:

- classification: the top-1 agreement between the two and the device's accuracy on the test labels;
  agreement below the export's threshold for the precision marks the measurement ``disagrees``;
- any other kind: the relative RMS error of the device's outputs against this machine's
  (``answers_rel_rms_<task>``); above ``RMS_LIMITS[precision]`` marks it ``disagrees``. 1e-4 at fp32
  (the same graph, float rounding only); fp16 and int8 kernels differ between builds and CPUs
  (accumulation order, rounding of requantisation), so 1e-2 and 1e-1 there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_edge.bench.inputs import input_name, task_kind, testset_inputs
from mtl_edge.errors import MtlEdgeError, Unsupported
from mtl_edge.export.testset import load_testset
from mtl_edge.export.verify import resolve_thresholds
from mtl_edge.runtimes import agreement as agree
from mtl_edge.runtimes import load_format

RMS_LIMITS = {"fp32": 1e-4, "fp16": 1e-2, "int8-dynamic": 1e-1, "int8": 1e-1}


class DesktopAnswers:
    """``rows``: the test rows the device was sent (sorted; None: every row)."""

    def __init__(self, export: Path, manifest: dict, rows: np.ndarray | None = None):
        self.export = export
        self.manifest = manifest
        self.testset_path = export / manifest.get("testset", "testset.npz")
        self.testset = load_testset(self.testset_path)
        self.rows = rows
        self.thresholds = resolve_thresholds(manifest.get("thresholds"))
        self._cache: dict[str, dict[str, np.ndarray] | None] = {}

    def kinds(self, entries: list[dict]) -> dict[str, str]:
        """The runner's ``answers`` job field: what to return per task (``top1`` or ``values``)."""
        return {t: "top1" if task_kind(self.manifest, t) == "classification" else "values"
                for e in entries for t in e["tasks"]}

    def _desktop(self, entry: dict) -> dict[str, np.ndarray] | None:
        if entry["sha256"] not in self._cache:
            try:
                inputs = testset_inputs(self.testset_path, input_name(self.manifest, entry))
                inputs = inputs if self.rows is None else inputs[self.rows]
                self._cache[entry["sha256"]] = load_format(entry["format"], self.export / entry["path"]).run(inputs)
            except (Unsupported, MtlEdgeError):
                self._cache[entry["sha256"]] = None  # no local runtime for this format: only the accuracy is checked
        return self._cache[entry["sha256"]]

    def _positions(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Where ``task``'s test rows are among the rows sent, and their labels."""
        t = self.testset.tasks[task]
        if self.rows is None:
            return t.rows, t.labels
        kept = np.isin(t.rows, self.rows)
        return np.searchsorted(self.rows, t.rows[kept]), t.labels[kept]

    def compare(self, entries: list[dict], predictions: dict) -> dict:
        """Flat fields: answers_agreement_<task>, answers_accuracy_<task> (classification), answers_rel_rms_<task>
        (other kinds), answers_agreement_min, answers_status, answers_threshold."""
        fields: dict = {}
        agreements, rms_failed, checked = [], False, False
        precision = entries[0]["precision"]
        rms_limit = RMS_LIMITS.get(precision, 1e-1)
        for entry in entries:
            device = predictions.get(entry["model"]) or {}
            desktop = self._desktop(entry)
            for task in entry["tasks"]:
                classification = task_kind(self.manifest, task) == "classification"
                if task not in device or task not in self.testset.tasks:
                    fields[f"answers_agreement_{task}" if classification else f"answers_rel_rms_{task}"] = None
                    continue
                answers = np.asarray(device[task], dtype=np.int64 if classification else np.float64)
                sent = len(self.testset) if self.rows is None else len(self.rows)
                if answers.shape[0] != sent:
                    raise MtlEdgeError(f"{entry['path']}: the device returned {answers.shape[0]} answers for "
                                       f"{sent} test rows")
                at, labels = self._positions(task)
                if len(at) == 0:  # none of the task's clips among the rows sent
                    fields[f"answers_agreement_{task}" if classification else f"answers_rel_rms_{task}"] = None
                    continue
                mine = answers[at]
                ours = None if desktop is None or task not in desktop else np.asarray(desktop[task])[at]
                if not classification:  # the device sends each row's values flattened
                    if ours is not None and mine.size == ours.size:
                        mine = mine.reshape(ours.shape)
                    rms = None if ours is None else agree.relative_rms(mine, ours)
                    fields[f"answers_rel_rms_{task}"] = None if rms is None else float(f"{rms:.4g}")
                    if rms is not None:
                        checked = True
                        rms_failed = rms_failed or not rms <= rms_limit
                    continue
                acc = agree.accuracy(mine, labels)
                fields[f"answers_accuracy_{task}"] = None if acc is None else round(acc, 4)
                if ours is not None:
                    agreement = agree.agreement(mine, agree.top1(ours))
                    fields[f"answers_agreement_{task}"] = round(agreement, 4)
                    agreements.append(agreement)
                    checked = True
                else:
                    fields[f"answers_agreement_{task}"] = None
        limit = self.thresholds.get(precision, 0.95)
        fields["answers_agreement_min"] = round(min(agreements), 4) if agreements else None
        fields["answers_status"] = ("unchecked" if not checked else
                                    "disagrees" if rms_failed or (agreements and min(agreements) < limit) else "ok")
        fields["answers_threshold"] = limit
        if rms_failed or any(k.startswith("answers_rel_rms_") for k in fields):
            fields["answers_rms_threshold"] = rms_limit
        return fields
