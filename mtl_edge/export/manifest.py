"""``manifest.json`` of an export folder: the only way later stages (the benchmark) find artefacts.

Written last, atomically; every listed artefact exists with the recorded sha256 and size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError

FORMAT = "mtl-edge-export"
VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_manifest(folder: str | Path, manifest: dict) -> None:
    atomic.write_json(Path(folder) / MANIFEST, manifest, sort_keys=False)


def read_manifest(folder: str | Path, check_files: bool = False) -> dict:
    """The manifest of an export folder; with ``check_files`` every artefact's size and sha256 are checked."""
    folder = Path(folder)
    path = folder / MANIFEST
    manifest = atomic.read_json(path, f"{folder}: no {MANIFEST} (not an export folder)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MtlEdgeError(f"{path}: not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise MtlEdgeError(f"{path}: export manifest version {manifest.get('version')} is not supported (expected {VERSION})")
    if check_files:
        for a in manifest["artefacts"]:
            if a["status"] == "unsupported":
                continue
            file = folder / a["path"]
            if not file.is_file():
                raise MtlEdgeError(f"{file}: listed in the manifest but missing")
            if file.stat().st_size != a["bytes"] or sha256_file(file) != a["sha256"]:
                raise MtlEdgeError(f"{file}: does not match its manifest entry (size or sha256 differ)")
    return manifest


def same_export(manifest: dict, identity: dict) -> bool:
    """True when ``manifest`` was exported from the same run folder and its models' checkpoints are unchanged
    (a re-export of another subset of the run's models is still the same export)."""
    if manifest.get("format") != identity["format"] or manifest.get("run") != identity["run"]:
        return False
    old, new = manifest.get("checkpoint_sha256") or {}, identity["checkpoint_sha256"]
    common = set(old) & set(new)
    return bool(common) and all(old[k] == new[k] for k in common)


def entries(manifest: dict, *, model: str | None = None, fmt: str | None = None, precision: str | None = None,
            status: tuple[str, ...] = ("ok", "degraded")) -> list[dict]:
    """Artefact entries filtered by model ("multi", "single:kws"), format, precision and status."""
    return [a for a in manifest["artefacts"]
            if (model is None or a["model"] == model) and (fmt is None or a["format"] == fmt)
            and (precision is None or a["precision"] == precision) and a["status"] in status]
