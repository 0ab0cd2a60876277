"""``mtl-edge data describe``: per-task dataset measurements (later: features that predict multi-task gain).

Every number is computed over the clips that could be read (files skipped under
``on_bad_audio="skip"`` are listed in ``"skipped"`` and left out of everything else).

Definitions (they are regression features, so they are fixed here and not left to taste):

* ``clips``: manifest rows of the task (one row = one clip); ``labels``: distinct labels.
* ``type_token_ratio``: ``labels / clips``.
* ``label_entropy_bits``: Shannon entropy, base 2, of the label-count distribution
  (``scipy.stats.entropy(counts, base=2)``); 0 for a single label.
* ``label_kurtosis_excess``: EXCESS (Fisher) kurtosis, biased estimator, computed over the vector of
  per-label clip counts (one value per label): ``scipy.stats.kurtosis(counts, fisher=True, bias=True)``.
  A uniform distribution of two labels gives -2; null when it is undefined (fewer than two labels, or
  every label has the same count, i.e. zero variance).
* ``labelled_frames``: when the manifest has an ``activity`` column (segments ``start-end;start-end`` in
  seconds), the number of 10 ms frames (frame k spans ``[k*0.01, (k+1)*0.01)`` s) whose centre lies inside
  a segment, segments of one clip merged and cut at the clip's end; summed over the task's clips. Null for
  a task none of whose rows has activity.
* ``mean_length_s`` / ``total_length_s``: duration of the decoded audio.
* ``sample_rates_hz``: original file rate -> clips; ``channels``: mono / stereo / multichannel clips.
* ``snr_db_mean`` / ``snr_db_median``: per-clip blind SNR estimate (see :func:`estimate_snr_db`).
* corpus ``duplicate_audio_across_splits``: how many distinct sha256 hashes of the decoded 16 kHz
  float32 samples occur in more than one split (a leak between train and test; expected 0).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtl_edge.data.activity import ACTIVITY_COLUMN, frame_span, parse_activity  # noqa: F401 (parse_activity: re-exported)
from mtl_edge.data.audio import BAD_AUDIO_POLICIES, Audio, load_or_skip
from mtl_edge.data.manifest import MANIFEST_NAME, SPLITS, Manifest, Row, is_split, order_splits, read_manifest
from mtl_edge.errors import ManifestError

FRAME_S = 0.010  # labelled-frame hop
SNR_FRAME = 320  # 20 ms at 16 kHz: the SNR estimator's energy frame
SNR_ENERGY_FLOOR = 1e-10  # -100 dBFS: digital silence is floored here instead of giving log(0)
DECIMALS = 4
MAX_DUPLICATE_EXAMPLES = 10



@dataclass(frozen=True)
class ClipStats:
    """What one audio file contributes, computed once however many tasks carry it."""

    sha256: str
    duration_s: float
    original_rate: int
    channels: int
    snr_db: float


def estimate_snr_db(samples: np.ndarray, frame: int = SNR_FRAME) -> float:
    """Blind SNR in dB: frame-energy percentile ratio.

    The clip is cut into non-overlapping ``frame``-sample frames (20 ms at 16 kHz; a clip shorter than one
    frame is one frame); with ``k = max(1, n_frames // 10)``, the SNR is
    ``10 * log10(mean of the k largest frame energies / mean of the k smallest)``: loud frames stand for
    signal (+ noise), quiet frames for the noise floor. Frame energies (mean square) are floored at 1e-10
    (-100 dBFS), so digital silence gives a large finite value and an all-zero clip gives 0 dB, never inf.
    """
    x = np.asarray(samples, dtype=np.float64)
    n = len(x) // frame
    frames = x[: n * frame].reshape(n, frame) if n > 0 else x.reshape(1, -1)
    if frames.size == 0:
        return 0.0
    energy = np.maximum(np.mean(frames**2, axis=1), SNR_ENERGY_FLOOR)
    energy.sort()
    k = max(1, len(energy) // 10)
    return float(10.0 * np.log10(energy[-k:].mean() / energy[:k].mean()))


def count_labelled_frames(segments: list[tuple[float, float]], duration_s: float | None = None) -> int:
    """10 ms frames whose centre lies in a segment (overlaps counted once; cut at ``duration_s``)."""
    spans = []
    for start, end in segments:
        if duration_s is not None:
            end = min(end, duration_s)
        # frame k is inside when start <= (k + 0.5) * FRAME_S < end
        lo, hi = frame_span(start, end, FRAME_S)
        if hi > lo:
            spans.append((lo, hi))
    total, reach = 0, -1
    for lo, hi in sorted(spans):
        lo = max(lo, reach)
        if hi > lo:
            total += hi - lo
        reach = max(reach, hi)
    return total


def measure_clip(audio: Audio) -> ClipStats:
    """Hash, length, rate, channels and SNR of one decoded clip."""
    samples = np.ascontiguousarray(audio.samples, dtype="<f4")
    return ClipStats(
        sha256=hashlib.sha256(samples.tobytes()).hexdigest(),
        duration_s=len(samples) / audio.sample_rate,
        original_rate=int(audio.original_rate),
        channels=int(audio.original_channels),
        snr_db=estimate_snr_db(samples),
    )


def describe_corpus(corpus: str | Path, on_bad_audio: str = "fail", splits: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Measure every task of ``corpus``: ``{"corpus": {...}, "tasks": {task: {...}}, "skipped": [...]}``.

    Each audio file is read once. A missing or unreadable file raises AudioError (``"fail"``) or is
    listed in ``"skipped"`` and left out of every measurement (``"skip"``). ``splits``: measure the
    tasks over those splits' rows only (regression features use ``("train",)``: a feature must not
    see validation or test labels); the corpus-level leak check always covers every split.
    """
    unknown = [s for s in splits or () if not is_split(s)]
    if unknown:
        raise ValueError(f"unknown split(s) {', '.join(unknown)}; splits: {', '.join(SPLITS)}")
    if on_bad_audio not in BAD_AUDIO_POLICIES:
        raise ValueError(f"on_bad_audio must be one of {BAD_AUDIO_POLICIES}, not {on_bad_audio!r}")
    manifest = read_manifest(corpus, check_files=False)
    activity = _parse_activity_column(manifest)
    stats, skipped = _measure_files(manifest, on_bad_audio)

    tasks = {}
    for task in manifest.tasks:
        rows = [r for r in manifest.rows_for(task) if r.path in stats and (splits is None or r.split in splits)]
        has_activity = any(r.line in activity for r in manifest.rows_for(task))
        tasks[task] = _describe_task(rows, stats, activity if has_activity else None)
    return {
        "corpus": _describe_corpus_level(manifest, stats, skipped),
        "tasks": tasks,
        "skipped": skipped,
    }


def _parse_activity_column(manifest: Manifest) -> dict[int, list[tuple[float, float]]]:
    """Manifest line -> activity segments, for rows with a non-empty ``activity`` cell."""
    if ACTIVITY_COLUMN not in manifest.extra_columns:
        return {}
    out = {}
    for r in manifest.rows:
        text = r.extra.get(ACTIVITY_COLUMN, "")
        if not text.strip():
            continue
        try:
            out[r.line] = parse_activity(text)
        except ValueError as exc:
            raise ManifestError(f"{manifest.root / MANIFEST_NAME} line {r.line}: {exc}") from None
    return out


def _measure_files(manifest: Manifest, on_bad_audio: str) -> tuple[dict[str, ClipStats], list[str]]:
    """Read every distinct audio file once (sorted, so that ``skipped`` is in a stable order)."""
    from mtl_edge.progress import progress_bar

    paths = sorted({r.path for r in manifest.rows})
    stats: dict[str, ClipStats] = {}
    skipped: list[str] = []
    with progress_bar() as bar:
        job = bar.add_task("reading audio", total=len(paths))
        for path in paths:
            audio = load_or_skip(manifest.audio_path(path), on_bad_audio, skipped)
            if audio is not None:
                stats[path] = measure_clip(audio)
            bar.advance(job)
    return stats, skipped


def _describe_task(
    rows: list[Row], stats: dict[str, ClipStats], activity: dict[int, list[tuple[float, float]]] | None
) -> dict[str, Any]:
    from scipy import stats as st

    label_counts = Counter(r.label for r in rows)
    counts = np.array([label_counts[k] for k in sorted(label_counts)], dtype=np.float64)
    per_clip = list({r.path: r for r in rows}.values())  # a multilabel or frame task has a row per clip and label
    clips = [stats[r.path] for r in per_clip]
    lengths = np.array([c.duration_s for c in clips])
    snrs = np.array([c.snr_db for c in clips])
    entropy = float(st.entropy(counts, base=2)) if len(counts) else None
    kurtosis = None
    if len(counts) >= 2 and counts.min() != counts.max():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kurtosis = float(st.kurtosis(counts, fisher=True, bias=True))
    labelled = None
    if activity is not None:
        # once per clip and activity: a tag row repeats its clip's activity, a frame task's label rows each have their own
        segments = {(r.path, tuple(activity.get(r.line, []))) for r in rows}
        labelled = sum(count_labelled_frames(list(seg), stats[path].duration_s) for path, seg in segments)
    channels = Counter(c.channels for c in clips)
    return {
        "clips": len(per_clip),
        "labels": len(label_counts),
        "type_token_ratio": _round(len(label_counts) / len(per_clip) if per_clip else None),
        "label_entropy_bits": _round(entropy),
        "label_kurtosis_excess": _round(kurtosis),
        "label_counts": {k: label_counts[k] for k in sorted(label_counts)},
        "labelled_frames": labelled,
        "mean_length_s": _round(lengths.mean() if len(lengths) else None),
        "total_length_s": _round(lengths.sum()),
        "sample_rates_hz": _rates(clips),
        "channels": {
            "mono": channels.get(1, 0),
            "stereo": channels.get(2, 0),
            "multichannel": sum(n for ch, n in channels.items() if ch > 2),
        },
        "snr_db_mean": _round(snrs.mean() if len(snrs) else None),
        "snr_db_median": _round(float(np.median(snrs)) if len(snrs) else None),
        "clips_per_split": _per_split(r.split for r in per_clip),
    }


def _describe_corpus_level(manifest: Manifest, stats: dict[str, ClipStats], skipped: list[str]) -> dict[str, Any]:
    split_of = manifest.clips()
    by_hash: dict[str, list[str]] = defaultdict(list)
    for path in sorted(stats):
        by_hash[stats[path].sha256].append(path)
    leaks = []
    for digest, paths in by_hash.items():
        splits = order_splits({split_of[p] for p in paths})
        if len(splits) > 1:
            leaks.append({"sha256": digest, "splits": splits, "paths": paths})
    leaks.sort(key=lambda d: d["paths"][0])
    return {
        "clips": len(stats),
        "rows": len(manifest.rows),
        "tasks": manifest.tasks,
        "clips_per_split": _per_split(split_of[p] for p in stats),
        "total_length_s": _round(sum(c.duration_s for c in stats.values())),
        "sample_rates_hz": _rates(list(stats.values())),
        "skipped_clips": len(skipped),
        "duplicate_audio_across_splits": len(leaks),
        "duplicate_examples": leaks[:MAX_DUPLICATE_EXAMPLES],
    }


def _per_split(splits) -> dict[str, int]:
    counts = Counter(splits)
    return {s: counts.get(s, 0) for s in order_splits([*SPLITS, *counts])}  # extra test splits only when present


def _rates(clips: list[ClipStats]) -> dict[str, int]:
    counts = Counter(c.original_rate for c in clips)
    return {str(rate): counts[rate] for rate in sorted(counts)}


def _round(value: float | None) -> float | None:
    """Round for stable JSON; NaN/inf/None -> None (JSON null); never -0.0."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), DECIMALS) + 0.0
