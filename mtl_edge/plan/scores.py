"""The predicted score of a task in a group of tasks sharing one network, from a sweep or an affinity run.

- From a sweep (``SWEEP/sweep.json``): the measured gain of the task's test metric in that group over
  the task alone (mean over seeds) when the sweep trained the group; otherwise, for groups larger
  than two, Standley et al.'s (2020) higher-order approximation: the mean of the task's measured pair
  gains with each other member. A task alone scores 0.
- From an affinity run (``AFFINITY/affinity.json``): TAG's rule (Fifty et al. 2021): the task's summed
  inter-task affinity from the other members, ``sum over a in G \\ {t} of Z[a -> t]``. A task alone
  scores 0. The units differ from a sweep's (loss ratio against a metric), so plans are compared only
  within one source.

A group's score is the sum of its tasks' scores; a plan's is the sum over its groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError


@dataclass
class Scores:
    source: str  # "sweep" or "affinity"
    path: Path
    tasks: list[str]
    corpus: str
    corpus_fingerprint: str | None
    train: dict  # the source's training config (its runs' seed left out)
    features: dict
    seeds: list[int]
    rule: str
    unit: str
    metric: str | None
    pair: dict[tuple[str, str], float] = field(default_factory=dict)  # (task, other) -> gain / affinity onto task
    measured: dict[frozenset, dict[str, float]] = field(default_factory=dict)  # sweep groups of 3+: task -> gain
    _cache: dict = field(default_factory=dict)

    def task_score(self, task: str, group: tuple[str, ...]) -> tuple[float, str]:
        """(score, how it was obtained) of ``task`` in ``group``."""
        others = [t for t in group if t != task]
        if not others:
            return 0.0, "alone"
        if self.source == "affinity":
            return sum(self.pair[(task, a)] for a in others), "summed affinity (TAG)"
        if len(others) == 1:
            return self.pair[(task, others[0])], "measured pair"
        exact = self.measured.get(frozenset(group))
        if exact is not None and task in exact:
            return exact[task], "measured group"
        return sum(self.pair[(task, a)] for a in others) / len(others), "mean of pairs (Standley)"

    def group_score(self, group: tuple[str, ...]) -> float:
        key = frozenset(group)
        if key not in self._cache:
            self._cache[key] = sum(self.task_score(t, group)[0] for t in group)
        return self._cache[key]

    def check_tasks(self, tasks: list[str]) -> None:
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise MtlEdgeError(f"task(s) {', '.join(missing)} missing from the gains in {self.path} (it has "
                               f"{', '.join(self.tasks)}); plan only tasks it measured, or measure them")
        gaps = sorted({f"{a}+{b}" for a in tasks for b in tasks if a != b and (a, b) not in self.pair})
        if gaps:
            raise MtlEdgeError(f"{self.path} has no result for the pair(s) {', '.join(gaps[:10])}"
                               f"{' ...' if len(gaps) > 10 else ''}; finish the sweep (rerun its command) first")

    def to_json(self) -> dict:
        return {"source": self.source, "path": str(self.path), "rule": self.rule, "unit": self.unit,
                "metric": self.metric, "tasks": self.tasks, "corpus_fingerprint": self.corpus_fingerprint}


def load_scores(path: str | Path, metric: str = "macro_f1") -> Scores:
    path = Path(path)
    if (path / "sweep.json").is_file():
        return _from_sweep(path, metric)
    if (path / "affinity.json").is_file():
        return _from_affinity(path)
    raise MtlEdgeError(f"--gains {path}: neither a sweep folder (sweep.json) nor an affinity result (affinity.json)")


def _from_sweep(path: Path, metric: str) -> Scores:
    from mtl_edge.research.analyze import METRICS, pair_gains
    from mtl_edge.research.runs import RunSpec, finished_metrics

    if metric not in METRICS:
        raise MtlEdgeError(f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    config = atomic.read_json(path / "sweep.json", "")
    tasks, seeds = config["tasks"], config["seeds"]
    if "task_corpora" in config:
        raise MtlEdgeError(f"{path} trained tasks from several corpora; plan chooses networks for one corpus's tasks "
                           f"(its costs and checks train on one corpus): plan from a one-corpus sweep")
    if "pairs" not in config.get("combos", []):
        raise MtlEdgeError(f"{path} has no pairs (combos: {', '.join(config.get('combos', []))}); a plan needs a sweep "
                           f"with --combos singles,pairs")
    gains, _ = pair_gains(path, tasks, seeds, metric)
    scores = Scores("sweep", path, tasks, config["corpus"], config.get("corpus_fingerprint"), config["train"],
                    config["features"], seeds,
                    rule=f"a task's score is its measured test {metric} gain over the task alone (mean over seeds); "
                         "groups of three or more the sweep did not train: the mean of the task's pair gains "
                         "(Standley et al. 2020)",
                    unit=f"{metric} gain", metric=metric)
    scores.pair = {(g["main"], g["aux"]): g["gain"] for g in gains}
    runs = path / "runs"
    for folder in sorted(runs.iterdir()) if runs.is_dir() else []:
        group = tuple(folder.name.split("+"))
        if len(group) < 3 or any(t not in tasks for t in group):
            continue
        per_task: dict[str, list[float]] = {}
        for seed in seeds:
            multi = finished_metrics(path, RunSpec(group, seed)).get("tasks", {})
            for task in group:
                single = finished_metrics(path, RunSpec((task,), seed)).get("tasks", {}).get(task, {})
                a, b = single.get("test", {}).get(metric), multi.get(task, {}).get("test", {}).get(metric)
                if a is not None and b is not None:
                    per_task.setdefault(task, []).append(b - a)
        if per_task and all(t in per_task for t in group):
            scores.measured[frozenset(group)] = {t: sum(v) / len(v) for t, v in per_task.items()}
    return scores


def _from_affinity(path: Path) -> Scores:
    record = atomic.read_json(path / "affinity.json", "")
    settings = record.get("settings", {})
    tasks = record["tasks"]
    train = dict(settings.get("train", {}))
    seed = train.pop("seed", 0)
    scores = Scores("affinity", path, tasks, settings.get("corpus", ""), settings.get("corpus_fingerprint"), train,
                    settings.get("features", {}), [seed],
                    rule="a task's score in a group is its summed TAG affinity from the other members, "
                         "sum of Z[a -> task] (Fifty et al. 2021)",
                    unit="TAG affinity", metric=None)
    for i, step_on in enumerate(tasks):
        for j, measured in enumerate(tasks):
            value = record["tag"][i][j]
            if i != j and value is not None:
                scores.pair[(measured, step_on)] = float(value)  # affinity onto `measured` from a step on `step_on`
    return scores
