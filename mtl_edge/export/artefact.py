"""One artefact: build it with its format's builder, verify it with its runtime, time it, describe it.

An ``Unsupported`` conversion becomes a manifest entry that says why instead of failing the export;
the end-to-end (waveform-in) artefacts of the multi-task model go through the same steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import Unsupported
from mtl_edge.export.manifest import sha256_file
from mtl_edge.export.runtime import measure_latency
from mtl_edge.export.sources import Source

LATENCY_RUNTIME = {"onnx": "onnxruntime", "tflite": "ai-edge-litert", "torch": "torch"}
CALIBRATION = "calibration_indices.json"
E2E_PREFIX = "e2e:"  # model label of a waveform-in artefact: "e2e:multi"


@dataclass(frozen=True)
class ArtefactContext:
    """What every artefact of one export shares: where it goes, what it is verified and timed on, the limits."""

    folder: Path
    work: Path
    testset: object  # a TestSet whose ``features`` are the model inputs (summary features or waveforms)
    limits: dict
    allow_degraded: bool
    latency_runs: int
    per_channel: bool


def input_record(kind: str, input_dim: int, cfg) -> dict:
    if kind == "waveform":
        return {"name": "waveform", "dtype": "float32", "shape": ["batch", input_dim], "samples": input_dim,
                "sample_rate": cfg.sample_rate, "description": "the clip's samples in [-1, 1] (mtl_edge.features.waveform)"}
    return {"name": "features", "dtype": "float32", "features": input_dim,
            "description": "clip-level log-mel summary vector (mtl_edge.features.logmel) of the feature_config"}


@dataclass
class ArtefactEntry:
    """One artefact's manifest entry; ``to_json()`` gives the manifest's dict (its field order is the
    manifest's contract: identity, file, the format's own details, then the verdict and the checks)."""

    path: str | None
    model: str
    tasks: list[str]
    format: str
    precision: str
    source_checkpoint: str
    source_checkpoint_sha256: str
    parameters: int
    end_to_end: bool
    sha256: str | None = None
    bytes: int | None = None
    details: dict = dataclasses.field(default_factory=dict)  # quantization, inputs, outputs, schema/opset...
    status: str = "ok"  # ok | degraded | unsupported
    reason: str | None = None
    verification: dict | None = None
    latency: dict | None = None

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "details"}
        head = list(out)[:list(out).index("bytes") + 1]
        return {**{k: out[k] for k in head}, **self.details, **{k: v for k, v in out.items() if k not in head}}

    @classmethod
    def unsupported(cls, entry: "ArtefactEntry", reason: str) -> "ArtefactEntry":
        """What a format cannot take: no file, the reason, no checks."""
        return dataclasses.replace(entry, path=None, status="unsupported", reason=reason,
                                   details={"quantization": None, "inputs": None, "outputs": None})


def build_artefact(s: Source, fmt: str, prec: str, builder, graph, input_dim: int, ctx: ArtefactContext, reference: dict,
         calibration: np.ndarray, parameters: int) -> dict:
    """Build, verify and time one artefact; an ``Unsupported`` conversion becomes an entry saying why."""
    import torch as torch_module

    from mtl_edge.export.runtime import runners
    from mtl_edge.export.verify import verify_artefact

    name = s.label.replace(":", "-")
    rel = f"{fmt}/{name}.{prec}{builder.EXTENSION}"
    entry = ArtefactEntry(rel, s.label, s.tasks, fmt, prec, str(s.path), s.sha256, parameters,
                          s.label.startswith(E2E_PREFIX))
    (ctx.folder / fmt).mkdir(exist_ok=True)
    target = ctx.folder / rel
    try:
        with atomic.atomic_path(target) as tmp_file:
            details = builder.build(graph, input_dim, prec, tmp_file, ctx.work, s.label,
                                    calibration=calibration if prec == "int8" else None, per_channel=ctx.per_channel)
    except Unsupported as exc:
        return ArtefactEntry.unsupported(entry, str(exc)).to_json()
    if prec == "int8":
        details["quantization"]["calibration"] = {"file": CALIBRATION, "model": s.label, "rows": len(calibration)}
    torch_threads = torch_module.get_num_threads() if fmt == "torch" else None  # the torch runner sets them
    try:
        record = verify_artefact(fmt, target, reference, ctx.testset, s.tasks, prec, ctx.limits, ctx.allow_degraded,
                                 artefact=f"{rel} ({s.label}, {fmt} {prec})")
        _, call = runners(fmt, target, threads=1)
        latency = measure_latency(call, ctx.testset.features[0], runs=ctx.latency_runs)
    finally:
        if torch_threads is not None and torch_module.get_num_threads() != torch_threads:
            torch_module.set_num_threads(torch_threads)
    status = record.pop("status")
    problems = record.pop("problems")
    return dataclasses.replace(entry, sha256=sha256_file(target), bytes=target.stat().st_size, details=details,
                               status=status, reason="; ".join(problems) if problems else None, verification=record,
                               latency={"runtime": LATENCY_RUNTIME[fmt], **latency}).to_json()


def end_to_end_artefacts(e2e, jobs: list[tuple[str, str]], multi: Source, artefacts: list[dict], ctx: ArtefactContext,
                parameters: int, calibration: np.ndarray, progress: bool) -> list[dict]:
    """The waveform-in artefacts of the multi-task model, verified on the test waveforms.

    The reference logits are the PyTorch model on ``logmel.extract`` of the same waveforms (the
    training front-end), so an artefact's agreement covers its front-end and its network together.
    """
    from mtl_edge.progress import progress_bar
    from mtl_edge.train.trainer import predict

    source = dataclasses.replace(multi, label=f"{E2E_PREFIX}{multi.label}")
    waves = dataclasses.replace(ctx, testset=dataclasses.replace(ctx.testset, features=e2e.waveforms))  # waveforms in
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
            entry = build_artefact(source, fmt, prec, e2e.builder(fmt, ctx.folder, network), e2e.graph, e2e.n_samples, waves,
                         reference, calibration, parameters)
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


def end_to_end_summary(e2e, formats: list[str], artefacts: list[dict]) -> dict:
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
