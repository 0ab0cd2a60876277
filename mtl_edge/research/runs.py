"""One run of a sweep, and where it trains: ``run_job`` trains a ``RunJob`` and records its status;
an executor (``EXECUTORS``: ``local`` = worker processes here, ``ray`` = Ray tasks) trains a list of them.

A ``RunJob`` is plain data, so another executor only has to call ``run_job`` somewhere else.
A failure is recorded in the run's ``status.json``, not raised: one diverging run does not stop a sweep.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.train.trainer import TrainConfig


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a task combination and a seed."""

    tasks: tuple[str, ...]
    seed: int

    @property
    def name(self) -> str:
        return "+".join(self.tasks)

    @property
    def label(self) -> str:
        return f"{self.name} seed {self.seed}"

    def folder(self, sweep: Path) -> Path:
        return Path(sweep) / "runs" / self.name / f"seed{self.seed}"


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to train one run (plain data: it crosses process and host boundaries)."""

    spec: RunSpec
    folder: str
    corpus: str
    train: dict  # TrainConfig JSON with this run's seed
    features: dict  # input config JSON
    cache_dir: str | None = None
    corpora: dict[str, str] | None = None  # task -> corpus, when the sweep's tasks come from several corpora


def is_done(folder: Path) -> bool:
    """A finished run: its status says done and its metrics are there."""
    status = read_status(folder)
    return status.get("status") == "done" and (folder / "metrics.json").is_file()


def finished_metrics(sweep: Path, spec: RunSpec) -> dict:
    """A run's ``metrics.json`` once it is done; {} before (an unfinished run has no result)."""
    folder = spec.folder(sweep)
    return atomic.read_json(folder / "metrics.json", "") if is_done(folder) else {}


def read_status(folder: Path) -> dict:
    return json_or_empty(folder / "status.json")


def json_or_empty(path: Path) -> dict:
    try:
        return atomic.read_json(path, "")
    except MtlEdgeError:  # missing or damaged (a kill while writing cannot damage it): not done
        return {}


def run_job(job: RunJob, events=None) -> dict:
    """Train one run, write its metrics and status; a failure is recorded in the status, not raised,
    so that one diverging run does not stop a sweep."""
    import torch

    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.train.data import load_training_data
    from mtl_edge.train.run import test_metrics
    from mtl_edge.train.trainer import fit

    torch.set_num_threads(1)  # small DNN: one thread is the fastest and keeps runs bit-for-bit repeatable
    if events is not None:
        events.put(("started", job.spec, time.time()))
    folder = Path(job.folder)
    started = time.perf_counter()
    cfg = TrainConfig.from_json(job.train)
    status: dict = {"tasks": list(job.spec.tasks), "seed": job.spec.seed, "steps": cfg.steps}
    try:
        (folder / "metrics.json").unlink(missing_ok=True)  # an unfinished run's metrics are not its result
        tasks, features = list(job.spec.tasks), config_from_json(job.features)
        if job.corpora:  # each task from its own corpus
            from mtl_edge.train.corpora import TaskSources, load_sources

            sources = TaskSources(tasks, {t: Path(job.corpora[t]) for t in tasks})
            data = load_sources(sources, tasks, lambda c, group: load_training_data(
                c, group, cfg, features, cache_dir=job.cache_dir, workers=1, progress=False))
        else:
            data = load_training_data(job.corpus, tasks, cfg, features, cache_dir=job.cache_dir, workers=1, progress=False)
        result = fit(data, cfg, folder, resume=True, label=job.spec.label)
        metrics = test_metrics(result.model, data)
        per_class = per_class_f1(result.model, data)
        atomic.write_json(folder / "metrics.json", {
            "split": "test", "corpus": job.corpora[job.spec.tasks[0]] if job.corpora else job.corpus,
            **({"task_corpora": {t: job.corpora[t] for t in job.spec.tasks}} if job.corpora else {}),
            "tasks": {t: {"kind": data.specs[t].kind, "test": metrics[t], "test_samples": int(len(data.tasks[t].rows["test"])),
                          **({"per_class_f1": per_class[t]} if t in per_class else {})}
                      for t in job.spec.tasks},
            "task_specs": {t: s.to_json() for t, s in data.specs.items()},
        }, sort_keys=False)
        status.update(status="done", best_epoch=result.best_epoch, epochs_run=result.epochs_run)
    except MtlEdgeError as exc:
        status.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug shows in this run's status with its traceback; the other runs go on
        status.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    if "error" in status and not status["error"].startswith(job.spec.label):
        status["error"] = f"{job.spec.label}: {status['error']}"
    status["wall_s"] = round(time.perf_counter() - started, 3)
    atomic.write_json(folder / "status.json", status)
    return status


def record_lost(job: RunJob, error: str) -> dict:
    """The status of a run whose worker died (``run_job`` could not record it itself), written to its folder."""
    status = {"tasks": list(job.spec.tasks), "seed": job.spec.seed, "status": "failed", "error": f"{job.spec.label}: {error}"}
    atomic.write_json(Path(job.folder) / "status.json", status)
    return status


def per_class_f1(model, data) -> dict[str, dict[str, float | None]]:
    """Per classification task: each label's test F1 (None for a label absent from the test split and
    never predicted), so that an analysis can show which confusions an auxiliary task fixes."""
    from sklearn.metrics import f1_score

    from mtl_edge.train.trainer import predict

    outputs = predict(model, data.inputs)
    out = {}
    for task, rows in data.tasks.items():
        idx = rows.rows["test"]
        if rows.spec.kind != "classification" or len(idx) == 0:
            continue
        y_true, y_pred = rows.targets["test"], outputs[task][idx].argmax(axis=1)
        scores = f1_score(y_true, y_pred, labels=range(len(rows.spec.labels)), average=None, zero_division=0)
        seen = set(y_true.tolist()) | set(y_pred.tolist())
        out[task] = {label: (round(float(f), 6) if k in seen else None) for k, (label, f) in enumerate(zip(rows.spec.labels, scores))}
    return out


# An executor trains a list of jobs and reports each run's start and its status dict:
# executor(jobs, workers=N, on_start=fn(spec), on_finish=fn(spec, status), address=None).
Executor = Callable[..., None]


@dataclass(frozen=True)
class ExecutorEntry:
    """An executor and its check, run before a sweep writes anything (raises MtlEdgeError)."""

    run: Executor
    check: Callable[[str | None], None]
    help: str


_EVENTS = None  # the parent's queue, inside a local worker process


def _init_worker(events) -> None:
    global _EVENTS
    _EVENTS = events


def _run_in_worker(job: RunJob) -> dict:
    return run_job(job, _EVENTS)


def run_local(jobs: list[RunJob], *, workers: int, on_start, on_finish, address: str | None = None) -> None:
    """Worker processes on this machine (spawned: no state inherited); one worker trains in-process.

    Results do not depend on ``workers``: every run sets its own seed and one torch thread."""
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            on_start(job.spec)
            on_finish(job.spec, run_job(job))
        return
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(events,)) as pool:
        futures = {pool.submit(_run_in_worker, job): job for job in jobs}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                while True:
                    try:
                        _, spec, _ = events.get_nowait()
                    except queue_module.Empty:
                        break
                    on_start(spec)
                for future in done:
                    job = futures[future]
                    try:
                        status = future.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        status = record_lost(job, f"worker process failed: {type(exc).__name__}: {exc}")
                    on_finish(job.spec, status)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _check_local(address: str | None) -> None:
    if address:
        raise MtlEdgeError("--address names a Ray cluster: it needs --executor ray")


def _run_ray(jobs: list[RunJob], **options) -> None:
    from mtl_edge.research.ray_executor import run_ray

    run_ray(jobs, **options)


def _check_ray(address: str | None) -> None:
    from mtl_edge.research.ray_executor import check_executor

    check_executor(address)


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry(run_local, _check_local, "worker processes on this machine"),
    "ray": ExecutorEntry(_run_ray, _check_ray, "Ray tasks on the cluster at --address / RAY_ADDRESS, else a local Ray"),
}
