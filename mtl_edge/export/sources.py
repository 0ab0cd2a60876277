"""Which checkpoints of a run are exported, and whether an out folder may take the export.

A run folder (``train`` writes it) holds ``config.json``, ``multi/model.pt`` and, with ``--single``,
``single/<task>/model.pt``; every exported model must share one feature config and input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.manifest import MANIFEST, read_manifest, same_export, sha256_file


@dataclass
@dataclass
class Source:
    label: str  # "multi" | "single:<task>"
    path: Path
    model: object
    info: dict
    tasks: list[str]
    sha256: str


def select_models(labels: list[str], models) -> list[str]:
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


HEADS = ("inference", "all")


def run_sources(run: Path, models=None, heads: str = "inference") -> tuple[list[Source], dict]:
    """The run's checkpoints to export. ``heads="inference"`` exports the heads of labelled tasks only
    (the auxiliary reconstruction heads serve training; a baseline of one is not exported); ``"all"``
    keeps the reconstruction heads too (the denoising head is never exported: its input is corrupted
    with random noise inside the model)."""
    from mtl_edge.tasks import specs_from_checkpoint
    from mtl_edge.train.checkpoint import load_checkpoint

    if heads not in HEADS:
        raise MtlEdgeError(f"--heads must be one of {', '.join(HEADS)}, not {heads!r}")

    config_path = run / "config.json"
    if not run.is_dir():
        raise MtlEdgeError(f"{run}: no such run folder")
    config = atomic.read_json(config_path, f"{run}: not a run folder (no config.json)")
    candidates = [("multi", run / "multi" / "model.pt")]
    candidates += [(f"single:{t}", run / "single" / t / "model.pt") for t in config.get("tasks", [])]
    present = [(label, p) for label, p in candidates if p.exists()]
    if not present:
        raise MtlEdgeError(f"{run}: no checkpoints (multi/model.pt, single/<task>/model.pt); train the run first")
    missing = [str(p.relative_to(run)) for label, p in candidates
               if not p.exists() and (label == "multi" or config.get("single"))]
    if missing:
        raise MtlEdgeError(f"{run}: unfinished run, missing {', '.join(missing)} (finish it with mtl-edge train --resume)")
    chosen = select_models([label for label, _ in present], models)
    present = [(label, p) for label, p in present if label in chosen]
    sources = []
    for label, path in present:
        model, info = load_checkpoint(path)  # MtlEdgeError for a corrupt, foreign or other-version file
        tasks = list(info.get("tasks") or info.get("labels") or [])
        if not tasks or set(tasks) - set(info.get("labels", {})):
            raise MtlEdgeError(f"{path}: checkpoint names no tasks with label lists; cannot export it")
        if "input_dim" not in info.get("build_args", {}):
            raise MtlEdgeError(f"{path}: model {info.get('model')!r} stores no input_dim in its build args; "
                               "every registered model must (features per vector or samples per clip)")
        if label.startswith("single:") and tasks != [label.split(":", 1)[1]]:
            raise MtlEdgeError(f"{path}: a single-task baseline of {label[7:]!r} holds tasks {tasks}")
        specs = specs_from_checkpoint(info)
        if heads == "inference":
            tasks = [t for t in tasks if specs[t].needs_labels]
        elif any(specs[t].options.get("wavenet_head") == "denoise" for t in tasks):
            if label.startswith("single:"):
                continue
            tasks = [t for t in tasks if specs[t].options.get("wavenet_head") != "denoise"]
        if not tasks:
            continue  # a baseline of an auxiliary task: nothing to deploy
        sources.append(Source(label, path, model, info, tasks, sha256_file(path)))
    if not sources:
        raise MtlEdgeError(f"{run}: the chosen models have no heads to export (--heads all keeps reconstruction heads)")
    first = sources[0]
    for s in sources[1:]:
        if s.info.get("feature_config") != first.info.get("feature_config"):
            raise MtlEdgeError(f"{s.path}: feature config differs from {first.path}; the run's models must share features")
        if (s.info["build_args"]["input_dim"] != first.info["build_args"]["input_dim"]
                or s.info.get("input_kind", "features") != first.info.get("input_kind", "features")):
            raise MtlEdgeError(f"{s.path}: input kind or size differs from {first.path}")
    return sources, config


def check_out_folder(out: Path, identity: dict, force: bool) -> None:
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
