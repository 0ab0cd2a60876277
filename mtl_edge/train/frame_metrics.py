"""Metrics of ``frame`` tasks: frame F1 (scikit-learn) and DCASE's segment-based error rate and F1 (``sed_eval``).

A frame is active when its sigmoid output exceeds 0.5 (logit > 0). The segment-based metrics are
sed_eval's ``SegmentBasedMetrics`` (the DCASE 2016-2017 sound event detection metrics) with the
task's ``segment_ms`` as time resolution: each clip's estimated events are the runs of active frames,
its reference events the runs of the target's active frames (the manifest's ``activity`` on the frame
grid), each clip evaluated over its ``frames x hop_ms``; ER = (S + D + I) / N and F1 are overall
(micro over segments). Why sed_eval: the DCASE definitions have corner cases (segment rounding,
substitutions) best left to the reference implementation.

sed_eval 0.2.1 needs dcase_util, which imports ``pkg_resources``: setuptools < 81 (pinned in
pyproject.toml); imported only when these metrics are computed, its deprecation warning silenced.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from mtl_edge.data.activity import frames_to_segments
from mtl_edge.errors import MtlEdgeError


def _sed_eval():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            import dcase_util
            import sed_eval
        except ImportError as exc:
            raise MtlEdgeError(f"the frame-task metrics need sed_eval 0.2.1 and setuptools < 81 (dcase_util imports "
                               f"pkg_resources): pip install -e . installs both ({exc})") from None
    return sed_eval, dcase_util


def frame_f1(targets: np.ndarray, logits: np.ndarray) -> float:
    """F1 over every (sample, frame, label) decision."""
    return float(f1_score(np.asarray(targets).reshape(-1) > 0.5, np.asarray(logits).reshape(-1) > 0, zero_division=0))


def events(active: np.ndarray, labels: list[str], hop_s: float, clip: str) -> list[dict]:
    """sed_eval's event list of one clip's [frames, labels] activity."""
    return [{"filename": clip, "event_label": label, "onset": onset, "offset": offset}
            for k, label in enumerate(labels) for onset, offset in frames_to_segments(active[:, k], hop_s)]


def segment_metrics(targets: np.ndarray, logits: np.ndarray, labels: list[str], hop_ms: float,
                    segment_ms: float) -> dict[str, float | None]:
    """sed_eval's overall segment-based error rate and F1 over clips (``targets``, ``logits``: [N, frames, labels])."""
    sed_eval, dcase_util = _sed_eval()
    hop_s = hop_ms / 1000.0
    metrics = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels), time_resolution=segment_ms / 1000.0)
    length = targets.shape[1] * hop_s
    for i in range(len(targets)):
        clip = f"clip{i}"
        metrics.evaluate(dcase_util.containers.MetaDataContainer(events(targets[i] > 0.5, labels, hop_s, clip)),
                         dcase_util.containers.MetaDataContainer(events(logits[i] > 0, labels, hop_s, clip)),
                         evaluated_length_seconds=length)
    overall = metrics.results_overall_metrics()
    er, f1 = overall["error_rate"]["error_rate"], overall["f_measure"]["f_measure"]
    return {"error_rate": None if not np.isfinite(er) else float(er), "segment_f1": float(np.nan_to_num(f1))}


def frame_metrics(spec, logits: np.ndarray, targets: np.ndarray) -> dict[str, float | None]:
    """Frame F1, segment-based error rate and segment-based F1 of a frame task."""
    logits, targets = np.asarray(logits), np.asarray(targets)
    if logits.shape != targets.shape:
        raise MtlEdgeError(f"task {spec.name!r}: outputs {list(logits.shape)} and targets {list(targets.shape)} differ")
    if len(targets) == 0:
        return {"frame_f1": 0.0, "error_rate": None, "segment_f1": 0.0}
    return {"frame_f1": frame_f1(targets, logits),
            **segment_metrics(targets, logits, list(spec.labels), float(spec.options["hop_ms"]),
                              float(spec.options.get("segment_ms", 1000.0)))}
