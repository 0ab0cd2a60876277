"""The prepare stage: log-mel summary features for every clip of a corpus, computed once and cached.

Layout of a cache entry ``CACHE/<key>/`` (default ``CACHE`` = ``CORPUS/.features``):

- ``features.npy``: float32 ``[n_clips, n_features]``, opened memory-mapped (read-only);
- ``paths.json``: the clip paths (relative to the corpus) of the rows, sorted;
- ``meta.json``: the config, the corpus fingerprint, the feature names, the skipped files.

The inputs are those of a model input kind (``mtl_edge.features.inputs``): log-mel summary vectors
(``FeatureConfig``) or fixed-length waveforms (``WaveformConfig``). ``CACHE/current.json`` records,
per kind, the config that ``mtl-edge data prepare`` last wrote, so that ``train`` uses those features
(``current_config``, ``resolve_config``) instead of recomputing them with other defaults.

The key hashes the manifest bytes, each audio file's size and mtime_ns (cheap: no audio is read)
and the feature config, so an edited manifest, a replaced audio file or another config gives
another entry, and an unchanged corpus reuses its entry without computing anything.

An entry is built in a temporary folder and renamed into place last: a run that dies half-way
leaves no folder under the key, and the next run starts again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mtl_edge import atomic
from mtl_edge.data.audio import BAD_AUDIO_POLICIES, load_or_skip
from mtl_edge.data.manifest import MANIFEST_NAME, read_manifest
from mtl_edge.errors import AudioError
from mtl_edge.features.inputs import CACHE_FORMATS, InputConfig, config_from_json, extract_clips, input_kind, input_names
from mtl_edge.features.logmel import FeatureConfig

CACHE_FORMAT = CACHE_FORMATS["features"]
CURRENT = "current.json"
CACHE_FOLDER = ".features"
CHUNK = 32  # clips per unit of work; fixed, so that serial and parallel runs batch identically


@dataclass
class FeatureTable:
    """Per-clip features of a corpus: row ``i`` of ``features`` is clip ``paths[i]``."""

    paths: list[str]
    features: np.ndarray  # np.memmap, float32, read-only
    folder: Path
    skipped: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    config: InputConfig = field(default_factory=FeatureConfig)
    reused: bool = False  # True when read from an existing cache entry

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, paths: list[str]) -> np.ndarray:
        """Row indices of ``paths`` (KeyError naming a clip that has no features, e.g. skipped)."""
        index = {p: i for i, p in enumerate(self.paths)}
        return np.array([index[p] for p in paths], dtype=np.int64)


def _manifest_file(corpus: Path) -> Path:
    return corpus / MANIFEST_NAME if corpus.is_dir() else corpus


def corpus_fingerprint(root: Path, manifest_bytes: bytes, paths: list[str]) -> str:
    """Hash of the manifest, the task kinds (``tasks.json``, where the corpus has one: corpora without it
    keep their fingerprint) and each audio file's size and mtime_ns (a missing file counts too)."""
    from mtl_edge.data.task_kinds import TASKS_NAME

    h = hashlib.sha256()
    h.update(manifest_bytes)
    if (root / TASKS_NAME).is_file():
        h.update(b"\0" + TASKS_NAME.encode() + b"\0" + (root / TASKS_NAME).read_bytes())
    for rel in paths:
        try:
            st = os.stat(root / rel)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        h.update(f"\0{rel}\0{size}\0{mtime}".encode())
    return h.hexdigest()


def fingerprint_of(corpus: str | Path) -> str:
    """The fingerprint ``prepare_features`` keys the cache with, without computing anything (sweeps
    record it to refuse being continued on a changed corpus)."""
    corpus = Path(corpus)
    manifest = read_manifest(corpus, check_files=False)
    return corpus_fingerprint(manifest.root, _manifest_file(corpus).read_bytes(), sorted({r.path for r in manifest.rows}))


def cache_key(fingerprint: str, cfg: InputConfig) -> str:
    """Entry name: corpus fingerprint + config JSON + code format, hashed."""
    blob = json.dumps({"corpus": fingerprint, "config": cfg.to_json(), "format": CACHE_FORMATS[input_kind(cfg)]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare_features(
    corpus: str | Path,
    cfg: InputConfig = FeatureConfig(),
    cache_dir: str | Path | None = None,
    on_bad_audio: str = "fail",
    workers: int = 1,
    progress: bool = True,
    force: bool = False,
    mark_current: bool = False,
) -> FeatureTable:
    """Features of every clip in ``corpus`` (unique manifest paths, sorted), from cache when valid.

    ``on_bad_audio="fail"`` raises AudioError naming the first bad file; ``"skip"`` leaves bad
    files out of ``.paths`` and lists their problems in ``.skipped``. ``workers`` > 1 spreads
    the clips over processes; the result is bit-identical to ``workers=1``. ``mark_current``
    records ``cfg`` in ``current.json`` as the features later stages use (``data prepare`` does).
    """
    if on_bad_audio not in BAD_AUDIO_POLICIES:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO_POLICIES}, not {on_bad_audio!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    corpus = Path(corpus)
    # Under "skip" a missing audio file is one more bad file, not a broken manifest.
    manifest = read_manifest(corpus, check_files=on_bad_audio == "fail")
    root = manifest.root
    paths = sorted({r.path for r in manifest.rows})
    fingerprint = corpus_fingerprint(root, _manifest_file(corpus).read_bytes(), paths)
    key = cache_key(fingerprint, cfg)
    cache_root = Path(cache_dir if cache_dir is not None else root / CACHE_FOLDER)
    folder = cache_root / key

    table = None if force else _open_entry(folder, key, cfg)
    if table is not None:
        if table.skipped and on_bad_audio == "fail":
            raise AudioError(f"{table.skipped[0]} (use --on-bad-audio skip to leave such files out)")
    else:
        with atomic.atomic_dir(folder) as tmp:
            _build_entry(tmp, root, paths, cfg, on_bad_audio, workers, progress, key, fingerprint)
        table = _open_entry(folder, key, cfg)
        if table is None:  # pragma: no cover - we just wrote it
            raise RuntimeError(f"{folder}: freshly written feature cache does not read back")
        table.reused = False
    if mark_current:
        current = _read_current(cache_root)
        current[input_kind(cfg)] = {"config": cfg.to_json(), "key": key}
        atomic.write_json(cache_root / CURRENT, current)
    return table


def _read_current(cache_root: Path) -> dict:
    try:
        current = json.loads((cache_root / CURRENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return current if isinstance(current, dict) else {}


def current_config(corpus: str | Path, kind: str = "features", cache_dir: str | Path | None = None) -> InputConfig | None:
    """The ``kind`` config that ``data prepare`` last wrote for ``corpus`` (None: never prepared)."""
    root = Path(corpus) if Path(corpus).is_dir() else Path(corpus).parent
    entry = _read_current(Path(cache_dir) if cache_dir is not None else root / CACHE_FOLDER).get(kind)
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return None
    try:
        return config_from_json(entry["config"])
    except (TypeError, ValueError):  # a config of an older version: prepare again
        return None


def resolve_config(corpus: str | Path, kind: str = "features", overrides: dict | None = None,
                   cache_dir: str | Path | None = None) -> InputConfig:
    """The config a stage uses: what ``data prepare`` last wrote (else the kind's defaults), with
    the options the user gave on top (``overrides``: field -> value; None values are not given)."""
    from dataclasses import replace

    from mtl_edge.features.inputs import default_config

    base = current_config(corpus, kind, cache_dir) or default_config(kind)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return replace(base, **given) if given else base


def _open_entry(folder: Path, key: str, cfg: InputConfig) -> FeatureTable | None:
    """The entry at ``folder`` if it is complete and consistent, else None (then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        paths = json.loads((folder / "paths.json").read_text(encoding="utf-8"))
        features = np.load(folder / "features.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    names = input_names(cfg)
    if (
        meta.get("format") != CACHE_FORMATS[input_kind(cfg)]
        or meta.get("key") != key
        or meta.get("feature_names") != names
        or features.dtype != np.float32
        or features.shape != (len(paths), cfg.n_features)
    ):
        return None
    return FeatureTable(list(paths), features, folder, list(meta.get("skipped_files", [])), names or [], cfg, reused=True)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _compute_chunk(root: str, rels: list[str], cfg_json: dict, on_bad_audio: str):
    """Load and featurise a few clips (runs in a worker process or in-process).

    Clips of equal length go through ``extract_batch`` together. Returns (vectors or None per
    clip, problems per clip or None, warning messages raised while loading).
    """
    cfg = config_from_json(cfg_json)
    samples: list[np.ndarray | None] = []
    problems: list[str | None] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rel in rels:
            skipped: list[str] = []
            audio = load_or_skip(Path(root) / rel, on_bad_audio, skipped, target_rate=cfg.sample_rate)
            samples.append(None if audio is None else audio.samples)
            problems.append(skipped[0] if skipped else None)
    vectors = extract_clips(cfg, samples)
    messages = [(str(w.message), w.category) for w in caught]
    return vectors, problems, messages


def _build_entry(tmp: Path, root: Path, paths: list[str], cfg: InputConfig, on_bad_audio: str,
                 workers: int, progress: bool, key: str, fingerprint: str) -> None:
    from numpy.lib.format import open_memmap

    from mtl_edge.progress import progress_bar

    names = input_names(cfg)
    n_total, n_features = len(paths), cfg.n_features
    out = open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32, shape=(n_total, n_features))
    kept: list[str] = []
    skipped: list[str] = []
    chunks = list(_chunks(paths, CHUNK))
    args = (str(root), cfg.to_json(), on_bad_audio)
    bar = progress_bar()
    bar.disable = not progress
    with bar:
        task = bar.add_task(f"features ({n_total} clips)", total=n_total)
        for rels, (vectors, problems, messages) in zip(chunks, _run(chunks, args, workers)):
            for message, category in messages:
                warnings.warn(message, category, stacklevel=3)
            for rel, vec, problem in zip(rels, vectors, problems):
                if vec is None:
                    skipped.append(problem or f"{root / rel}: no features")
                else:
                    out[len(kept)] = vec
                    kept.append(rel)
            bar.advance(task, len(rels))
    if not kept:
        raise AudioError(f"{root}: no usable audio (all {n_total} files were bad; first: {skipped[0]})")
    if len(kept) < n_total:  # drop the rows reserved for skipped clips
        compact = open_memmap(tmp / "features.compact.npy", mode="w+", dtype=np.float32, shape=(len(kept), n_features))
        compact[:] = out[: len(kept)]
        compact.flush()
        del compact
        del out
        os.replace(tmp / "features.compact.npy", tmp / "features.npy")
    else:
        out.flush()
        del out
    atomic.write_json(tmp / "paths.json", kept)
    atomic.write_json(tmp / "meta.json", {
        "format": CACHE_FORMATS[input_kind(cfg)],
        "key": key,
        "config": cfg.to_json(),
        "corpus_fingerprint": fingerprint,
        "feature_names": names,
        "n_clips": len(kept),
        "n_features": n_features,
        "skipped": len(skipped),
        "skipped_files": skipped,
    })


def _run(chunks: list[list[str]], args: tuple, workers: int):
    """Results per chunk, in order; in-process for one worker, else over a process pool."""
    root, cfg_json, policy = args
    if workers == 1 or len(chunks) < 2:
        for rels in chunks:
            yield _compute_chunk(root, rels, cfg_json, policy)
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_compute_chunk, root, rels, cfg_json, policy) for rels in chunks]
        for fut in futures:
            yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
