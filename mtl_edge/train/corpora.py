"""Tasks from several corpora in one model (LibMTL's multi-input mode): ``--tasks kws@data/demo,gender@data/other``.

Each task reads its own corpus's manifest rows and splits; the model input is each corpus's feature
cache for one and the same feature config, stacked into one matrix, so a batch mixes tasks from
both corpora exactly as it mixes tasks of one corpus. One config must mean the same features in
every corpus: the resolved configs must be equal and the corpora's audio must have the same sample
rate (an 8 kHz corpus upsampled to 16 kHz would be told apart by its empty top band), else a clear
error naming both corpora and what differs.

A run or sweep over several corpora records every task's corpus and fingerprint (``task_corpora``);
``--resume`` refuses a changed one. When every task reads the same corpus the run is a plain
one-corpus run, recorded exactly as ``--corpus C --tasks a,b`` would record it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mtl_edge.errors import MtlEdgeError

SEPARATOR = "@"


@dataclass(frozen=True)
class TaskSources:
    """The tasks in order and the corpus each reads."""

    tasks: list[str]
    corpora: dict[str, Path]  # task -> corpus folder (resolved)

    @property
    def distinct(self) -> list[Path]:
        """The corpora in the order of their first task."""
        return list(dict.fromkeys(self.corpora[t] for t in self.tasks))

    @property
    def multi(self) -> bool:
        return len(self.distinct) > 1

    def first_corpus(self, given: str | Path | None) -> Path:
        """``given`` (the --corpus option, as typed) when the first task reads it, else the first task's corpus."""
        return Path(given) if given is not None and Path(given).resolve() == self.distinct[0] else self.distinct[0]

    def groups(self, tasks: list[str] | None = None) -> dict[Path, list[str]]:
        """corpus -> its tasks among ``tasks`` (default all), in task order."""
        out: dict[Path, list[str]] = {}
        for t in tasks if tasks is not None else self.tasks:
            out.setdefault(self.corpora[t], []).append(t)
        return out


def parse_task_sources(text: str, corpus: str | Path | None) -> TaskSources:
    """``kws@data/demo,gender@data/other`` (a task without ``@`` reads ``corpus``, the --corpus option).

    A task named twice is refused (with two corpora: a model has one head per task name)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise MtlEdgeError("no task given (e.g. --tasks kws,speaker,scene,instrument or --tasks kws@data/demo,gender@data/other)")
    tasks: list[str] = []
    corpora: dict[str, Path] = {}
    for item in items:
        name, sep, where = (part.strip() for part in item.partition(SEPARATOR))
        if not name or (sep and not where):
            raise MtlEdgeError(f"--tasks takes TASK or TASK{SEPARATOR}CORPUS, not {item!r}")
        if not sep and corpus is None:
            raise MtlEdgeError(f"task {name!r} names no corpus: give --corpus, or write {name}{SEPARATOR}CORPUS")
        path = Path(where if sep else corpus).resolve()
        if name in corpora:
            if corpora[name] != path:
                raise MtlEdgeError(f"task {name!r} is named twice, with two corpora ({corpora[name]} and {path}): a model "
                                   f"has one head per task; train each in its own run")
            raise MtlEdgeError(f"a task is listed twice in {text!r}")
        tasks.append(name)
        corpora[name] = path
    return TaskSources(tasks, corpora)


def check_tasks_known(sources: TaskSources) -> None:
    """Every task is in its own corpus's manifest (or self-supervised)."""
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.tasks import is_self_supervised

    for corpus, tasks in sources.groups().items():
        have = read_manifest(corpus, check_files=False).tasks
        unknown = [t for t in tasks if t not in have and not is_self_supervised(t)]
        if unknown:
            raise MtlEdgeError(f"unknown task(s) {', '.join(unknown)} in {corpus}; this corpus has: {', '.join(have)}")


def sample_rates(corpus: Path) -> set[int]:
    """The sample rates of the corpus's audio files (headers only)."""
    import soundfile as sf

    from mtl_edge.data.manifest import read_manifest

    manifest = read_manifest(corpus, check_files=False)
    rates = set()
    for rel in sorted({r.path for r in manifest.rows}):
        try:
            rates.add(int(sf.info(str(manifest.root / rel)).samplerate))
        except (OSError, RuntimeError) as exc:  # soundfile raises LibsndfileError (a RuntimeError) on bad files
            raise MtlEdgeError(f"{manifest.root / rel}: cannot read its header ({exc})") from None
    return rates


def config_differences(a: dict, b: dict) -> list[str]:
    return [f"{k} ({a.get(k)!r} against {b.get(k)!r})" for k in sorted({*a, *b}) if a.get(k) != b.get(k)]


def common_input_config(sources: TaskSources, kind: str, overrides: dict | None = None, cache_dir=None):
    """The one input config of every corpus: each corpus's resolved config (what ``data prepare`` last
    wrote for it, else the defaults, with ``overrides`` on top) must be equal, and their audio must
    have one sample rate; else an error naming both corpora and the differing fields."""
    from mtl_edge.features.cache import resolve_config

    first, *others = sources.distinct
    base = resolve_config(first, kind, overrides, cache_dir=cache_dir)
    for corpus in others:
        cfg = resolve_config(corpus, kind, overrides, cache_dir=cache_dir)
        diffs = config_differences(base.to_json(), cfg.to_json())
        if diffs:
            raise MtlEdgeError(f"the corpora {first} and {corpus} have different feature configs: {'; '.join(diffs)}. "
                               f"Prepare both with the same options (`mtl-edge data prepare CORPUS --n-mels ... --win-ms ... "
                               f"--hop-ms ...`) or give the options to this command")
    rates = {corpus: sample_rates(corpus) for corpus in sources.distinct}
    if len({frozenset(r) for r in rates.values()}) > 1:
        shown = "; ".join(f"{c}: {', '.join(f'{r} Hz' for r in sorted(v))}" for c, v in rates.items())
        raise MtlEdgeError(f"the corpora have audio of different sample rates ({shown}): the same features would not "
                           f"mean the same (a band one corpus lacks gives it away); resample one to the other's rate")
    return base


def fingerprints(sources: TaskSources) -> dict[str, dict]:
    """task -> {"corpus", "fingerprint"} (the fingerprint a one-corpus run records)."""
    from mtl_edge.features.cache import fingerprint_of

    prints = {corpus: fingerprint_of(corpus) for corpus in sources.distinct}
    return {t: {"corpus": str(sources.corpora[t]), "fingerprint": prints[sources.corpora[t]]} for t in sources.tasks}


def combined_fingerprint(task_corpora: dict[str, dict]) -> str:
    """One fingerprint for a run over several corpora (readers that compare ``corpus_fingerprint``
    then see another corpus in it)."""
    blob = "\0".join(f"{t}\0{v['fingerprint']}" for t, v in sorted(task_corpora.items()))
    return hashlib.sha256(blob.encode()).hexdigest()


def check_unchanged(previous: dict | None, current: dict, where: str) -> None:
    """Refuse continuing ``where`` when a task's corpus (its fingerprint) is not the one it was trained on."""
    if previous == current:
        return
    if previous is None or current is None:
        one, other = ("one corpus", "several") if previous is None else ("several corpora", "one")
        raise MtlEdgeError(f"{where} was trained on {one}, this command names {other}; train into a new --out")
    changed = [f"{t} ({previous.get(t, {}).get('corpus')} -> {current.get(t, {}).get('corpus')})"
               for t in current if previous.get(t, {}).get("fingerprint") != current[t]["fingerprint"]]
    if changed or set(previous) != set(current):
        raise MtlEdgeError(f"{where} was trained on other corpora for task(s) {', '.join(changed) or 'listed differently'} "
                           f"(a corpus was replaced, rebuilt or edited); train into a new --out")


def sources_of(task_corpora: dict[str, dict] | None, tasks: list[str]) -> TaskSources | None:
    """The TaskSources a run config's ``task_corpora`` records (None for a one-corpus run)."""
    if not task_corpora:
        return None
    return TaskSources(list(tasks), {t: Path(task_corpora[t]["corpus"]) for t in tasks})


def load_sources(sources: TaskSources, tasks: list[str], load) -> "TaskData":
    """``load(corpus, tasks_of_it)`` for every corpus of ``tasks``, merged into one TaskData (one
    corpus: its TaskData as it is)."""
    groups = sources.groups(tasks)
    parts = [load(corpus, group) for corpus, group in groups.items()]
    return parts[0] if len(parts) == 1 else merge_task_data(parts, tasks)


def merge_task_data(parts: list, tasks: list[str]):
    """One TaskData of several corpora's: input matrices stacked (rows of part k shifted by the rows
    before it), every task keeping its own rows, targets and splits; a split some corpus lacks is
    empty for its tasks; clip paths become absolute (they name their corpus)."""
    from mtl_edge.train.data import TaskData

    first = parts[0]
    for part in parts[1:]:
        if part.feature_config != first.feature_config or part.inputs.shape[1] != first.inputs.shape[1]:
            raise MtlEdgeError(f"{first.corpus} and {part.corpus} give different inputs: "
                               f"{'; '.join(config_differences(first.feature_config, part.feature_config)) or 'dimensions'}")
    splits = list(dict.fromkeys(s for part in parts for rows in part.tasks.values() for s in rows.rows))
    merged, offset, backgrounds, paths = {}, 0, [], []
    for part in parts:
        for name, rows in part.tasks.items():
            empty = np.zeros(0, dtype=np.int64)
            # targets stay: label ids, or rows of the task's own dense table (multilabel, frame)
            merged[name] = replace(rows, rows={s: rows.rows.get(s, empty) + offset for s in splits},
                                   targets={s: rows.targets.get(s, empty) for s in splits})
        backgrounds.append(part.background_rows + offset)
        root = Path(part.corpus).resolve()
        paths += [str(root / p) for p in part.paths]
        offset += len(part.inputs)
    inputs = np.concatenate([part.inputs for part in parts])
    return TaskData(first.corpus, inputs, first.feature_config, {t: merged[t] for t in tasks}, paths,
                    np.concatenate(backgrounds))

