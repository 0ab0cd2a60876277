"""Which precision to ship, per format, picked from the export's own measurements.

Quantisation does not always pay: on the onnxruntime CPU provider static QDQ int8 of the DNN family is
slower than fp32 (onnxruntime#20052), dynamic int8 of convolutions is slower still (ConvInteger), while
LiteRT's full-integer int8 is the fastest. Rather than a fixed table per model family, the export
recommends, per format, the fastest verified artefact of the multi-task model whose accuracy stays
within the accuracy-drop threshold of fp32 on every task (measured at export time on this machine, 1
thread; a device benchmark is the final word).
"""

from __future__ import annotations


def _accuracies(entry: dict) -> dict[str, float | None]:
    tasks = ((entry.get("verification") or {}).get("tasks")) or {}
    return {t: v.get("accuracy") for t, v in tasks.items()}


def recommend(artefacts: list[dict], max_drop: float, model: str = "multi") -> dict:
    """{format: {precision, median_ms, speedup_vs_fp32, reason}} for the artefacts of ``model``."""
    out = {}
    for fmt in sorted({a["format"] for a in artefacts if a["model"] == model}):
        group = [a for a in artefacts if a["model"] == model and a["format"] == fmt and a["status"] == "ok"
                 and (a.get("latency") or {}).get("median_ms") is not None]
        fp32 = next((a for a in group if a["precision"] == "fp32"), None)
        candidates = []
        for a in group:
            if fp32 is not None and a is not fp32:
                base, mine = _accuracies(fp32), _accuracies(a)
                drops = [base[t] - mine[t] for t in base if base[t] is not None and mine.get(t) is not None]
                if drops and max(drops) > max_drop:
                    continue
            candidates.append(a)
        if not candidates:
            out[fmt] = {"precision": None, "reason": "no verified artefact with a latency measurement"}
            continue
        best = min(candidates, key=lambda a: a["latency"]["median_ms"])
        base_ms = fp32["latency"]["median_ms"] if fp32 else None
        speedup = round(base_ms / best["latency"]["median_ms"], 3) if base_ms else None
        rejected = sorted(a["precision"] for a in group if a not in candidates)
        out[fmt] = {
            "precision": best["precision"], "path": best["path"], "median_ms": best["latency"]["median_ms"],
            "speedup_vs_fp32": speedup,
            "reason": (f"fastest verified {fmt} artefact of {model} ({best['latency']['median_ms']} ms median, 1 thread, "
                       f"{speedup}x fp32)" + (f"; rejected for accuracy drop > {max_drop}: {', '.join(rejected)}"
                                              if rejected else "")),
        }
    return out
