"""Augmented copies of training clips (audiomentations), turned into model inputs and cached.

The summary-feature DNN reads cached vectors, not audio, so augmentation happens before the
features: each training clip of the augmented tasks gets ``copies`` versions, each an independent
draw of the transform chain, featurised like the clip itself and added to the training split with
the clip's labels. Validation and test stay untouched. A draw is seeded by (seed, clip, copy), so
the copies are identical however many workers compute them, and the cache key holds the augment
config: another config gives another entry.

Transforms (audiomentations): ``pitch_shift`` (formants move with the pitch, like another vocal
tract), ``time_stretch`` (another speaking rate), ``gain``, and ``background_noise`` (the corpus's
own training-split background recordings, ``mtl_edge.data.backgrounds``) and ``gaussian_noise``
(white noise: the "noise injection" of Lee et al. 2019). Both noises are mixed at an SNR within
``snr_db``. Background noise mixes in other scenes' backgrounds, so it is no augmentation for a
scene task: augment the tasks it keeps the label of (``tasks``), or use ``gaussian_noise``.
Transforms are applied in the order given.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError

TRANSFORMS = ("pitch_shift", "time_stretch", "gain", "background_noise", "gaussian_noise")
DEFAULT_TRANSFORMS = TRANSFORMS[:4]  # `--augment all`: what the speech tasks were tuned with
AUGMENT_FORMAT = "augmented-inputs-v1"
CHUNK = 32


@dataclass(frozen=True)
class AugmentConfig:
    """How many augmented copies of which tasks' training clips, drawn from which transforms."""

    copies: int = 0  # 0: no augmentation
    transforms: tuple[str, ...] = DEFAULT_TRANSFORMS
    tasks: tuple[str, ...] = ()  # tasks whose training samples get the copies; () = every labelled task
    semitones: float = 3.0  # pitch shift within +-semitones
    rate: tuple[float, float] = (0.8, 1.25)  # time stretch factor range
    gain_db: float = 6.0  # gain within +-gain_db
    snr_db: tuple[float, float] = (5.0, 20.0)  # background or gaussian noise: clip over noise
    probability: float = 0.7  # each transform is applied to a copy with this probability
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("transforms", "tasks", "rate", "snr_db"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise MtlEdgeError(f"unknown augmentation {', '.join(unknown)}; known: {', '.join(TRANSFORMS)}")
        if self.copies < 0:
            raise MtlEdgeError(f"augmentation copies must be >= 0, not {self.copies}")
        if self.copies and not self.transforms:
            raise MtlEdgeError("augmentation copies asked for but no transform given")
        if not 0.0 < self.probability <= 1.0:
            raise MtlEdgeError(f"augmentation probability must be in (0, 1], not {self.probability}")

    @property
    def active(self) -> bool:
        return self.copies > 0

    def applies_to(self, task: str) -> bool:
        return self.active and (not self.tasks or task in self.tasks)

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict | None) -> "AugmentConfig":
        return cls(**d) if d else cls()


def augment_chain(cfg: AugmentConfig, backgrounds: list[Path]):
    """The audiomentations chain of ``cfg`` (each transform applied with ``cfg.probability``)."""
    import audiomentations as am

    p = cfg.probability
    chain = []
    for name in cfg.transforms:
        if name == "pitch_shift":
            chain.append(am.PitchShift(min_semitones=-cfg.semitones, max_semitones=cfg.semitones, p=p))
        elif name == "time_stretch":
            chain.append(am.TimeStretch(min_rate=cfg.rate[0], max_rate=cfg.rate[1], leave_length_unchanged=True, p=p))
        elif name == "gain":
            chain.append(am.Gain(min_gain_db=-cfg.gain_db, max_gain_db=cfg.gain_db, p=p))
        elif name == "background_noise":
            chain.append(am.AddBackgroundNoise(sounds_path=[str(b) for b in backgrounds], min_snr_db=cfg.snr_db[0],
                                               max_snr_db=cfg.snr_db[1], p=p))
        elif name == "gaussian_noise":
            chain.append(am.AddGaussianSNR(min_snr_db=cfg.snr_db[0], max_snr_db=cfg.snr_db[1], p=p))
    return am.Compose(chain)


def _draw_seed(seed: int, rel: str, copy: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{rel}:{copy}".encode()).digest()[:4], "little")


def _augment_chunk(root: str, items: list[tuple[str, int]], input_json: dict, aug_json: dict, backgrounds: list[str]):
    """Input rows of the augmented copies ``items`` ((clip, copy) pairs); runs in a worker or in-process."""
    from mtl_edge.data.audio import load_audio
    from mtl_edge.features.inputs import config_from_json, extract_clips

    input_cfg, cfg = config_from_json(input_json), AugmentConfig.from_json(aug_json)
    chain = augment_chain(cfg, [Path(b) for b in backgrounds])
    clips = []
    for rel, copy in items:
        audio = load_audio(Path(root) / rel, target_rate=input_cfg.sample_rate).samples.astype(np.float32)
        seed = _draw_seed(cfg.seed, rel, copy)
        random.seed(seed)  # audiomentations draws from both generators
        np.random.seed(seed)
        out = chain(samples=audio, sample_rate=input_cfg.sample_rate)
        clips.append(np.clip(out, -1.0, 1.0).astype(np.float32))
    return extract_clips(input_cfg, clips)


@dataclass
class AugmentedInputs:
    items: list[tuple[str, int]]  # (clip path, copy number) of each row
    inputs: np.ndarray  # float32 [rows, input_dim]


def augmented_inputs(corpus: str | Path, paths: list[str], input_cfg, cfg: AugmentConfig, cache_dir: str | Path | None = None,
                     workers: int = 1, progress: bool = True) -> AugmentedInputs:
    """``cfg.copies`` augmented input rows per clip of ``paths``, from the cache when it holds them."""
    from mtl_edge.data.backgrounds import background_paths
    from mtl_edge.data.manifest import MANIFEST_NAME, read_manifest
    from mtl_edge.features.cache import CACHE_FOLDER, corpus_fingerprint
    from mtl_edge.progress import progress_bar

    manifest = read_manifest(corpus, check_files=False)
    root = manifest.root
    backgrounds = background_paths(manifest) if "background_noise" in cfg.transforms else []
    items = [(rel, k) for rel in sorted(set(paths)) for k in range(cfg.copies)]
    fingerprint = corpus_fingerprint(root, (root / MANIFEST_NAME).read_bytes(), sorted({r.path for r in manifest.rows}))
    blob = json.dumps({"corpus": fingerprint, "input": input_cfg.to_json(), "augment": cfg.to_json(),
                       "format": AUGMENT_FORMAT}, sort_keys=True)
    key = "augment-" + hashlib.sha256(blob.encode()).hexdigest()[:20]
    folder = Path(cache_dir if cache_dir is not None else root / CACHE_FOLDER) / key
    # an entry holds the copies of every clip asked for so far (a single-task run asks for a subset)
    cached = _read_entry(folder, key)
    missing = [item for item in items if item not in cached]
    if missing:
        chunks = [missing[i:i + CHUNK] for i in range(0, len(missing), CHUNK)]
        args = (str(root), input_cfg.to_json(), cfg.to_json(), [str(b) for b in backgrounds])
        bar = progress_bar()
        bar.disable = not progress
        with bar:
            task = bar.add_task(f"augmented copies ({len(missing)})", total=len(missing))
            for chunk, vectors in zip(chunks, _run(chunks, args, workers)):
                cached.update(zip(chunk, vectors))
                bar.advance(task, len(chunk))
        stored = sorted(cached)
        with atomic.atomic_dir(folder) as tmp:
            np.save(tmp / "inputs.npy", np.stack([cached[i] for i in stored]).astype(np.float32))
            atomic.write_json(tmp / "items.json", stored)
            atomic.write_json(tmp / "meta.json", {"format": AUGMENT_FORMAT, "key": key, "augment": cfg.to_json(),
                                                  "input": input_cfg.to_json(), "rows": len(stored),
                                                  "backgrounds": [str(b.relative_to(root)) for b in backgrounds]})
    inputs = np.stack([cached[i] for i in items]).astype(np.float32) if items else np.zeros((0, input_cfg.n_features), np.float32)
    return AugmentedInputs(items, inputs)


def _read_entry(folder: Path, key: str) -> dict[tuple[str, int], np.ndarray]:
    """(clip, copy) -> input row of a complete entry; empty when there is none (or it is damaged)."""
    try:
        if json.loads((folder / "meta.json").read_text())["key"] != key:
            return {}
        items = [(rel, int(k)) for rel, k in json.loads((folder / "items.json").read_text())]
        inputs = np.load(folder / "inputs.npy")
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return dict(zip(items, inputs)) if len(items) == len(inputs) else {}


def _run(chunks, args, workers: int):
    if workers == 1 or len(chunks) < 2:
        for chunk in chunks:
            yield _augment_chunk(args[0], chunk, *args[1:])
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(_augment_chunk, args[0], chunk, *args[1:]) for chunk in chunks]
        for fut in futures:
            yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
