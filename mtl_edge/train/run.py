"""A training run: the multi-task model and, optionally, one single-task baseline per task.

``runs/NAME/`` holds ``config.json`` (resolved), ``multi/`` and ``single/<task>/`` (each with
``model.pt``, ``state.pt``, ``curves.csv``, ``history.json``) and ``metrics.json`` on the test split:
``{"tasks": {task: {"single": {...}, "multi": {...}, "delta": {...}}}}``; a corpus with further
held-out test splits (``test_<what>``) adds ``task: {"<split>": {"single", "multi", "delta", "samples"}}``,
and, when that split lacks some of the task's test labels, ``"seen_same_labels"`` in it: the test
split scored over the split's labels only, the like-for-like figure beside it (``same_labels_view``). The baselines use the
identical config and seed, so a difference is the task mix and nothing else. Tasks may come from
several corpora (``sources``; ``mtl_edge.train.corpora``): each task's baseline then trains on its
own corpus, and ``config.json`` and ``metrics.json`` record every task's corpus in ``task_corpora``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.train.data import TaskData, check_exclude, load_training_data
from mtl_edge.train.metrics import delta
from mtl_edge.train.trainer import TrainConfig, fit, split_metrics

RUN_FORMAT = "mtl-edge-run"


@dataclass
class RunResult:
    folder: Path
    metrics: dict


def same_labels_view(data: TaskData, task: str, split: str) -> tuple[TaskData, str, list[str]] | None:
    """``data`` with one more split: ``task``'s test rows whose label ``split`` has; None when nothing is left out.

    test_unseen_speakers holds speech only (a _silence_ clip has no voice), so its accuracy and the
    test split's differ by the class mix as well as by the voices; the test split over the same
    labels isolates the voices. Returns (view, the new split's name, the labels left out).
    """
    rows = data.tasks[task]
    if rows.dense is not None or not rows.labels:  # multilabel, frame and reconstruction tasks: no class mix
        return None
    present = np.unique(rows.targets[split][rows.targets[split] >= 0])
    keep = np.isin(rows.targets["test"], present)
    if keep.all() or not keep.any():
        return None
    name = f"test[labels of {split}]"
    view = replace(rows, rows={**rows.rows, name: rows.rows["test"][keep]}, targets={**rows.targets, name: rows.targets["test"][keep]})
    left_out = sorted({rows.labels[i] for i in rows.targets["test"][~keep] if i >= 0})
    return replace(data, tasks={task: view}), name, left_out


def seen_same_labels(models: dict, data: TaskData, task: str, split: str, single: bool) -> dict | None:
    """The ``seen_same_labels`` entry of ``task`` beside ``split`` (see ``same_labels_view``)."""
    found = same_labels_view(data, task, split)
    if found is None:
        return None
    view, name, left_out = found
    out = {"multi": split_metrics(models["multi"], view, name)[task]}
    if single:
        out["single"] = split_metrics(models[task], view, name)[task]
        out["delta"] = delta(out["multi"], out["single"])
    return {**out, "samples": int(len(view.tasks[task].rows[name])), "labels_left_out": left_out}


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise MtlEdgeError(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from None


def test_metrics(model, data: TaskData) -> dict[str, dict]:
    """Each task's metrics (those of its kind) on the test split."""
    empty = [t for t, rows in data.tasks.items() if len(rows.rows["test"]) == 0]
    if empty:
        raise MtlEdgeError(f"task {empty[0]!r} has no test examples in {data.corpus}")
    return split_metrics(model, data, "test")


def train_run(corpus: str | Path, tasks: list[str], out: str | Path, cfg: TrainConfig, *, single: bool = False,
              resume: bool = False, workers: int = 2, threads: int = 1, processes: int = 2,
              input_config=None, cache_dir=None, sources=None) -> RunResult:
    """Train (or resume) a run and write its metrics; see the module docstring for the layout.

    ``input_config``: the model input (a ``FeatureConfig`` or ``WaveformConfig``, of the kind the
    model takes); default: what ``data prepare`` last wrote for the corpus, else that kind's defaults.
    ``cache_dir``: the feature cache (default ``CORPUS/.features``). ``sources``: a ``TaskSources``
    naming each task's corpus (several corpora; ``corpus`` is then ignored), default: ``corpus`` for all.

    ``threads``: torch intra-op threads. The DNN is small: one thread is the fastest (several
    threads spend more on synchronisation than on arithmetic), and a fixed count keeps runs
    bit-for-bit repeatable. ``processes``: models trained at the same time (each in its own
    process; the result is identical to training them one after another).
    """
    import torch

    from mtl_edge.features.cache import resolve_config
    from mtl_edge.features.inputs import input_kind
    from mtl_edge.progress import progress_bar
    from mtl_edge.tasks import is_self_supervised, self_supervised_spec
    from mtl_edge.train.models import check_tasks, model_entry

    torch.set_num_threads(threads)
    out = Path(out)
    # a self-supervised task's spec needs no data: a model without its head is refused before any feature work
    check_tasks(cfg.model, {t: self_supervised_spec(t) for t in tasks if is_self_supervised(t)})
    kind = model_entry(cfg.model).input_kind
    from mtl_edge.train import corpora as multi

    sources = sources if sources is not None and sources.multi else None
    if sources is not None:
        if list(sources.tasks) != list(tasks):
            raise MtlEdgeError(f"internal error: tasks {tasks} and their corpora {sources.tasks} differ")
        multi.check_tasks_known(sources)
        corpus = sources.distinct[0]
        if input_config is None:
            input_config = multi.common_input_config(sources, kind, cache_dir=cache_dir)
    input_config = input_config if input_config is not None else resolve_config(corpus, kind, cache_dir=cache_dir)
    if input_kind(input_config) != kind:
        raise MtlEdgeError(f"model {cfg.model!r} takes {kind} input, not {input_kind(input_config)}")
    from mtl_edge.features.cache import fingerprint_of

    config = {"format": RUN_FORMAT, "corpus": str(Path(corpus).resolve()), "tasks": tasks, "single": single,
              "train": cfg.to_json(), "features": input_config.to_json()}
    if sources is None:
        config["corpus_fingerprint"] = fingerprint_of(corpus)
    else:  # "corpus" is the first task's; every task's corpus and fingerprint are in task_corpora
        config["task_corpora"] = multi.fingerprints(sources)
        config["corpus_fingerprint"] = multi.combined_fingerprint(config["task_corpora"])
    where = ("corpus", "corpus_fingerprint", "task_corpora")
    config_path = out / "config.json"
    if config_path.exists():
        try:
            previous = json.loads(config_path.read_text())
        except ValueError:
            raise MtlEdgeError(f"{config_path} is damaged; choose a new --out") from None
        if not resume:
            raise MtlEdgeError(f"{out} already holds a run; use --resume to continue it, or another --out")
        if {k: v for k, v in previous.items() if k not in where} != {k: v for k, v in config.items() if k not in where}:
            raise MtlEdgeError(f"{out} holds a run with other settings; --resume needs the same tasks, model and hyper-parameters")
        multi.check_unchanged(previous.get("task_corpora"), config.get("task_corpora"), str(out))
        # a rebuilt or edited corpus (manifest, audio files) at the same path is another corpus
        if previous.get("corpus_fingerprint", config["corpus_fingerprint"]) != config["corpus_fingerprint"]:
            raise MtlEdgeError(f"{out} was trained on another version of {corpus} (its manifest or audio files changed); "
                               "train into a new --out, or remove the old run")
    elif out.exists() and any(out.iterdir()):
        raise MtlEdgeError(f"{out} exists and is not a run folder; choose another --out")
    _check_writable(out)
    unknown = [t for t in cfg.augment_config().tasks if t not in tasks]
    if unknown:
        raise MtlEdgeError(f"--augment-tasks names task(s) this run does not train: {', '.join(unknown)}")
    data = _load(sources, corpus, tasks, cfg, input_config, cache_dir=cache_dir, workers=workers)
    check_exclude(cfg.exclude, {t: rows.labels for t, rows in data.tasks.items()})
    atomic.write_json(config_path, config, sort_keys=False)

    jobs = [("multi", tasks, out / "multi")] + ([(t, [t], out / "single" / t) for t in tasks] if single else [])
    from mtl_edge.train.checkpoint import load_checkpoint

    todo = [job for job in jobs if not (resume and (job[2] / "model.pt").exists())]
    with progress_bar() as bar:
        if processes > 1 and len(todo) > 1:
            _fit_in_processes(todo, corpus, cfg, input_config.to_json(), cache_dir, resume, threads, processes, bar, sources)
        else:
            for name, job_tasks, folder in todo:
                fit(data.subset(job_tasks), cfg, folder, resume=resume, progress=bar, label=name)
    models = {name: load_checkpoint(folder / "model.pt")[0] for name, _, folder in jobs}

    multi = test_metrics(models["multi"], data)
    extra = {split: split_metrics(models["multi"], data, split) for split in data.extra_test_splits}
    metrics: dict = {"split": "test", "corpus": config["corpus"],
                     **({"task_corpora": config["task_corpora"]} if sources is not None else {}), "tasks": {},
                     "task_specs": {t: s.to_json() for t, s in data.specs.items()}}
    for task in tasks:
        entry = {"kind": data.specs[task].kind, "multi": multi[task]}
        if single:
            entry["single"] = test_metrics(models[task], data.subset([task]))[task]
            entry["delta"] = delta(entry["multi"], entry["single"])
        entry["test_samples"] = int(len(data.tasks[task].rows["test"]))
        for split in extra:  # further held-out test splits (e.g. test_unseen_speakers), beside test
            if task not in extra[split]:
                continue
            side = {"multi": extra[split][task], "samples": int(len(data.tasks[task].rows[split]))}
            if single:
                side["single"] = split_metrics(models[task], data.subset([task]), split)[task]
                side["delta"] = delta(side["multi"], side["single"])
            like = seen_same_labels(models, data, task, split, single)
            if like is not None:
                side["seen_same_labels"] = like
            entry[split] = side
        metrics["tasks"][task] = entry
    atomic.write_json(out / "metrics.json", metrics, sort_keys=False)  # tasks in the order given
    return RunResult(out, metrics)


def _load(sources, corpus, tasks: list[str], cfg: TrainConfig, input_config, **load) -> TaskData:
    """The training data of ``tasks``: from ``corpus``, or each from its own corpus (``sources``)."""
    if sources is None:
        return load_training_data(corpus, tasks, cfg, input_config, **load)
    from mtl_edge.train.corpora import load_sources

    return load_sources(sources, tasks, lambda c, group: load_training_data(c, group, cfg, input_config, **load))


class _QueueProgress:
    """Stands in for a rich Progress inside a worker process: forwards updates to the parent."""

    def __init__(self, queue):
        self.queue = queue

    def add_task(self, description, total=None, completed=0):
        self.queue.put(("add", description, description, total, completed))
        return description

    def update(self, task, completed=None, description=None):
        self.queue.put(("update", task, description, None, completed))


def _fit_job(job, corpus, cfg_json, input_json, cache_dir, resume, threads, queue, sources=None) -> str:
    import torch

    from mtl_edge.features.inputs import config_from_json

    torch.set_num_threads(threads)
    name, job_tasks, folder = job
    cfg = TrainConfig.from_json(cfg_json)
    data = _load(sources, corpus, job_tasks, cfg, config_from_json(input_json), cache_dir=cache_dir, workers=1,
                 progress=False)
    fit(data, cfg, folder, resume=resume, progress=_QueueProgress(queue), label=name)
    return name


def _fit_in_processes(jobs, corpus, cfg: TrainConfig, input_json: dict, cache_dir, resume: bool, threads: int,
                      processes: int, bar, sources=None) -> None:
    """Train several models at once; their per-epoch progress reaches the parent's bars via a queue."""
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        updates = manager.Queue()
        futures = [pool.submit(_fit_job, job, str(corpus), cfg.to_json(), input_json, cache_dir, resume, threads, updates,
                               sources)
                   for job in jobs]
        bars: dict[str, int] = {}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            while True:
                try:
                    kind, key, description, total, completed = updates.get_nowait()
                except queue_module.Empty:
                    break
                if kind == "add":
                    bars[key] = bar.add_task(description, total=total, completed=completed)
                else:
                    bar.update(bars[key], completed=completed, **({"description": description} if description else {}))
            for future in done:
                future.result()  # re-raises a worker's MtlEdgeError here
