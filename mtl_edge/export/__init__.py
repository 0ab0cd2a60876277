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

The features are the clip-level log-mel summary vectors of the checkpoint's feature config; the
feature extraction itself (STFT, percentiles, onset alignment) is not part of these graphs.

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

import datetime
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.manifest import FORMAT, MANIFEST, VERSION, read_manifest, same_export, sha256_file, write_manifest
from mtl_edge.export.recommend import recommend
from mtl_edge.export.runtime import load_artefact, measure_latency
from mtl_edge.export.verify import DEFAULT_THRESHOLDS, resolve_thresholds

__all__ = ["ALL_FORMATS", "FORMATS", "PRECISIONS", "ExportResult", "export_run", "load_artefact", "read_manifest", "DEFAULT_THRESHOLDS"]

FORMATS = ("onnx", "tflite")  # the default
ALL_FORMATS = ("onnx", "tflite", "torch")  # accepted by export_run(formats=...)
_LATENCY_RUNTIME = {"onnx": "onnxruntime", "tflite": "ai-edge-litert", "torch": "torch"}
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")
E2E_FORMATS = ("onnx", "tflite")  # the formats of the waveform-in graphs (end_to_end=True)
E2E_PREFIX = "e2e:"  # model label of a waveform-in artefact: "e2e:multi"
TESTSET = "testset.npz"
CALIBRATION = "calibration_indices.json"
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


@dataclass
class _Source:
    label: str  # "multi" | "single:<task>"
    path: Path
    model: object
    info: dict
    tasks: list[str]
    sha256: str


def _parse(values, known: tuple[str, ...], what: str) -> list[str]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    values = list(dict.fromkeys(values))
    bad = [v for v in values if v not in known]
    if bad or not values:
        raise MtlEdgeError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    return values


def _select(labels: list[str], models) -> list[str]:
    if models is None:
        return labels
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    chosen = []
    for m in models:
        match = [label for label in labels if label == m or (m == "single" and label.startswith("single:"))]
        if not match:
            raise MtlEdgeError(f"no model {m!r} in the run; it has {', '.join(labels)} (or 'single' for every baseline)")
        chosen += [label for label in match if label not in chosen]
    return [label for label in labels if label in chosen]


def _sources(run: Path, models=None) -> tuple[list[_Source], dict]:
    from mtl_edge.train.checkpoint import load_checkpoint

    config_path = run / "config.json"
    if not run.is_dir():
        raise MtlEdgeError(f"{run}: no such run folder")
    if not config_path.is_file():
        raise MtlEdgeError(f"{run}: not a run folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError:
        raise MtlEdgeError(f"{config_path} is damaged") from None
    candidates = [("multi", run / "multi" / "model.pt")]
    candidates += [(f"single:{t}", run / "single" / t / "model.pt") for t in config.get("tasks", [])]
    present = [(label, p) for label, p in candidates if p.exists()]
    if not present:
        raise MtlEdgeError(f"{run}: no checkpoints (multi/model.pt, single/<task>/model.pt); train the run first")
    missing = [str(p.relative_to(run)) for label, p in candidates
               if not p.exists() and (label == "multi" or config.get("single"))]
    if missing:
        raise MtlEdgeError(f"{run}: unfinished run, missing {', '.join(missing)} (finish it with mtl-edge train --resume)")
    chosen = _select([label for label, _ in present], models)
    present = [(label, p) for label, p in present if label in chosen]
    sources = []
    for label, path in present:
        model, info = load_checkpoint(path)  # MtlEdgeError for a corrupt, foreign or other-version file
        tasks = list(info.get("tasks") or info.get("labels") or [])
        if not tasks or set(tasks) - set(info.get("labels", {})):
            raise MtlEdgeError(f"{path}: checkpoint names no tasks with label lists; cannot export it")
        if "input_dim" not in info.get("build_args", {}):
            raise MtlEdgeError(f"{path}: model {info.get('model')!r} has no input_dim; only feature-vector models export")
        if label.startswith("single:") and tasks != [label.split(":", 1)[1]]:
            raise MtlEdgeError(f"{path}: a single-task baseline of {label[7:]!r} holds tasks {tasks}")
        sources.append(_Source(label, path, model, info, tasks, sha256_file(path)))
    first = sources[0]
    for s in sources[1:]:
        if s.info.get("feature_config") != first.info.get("feature_config"):
            raise MtlEdgeError(f"{s.path}: feature config differs from {first.path}; the run's models must share features")
        if s.info["build_args"]["input_dim"] != first.info["build_args"]["input_dim"]:
            raise MtlEdgeError(f"{s.path}: input size differs from {first.path}")
    return sources, config


def _check_out(out: Path, identity: dict, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise MtlEdgeError(f"{out} exists and is not a folder; choose another --out")
    if (out / MANIFEST).is_file():
        try:
            previous = read_manifest(out)
        except MtlEdgeError:
            previous = None
        if previous is not None and same_export(previous, identity):
            return  # the same run and checkpoints: rebuild in place
        if not force:
            raise MtlEdgeError(f"{out} holds a different export (another run or other checkpoints); "
                               "use --force to replace it, or another --out")
        return
    if any(out.iterdir()):
        raise MtlEdgeError(f"{out} exists and is not an export folder; choose another --out")


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
               end_to_end: bool = False) -> ExportResult:
    """Export, verify and time every model of ``run``; see the module docstring for the folder layout.

    Raises MtlEdgeError for a bad run or checkpoint, an op a format cannot take, an out folder that
    holds a different export (unless ``force``), or an artefact that fails verification (unless
    ``allow_degraded``: then it is kept and marked "degraded"). ``models`` limits the export to some of
    the run's models ("multi", "single" = every baseline, "single:<task>"; default all). ``end_to_end``
    adds the waveform-in graphs of the multi-task model (onnx and tflite formats; the test clips must all
    have one length).
    """
    from mtl_edge.export import onnx as onnx_export
    from mtl_edge.export import tflite as tflite_export
    from mtl_edge.export import torchscript as torch_export
    from mtl_edge.export.graph import export_graph, parameter_count
    from mtl_edge.export.plot import pareto_plot
    from mtl_edge.export.testset import build_testset, calibration_rows, write_testset
    from mtl_edge.export.verify import verify_artefact
    from mtl_edge.features.cache import prepare_features
    from mtl_edge.features.logmel import FeatureConfig
    from mtl_edge.progress import progress_bar
    from mtl_edge.report.tables import render_markdown
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import predict

    formats = _parse(formats, ALL_FORMATS, "format")
    precisions = _parse(precisions, PRECISIONS, "precision")
    limits = resolve_thresholds(thresholds)
    run = Path(run)
    out = Path(out) if out is not None else run / "export"
    sources, config = _sources(run, models)
    e2e_formats = [f for f in formats if f in E2E_FORMATS] if end_to_end else []
    if end_to_end:
        if not any(s.label == "multi" for s in sources):
            raise MtlEdgeError("--end-to-end exports the multi-task model waveform in; include multi in --models")
        if not e2e_formats:
            raise MtlEdgeError(f"--end-to-end needs one of the formats {', '.join(E2E_FORMATS)}")
    identity = {"format": FORMAT, "run": str(run.resolve()), "checkpoint_sha256": {s.label: s.sha256 for s in sources}}
    _check_out(out, identity, force)

    # The data: always with the checkpoint's feature config and label lists.
    corpus = Path(config.get("corpus", ""))
    feature_config = FeatureConfig.from_json(sources[0].info["feature_config"])
    labels: dict[str, list[str]] = {}
    for s in sources:
        for t in s.tasks:
            if t in labels and labels[t] != list(s.info["labels"][t]):
                raise MtlEdgeError(f"{s.path}: labels of {t!r} differ from another checkpoint of the run")
            labels[t] = list(s.info["labels"][t])
    all_tasks = list(labels)
    data = load_task_data(corpus, all_tasks, feature_config, labels=labels, workers=workers)
    input_dim = int(sources[0].info["build_args"]["input_dim"])
    if data.input_dim != input_dim:
        raise MtlEdgeError(f"the corpus gives {data.input_dim} features with the checkpoint's feature config, "
                           f"the model takes {input_dim}")
    table = prepare_features(corpus, feature_config, workers=workers)
    testset = build_testset(data, list(table.paths))
    calibration = {s.label: calibration_rows(data, s.tasks, calibration_size, seed) for s in sources}
    builders = {"onnx": onnx_export, "tflite": tflite_export, "torch": torch_export}
    jobs = [(s, fmt, prec) for s in sources for fmt in formats for prec in precisions]
    if end_to_end:  # the test clips themselves, for the waveform-in graphs (one length: the graph's input)
        from mtl_edge.export.endtoend import load_waveforms

        waveforms = load_waveforms(corpus, testset.paths, feature_config)
        testset.extra.update(waveforms=waveforms, sample_rate=np.int64(feature_config.sample_rate))

    artefacts: list[dict] = []
    with atomic.atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="mtl-edge-export-") as work:
        work = Path(work)
        write_testset(testset, tmp / TESTSET)
        atomic.write_json(tmp / CALIBRATION, {
            "split": "train", "seed": seed, "size": calibration_size, "corpus": str(corpus),
            "feature_config": feature_config.to_json(),
            "note": "rows of the corpus feature cache (the feature matrix of load_task_data) used for static int8",
            "models": calibration}, sort_keys=False)
        references = {s.label: predict(s.model, testset.features) for s in sources}
        graphs = {s.label: export_graph(s.model, s.tasks, input_dim, s.label) for s in sources}
        bar = progress_bar() if progress else None
        if bar:
            bar.start()
            task_id = bar.add_task("export", total=len(jobs))
        try:
            for s, fmt, prec in jobs:
                if bar:
                    bar.update(task_id, description=f"{s.label} {fmt} {prec}")
                artefacts.append(_one(s, fmt, prec, builders[fmt], graphs[s.label], input_dim, tmp, work, testset,
                                      references[s.label], data.features[calibration[s.label]], not per_tensor,
                                      limits, allow_degraded, latency_runs, parameter_count(s.model), verify_artefact))
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

            crosscheck(tflite_runtime, artefacts, tmp, work, testset.features, references, warn)

        e2e = None
        if end_to_end:
            from mtl_edge.export.endtoend import EndToEnd

            multi = next(s for s in sources if s.label == "multi")
            e2e = EndToEnd(feature_config, graphs["multi"], waveforms, work)
            artefacts += _end_to_end(e2e, [(f, p) for f in e2e_formats for p in precisions], multi, artefacts, tmp,
                                     work, testset, limits, allow_degraded, latency_runs, parameter_count(multi.model),
                                     verify_artefact, data.features[calibration["multi"]], not per_tensor, progress)

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
            "tasks": all_tasks,
            "labels": labels,
            "feature_config": feature_config.to_json(),
            "input": {"name": "features", "dtype": "float32", "features": input_dim,
                      "description": "clip-level log-mel summary vector (mtl_edge.features.logmel) of the feature_config"},
            "testset": TESTSET,
            "testset_contents": testset.keys(),
            "calibration": CALIBRATION,
            "verification": "verification.json",
            "plot": PLOT,
            "thresholds": limits,
            "recommended": recommend(artefacts, limits["accuracy_drop"]),
            "end_to_end": _end_to_end_summary(e2e, e2e_formats, artefacts) if e2e is not None else None,
            "per_tensor": per_tensor,
            "versions": _versions(),
            "artefacts": artefacts,
        }
        write_manifest(tmp, manifest)  # last: a folder without it is not an export
    return ExportResult(out, manifest, artefacts)


def _one(s: _Source, fmt: str, prec: str, builder, graph, input_dim: int, folder: Path, work: Path, testset,
         reference: dict, calibration: np.ndarray, per_channel: bool, limits: dict, allow_degraded: bool,
         latency_runs: int, parameters: int, verify_artefact) -> dict:
    import torch as torch_module

    from mtl_edge.export.runtime import runners
    from mtl_edge.errors import Unsupported

    name = s.label.replace(":", "-")
    rel = f"{fmt}/{name}.{prec}{builder.EXTENSION}"
    entry = {"path": rel, "model": s.label, "tasks": s.tasks, "format": fmt, "precision": prec,
             "source_checkpoint": str(s.path), "source_checkpoint_sha256": s.sha256, "parameters": parameters,
             "end_to_end": s.label.startswith(E2E_PREFIX)}
    (folder / fmt).mkdir(exist_ok=True)
    target = folder / rel
    try:
        with atomic.atomic_path(target) as tmp_file:
            details = builder.build(graph, input_dim, prec, tmp_file, work, s.label,
                                    calibration=calibration if prec == "int8" else None, per_channel=per_channel)
    except Unsupported as exc:
        return {**entry, "path": None, "sha256": None, "bytes": None, "status": "unsupported", "reason": str(exc),
                "quantization": None, "inputs": None, "outputs": None, "verification": None, "latency": None}
    if prec == "int8":
        details["quantization"]["calibration"] = {"file": CALIBRATION, "model": s.label, "rows": len(calibration)}
    torch_threads = torch_module.get_num_threads() if fmt == "torch" else None  # the torch runner sets them
    try:
        record = verify_artefact(fmt, target, reference, testset, s.tasks, prec, limits, allow_degraded,
                                 artefact=f"{rel} ({s.label}, {fmt} {prec})")
        _, call = runners(fmt, target, threads=1)
        latency = measure_latency(call, testset.features[0], runs=latency_runs)
    finally:
        if torch_threads is not None and torch_module.get_num_threads() != torch_threads:
            torch_module.set_num_threads(torch_threads)
    status = record.pop("status")
    problems = record.pop("problems")
    return {**entry, "sha256": sha256_file(target), "bytes": target.stat().st_size, **details,
            "status": status, "reason": "; ".join(problems) if problems else None,
            "verification": record, "latency": {"runtime": _LATENCY_RUNTIME[fmt], **latency}}


def _end_to_end(e2e, jobs: list[tuple[str, str]], multi: _Source, artefacts: list[dict], folder: Path, work: Path,
                testset, limits: dict, allow_degraded: bool, latency_runs: int, parameters: int, verify_artefact,
                calibration: np.ndarray, per_channel: bool, progress: bool) -> list[dict]:
    """The waveform-in artefacts of the multi-task model, verified on the test waveforms.

    The reference logits are the PyTorch model on ``logmel.extract`` of the same waveforms (the
    training front-end), so an artefact's agreement covers its front-end and its network together.
    """
    import dataclasses

    from mtl_edge.progress import progress_bar
    from mtl_edge.train.trainer import predict

    source = dataclasses.replace(multi, label=f"{E2E_PREFIX}{multi.label}")
    waves = dataclasses.replace(testset, features=e2e.waveforms)  # same rows and tasks, waveforms in
    reference = predict(multi.model, e2e.features)
    out = []
    bar = progress_bar() if progress else None
    if bar:
        bar.start()
        task_id = bar.add_task("end-to-end", total=len(jobs))
    try:
        for fmt, prec in jobs:
            if bar:
                bar.update(task_id, description=f"{source.label} {fmt} {prec}")
            network = {a["precision"]: a for a in artefacts if a["model"] == multi.label and a["format"] == fmt}
            entry = _one(source, fmt, prec, e2e.builder(fmt, folder, network), e2e.graph, e2e.n_samples, folder, work,
                         waves, reference, calibration, per_channel, limits, allow_degraded, latency_runs, parameters,
                         verify_artefact)
            entry["input"] = e2e.input_record()
            entry["frontend_parity"] = e2e.frontend_parity(fmt, prec) if entry["status"] != "unsupported" else None
            cal = (entry.get("quantization") or {}).get("calibration")
            if cal:  # the network part was calibrated as the multi-task model's own artefact
                cal["model"] = multi.label
            out.append(entry)
            if bar:
                bar.advance(task_id)
    finally:
        if bar:
            bar.stop()
    return out


def _end_to_end_summary(e2e, formats: list[str], artefacts: list[dict]) -> dict:
    """Top level of the manifest: per format "ok" or what is unsupported (and why), the input and the parity
    of the PyTorch front-end; where a format has no e2e artefact, the features come from numpy."""
    summary: dict = {}
    for fmt in formats:
        rows = [a for a in artefacts if a.get("end_to_end") and a["format"] == fmt]
        bad = [a for a in rows if a["status"] != "ok"]
        if not bad:
            summary[fmt] = "ok"
        elif all(a["status"] == "unsupported" for a in rows) and len({a["reason"] for a in rows}) == 1:
            summary[fmt] = f"unsupported: {rows[0]['reason']}"
        else:
            good = [a["precision"] for a in rows if a["status"] == "ok"]
            summary[fmt] = "; ".join(([f"ok: {', '.join(good)}"] if good else [])
                                     + [f"{a['precision']} {a['status']}: {a['reason']}" for a in bad])
    return {**summary, "model": f"{E2E_PREFIX}multi", "input": e2e.input_record(),
            "torch_frontend_parity": e2e.torch_parity,
            "fallback": "where a format or precision has no e2e artefact, compute the features with "
                        "mtl_edge.features.logmel.extract (numpy) and run the features-in artefact"}
