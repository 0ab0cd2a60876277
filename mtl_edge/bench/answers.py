"""Does the device answer like the desktop? Top-1 answers of a device run against the same artefact here.

A benchmark number is worthless if the artefact computes something else on the device (an old
interpreter misreading a quantised model, an op version it half supports). The runner returns every
artefact's top-1 answer per task on every test row (job ``answers``); ``DesktopAnswers`` runs the same
artefact with this machine's runtime for that format and reports, per task, the agreement between the
two and the device's accuracy on the test labels. Agreement below the export's threshold for the
precision marks the measurement ``disagrees``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.testset import load_testset
from mtl_edge.export.verify import resolve_thresholds


class DesktopAnswers:
    def __init__(self, export: Path, manifest: dict):
        self.export = export
        self.testset = load_testset(export / manifest.get("testset", "testset.npz"))
        self.thresholds = resolve_thresholds(manifest.get("thresholds"))
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def _desktop(self, entry: dict) -> dict[str, np.ndarray] | None:
        from mtl_edge.export.runtime import load_artefact

        if entry["sha256"] not in self._cache:
            try:
                logits = load_artefact(entry, self.export)(self.testset.features)
            except (MtlEdgeError, ImportError):
                return None  # no local runtime for this format: only the accuracy is checked
            self._cache[entry["sha256"]] = {t: np.argmax(v, axis=1) for t, v in logits.items()}
        return self._cache[entry["sha256"]]

    def compare(self, entries: list[dict], predictions: dict) -> dict:
        """Flat fields: answers_agreement_<task>, answers_accuracy_<task>, answers_agreement_min, answers_status."""
        fields: dict = {}
        agreements = []
        precision = entries[0]["precision"]
        for entry in entries:
            device = predictions.get(entry["model"]) or {}
            desktop = self._desktop(entry)
            for task in entry["tasks"]:
                if task not in device or task not in self.testset.tasks:
                    fields[f"answers_agreement_{task}"] = None
                    continue
                answers = np.asarray(device[task], dtype=np.int64)
                if answers.shape[0] != len(self.testset):
                    raise MtlEdgeError(f"{entry['path']}: the device returned {answers.shape[0]} answers for "
                                       f"{len(self.testset)} test rows")
                t = self.testset.tasks[task]
                known = t.labels >= 0
                mine = answers[t.rows]
                fields[f"answers_accuracy_{task}"] = (round(float(np.mean(mine[known] == t.labels[known])), 4)
                                                      if known.any() else None)
                if desktop is not None and task in desktop:
                    agreement = float(np.mean(mine == desktop[task][t.rows]))
                    fields[f"answers_agreement_{task}"] = round(agreement, 4)
                    agreements.append(agreement)
                else:
                    fields[f"answers_agreement_{task}"] = None
        limit = self.thresholds.get(precision, 0.95)
        fields["answers_agreement_min"] = round(min(agreements), 4) if agreements else None
        fields["answers_status"] = ("unchecked" if not agreements else
                                    "ok" if min(agreements) >= limit else "disagrees")
        fields["answers_threshold"] = limit
        return fields
