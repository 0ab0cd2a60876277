"""The Georgiev et al. comparison line (multi-task model against the sum of the single-task models) and the
feature front-end measured once for it.

Single-task models trained from one config take the same feature vector, so a user computes the front-end
once and feeds every model: ``*_shared_frontend`` (the headline ratios) count it once on each side;
``*_frontend_per_model`` (the named variant: each single-task model deployed with its own front-end) count
it once per single-task model.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Callable

from mtl_edge.bench.records import Compare
from mtl_edge.bench.session import Session
from mtl_edge.errors import MtlEdgeError

def rounded(v, digits: int = 4):
    return None if v is None else round(float(v), digits)


def megabytes(kb) -> float | None:
    return None if kb is None else round(kb / 1024, 3)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def _busy(lines: list[dict]):
    """True when any measurement the comparison is built from was taken on a busy device (None: not known)."""
    flags = [line.get("busy") for line in lines]
    return True if any(flags) else (None if any(f is None for f in flags) else False)


def _frontend_ratios(multi: dict, s_p50: float, s_delta: float | None, coresident: dict | None, n: int,
                     fe: dict | None) -> dict:
    """The ratios with the feature front-end's cost: shared (computed once for all models of one feature
    config, as a user deploys them: the headline) and once per single-task model (the named variant)."""
    fe_ms = fe["p50_ms"] if fe else None
    fe_mb = fe["delta_rss_mb"] if fe else None
    m_mb = multi["delta_rss_mb"]
    memory = fe_mb is not None and s_delta is not None and m_mb is not None
    return {
        "runtime_ratio_shared_frontend": _ratio(multi["p50_ms"] + fe_ms, s_p50 + fe_ms) if fe else None,
        "runtime_ratio_coresident_shared_frontend": (_ratio(multi["p50_ms"] + fe_ms, coresident["p50_ms"] + fe_ms)
                                                     if fe and coresident else None),
        "memory_ratio_shared_frontend": _ratio(m_mb + fe_mb, s_delta + fe_mb) if memory else None,
        "runtime_ratio_frontend_per_model": _ratio(multi["p50_ms"] + fe_ms, s_p50 + n * fe_ms) if fe else None,
        "memory_ratio_frontend_per_model": _ratio(m_mb + fe_mb, s_delta + n * fe_mb) if memory else None,
    }


def compare_record(multi: dict, singles: list[dict], coresident: dict | None, multi_entry: dict,
                   single_entries: list[dict], settings: dict, fe: dict | None = None) -> Compare:
    """The compare line from the measurement lines of the multi model, each single model and the co-resident run."""
    n = len(singles)
    s_p50 = sum(s["p50_ms"] for s in singles)
    s_delta = sum(s["delta_rss_mb"] for s in singles) if all(s["delta_rss_mb"] is not None for s in singles) else None
    s_peak = sum(s["peak_rss_mb"] for s in singles) if all(s["peak_rss_mb"] is not None for s in singles) else None
    s_bytes = sum(s["model_bytes"] for s in singles)
    accuracy = {}
    mver = ((multi_entry.get("verification") or {}).get("tasks") or {})
    for t in multi["tasks"]:
        accuracy[f"accuracy_multi_{t}"] = (mver.get(t) or {}).get("accuracy")
    for e in single_entries:
        t = e["tasks"][0]
        accuracy[f"accuracy_single_{t}"] = ((((e.get("verification") or {}).get("tasks") or {}).get(t)) or {}).get("accuracy")
    return Compare(
        time=now(), device=settings["device"], runtime=settings["runtime"], runtime_version=multi["runtime_version"],
        machine=multi["machine"], emulated=multi["emulated"], format=multi["format"],
        precision=multi["precision"], tasks=list(multi["tasks"]), n_single=n,
        multi_p50_ms=multi["p50_ms"], single_p50_sum_ms=rounded(s_p50, 5),
        coresident_p50_ms=coresident["p50_ms"] if coresident else None,
        runtime_ratio=_ratio(multi["p50_ms"], s_p50),
        runtime_ratio_coresident=_ratio(multi["p50_ms"], coresident["p50_ms"]) if coresident else None,
        multi_delta_rss_mb=multi["delta_rss_mb"], single_delta_rss_sum_mb=rounded(s_delta, 3),
        coresident_delta_rss_mb=coresident["delta_rss_mb"] if coresident else None,
        memory_ratio=_ratio(multi["delta_rss_mb"], s_delta),
        memory_ratio_coresident=_ratio(multi["delta_rss_mb"], coresident["delta_rss_mb"]) if coresident else None,
        multi_peak_rss_mb=multi["peak_rss_mb"], single_peak_rss_sum_mb=rounded(s_peak, 3),
        memory_ratio_peak=_ratio(multi["peak_rss_mb"], s_peak),
        multi_model_bytes=multi["model_bytes"], single_model_bytes_sum=s_bytes,
        size_ratio=_ratio(multi["model_bytes"], s_bytes),
        frontend_p50_ms=fe["p50_ms"] if fe else None, frontend_delta_rss_mb=fe["delta_rss_mb"] if fe else None,
        **_frontend_ratios(multi, s_p50, s_delta, coresident, n, fe),
        busy=_busy([multi, *singles, *([coresident] if coresident else [])]),
        multi_status=multi_entry.get("status"), single_status=sorted({e.get("status") for e in single_entries}),
        accuracy=accuracy, cpu_model=multi.get("cpu_model"), cpu_governor=multi.get("cpu_governor"),
        cpu_freq_mhz=multi.get("cpu_freq_mhz"), temperature_c=multi.get("temperature_c"),
        threads=settings["threads"], cpu_affinity=settings["cpu_affinity"],
        multi_sha256=multi_entry["sha256"], single_sha256=[e["sha256"] for e in single_entries],
        warmup_runs=settings["warmup_runs"], min_runs=settings["min_runs"], min_secs=settings["min_secs"],
        max_secs=settings["max_secs"])


def measure_frontend(session: Session, manifest: dict, clip_paths: list[str], min_runs: int, min_secs: float,
              max_secs: float, log: Callable) -> dict | None:
    """The front-end (log-mel summary of one clip) measured once in its own process; None when it cannot be.

    Models that read the raw waveform have no front-end: it costs nothing on either side, so the
    front-end ratios equal the model-only ones."""
    import sys

    if (manifest.get("feature_config") or {}).get("kind") == "waveform":
        log("front-end: none (the models read the raw waveform)")
        return {"p50_ms": 0.0, "delta_rss_mb": 0.0, "runs": 0}
    corpus = Path(manifest.get("corpus") or "")
    clips = [str(corpus / p) for p in clip_paths[:8] if (corpus / p).is_file()]
    if session.device.transport != "local" or not clips:
        log("front-end: not measured (needs the local corpus clips of the export)")
        return None
    log("measure: feature front-end (logmel.extract, one clip)")
    job = {"clips": clips, "feature_config": manifest["feature_config"], "warmup": 3,
           "min_runs": min(min_runs, 30), "min_secs": min(min_secs, 1.0), "max_secs": max(1.0, min(max_secs, 5.0))}
    prefix = ["taskset", "-c", session.device.cpu_affinity] if session.device.cpu_affinity else []
    try:
        report = session.run([*prefix, sys.executable, "-m", "mtl_edge.bench.frontend"], job, "feature front-end",
                             Path("(no results written by the front-end)"), 120)
    except MtlEdgeError as exc:
        log(f"front-end: not measured ({exc})")
        return None
    delta = (report["peak_rss_kb"] - report["rss_after_import_kb"]) if report.get("peak_rss_kb") else None
    return {"p50_ms": round(report["p50_ms"], 5), "delta_rss_mb": megabytes(delta), "runs": report["runs"]}
