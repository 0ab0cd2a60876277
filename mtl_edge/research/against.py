"""``mtl-edge analyze SWEEP --against AFFINITY``: does one affinity run predict what the pair sweep measured?

For every directed pair (main m, auxiliary a) the sweep measured: the predicted TAG affinity
``Z[a -> m]`` (a step on the auxiliary lowers the main task's loss) and gradient cosine, against the
measured gain of m with a over m alone (mean over seeds). Undirected: ``Z[a->m] + Z[m->a]`` against
``gain(m|a) + gain(a|m)``, what a grouping cares about. Statistics: Spearman rank correlation, the
fraction of sign agreements, and as honest baselines the sign agreement of always predicting a
gain and of always predicting none. Cost of each: one training run against the sweep's runs.
Written to ``against.json``, ``against.md``, ``pairs.csv`` and ``against.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError


def _stats(pred: list[float], meas: list[float]) -> dict:
    from scipy.stats import spearmanr

    n = len(meas)
    out = {"n": n, "sign_agreement": sum((p > 0) == (m > 0) for p, m in zip(pred, meas)) / n if n else None,
           "always_gain_agreement": sum(m > 0 for m in meas) / n if n else None,
           "never_gain_agreement": sum(m <= 0 for m in meas) / n if n else None, "rho": None, "p": None}
    if n >= 3 and len(set(pred)) > 1 and len(set(meas)) > 1:
        rho, p = spearmanr(pred, meas)
        out["rho"], out["p"] = float(rho), float(p)
    return out


def compare(sweep: str | Path, affinity: str | Path, metric: str = "macro_f1") -> dict:
    from mtl_edge.research.analyze import METRICS, pair_gains
    from mtl_edge.research.runs import json_or_empty

    sweep, affinity = Path(sweep), Path(affinity)
    if metric not in METRICS:
        raise MtlEdgeError(f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    config = atomic.read_json(sweep / "sweep.json", f"{sweep} is not a sweep folder (no sweep.json)")
    record = atomic.read_json(affinity / "affinity.json",
                              f"{affinity} is not an affinity result (no affinity.json; mtl-edge affinity writes one)")
    theirs = record.get("settings", {}).get("corpus_fingerprint")
    if config.get("corpus_fingerprint") and theirs and config["corpus_fingerprint"] != theirs:
        raise MtlEdgeError(f"{affinity} was measured on another corpus than {sweep} (corpus fingerprint "
                           f"{theirs[:12]} against {config['corpus_fingerprint'][:12]})")
    common = [t for t in config["tasks"] if t in record["tasks"]]
    if len(common) < 2:
        raise MtlEdgeError(f"the sweep ({', '.join(config['tasks'])}) and the affinity run ({', '.join(record['tasks'])}) "
                           f"share fewer than two tasks")
    notes = []
    left_out = [t for t in config["tasks"] if t not in common]
    if left_out:
        notes.append(f"not in the affinity run, left out: {', '.join(left_out)}")
    gains, _ = pair_gains(sweep, config["tasks"], config["seeds"], metric)
    index = {t: i for i, t in enumerate(record["tasks"])}
    pairs = []
    for g in gains:
        m, a = g["main"], g["aux"]
        if m not in index or a not in index:
            continue
        tag, cos = record["tag"][index[a]][index[m]], record["cosine"][index[a]][index[m]]
        if tag is None or cos is None:
            continue
        pairs.append({"main": m, "aux": a, "gain": g["gain"], "tag": tag, "cosine": cos})
    if not pairs:
        raise MtlEdgeError(f"no directed pair has both a measured gain in {sweep} and an affinity in {affinity}")
    by = {(p["main"], p["aux"]): p for p in pairs}
    undirected = [{"pair": f"{m}+{a}", "gain": by[m, a]["gain"] + by[a, m]["gain"],
                   "tag": by[m, a]["tag"] + by[a, m]["tag"], "cosine": by[m, a]["cosine"] + by[a, m]["cosine"]}
                  for (m, a) in by if (a, m) in by and common.index(m) < common.index(a)]
    stats = {f"{name}_{view}": _stats([r[name] for r in rows], [r["gain"] for r in rows])
             for name in ("tag", "cosine") for view, rows in (("directed", pairs), ("undirected", undirected))}
    runs = [json_or_empty(f / "status.json") for f in sorted((sweep / "runs").glob("*/seed*"))
            if all(t in common for t in f.parent.name.split("+")) and len(f.parent.name.split("+")) <= 2]
    done = [r for r in runs if r.get("status") == "done"]
    walls = [r.get("wall_s") for r in done]
    cost = {"affinity_runs": 1, "affinity_wall_s": record.get("wall_s"), "sweep_runs": len(done),
            "sweep_wall_s": round(sum(walls), 1) if walls and all(w is not None for w in walls) else None}
    return {"sweep": str(sweep), "affinity": str(affinity), "metric": metric, "tasks": common, "pairs": pairs,
            "undirected": undirected, "stats": stats, "cost": cost, "notes": notes}


def _line(name: str, s: dict) -> str:
    rho = "-" if s["rho"] is None else f"{s['rho']:+.3f} (p = {s['p']:.3f}{', not significant' if s['p'] >= 0.05 else ''})"
    return (f"| {name} | {s['n']} | {rho} | {s['sign_agreement']:.3f} | {s['always_gain_agreement']:.3f} | "
            f"{s['never_gain_agreement']:.3f} |")


def write_against(result: dict, out: Path, wall_s: float, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command, "wall_s": round(wall_s, 2)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["main", "aux", "gain", "tag", "cosine"])
    for p in result["pairs"]:
        writer.writerow([p["main"], p["aux"], f"{p['gain']:.6g}", f"{p['tag']:.6g}", f"{p['cosine']:.6g}"])
    atomic.write_text(out / "pairs.csv", buf.getvalue())
    c = result["cost"]
    sweep_wall = "not recorded" if c["sweep_wall_s"] is None else f"{c['sweep_wall_s']:.0f} s of training"
    lines = [f"# Affinity against the sweep: {result['affinity']} vs {result['sweep']}", "",
             f"Command: `{command}` ({result['wall_s']} s). Measured: test {result['metric']} gain of the main task with "
             f"the auxiliary over the main task alone (mean over seeds); predicted: TAG Z[aux -> main] and the "
             f"gradient cosine.", "",
             "| predictor | pairs | Spearman rho | sign agreement | always 'gain' | always 'no gain' |",
             "|---|---|---|---|---|---|",
             *(_line(k.replace("_", ", "), s) for k, s in result["stats"].items()), "",
             f"Cost: affinity {c['affinity_runs']} run ({c['affinity_wall_s']} s); sweep {c['sweep_runs']} pair and "
             f"single-task runs ({sweep_wall}).", ""]
    lines += [f"- {n}" for n in result["notes"]]
    atomic.write_text(out / "against.md", "\n".join(lines) + "\n")
    _plot(result, out / "against.png")
    atomic.write_json(out / "against.json", result, sort_keys=False)
    return [out / "against.md", out / "against.json", out / "pairs.csv", out / "against.png"]


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("tag", "cosine")):
        s = result["stats"][f"{name}_directed"]
        ax.scatter([p[name] for p in result["pairs"]], [p["gain"] for p in result["pairs"]], s=14)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("TAG Z[aux -> main]" if name == "tag" else "gradient cosine")
        ax.set_ylabel(f"measured {result['metric']} gain")
        ax.set_title(f"{name}: rho {'-' if s['rho'] is None else format(s['rho'], '+.2f')}, sign {s['sign_agreement']:.2f}")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
