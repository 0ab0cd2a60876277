"""The ``mtl-edge`` command line: thin typer commands over the stage functions.

Every command catches the one domain error (MtlEdgeError) and turns it into a message on
stderr and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from mtl_edge import __version__
from mtl_edge.cli_lazy import lazy_typer
from mtl_edge.commands import cli_command
from mtl_edge.errors import MtlEdgeError
from mtl_edge.cli_options import (Augment, AugmentCopies, AugmentTasks, Cache, Corpus, Exclude, HeadLr, Hidden, HopMs,
                                  LabelFraction, Model, ModelArgs, NMels, OnBadAudio, Recipe, TaskCorpus, UnlabeledSeconds,
                                  WinMs, augment_json, check_policy, exclude_of, feature_config, parse_head_lr, recipe_for,
                                  train_config)

app = typer.Typer(
    name="mtl-edge",
    help="On-device multi-task audio sensing: corpora, features, training, export and device benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build, import, describe and prepare corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(lazy_typer(
    "mtl_edge.devbed.cli:app", no_args_is_help=True,
    help="Emulated device test beds: an arm64 Debian under qemu-user reached over SSH (pi4) or adb (android) "
         "(needs root). Timings on a bed are not performance figures."), name="devbed")


def _version(value: bool):
    if value:
        typer.echo(f"mtl-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
):
    """mtl-edge: which audio tasks should share one network, and what sharing costs on the device."""
    from mtl_edge.interrupts import count_sigints

    count_sigints()


def _report_skipped(skipped: list[str]) -> None:
    from mtl_edge.progress import stderr

    if skipped:
        stderr.print(f"[yellow]skipped {len(skipped)} bad audio file(s):[/yellow]", highlight=False)
        for problem in skipped[:20]:
            stderr.print(f"  {problem}", highlight=False, markup=False)
        if len(skipped) > 20:
            stderr.print(f"  ... and {len(skipped) - 20} more", highlight=False)


@data_app.command("demo")
@cli_command
def data_demo(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the corpus to.")] = Path("data/demo"),
    scale: Annotated[float, typer.Option("--scale", min=0.001, help="1 = full corpus (~5,600 clips); smaller for tests.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the corpus is identical for a seed.")] = 0,
    voices: Annotated[Optional[str], typer.Option("--voices", help="mbrola (recorded human diphones; the default), mbrola+tts (those and six voices of flite and pico: sixteen voices, the held-out ones still drawn from mbrola) or espeak (espeak-ng's own voices; the other variant's only voices).")] = None,
    unseen_speakers: Annotated[int, typer.Option("--unseen-speakers", min=0, help="Voices held out of training, alternately female and male: their speech forms the test_unseen_speakers split.")] = 2,
    variant: Annotated[str, typer.Option("--variant", help="default (every event in every scene), overlap (some events in one scene only, others in several) or other (a second corpus: espeak-ng voices, other recordings, rooms and instruments; no source shared with the default).")] = "default",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Rendering processes.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a complete corpus with the same settings exists.")] = False,
):
    """Build the demo corpus from audio that exists offline (speech, instruments, events, scenes)."""
    from mtl_edge.data.demo.builder import DemoConfig, build_demo

    try:
        from mtl_edge.data.demo.variants import variant_sources

        voices = voices or variant_sources(variant).voices or DemoConfig.voices
        config = DemoConfig(scale=scale, seed=seed, voices=voices, unseen_speakers=unseen_speakers, variant=variant)
        result = build_demo(config, out, workers=workers, force=force)
    except KeyboardInterrupt:  # the corpus is built under a temporary name, removed on the way out
        typer.echo(f"interrupted: nothing was written to {out} (a corpus already there is kept); run the same "
                   "command again to build it", err=True)
        raise typer.Exit(130) from None
    typer.echo(result.summary())


@data_app.command("import")
@cli_command
def data_import(
    src: Annotated[Path, typer.Argument(help="The dataset as it lies on disk.")],
    dst: Annotated[Path, typer.Argument(help="Folder for the mtl-edge corpus.")],
    layout: Annotated[str, typer.Option("--layout", help="speech-commands, esc50, fsdkaggle2018, librispeech, ravdess or folders.")],
    task: Annotated[Optional[str], typer.Option("--task", help="Task name (required for --layout folders).")] = None,
    link: Annotated[bool, typer.Option("--link/--copy", help="Symlink the audio instead of copying it.")] = False,
    on_bad_audio: OnBadAudio = "fail",
):
    """Turn a dataset in a known layout into an mtl-edge corpus (manifest.csv + audio)."""
    from mtl_edge.data.adapters import import_corpus

    result = import_corpus(layout, src, dst, task=task, link=link, on_bad_audio=check_policy(on_bad_audio))
    _report_skipped(result.skipped)
    typer.echo(result.summary())


@data_app.command("describe")
@cli_command
def data_describe(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (with manifest.csv).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON instead of a table.")] = False,
    on_bad_audio: OnBadAudio = "fail",
    split: Annotated[Optional[list[str]], typer.Option("--split", help="Measure the tasks over this split's rows only (repeatable); default: all splits.")] = None,
):
    """Dataset measurements per task: sizes, label entropy and kurtosis, lengths, rates, SNR, splits."""
    from mtl_edge.data.describe import describe_corpus
    from mtl_edge.report.tables import render_table

    report = describe_corpus(corpus, on_bad_audio=check_policy(on_bad_audio), splits=tuple(split) if split else None)
    _report_skipped(report.get("skipped", []))
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        render_table(report)


@data_app.command("overlap")
@cli_command
def data_overlap(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (with manifest.csv).")],
    tasks: Annotated[str, typer.Option("--tasks", help="Two tasks a,b labelled on shared clips, e.g. event,scene.")],
    split: Annotated[Optional[str], typer.Option("--split", help="Count this split's clips only (default: every split).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for overlap.csv, overlap.json and overlap.png (default: CORPUS/overlap/A-B-SPLIT).")] = None,
    print_exclude: Annotated[bool, typer.Option("--print-exclude", help="Print only the --exclude value that leaves a's shared labels out (for train/sweep); write nothing.")] = False,
):
    """Co-occurrence of task a's labels with task b's on the clips carrying both: which labels of a occur
    with several labels of b (shared) and which with one only (exclusive)."""
    from mtl_edge.data.overlap import co_occurrence, parse_pair
    from mtl_edge.report.overlap import render_overlap, write_overlap

    a, b = parse_pair(tasks)
    overlap = co_occurrence(corpus, a, b, split)
    if print_exclude:
        typer.echo(overlap.exclude_spec())
        return
    render_overlap(overlap)
    written = write_overlap(overlap, out or corpus / "overlap" / f"{a}-{b}-{split or 'all'}")
    typer.echo(f"written: {', '.join(str(p) for p in written)}")


@data_app.command("prepare")
@cli_command
def data_prepare(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder (with manifest.csv).")],
    cache: Cache = None,
    n_mels: NMels = None,
    win_ms: WinMs = None,
    hop_ms: HopMs = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Feature processes.")] = 2,
    on_bad_audio: OnBadAudio = "fail",
):
    """Compute and cache per-clip log-mel summary features (memory-mapped; reused until corpus or config change).

    The config used is recorded as the corpus' current features: `train` then uses them."""
    from mtl_edge.features.cache import prepare_features

    cfg = feature_config(corpus, cache, n_mels, win_ms, hop_ms)
    table = prepare_features(corpus, cfg, cache_dir=cache, on_bad_audio=check_policy(on_bad_audio), workers=workers,
                             mark_current=True)
    _report_skipped(table.skipped)
    typer.echo(f"{len(table.paths)} clips x {table.features.shape[1]} features -> {table.folder}")


@app.command("train")
@cli_command
def train(
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks, e.g. kws,speaker,scene,instrument; TASK@CORPUS reads that task from another corpus (e.g. kws@data/demo,gender@data/other).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder, e.g. runs/NAME.")],
    corpus: TaskCorpus = None,
    single: Annotated[bool, typer.Option("--single", help="Also train one single-task baseline per task (same config and seed).")] = False,
    model: Model = "dnn",
    hidden: Hidden = "512,512,512",
    model_args: ModelArgs = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (weights, shuffling, dropout).")] = 0,
    weighting: Annotated[Optional[str], typer.Option("--weighting", help="Loss weighting: uniform (batch mean; default), sum (of per-task means; lee2019's), uncertainty or pcgrad.")] = None,
    recipe: Recipe = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Maximum epochs (default from the training config).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Exactly this many optimizer steps, no early stopping (as a sweep's runs; default: epochs with early stopping).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Samples per optimizer step (default: the recipe's, else 64).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate (the trunk's when heads have their own; default: the recipe's, else 0.001).")] = None,
    head_lr: HeadLr = None,
    label_fraction: LabelFraction = 1.0,
    unlabeled_seconds: UnlabeledSeconds = 0.0,
    sampling: Annotated[Optional[str], typer.Option("--sampling", help="shuffle (all tasks' samples together; default) or balanced (every batch holds each task equally; lee2019's).")] = None,
    batches_per_epoch: Annotated[Optional[int], typer.Option("--batches-per-epoch", min=1, help="An epoch (validation, checkpoint, learning-rate decay) every N batches (default: one pass over the training samples).")] = None,
    lr_decay_every: Annotated[Optional[int], typer.Option("--lr-decay-every", min=0, help="Multiply every learning rate by the recipe's decay every N epochs; 0 keeps them constant (default: the recipe's, lee2019: 5).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")] = False,
    augment: Augment = None,
    augment_copies: AugmentCopies = 2,
    augment_tasks: AugmentTasks = None,
    exclude: Exclude = None,
    cache: Cache = None,
    n_mels: NMels = None,
    win_ms: WinMs = None,
    hop_ms: HopMs = None,
):
    """Train the shared multi-task DNN (and with --single the single-task baselines); print the per-task table.

    Features: those `data prepare` last wrote for the corpus, unless feature options are given (several
    corpora: the same config for every one of them, else an error)."""
    from mtl_edge.features.cache import resolve_config
    from mtl_edge.train.corpora import parse_task_sources
    from mtl_edge.report.tables import render_metrics
    from mtl_edge.train.models import model_entry
    from mtl_edge.train.run import train_run

    from dataclasses import replace

    cfg = train_config(model, hidden, seed, weighting, epochs, model_args, recipe_for(model, recipe), batch_size=batch_size,
                       label_fraction=label_fraction if label_fraction != 1.0 else None,
                       unlabeled_seconds=unlabeled_seconds or None, sampling=sampling, lr_decay_every=lr_decay_every,
                       batches_per_epoch=batches_per_epoch, exclude=exclude_of(exclude), lr=lr,
                       head_lr=parse_head_lr(head_lr))
    if steps:
        cfg = replace(cfg, steps=steps)
    if augment or augment_tasks:
        cfg = replace(cfg, augment=augment_json(augment, augment_copies, augment_tasks, seed))
    sources = parse_task_sources(tasks, corpus)
    corpus = sources.first_corpus(corpus)
    kind = model_entry(cfg.model).input_kind
    if kind == "features":
        input_config = feature_config(corpus, cache, n_mels, win_ms, hop_ms, sources)
    elif any(v is not None for v in (n_mels, win_ms, hop_ms)):
        raise MtlEdgeError(f"model {cfg.model!r} takes {kind} input: --n-mels, --win-ms and --hop-ms do not apply")
    elif sources.multi:
        from mtl_edge.train.corpora import common_input_config

        input_config = common_input_config(sources, kind, cache_dir=cache)
    else:
        input_config = resolve_config(corpus, kind, cache_dir=cache)
    result = train_run(corpus, sources.tasks, out, cfg, single=single, resume=resume, input_config=input_config,
                       cache_dir=cache, sources=sources)
    render_metrics(result.metrics)
    typer.echo(f"run written to {result.folder}")


@app.command("sweep")
@cli_command
def sweep(
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks to combine, e.g. kws,speaker,scene; TASK@CORPUS reads that task from another corpus.")],
    out: Annotated[Path, typer.Option("--out", help="Sweep folder, e.g. sweeps/NAME (rerun the command to continue it).")],
    corpus: TaskCorpus = None,
    combos: Annotated[str, typer.Option("--combos", help="Comma-separated: singles, pairs, triples, all (baselines are added).")] = "singles,pairs",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds 0..N-1, each combination once per seed.")] = 5,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps of every run, no early stopping (default: 2000).")] = None,
    executor: Annotated[str, typer.Option("--executor", help="Where runs train: local (worker processes here) or ray (Ray tasks).")] = "local",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Runs trained at the same time (one process and one thread each).")] = 2,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join, HOST:PORT of `ray start --head` (default: RAY_ADDRESS, else a local Ray).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the runs and a time estimate; train nothing.")] = False,
    model: Model = "dnn",
    hidden: Hidden = "512,512,512",
    model_args: ModelArgs = None,
    recipe: Recipe = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate (default: the training config's, 0.001).")] = None,
    weighting: Annotated[Optional[str], typer.Option("--weighting", help="Loss weighting: uniform (batch mean; default), sum (of per-task means; lee2019's), uncertainty or pcgrad.")] = None,
    exclude: Exclude = None,
    cache: Cache = None,
    n_mels: NMels = None,
    win_ms: WinMs = None,
    hop_ms: HopMs = None,
):
    """Train every combination of the tasks with identical settings and seeds; single-task baselines once each.

    Writes OUT/sweep.json, OUT/runs/TASKS/seedK/ and OUT/results.csv (gain of each combination over its baselines)."""
    from dataclasses import replace

    from mtl_edge.research import sweep as sweeps
    from mtl_edge.train.corpora import parse_task_sources

    cfg = replace(train_config(model, hidden, 0, weighting, None, model_args, recipe_for(model, recipe),
                               exclude=exclude_of(exclude)),
                  steps=steps or sweeps.DEFAULT_STEPS, **({"lr": lr} if lr is not None else {}))
    sources = parse_task_sources(tasks, corpus)
    corpus = sources.first_corpus(corpus)
    args = dict(combos=sweeps.parse_combos(combos), seeds=seeds, cache_dir=cache, sources=sources,
                feature_overrides={"n_mels": n_mels, "win_ms": win_ms, "hop_ms": hop_ms})
    if dry_run:
        plan = sweeps.plan_sweep(corpus, sources.tasks, out, cfg, workers=workers, **args)
        for spec in plan.runs:
            typer.echo(f"{'done' if spec in plan.done else 'todo'}  {spec.label}")
        typer.echo(f"{len(plan.runs)} run(s), {len(plan.done)} done, {cfg.steps} steps each; estimated "
                   f"{plan.seconds / 60:.1f} min with {workers} worker(s) ({plan.source})")
        return
    result = sweeps.run_sweep(corpus, sources.tasks, out, cfg, executor=executor, workers=workers, address=address,
                              **args)
    if result.results:
        from mtl_edge.report.sweep import render_results

        render_results(result.results)
    typer.echo(f"{len(result.trained)} run(s) trained, {len(result.skipped)} already done, {len(result.failed)} failed "
               f"-> {result.folder / 'results.csv'}")
    if result.failed:  # the errors start with the run's label
        raise MtlEdgeError(f"{len(result.failed)} run(s) failed (recorded in their status.json): " +
                           "; ".join(result.failed.values()))


@app.command("affinity")
@cli_command
def affinity(
    corpus: Corpus,
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks (two or more), e.g. kws,speaker,scene.")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the result, e.g. affinity/NAME.")],
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps of the run (default: 2000, as a sweep's runs).")] = None,
    every: Annotated[int, typer.Option("--every", min=1, help="Measure affinity every N steps.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the run.")] = 0,
    model: Model = "dnn",
    hidden: Hidden = "512,512,512",
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate, also the lookahead step (default 0.001).")] = None,
    cache: Cache = None,
):
    """Inter-task affinity from one multi-task run (TAG lookahead and gradient cosine), without a sweep.

    Writes OUT/affinity.json, OUT/tag.csv, OUT/cosine.csv, OUT/affinity.png and OUT/run/."""
    from dataclasses import replace

    from mtl_edge.research import sweep as sweeps
    from mtl_edge.research.affinity import measure_affinity
    from mtl_edge.train.data import parse_tasks

    cfg = replace(train_config(model, hidden, seed, "uniform", None), steps=steps or sweeps.DEFAULT_STEPS,
                  **({"lr": lr} if lr is not None else {}))
    result = measure_affinity(corpus, parse_tasks(tasks), out, cfg, every=every, cache_dir=cache)
    record = result.record
    names = record["tasks"]
    typer.echo(("already measured: " if result.reused else "") +
               f"{record['measurements']} measurement(s) over {record['steps']} steps in {record['wall_s']:.0f} s")
    width = max(len(t) for t in names)
    typer.echo("TAG affinity Z[i->j] (row: step on i, column: loss of j)")
    typer.echo(" " * (width + 2) + " ".join(f"{t[:9]:>9}" for t in names))
    for task, row in zip(names, record["tag"]):
        typer.echo(f"{task:<{width}}  " + " ".join("        -" if v is None else f"{v:9.2e}" for v in row))
    typer.echo(f"-> {result.folder / 'affinity.json'}")


@app.command("analyze")
@cli_command
def analyze(
    sweep: Annotated[Path, typer.Argument(help="A sweep folder with pairs (mtl-edge sweep --combos singles,pairs).")],
    metric: Annotated[str, typer.Option("--metric", help="Test metric of the gain: macro_f1, micro_f1 or accuracy.")] = "macro_f1",
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder of the report (default: SWEEP/analysis, or SWEEP/against-NAME with --against).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="An affinity folder: compare its predicted pair affinities with the sweep's measured gains.")] = None,
):
    """Gains of every (main, auxiliary) pair with CIs and Holm-corrected tests, feature correlations,
    a cross-validated logistic regression predicting a positive gain, and per-class F1 changes."""
    import shlex
    import sys
    import time

    from mtl_edge import atomic
    from mtl_edge.research.analyze import analyze as run_analysis
    from mtl_edge.report.analysis import write_analysis

    started = time.perf_counter()
    if against is not None:
        from mtl_edge.research.against import compare, write_against

        result = compare(sweep, against, metric)
        paths = write_against(result, out or sweep / f"against-{against.name}", time.perf_counter() - started,
                              shlex.join(["mtl-edge", *sys.argv[1:]]))
        for key, s in result["stats"].items():
            rho = "-" if s["rho"] is None else f"{s['rho']:+.3f} (p {s['p']:.3f})"
            typer.echo(f"{key}: {s['n']} pairs, Spearman rho {rho}, sign agreement {s['sign_agreement']:.3f} "
                       f"(always 'gain' {s['always_gain_agreement']:.3f})")
        typer.echo(f"-> {paths[0]}")
        return
    analysis = run_analysis(sweep, metric)
    tasks = atomic.read_json(sweep / "sweep.json", "")["tasks"]
    command = shlex.join(["mtl-edge", *sys.argv[1:]])
    paths = write_analysis(analysis, tasks, out or sweep / "analysis", time.perf_counter() - started, command)
    reg = analysis.regression
    if "skipped" in reg:
        typer.echo(f"regression not run: {reg['skipped']}")
    else:
        typer.echo(f"logistic regression F1 {reg['all_features']['f1_mean']:.3f} ± {reg['all_features']['f1_std']:.3f} "
                   f"(majority {reg['majority']['f1_mean']:.3f})")
    typer.echo(f"{len(analysis.gains)} pair(s), {sum(g['significant'] for g in analysis.gains)} significant -> {paths[0]}")


@app.command("plan")
@cli_command
def plan(
    gains: Annotated[Path, typer.Option("--gains", help="A sweep folder (with pairs) or an affinity folder: the predicted score of each grouping.")],
    bench: Annotated[list[Path], typer.Option("--bench", help="EXPORT/bench folder of measured lines; repeat for exports of other widths.")],
    out: Annotated[Path, typer.Option("--out", help="Plan folder, e.g. plans/NAME.")],
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated tasks to serve (default: all of the gains').")] = None,
    device: Annotated[str, typer.Option("--device", help="Device whose measured lines cost the networks (desktop, pi4, android or a profile's name).")] = "desktop",
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms", help="Budget: front-end + all networks, per clip.")] = None,
    max_memory_mb: Annotated[Optional[float], typer.Option("--max-memory-mb", help="Budget: the process running them all.")] = None,
    metric: Annotated[str, typer.Option("--metric", help="Sweep gains: test metric macro_f1, micro_f1 or accuracy.")] = "macro_f1",
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="Only these runtimes, comma-separated (default: every measured one).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="Only these precisions, comma-separated (default: every measured one).")] = None,
    train: Annotated[bool, typer.Option("--train", help="Then train, export and benchmark the chosen networks and check the prediction.")] = False,
    train_seeds: Annotated[int, typer.Option("--train-seeds", min=1, help="With --train: seeds 0..N-1 of each network (accuracy is their mean).")] = 1,
    baselines: Annotated[Optional[Path], typer.Option("--baselines", help="With --train: sweep whose single-task and all-task runs the check compares with (default: --gains when it is a sweep).")] = None,
    corpus: Annotated[Optional[Path], typer.Option("--corpus", help="With --train: the corpus (default: where the gains were measured).")] = None,
):
    """Which tasks share which network within a latency and memory budget: exact search over groupings,
    widths and precisions, scored from a sweep or an affinity run, costed from measured bench lines.

    Writes OUT/plan.json, plan.md, pareto.csv and pareto.png; with --train also OUT/train/ and OUT/check.md."""
    import shlex
    import sys

    from mtl_edge.plan import make_plan
    from mtl_edge.progress import stderr
    from mtl_edge.train.data import parse_tasks

    def listed(text):
        return [t.strip() for t in text.split(",") if t.strip()] if text else None

    outcome = make_plan(gains, bench, device, out, tasks=parse_tasks(tasks) if tasks else None,
                        max_latency_ms=max_latency_ms, max_memory_mb=max_memory_mb, metric=metric,
                        runtimes=listed(runtime), precisions=listed(precision),
                        command=shlex.join(["mtl-edge", *sys.argv[1:]]))
    record = outcome.record
    if record["emulated"]:
        typer.echo("NOTE: the costs come from an EMULATED device: they are not performance figures.")
    for note in record["notes"]:
        stderr.print(f"[yellow]{note}[/yellow]", highlight=False, markup=False)
    typer.echo(f"scores: {record['gains']['rule']}")
    chosen = record["chosen"]
    if chosen is None:
        cheap = record["cheapest"]["latency"]
        raise MtlEdgeError(f"no grouping meets the budget (latency <= {max_latency_ms} ms, memory <= {max_memory_mb} MB); "
                           f"the cheapest in latency is {cheap['grouping']} on {cheap['runtime']}: {cheap['latency_ms']:.4f} ms, "
                           f"{cheap['memory_mb']:.2f} MB; the cheapest in memory {record['cheapest']['memory']['memory_mb']:.2f} MB "
                           f"(written to {out / 'plan.md'})")
    typer.echo(f"chosen: {chosen['grouping']} on {chosen['runtime']}: score {chosen['score']:+.4f}, "
               f"{chosen['latency_ms']:.4f} ms, {chosen['memory_mb']:.2f} MB")
    for n in chosen["networks"]:
        typer.echo(f"  {'+'.join(n['tasks'])}: {n['precision']} {n['width']}x3, {n['latency_ms']:.4f} ms, "
                   f"{n['memory_mb']:.2f} MB, score {n['score']:+.4f}")
    typer.echo(f"{len(record['front'])} grouping(s) on the Pareto front -> {out / 'plan.md'}")
    if train:
        from mtl_edge.plan.check import check_plan

        check = check_plan(outcome, seeds=train_seeds, baselines=baselines, corpus=corpus)
        typer.echo(check["summary"])
        typer.echo(f"check -> {out / 'check.md'}")


@app.command("evaluate")
@cli_command
def evaluate(
    run: Annotated[Path, typer.Argument(help="A finished run folder.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus with the same label space (e.g. a held-out corpus); it may carry only some of the run's tasks.")],
    split: Annotated[str, typer.Option("--split", help="Split of that corpus to evaluate on.")] = "test",
):
    """Evaluate a run's checkpoints on another corpus; labels the model never saw and tasks it lacks are reported."""
    from mtl_edge.progress import stderr
    from mtl_edge.train.evaluate import evaluate_run
    from mtl_edge.report.tables import render_metrics

    report = evaluate_run(run, corpus, split)
    render_metrics(report)
    for task, entry in report["tasks"].items():
        if entry["unseen_samples"]:
            stderr.print(f"[yellow]{task}: {entry['unseen_samples']} of {entry['samples']} samples have labels the model "
                         f"never saw ({', '.join(f'{k} {v}' for k, v in entry['unseen_labels'].items())}); they count as "
                         f"errors in accuracy_all[/yellow]", highlight=False)
    if report["absent_tasks"]:
        stderr.print(f"[yellow]not evaluated, absent from {corpus}: {', '.join(report['absent_tasks'])}[/yellow]", highlight=False)
    if report["tasks_without_examples"]:
        stderr.print(f"[yellow]not evaluated, no {split} examples: {', '.join(report['tasks_without_examples'])}[/yellow]",
                     highlight=False)
    typer.echo(f"evaluation written to {report['written_to']}")


@app.command("export")
@cli_command
def export(
    run: Annotated[Path, typer.Argument(help="A finished training run folder.")],
    formats: Annotated[str, typer.Option("--format", help="Comma-separated formats: onnx, tflite, torch (TorchScript, fp32 only).")] = "onnx,tflite",
    quantize: Annotated[str, typer.Option("--quantize", help="Comma-separated precisions: fp32, fp16, int8-dynamic, int8 (static).")] = "fp32,fp16,int8-dynamic,int8",
    per_tensor: Annotated[bool, typer.Option("--per-tensor", help="Static int8 with one scale per tensor (default: per channel).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Export folder (default: RUN/export).")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="multi, single (every baseline) or single:TASK, comma-separated (default: all).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an export folder that holds a different export.")] = False,
    allow_degraded: Annotated[bool, typer.Option("--allow-degraded", help="Keep artefacts that fail verification (marked degraded) instead of failing.")] = False,
    tflite_runtime: Annotated[Optional[str], typer.Option("--tflite-runtime", help="A Python with tflite-runtime (numpy<2): also check every TFLite artefact under it.")] = None,
    end_to_end: Annotated[bool, typer.Option("--end-to-end", help="Also export the multi-task model waveform in (front-end inside the graph: e2e-multi.*), verified on the test clips.")] = False,
    heads: Annotated[str, typer.Option("--heads", help="inference (the labelled tasks' heads) or all (also the auxiliary reconstruction heads, denoising excepted).")] = "inference",
):
    """Export a run to ONNX / TFLite at several precisions; verify every artefact on the test split."""
    from mtl_edge.export import export_run

    try:
        result = export_run(run, out, formats, quantize, per_tensor=per_tensor, force=force,
                            allow_degraded=allow_degraded, models=models, tflite_runtime=tflite_runtime,
                            end_to_end=end_to_end, heads=heads)
    except KeyboardInterrupt:  # the export is built under a temporary name, removed on the way out
        typer.echo(f"interrupted: nothing was written to {out or run / 'export'} (an export already there is "
                   "kept); run the same command again", err=True)
        raise typer.Exit(130) from None
    verification = result.folder / "verification.md"
    if verification.is_file():
        typer.echo(verification.read_text())
    for fmt, pick in (result.manifest.get("recommended") or {}).items():
        typer.echo(f"recommended {fmt}: {pick.get('precision') or '-'} ({pick.get('reason')})")
    typer.echo(f"{len(result.artefacts)} artefact(s), {len(result.degraded)} degraded, "
               f"{len(result.unsupported)} unsupported -> {result.folder}")


@app.command("bench")
@cli_command
def bench(
    export_dir: Annotated[Path, typer.Argument(help="An export folder (with manifest.json and testset.npz).")],
    device: Annotated[str, typer.Option("--device", help="desktop, pi4, android or the path of a device profile (TOML).")] = "desktop",
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="onnxruntime, litert, tflite-runtime, torch or several comma-separated (default: the device's).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Runtime threads (default: the device's).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="Comma-separated subset of fp32, fp16, int8-dynamic, int8 (default: all exported).")] = None,
    compare: Annotated[Optional[str], typer.Option("--compare", help="single: the multi-task model against the sum of the single-task models.")] = None,
    results: Annotated[Optional[Path], typer.Option("--results", help="Results folder (default: EXPORT_DIR/bench).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip measurements already written for the same artefact, device and settings.")] = False,
    min_runs: Annotated[int, typer.Option("--min-runs", min=1, help="Measured runs at least.")] = 100,
    min_secs: Annotated[float, typer.Option("--min-secs", min=0.0, help="Measured seconds at least.")] = 2.0,
    max_secs: Annotated[float, typer.Option("--max-secs", min=0.01, help="Measured seconds at most (caps min-runs).")] = 20.0,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1.0, help="Seconds before a runner is declared hung.")] = None,
    allow_disagreement: Annotated[bool, typer.Option("--allow-disagreement", help="Do not fail when an artefact answers differently on the device than here (still marked).")] = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the main fields of every measurement to this CSV file.")] = None,
    answer_rows: Annotated[Optional[int], typer.Option("--answer-rows", min=1, help="Send only N test clips, evenly spaced over the test split, for the timed runs and the answer check (e.g. 16 on an emulated device; default: all).")] = None,
):
    """Measure latency and memory of exported artefacts on a device, in a separate runner process.

    The device's answers on the test split (or --answer-rows of it) are checked against this machine's for every artefact.
    """
    from mtl_edge.bench.devices import load_device
    from mtl_edge.bench.harness import bench as run_bench
    from mtl_edge.bench.results import Csv
    from mtl_edge.report.tables import GeorgievTable

    if load_device(device).emulated:
        typer.echo("NOTE: the device is EMULATED (qemu): its timings and memory are not performance figures.")
    listeners = [GeorgievTable(), *([Csv(csv)] if csv else [])]
    try:
        result = run_bench(export_dir, device=device, runtime=runtime, threads=threads, precisions=precision,
                           compare=compare, results=results, resume=resume, min_runs=min_runs, min_secs=min_secs,
                           max_secs=max_secs, timeout=timeout, allow_disagreement=allow_disagreement,
                           listeners=listeners, answer_rows=answer_rows)
    except KeyboardInterrupt:  # every finished line is whole and fsync'd; the runner in flight is stopped
        where = results if results is not None else Path(export_dir) / "bench"
        typer.echo(f"interrupted: the lines already written are kept in {where}; run the same command with --resume "
                   "to finish", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"{len(result.measurements)} measurement(s), {len(result.compares)} comparison(s) written, "
               f"{result.skipped} skipped (resume) -> {', '.join(str(p) for p in result.results)}")


@app.command("report")
@cli_command
def report(
    results: Annotated[list[Path], typer.Argument(help="Benchmark results files (.jsonl) or folders holding them.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: report/ beside the first results).")] = None,
):
    """Render benchmark results as Markdown + PNG (latency, multi vs sum of singles, accuracy vs latency)."""
    from mtl_edge.report import render_report

    paths: list[Path] = []
    for path in results:
        paths.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    if not paths:
        raise MtlEdgeError(f"no results (.jsonl) in {', '.join(map(str, results))}")
    rendered = render_report(paths, out)
    typer.echo(f"report: {', '.join(str(p) for p in [rendered.markdown, *rendered.images])}")


DEMO_TASKS = "kws,speaker,scene,instrument"
DEMO_STEPS = 0
# The demo's own training budget (recorded in its run config): early stopping after 10 epochs without a
# better validation score, not the 30 of `train`. Replayed on a full demo run's validation curves it stops
# the five trainings after 128 epochs in all instead of 368, each within 0.02 of its best validation score.
DEMO_PATIENCE = 10


@app.command("demo")
@cli_command
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the demo corpus lives (built on first use).")] = Path("data/demo"),
    runs: Annotated[Path, typer.Option("--runs", help="Where the demo's training run goes.")] = Path("runs/demo"),
    scale: Annotated[float, typer.Option("--scale", min=0.001, help="Corpus scale (1 = full).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    steps: Annotated[int, typer.Option("--steps", min=0, help="Optimizer steps per model (the demo's training budget, recorded in its run config); 0 = up to 200 epochs with early stopping.")] = DEMO_STEPS,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Early stopping: epochs without a better validation score (the demo's budget; `train` uses 30).")] = DEMO_PATIENCE,
):
    """The one-command demo: build the corpus if absent, train single- and multi-task models, compare them,
    export them to ONNX and TFLite at every precision (verified; the multi-task model also waveform in), benchmark
    them on this CPU, write the report."""
    import time

    from mtl_edge.data.demo.builder import DemoConfig, build_demo
    from mtl_edge.data.describe import describe_corpus
    from mtl_edge.report.tables import GeorgievTable, render_metrics, render_table
    from mtl_edge.train.data import parse_tasks
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    started = time.perf_counter()
    result = build_demo(DemoConfig(scale=scale, seed=seed), out)
    typer.echo(result.summary())
    render_table(describe_corpus(out))
    from mtl_edge.features.augment import AugmentConfig

    # kws is augmented (pitch, rate, gain, the corpus's training backgrounds): it is scored on voices
    # no training clip has (test_unseen_speakers) too; speaker identity and scene are not (pitch and
    # mixed-in backgrounds change their labels)
    augment = AugmentConfig(copies=2, tasks=("kws",), seed=seed).to_json()
    run = train_run(out, parse_tasks(DEMO_TASKS), runs, TrainConfig(seed=seed, steps=steps, patience=patience, augment=augment),
                    single=True, resume=True)
    render_metrics(run.metrics)
    from mtl_edge.export import export_run

    # the demo shows degraded artefacts in its table instead of stopping at the first one
    exported = export_run(run.folder, force=True, allow_degraded=True, end_to_end=True)
    typer.echo(f"{len(exported.artefacts)} artefact(s), {len(exported.degraded)} degraded, "
               f"{len(exported.unsupported)} unsupported -> {exported.folder}")
    typer.echo(f"verification: {exported.folder / 'verification.md'}")
    from mtl_edge.bench.harness import bench as run_bench
    from mtl_edge.report import render_report

    # the desktop benchmark (shorter measuring windows than the command's defaults)
    measured = run_bench(exported.folder, device="desktop", runtime="onnxruntime,litert", compare="single",
                         min_runs=100, min_secs=0.5, max_secs=5.0, listeners=[GeorgievTable()])
    rendered = render_report(measured.results)
    typer.echo(f"report: {rendered.markdown}")
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f} s; run in {run.folder}")
