"""Sweeps: every combination of a set of tasks, trained with identical hyper-parameters and seeds.

Layout of ``sweeps/NAME/``:

- ``sweep.json``: the resolved settings (corpus and its fingerprint, tasks, combos, seeds, training
  and feature config; with tasks from several corpora, ``task_corpora``: each task's corpus and
  fingerprint); a folder refuses to be continued with other ones, naming the difference;
- ``runs/<tasks joined by '+'>/seed<k>/``: what ``fit`` writes, ``metrics.json`` (test metrics per
  task) and ``status.json`` (done or failed with the error, wall time). A single-task run is the
  baseline of every combination holding that task: it is trained once per (task, seed);
- ``results.csv``: per combination, seed and task the selection metric of the single-task baseline,
  of the combination's model and the gain (positive: sharing helped), rewritten at the end.

Every run trains the same number of optimizer steps (``TrainConfig.steps``, no early stopping), so a
difference between a combination and its baselines is the task mix, not a longer training. A run is
done once ``status.json`` says so and ``metrics.json`` is there: a rerun skips it and never rewrites
it; anything else (killed, failed) is trained again, from its last epoch where ``state.pt`` exists.
Runs go to an executor (``EXECUTORS``: ``local`` = worker processes on this machine, ``ray`` = Ray
tasks on a cluster) as a list of plain-data ``RunJob``s: every executor runs the same ``run_job``.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.report.sweep import Board
from mtl_edge.research.runs import (EXECUTORS, RunJob, RunSpec, finished_metrics, is_done, json_or_empty,
                                   read_status)
from mtl_edge.train.trainer import TrainConfig

SWEEP_FORMAT = "mtl-edge-sweep"
COMBO_SIZES = {"singles": 1, "pairs": 2, "triples": 3, "all": 0}  # 0: every task at once
DEFAULT_STEPS = 2000  # optimizer steps of every run: ~13 epochs of the 4-task model on the full demo corpus
# Estimates before any run of a sweep has finished, measured with `fit` on the project's 2-core
# build machine shared with other jobs (model dnn 512x3, batch 64, one torch thread): seconds per
# optimizer step and per epoch (validation, resumable state), both scaled with the width squared and
# the batch size, plus a fixed cost per run (process start, data loading, test metrics).
SECONDS_PER_STEP = 0.035
SECONDS_PER_EPOCH = 0.06
SECONDS_PER_RUN = 5.0


@dataclass
class SweepResult:
    folder: Path
    runs: list[RunSpec]
    skipped: list[RunSpec] = field(default_factory=list)  # done before this call
    trained: list[RunSpec] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run label -> error
    results: list[dict] = field(default_factory=list)  # the rows of results.csv


def parse_combos(text: str) -> list[str]:
    combos = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in combos if c not in COMBO_SIZES]
    if unknown or not combos:
        raise MtlEdgeError(f"unknown combination kind(s) {', '.join(unknown) or repr(text)}; kinds: {', '.join(COMBO_SIZES)}")
    return combos


def plan_runs(tasks: list[str], combos: list[str], seeds: int) -> list[RunSpec]:
    """The runs of a sweep: each combination once (in task order), plus the single-task baseline of
    every task a combination holds; baselines first, then by size, each over every seed."""
    sets: list[tuple[str, ...]] = []
    for combo in combos:
        size = COMBO_SIZES[combo] or len(tasks)
        if size <= len(tasks):
            sets.extend(itertools.combinations(tasks, size))
    sets += [(t,) for t in tasks if any(t in s for s in sets)]
    unique = sorted(set(sets), key=lambda s: (len(s), [tasks.index(t) for t in s]))
    return [RunSpec(s, seed) for s in unique for seed in range(seeds)]


def sweep_config(corpus: Path, fingerprint: str, tasks: list[str], combos: list[str], seeds: int, cfg: TrainConfig,
                 input_config, task_corpora: dict | None = None) -> dict:
    """The resolved settings a sweep folder is bound to (the seed is the run's, not the config's);
    ``task_corpora`` (task -> corpus and fingerprint) when the tasks come from several corpora."""
    train = cfg.to_json()
    del train["seed"]
    return {"format": SWEEP_FORMAT, "version": 1, "corpus": str(corpus), "corpus_fingerprint": fingerprint,
            **({"task_corpora": task_corpora} if task_corpora else {}),
            "tasks": tasks, "combos": combos, "seeds": list(range(seeds)), "train": train,
            "features": input_config.to_json()}


def _bound(config: dict) -> dict:
    """What a sweep folder compares: everything but where the corpora are (they may move; their content may not)."""
    out = {k: v for k, v in config.items() if k != "corpus"}
    if "task_corpora" in out:
        out["task_corpora"] = {t: v["fingerprint"] for t, v in out["task_corpora"].items()}
    return out


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return out


def check_folder(out: Path, config: dict) -> None:
    """Refuse a folder that holds something else, or a sweep with other settings (naming them).

    The corpus may move (its path is not compared); its content may not (the fingerprint is)."""
    path = out / "sweep.json"
    if path.exists():
        previous = atomic.read_json(path, "", "; choose another --out")
        if previous.get("format") != SWEEP_FORMAT:
            raise MtlEdgeError(f"{path} is not a sweep's settings file; choose another --out")
        diffs = config_differences(_bound(previous), _bound(config))
        if diffs:
            fingerprints = any(d.startswith(("corpus_fingerprint", "task_corpora")) for d in diffs)
            note = ("" if not fingerprints else
                    " (a task reads another corpus than the sweep's, or its corpus was rebuilt or edited)"
                    if "task_corpora" in previous or "task_corpora" in config else
                    f" (the sweep was on {previous.get('corpus')}; {config['corpus']} differs in its manifest or audio)")
            raise MtlEdgeError(f"{out} holds a sweep with other settings: {'; '.join(diffs)}{note}. "
                               f"Continue it with the same settings, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise MtlEdgeError(f"{out} exists and is not a sweep folder; choose another --out")


PROBE_STEPS = 3  # optimizer steps timed by ``timed_costs`` (after one untimed step)


class _StepClock:
    """A ``fit`` probe that only notes when each optimizer step starts (it changes nothing it sees)."""

    def __init__(self):
        self.starts: list[float] = []

    def __call__(self, step, model, x, batch_tasks, targets) -> None:
        import time

        self.starts.append(time.perf_counter())

    def state_dict(self) -> dict:
        return {}


def timed_costs(corpus: str | Path, tasks: list[str], cfg: TrainConfig, input_config, cache_dir=None) -> dict[str, float]:
    """Seconds per optimizer step, per validation and to load the data, timed on this machine by a
    short ``fit`` of ``tasks`` (into a folder that is removed): the documented constants are the DNN's,
    and a model like the WaveNet costs a thousand times more per step."""
    import tempfile
    import time

    import torch

    from mtl_edge.train.data import load_training_data
    from mtl_edge.train.trainer import fit

    torch.set_num_threads(1)  # as run_job trains
    started = time.perf_counter()
    data = load_training_data(corpus, tasks, cfg, input_config, cache_dir=cache_dir, workers=1, progress=False)
    loaded = time.perf_counter()
    clock = _StepClock()
    probe_cfg = replace(cfg, steps=PROBE_STEPS + 1, batches_per_epoch=PROBE_STEPS + 1)
    with tempfile.TemporaryDirectory(prefix=".mtl-edge-estimate-") as folder:
        fit(data, probe_cfg, folder, probe=clock)
    ended = time.perf_counter()
    steps = [b - a for a, b in zip(clock.starts[1:], clock.starts[2:])]
    step = sorted(steps)[len(steps) // 2] if steps else (ended - loaded) / (PROBE_STEPS + 1)
    # after the last step starts: that step, one validation and the checkpoint
    validation = max(0.0, ended - clock.starts[-1] - step) if clock.starts else 0.0
    return {"load_s": loaded - started, "step_s": step, "validation_s": validation}


def estimate(todo: list[RunSpec], cfg: TrainConfig, workers: int, finished: list[dict],
             train_samples: dict[str, int], timed: dict[str, float] | None = None) -> tuple[float, str]:
    """Seconds to train ``todo`` and where the number comes from: the mean wall time of this sweep's
    finished runs (all train the same steps), else ``timed`` costs (``timed_costs``), else the
    documented constants above (epochs from the manifest's training rows)."""
    times = [s["wall_s"] for s in finished if s.get("status") == "done" and s.get("wall_s")]
    if times:
        total, source = len(todo) * sum(times) / len(times), f"mean of {len(times)} finished run(s) of this sweep"
    elif timed:
        total = 0.0
        for spec in todo:  # validations: one per epoch, and the test split at the end
            batches = max(1, -(-sum(train_samples[t] for t in spec.tasks) // cfg.batch_size))
            total += timed["load_s"] + cfg.steps * timed["step_s"] + (cfg.epochs_for(batches) + 1) * timed["validation_s"]
        source = (f"timed here on the largest run: {timed['step_s']:.2f} s per step, {timed['validation_s']:.1f} s per "
                  f"validation, {timed['load_s']:.1f} s to load; smaller runs cost less")
    else:
        scale = (max(cfg.hidden) / 512) ** 2 * cfg.batch_size / 64
        total = 0.0
        for spec in todo:
            batches = max(1, -(-sum(train_samples[t] for t in spec.tasks) // cfg.batch_size))
            total += SECONDS_PER_RUN + scale * (cfg.steps * SECONDS_PER_STEP + cfg.epochs_for(batches) * SECONDS_PER_EPOCH)
        source = (f"documented constants: {SECONDS_PER_STEP * scale * 1000:.0f} ms per step, "
                  f"{SECONDS_PER_EPOCH * scale * 1000:.0f} ms per epoch, {SECONDS_PER_RUN:.0f} s per run")
    return total / max(1, min(workers, len(todo))), source


def results_rows(out: Path, runs: list[RunSpec]) -> list[dict]:
    """Per combination, seed and task: the selection metric of the baseline and of the combination, and the gain."""

    def test_metrics(spec: RunSpec) -> dict:
        return finished_metrics(out, spec)

    rows = []
    for spec in runs:
        if len(spec.tasks) < 2:
            continue
        multi = test_metrics(spec)
        for task in spec.tasks:
            single = test_metrics(RunSpec((task,), spec.seed))
            task_spec = (multi or single).get("task_specs", {}).get(task, {})
            metric = task_spec.get("select_metric", "")
            a = single.get("tasks", {}).get(task, {}).get("test", {}).get(metric)
            b = multi.get("tasks", {}).get(task, {}).get("test", {}).get(metric)
            gain = None if a is None or b is None else (b - a) * (1 if task_spec.get("higher_is_better", True) else -1)
            rows.append({"combo": spec.name, "seed": spec.seed, "task": task, "metric": metric,
                         "single": a, "multi": b, "gain": gain})
    return rows


def write_results(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["combo", "seed", "task", "metric", "single", "multi", "gain"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic.write_text(path, buf.getvalue())


def resolve(corpus: str | Path, tasks: list[str], combos: list[str], seeds: int, cfg: TrainConfig,
            feature_overrides: dict | None = None, cache_dir=None, sources=None) -> tuple[dict, list[RunSpec], dict[str, int]]:
    """Check the request against the corpus (each task's own, with ``sources`` of several corpora: one
    feature config for all of them) and resolve it into (sweep config, runs, training samples per
    task), computing nothing."""
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.features.cache import fingerprint_of, resolve_config
    from mtl_edge.features.inputs import input_kind
    from mtl_edge.tasks import is_self_supervised
    from mtl_edge.train import corpora as multi
    from mtl_edge.train.models import model_entry

    sources = sources if sources is not None and sources.multi else None
    if sources is None:
        corpus = Path(corpus).resolve()
        manifest = read_manifest(corpus, check_files=False)
        unknown = [t for t in tasks if t not in manifest.tasks and not is_self_supervised(t)]
        if unknown:
            raise MtlEdgeError(f"unknown task(s) {', '.join(unknown)}: the corpus {corpus} has {', '.join(manifest.tasks)}")
        of = {t: manifest for t in tasks}
    else:
        multi.check_tasks_known(sources)
        manifests = {c: read_manifest(c, check_files=False) for c in sources.distinct}
        of = {t: manifests[sources.corpora[t]] for t in tasks}
    if cfg.steps < 1:
        raise MtlEdgeError("a sweep trains every run for the same number of steps: give --steps >= 1")
    from mtl_edge.train.data import check_exclude

    check_exclude(cfg.exclude, {t: of[t].labels(t) if t in of[t].tasks else [] for t in tasks})
    if seeds < 1:
        raise MtlEdgeError("--seeds must be at least 1")
    kind = model_entry(cfg.model).input_kind
    given = {k: v for k, v in (feature_overrides or {}).items() if v is not None}
    if given and kind != "features":
        raise MtlEdgeError(f"model {cfg.model!r} takes {kind} input: {', '.join(given)} do not apply")
    if sources is None:
        input_config = resolve_config(corpus, kind, given, cache_dir=cache_dir)
    else:
        input_config = multi.common_input_config(sources, kind, given, cache_dir=cache_dir)
    if input_kind(input_config) != kind:
        raise MtlEdgeError(f"model {cfg.model!r} takes {kind} input, not {input_kind(input_config)}")
    if sources is None:
        config = sweep_config(corpus, fingerprint_of(corpus), tasks, combos, seeds, cfg, input_config)
    else:
        task_corpora = multi.fingerprints(sources)
        config = sweep_config(sources.distinct[0], multi.combined_fingerprint(task_corpora), tasks, combos, seeds, cfg,
                              input_config, task_corpora)
    runs = plan_runs(tasks, combos, seeds)
    if not runs:
        raise MtlEdgeError(f"combinations {', '.join(combos)} of {len(tasks)} task(s) give no run")
    train_samples = {t: sum(r.split == "train" for r in of[t].rows_for(t)) if t in of[t].tasks else
                     len({r.path for r in of[t].rows if r.split == "train"}) for t in tasks}
    return config, runs, train_samples


@dataclass
class Plan:
    config: dict
    runs: list[RunSpec]
    done: list[RunSpec]
    seconds: float  # estimated time to train the runs not done
    source: str  # where the estimate comes from


def plan_sweep(corpus: str | Path, tasks: list[str], out: str | Path, cfg: TrainConfig, *, combos: list[str],
               seeds: int, workers: int = 2, feature_overrides: dict | None = None, cache_dir=None, sources=None,
               time_runs: bool = True) -> Plan:
    """What ``run_sweep`` would train and how long it would take (``--dry-run``); writes nothing.

    ``time_runs``: for a model without documented constants, time a short fit here (``timed_costs``;
    one corpus only) before any run of the sweep has finished; ``run_sweep`` does not (its board
    learns the time from the first runs)."""
    out = Path(out)
    config, runs, train_samples = resolve(corpus, tasks, combos, seeds, cfg, feature_overrides, cache_dir, sources)
    check_folder(out, config)
    done = [r for r in runs if is_done(r.folder(out))]
    todo = [r for r in runs if r not in done]
    timed = None
    if time_runs and cfg.model != "dnn" and todo and not done and "task_corpora" not in config:  # the constants are the DNN's
        from mtl_edge.features.inputs import config_from_json

        largest = max(todo, key=lambda r: len(r.tasks))
        timed = timed_costs(corpus, list(largest.tasks), cfg, config_from_json(config["features"]), cache_dir)
    seconds, source = estimate(todo, cfg, workers, [read_status(r.folder(out)) for r in done], train_samples, timed)
    return Plan(config, runs, done, seconds, source)


def run_sweep(corpus: str | Path, tasks: list[str], out: str | Path, cfg: TrainConfig, *, combos: list[str],
              seeds: int, executor: str = "local", workers: int = 2, address: str | None = None, feature_overrides: dict | None = None,
              cache_dir=None, feature_workers: int = 2, console=None, sources=None) -> SweepResult:
    """Train (or continue) a sweep; see the module docstring for the layout and the rules."""
    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.train.data import load_task_data

    if executor not in EXECUTORS:
        raise MtlEdgeError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise MtlEdgeError("--workers must be at least 1")
    EXECUTORS[executor].check(address)
    plan = plan_sweep(corpus, tasks, out, cfg, combos=combos, seeds=seeds, workers=workers,
                      feature_overrides=feature_overrides, cache_dir=cache_dir, sources=sources, time_runs=False)
    out, config, runs = Path(out), plan.config, plan.runs
    corpora = {t: v["corpus"] for t, v in config["task_corpora"].items()} if "task_corpora" in config else None
    # validates every task's labels and builds the feature cache once, before any worker reads it
    for where, group in ({c: [t for t in tasks if corpora[t] == c] for c in dict.fromkeys(corpora.values())}.items()
                         if corpora else [(config["corpus"], tasks)]):
        load_task_data(where, group, config_from_json(config["features"]), cache_dir=cache_dir, workers=feature_workers)
    if json_or_empty(out / "sweep.json") != config:  # written once (again only where the corpus moved)
        atomic.write_json(out / "sweep.json", config, sort_keys=False)

    result = SweepResult(out, runs, skipped=plan.done)
    todo = [r for r in runs if r not in plan.done]
    jobs = [RunJob(r, str(r.folder(out)), config["corpus"], replace(cfg, seed=r.seed).to_json(), config["features"],
                   None if cache_dir is None else str(cache_dir), corpora) for r in todo]
    board = Board(runs, plan.done, workers, plan.seconds)

    def on_finish(spec: RunSpec, status: dict) -> None:
        board.finish(spec, status)
        if status.get("status") == "done":
            result.trained.append(spec)
        else:
            result.failed[spec.label] = status.get("error", "unknown error")

    from rich.live import Live

    from mtl_edge.progress import stderr

    try:
        with Live(console=console or stderr, get_renderable=board.render, refresh_per_second=2, transient=False):
            EXECUTORS[executor].run(jobs, workers=workers, on_start=board.start, on_finish=on_finish, address=address)
    except KeyboardInterrupt:
        raise MtlEdgeError(f"interrupted: {len(todo) - len(result.trained) - len(result.failed)} run(s) unfinished; "
                           f"run the same command again to finish the sweep (finished runs are kept)") from None
    result.results = results_rows(out, runs)
    write_results(out / "results.csv", result.results)
    return result


