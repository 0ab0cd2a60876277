"""Class overlap between two tasks of a corpus: how often each label of one task occurs with each
label of the other on the clips that carry both.

Two tasks labelled on the same clips can give each other away: an event that occurs in one scene
only names the scene. ``co_occurrence`` counts it (rows of the manifest joined on the clip path), so
that a pair can be trained without the shared instances (``train --exclude``) and the two compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_edge.errors import MtlEdgeError


@dataclass
class Overlap:
    corpus: Path
    task_a: str
    task_b: str
    split: str | None  # None: every split
    labels_a: list[str]
    labels_b: list[str]
    counts: np.ndarray  # [len(labels_a), len(labels_b)]: clips carrying both labels
    clips: int  # clips carrying both tasks

    def partners(self, label: str) -> list[str]:
        """The labels of task b that ``label`` of task a occurs with."""
        row = self.counts[self.labels_a.index(label)]
        return [b for b, n in zip(self.labels_b, row) if n]

    @property
    def shared(self) -> list[str]:
        """Labels of task a that occur with two or more labels of task b."""
        return [a for a in self.labels_a if len(self.partners(a)) >= 2]

    @property
    def exclusive(self) -> dict[str, str]:
        """Labels of task a that occur with one label of task b only, and that label."""
        return {a: p[0] for a in self.labels_a if len(p := self.partners(a)) == 1}

    @property
    def unpaired(self) -> list[str]:
        """Labels of task a on no clip that carries task b."""
        return [a for a in self.labels_a if not self.partners(a)]

    def shared_by(self, label_b: str) -> list[str]:
        """The shared labels of task a that occur with ``label_b`` (what it has in common with other labels of b)."""
        column = self.counts[:, self.labels_b.index(label_b)]
        return [a for a, n in zip(self.labels_a, column) if n and a in self.shared]

    def exclude_spec(self) -> str:
        """The ``--exclude`` value that leaves task a's shared labels out of its training data."""
        if not self.shared:
            raise MtlEdgeError(f"no label of {self.task_a!r} occurs with two or more labels of {self.task_b!r}"
                               f"{self._where()}: nothing shared to exclude")
        return ",".join(f"{self.task_a}:{label}" for label in self.shared)

    def _where(self) -> str:
        return f" in the {self.split} split" if self.split else ""

    def to_json(self) -> dict:
        return {"corpus": str(self.corpus), "tasks": [self.task_a, self.task_b], "split": self.split or "all",
                "clips": self.clips, "labels_a": self.labels_a, "labels_b": self.labels_b,
                "counts": self.counts.tolist(), "shared": self.shared, "exclusive": self.exclusive,
                "unpaired": self.unpaired}


def parse_pair(text: str) -> tuple[str, str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if len(tasks) != 2 or tasks[0] == tasks[1]:
        raise MtlEdgeError(f"--tasks takes two different tasks such as event,scene, not {text!r}")
    return tasks[0], tasks[1]


def co_occurrence(corpus: str | Path, task_a: str, task_b: str, split: str | None = None) -> Overlap:
    """Counts of task a's labels against task b's over the clips (of ``split``, default all) carrying both."""
    from mtl_edge.data.manifest import read_manifest

    corpus = Path(corpus)
    manifest = read_manifest(corpus, check_files=False)
    unknown = [t for t in (task_a, task_b) if t not in manifest.tasks]
    if unknown:
        raise MtlEdgeError(f"unknown task(s) {', '.join(unknown)} in {corpus}; this corpus has: {', '.join(manifest.tasks)}")
    if split is not None and split not in manifest.splits:
        raise MtlEdgeError(f"{corpus} has no {split!r} split; its splits: {', '.join(manifest.splits)}")
    rows = [r for r in manifest.rows if split is None or r.split == split]
    labels = {t: {} for t in (task_a, task_b)}  # task -> path -> labels on that clip
    for r in rows:
        if r.task in labels:
            labels[r.task].setdefault(r.path, []).append(r.label)
    labels_a, labels_b = manifest.labels(task_a), manifest.labels(task_b)
    counts = np.zeros((len(labels_a), len(labels_b)), dtype=np.int64)
    both = sorted(set(labels[task_a]) & set(labels[task_b]))
    if not both:
        where = f" in the {split} split" if split else ""
        raise MtlEdgeError(f"tasks {task_a!r} and {task_b!r} share no clip{where} of {corpus}: no overlap to count")
    for path in both:
        for a in labels[task_a][path]:
            for b in labels[task_b][path]:
                counts[labels_a.index(a), labels_b.index(b)] += 1
    return Overlap(corpus, task_a, task_b, split, labels_a, labels_b, counts, len(both))
