"""Export a trained run to on-device formats, verified by their real runtimes.

``export_run(RUN)`` writes ``RUN/export/`` (built under a temporary name, renamed into place when
complete, so an interrupted export leaves the previous folder or nothing):

- ``onnx/<model>.<precision>.onnx`` and ``tflite/<model>.<precision>.tflite`` for the multi-task model
  (``multi``) and every single-task baseline (``single-<task>``): input ``features`` [batch, F]
  float32, one logits output per task named as the task, in the checkpoint's task order;
- with ``formats`` including ``torch`` (not a default): ``torch/<model>.fp32.pt``, a TorchScript module
  whose ``forward(features)`` returns ``{task: logits}`` in task order (other precisions are recorded
  as unsupported; see ``mtl_edge.export.torchscript``);
- ``testset.npz``: the test split the artefacts were verified on (see ``mtl_edge.export.testset``);
- ``calibration_indices.json``: the training rows static int8 was calibrated on;
- ``verification.md`` / ``verification.json``: agreement with PyTorch, accuracies, logit differences,
  sizes, parameter counts and local latency of every artefact;
- ``pareto.png``: per-task accuracy against latency and size;
- in the manifest, ``recommended``: per format, the precision to ship (``mtl_edge.export.recommend``);
- ``manifest.json`` (last): every artefact with its sha256, size, format, precision, quantisation,
  opset/schema, inputs/outputs, source checkpoint and verification. Later stages read artefacts
  only through it (``read_manifest``, ``load_artefact``).

The input is the model's input kind (``mtl_edge.train.models``): for a features model the clip-level
log-mel summary vectors of the checkpoint's feature config (the feature extraction itself, STFT,
percentiles, onset alignment, is not part of these graphs); for a waveform model the clip samples,
input ``waveform`` [batch, samples] (the manifest's ``input``; ``testset.npz`` holds them as
``waveforms``). Outputs of tasks without labels (reconstruction heads) are verified by their error
relative to PyTorch's output instead of top-1 agreement.

With ``end_to_end=True`` (``--end-to-end``) the multi-task model is also exported waveform in,
answers out (``mtl_edge.export.endtoend``): ``onnx/e2e-multi.<precision>.onnx`` and
``tflite/e2e-multi.<precision>.tflite``, model ``e2e:multi``, input ``waveform`` [batch, samples]
float32 at the feature config's sample rate, the clip length fixed by the corpus clips; the front-end
(STFT, log-mel, statistics, onset alignment) is inside the graph. ``testset.npz`` then also holds the
test clips' ``waveforms`` and ``sample_rate``; each e2e artefact is verified on them against PyTorch on
``logmel.extract`` of the same clips, and its entry records ``"end_to_end": true``, its ``input`` and
``frontend_parity`` (its front-end's features against the training front-end's). What a format cannot
take is an entry with status ``unsupported`` and the reason, summarised in the manifest's top-level
``end_to_end`` (``{"onnx": "ok", "tflite": "...", ...}``; None without ``end_to_end``): a device without an
e2e artefact computes the features with ``mtl_edge.features.logmel`` (numpy) and runs the features-in
artefact.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.artefact import (CALIBRATION, E2E_PREFIX, ArtefactContext, build_artefact, end_to_end_artefacts,
                                      end_to_end_summary, input_record)
from mtl_edge.export.manifest import FORMAT, VERSION, read_manifest, write_manifest
from mtl_edge.export.recommend import recommend
from mtl_edge.export.runtime import load_artefact
from mtl_edge.export.sources import check_out_folder, run_sources
from mtl_edge.export.verify import DEFAULT_THRESHOLDS, resolve_thresholds

__all__ = ["ALL_FORMATS", "CALIBRATION", "E2E_PREFIX", "FORMATS", "PRECISIONS", "ExportResult", "export_run", "load_artefact",
           "read_manifest", "DEFAULT_THRESHOLDS"]

FORMATS = ("onnx", "tflite")  # the default
ALL_FORMATS = ("onnx", "tflite", "torch")  # accepted by export_run(formats=...)
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")
E2E_FORMATS = ("onnx", "tflite")  # the formats of the waveform-in graphs (end_to_end=True)
TESTSET = "testset.npz"
PLOT = "pareto.png"
_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "numpy")


@dataclass
class ExportResult:
    folder: Path
    manifest: dict
    artefacts: list[dict] = field(default_factory=list)

    @property
    def degraded(self) -> list[dict]:
        return [a for a in self.artefacts if a["status"] == "degraded"]

    @property
    def unsupported(self) -> list[dict]:
        return [a for a in self.artefacts if a["status"] == "unsupported"]


def _parse(values, known: tuple[str, ...], what: str) -> list[str]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    values = list(dict.fromkeys(values))
    bad = [v for v in values if v not in known]
    if bad or not values:
        raise MtlEdgeError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    return values


@dataclass(frozen=True)
class ExportConfig:
    """The export's resolved settings, saved in the manifest (``export_config``) for the stages after it."""

    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    per_tensor: bool
    allow_degraded: bool
    thresholds: tuple[tuple[str, float], ...]
    models: tuple[str, ...]
    calibration_size: int
    seed: int
    latency_runs: int
    end_to_end: bool

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(formats=list(self.formats), precisions=list(self.precisions), models=list(self.models),
                 thresholds=dict(self.thresholds))
        return d


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def export_run(run: str | Path, out: str | Path | None = None, formats=FORMATS, precisions=PRECISIONS,
               per_tensor: bool = False, force: bool = False, allow_degraded: bool = False,
               thresholds: dict | None = None, *, models=None, calibration_size: int = 256, seed: int = 0,
               latency_runs: int = 200, progress: bool = True, workers: int = 2, tflite_runtime: str | None = None,
               end_to_end: bool = False, heads: str = "inference") -> ExportResult:
    """Export, verify and time every model of ``run``; see the module docstring for the folder layout.

    Raises MtlEdgeError for a bad run or checkpoint, an op a format cannot take, an out folder that
    holds a different export (unless ``force``), or an artefact that fails verification (unless
    ``allow_degraded``: then it is kept and marked "degraded"). ``models`` limits the export to some of
    the run's models ("multi", "single" = every baseline, "single:<task>"; default all). ``end_to_end``
    adds the waveform-in graphs of the multi-task model (onnx and tflite formats; the test clips must all
    have one length). ``heads``: ``"inference"`` (the labelled tasks' heads) or ``"all"`` (see ``run_sources``).
    """
    from mtl_edge.export import onnx as onnx_export
    from mtl_edge.export import tflite as tflite_export
    from mtl_edge.export import torchscript as torch_export
    from mtl_edge.export.graph import export_graph, parameter_count
    from mtl_edge.export.plot import pareto_plot
    from mtl_edge.export.testset import build_testset, calibration_rows, write_testset
    from mtl_edge.features.cache import fingerprint_of
    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.progress import progress_bar
    from mtl_edge.report.tables import render_markdown
    from mtl_edge.tasks import specs_from_checkpoint
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import predict

    formats = _parse(formats, ALL_FORMATS, "format")
    precisions = _parse(precisions, PRECISIONS, "precision")
    limits = resolve_thresholds(thresholds)
    run = Path(run)
    out = Path(out) if out is not None else run / "export"
    sources, config = run_sources(run, models, heads)
    settings = ExportConfig(tuple(formats), tuple(precisions), per_tensor, allow_degraded, tuple(limits.items()),
                            tuple(s.label for s in sources), calibration_size, seed, latency_runs, end_to_end)
    input_kind = sources[0].info.get("input_kind", "features")
    e2e_formats = [f for f in formats if f in E2E_FORMATS] if end_to_end else []
    if end_to_end and input_kind != "features":
        raise MtlEdgeError(f"--end-to-end adds the feature front-end to a features model; this run's models take "
                           f"{input_kind} input already")
    if end_to_end:
        if not any(s.label == "multi" for s in sources):
            raise MtlEdgeError("--end-to-end exports the multi-task model waveform in; include multi in --models")
        if not e2e_formats:
            raise MtlEdgeError(f"--end-to-end needs one of the formats {', '.join(E2E_FORMATS)}")
    identity = {"format": FORMAT, "run": str(run.resolve()), "checkpoint_sha256": {s.label: s.sha256 for s in sources},
                **({"heads": heads} if heads != "inference" else {})}
    check_out_folder(out, identity, force)

    # The data: always with the checkpoint's feature config and label lists.
    corpus = Path(config.get("corpus", ""))
    feature_config = config_from_json(sources[0].info["feature_config"])
    labels: dict[str, list[str]] = {}
    specs: dict = {}
    for s in sources:
        specs.update(specs_from_checkpoint(s.info))
        for t in s.tasks:
            if t in labels and labels[t] != list(s.info["labels"][t]):
                raise MtlEdgeError(f"{s.path}: labels of {t!r} differ from another checkpoint of the run")
            labels[t] = list(s.info["labels"][t])
    all_tasks = list(labels)
    from mtl_edge.train.corpora import load_sources, sources_of

    task_sources = sources_of(config.get("task_corpora"), all_tasks)  # several corpora: each task's own test split
    if task_sources is None:
        data = load_task_data(corpus, all_tasks, feature_config, labels=labels, workers=workers)
    else:
        data = load_sources(task_sources, all_tasks, lambda c, group: load_task_data(
            c, group, feature_config, labels={t: labels[t] for t in group}, workers=workers))
    input_dim = int(sources[0].info["build_args"]["input_dim"])
    if data.input_dim != input_dim:
        raise MtlEdgeError(f"the corpus gives {data.input_dim} features with the checkpoint's feature config, "
                           f"the model takes {input_dim}")
    testset = build_testset(data)
    calibration = {s.label: calibration_rows(data, s.tasks, calibration_size, seed) for s in sources}
    builders = {"onnx": onnx_export, "tflite": tflite_export, "torch": torch_export}
    jobs = [(s, fmt, prec) for s in sources for fmt in formats for prec in precisions]
    if end_to_end:  # the test clips themselves, for the waveform-in graphs (one length: the graph's input)
        from mtl_edge.export.endtoend import load_waveforms

        waveforms = load_waveforms(corpus, testset.paths, feature_config)
        testset.extra.update(waveforms=waveforms, sample_rate=np.int64(feature_config.sample_rate))

    # what every artefact is verified and timed on: the model inputs of the test clips (features or waveforms)
    model_inputs = dataclasses.replace(testset, features=testset.extra["waveforms"]) if input_kind == "waveform" else testset
    artefacts: list[dict] = []
    with atomic.atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="mtl-edge-export-") as work:
        work = Path(work)
        ctx = ArtefactContext(tmp, work, model_inputs, limits, allow_degraded, latency_runs, not per_tensor)
        write_testset(testset, tmp / TESTSET)
        atomic.write_json(tmp / CALIBRATION, {
            "split": "train", "seed": seed, "size": calibration_size, "corpus": str(corpus),
            "feature_config": feature_config.to_json(),
            "note": "rows of the corpus feature cache (the feature matrix of load_task_data) used for static int8",
            "models": calibration}, sort_keys=False)
        references = {s.label: predict(s.model, model_inputs.features, tasks=s.tasks) for s in sources}
        graphs = {s.label: export_graph(s.model, s.tasks, input_dim, s.label, input_kind) for s in sources}
        bar = progress_bar() if progress else None
        if bar:
            bar.start()
            task_id = bar.add_task("export", total=len(jobs))
        try:
            for s, fmt, prec in jobs:
                if bar:
                    bar.update(task_id, description=f"{s.label} {fmt} {prec}")
                artefacts.append(build_artefact(s, fmt, prec, builders[fmt], graphs[s.label], input_dim, ctx, references[s.label],
                                      data.inputs[calibration[s.label]], parameter_count(s.model)))
                if bar:
                    bar.advance(task_id)
        finally:
            if bar:
                bar.stop()

        if tflite_runtime and "tflite" in formats:
            from mtl_edge.export.crosscheck import crosscheck

            def warn(msg: str) -> None:
                from mtl_edge.progress import stderr

                stderr.print(msg, markup=False, highlight=False)

            crosscheck(tflite_runtime, artefacts, tmp, work, model_inputs.features, references, warn)

        e2e = None
        if end_to_end:
            from mtl_edge.export.endtoend import EndToEnd

            multi = next(s for s in sources if s.label == "multi")
            e2e = EndToEnd(feature_config, graphs["multi"], waveforms, work)
            artefacts += end_to_end_artefacts(e2e, [(f, p) for f in e2e_formats for p in precisions], multi, artefacts, ctx,
                                     parameter_count(multi.model), data.inputs[calibration["multi"]], progress)

        verification = {"thresholds": limits, "testset": TESTSET,
                        "artefacts": [{k: a.get(k) for k in ("path", "model", "format", "precision", "status", "reason",
                                                             "bytes", "parameters", "latency", "verification",
                                                             "tflite_runtime", "end_to_end", "frontend_parity")}
                                      for a in artefacts]}
        atomic.write_json(tmp / "verification.json", verification, sort_keys=False)
        atomic.write_text(tmp / "verification.md", f"# Export verification: {run}\n\nTest split: {len(testset)} clips "
                          f"({TESTSET}); thresholds: {limits}\n\n" + render_markdown(artefacts))
        pareto_plot(artefacts, all_tasks, tmp / PLOT, title=f"{run.name}: accuracy vs latency / size")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "run": identity["run"],
            "checkpoint_sha256": identity["checkpoint_sha256"],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "corpus": str(corpus),
            # plan refuses gains measured on another corpus (several corpora: the run's combined fingerprint)
            "corpus_fingerprint": fingerprint_of(corpus) if task_sources is None else config["corpus_fingerprint"],
            **({"task_corpora": config["task_corpora"]} if task_sources is not None else {}),
            "train": config.get("train"),  # the run's training config: the network's width, for plan
            "tasks": all_tasks,
            "labels": labels,
            "feature_config": feature_config.to_json(),
            "input": input_record(input_kind, input_dim, feature_config),
            "task_specs": {t: specs[t].to_json() for t in all_tasks},
            "testset": TESTSET,
            "testset_contents": testset.keys(),
            "calibration": CALIBRATION,
            "verification": "verification.json",
            "plot": PLOT,
            "thresholds": limits,
            "recommended": recommend(artefacts, limits["accuracy_drop"]),
            "end_to_end": end_to_end_summary(e2e, e2e_formats, artefacts) if e2e is not None else None,
            "per_tensor": per_tensor,
            "export_config": settings.to_json(),
            "versions": _versions(),
            "artefacts": artefacts,
        }
        write_manifest(tmp, manifest)  # last: a folder without it is not an export
    return ExportResult(out, manifest, artefacts)
