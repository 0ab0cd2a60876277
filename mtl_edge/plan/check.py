"""``plan --train``: train, export and benchmark the chosen networks, then set the measurement beside the prediction.

Every network trains with the gains' own training config (steps, learning rate, features) at the
chosen width, for seeds 0..N-1 (``OUT/train/<network>/seed<k>/``, a ``train`` run folder: an
interrupted check resumes). Seed 0 is exported at the chosen format and precision and benchmarked on
the plan's device (``OUT/train/<network>/seed0/export/bench/``). The check compares, per task, the
measured test metric with the same seeds' single-task runs and all-tasks-in-one run of a sweep (the
gains when they are a sweep, else ``--baselines``), and the plan's measured latency and memory
(front-end once, as predicted) with the prediction. Written to ``OUT/check.json`` and ``OUT/check.md``.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError


def _baseline_sweep(outcome, baselines: Path | None) -> Path | None:
    if baselines is not None:
        if not (Path(baselines) / "sweep.json").is_file():
            raise MtlEdgeError(f"--baselines {baselines} is not a sweep folder (no sweep.json)")
        return Path(baselines)
    return outcome.scores.path if outcome.scores.source == "sweep" else None


def _sweep_metric(sweep: Path, tasks: tuple[str, ...], task: str, seeds: list[int], metric: str) -> float | None:
    from mtl_edge.research.runs import RunSpec, finished_metrics

    order = atomic.read_json(sweep / "sweep.json", "")["tasks"]
    if any(t not in order for t in tasks):
        return None
    spec_tasks = tuple(sorted(tasks, key=order.index))
    values = [finished_metrics(sweep, RunSpec(spec_tasks, s)).get("tasks", {}).get(task, {}).get("test", {}).get(metric)
              for s in seeds]
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if len(values) == len(seeds) else None


def check_plan(outcome, *, seeds: int = 1, baselines: Path | None = None, corpus: Path | None = None,
               min_secs: float = 0.5, max_secs: float = 5.0) -> dict:
    from mtl_edge.bench.harness import bench
    from mtl_edge.bench.results import read_lines
    from mtl_edge.export import export_run
    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    record, scores, costs = outcome.record, outcome.scores, outcome.costs
    chosen = record["chosen"]
    if chosen is None:
        raise MtlEdgeError("no grouping meets the budget: nothing to train")
    if costs.emulated:
        raise MtlEdgeError("the plan's costs come from an emulated device: --train checks a real device's figures only")
    corpus = Path(corpus) if corpus is not None else Path(scores.corpus)
    if not (corpus / "manifest.csv").is_file():
        raise MtlEdgeError(f"the corpus the gains were measured on ({corpus}) is not there; pass --corpus")
    if scores.corpus_fingerprint:
        from mtl_edge.features.cache import fingerprint_of

        if fingerprint_of(corpus) != scores.corpus_fingerprint:
            raise MtlEdgeError(f"{corpus} is not the corpus the gains were measured on (its fingerprint differs)")
    metric = scores.metric or "macro_f1"
    sweep = _baseline_sweep(outcome, baselines)
    seed_list = list(range(seeds))
    input_config = config_from_json(scores.features)
    base_train = {k: v for k, v in scores.train.items() if k != "seed"}
    rows, networks = [], []
    for index, net in enumerate(chosen["networks"], 1):
        tasks = tuple(net["tasks"])
        name = f"net{index}-{'+'.join(tasks)}"
        folder = outcome.folder / "train" / name
        measured: dict[str, list[float]] = {t: [] for t in tasks}
        for seed in seed_list:
            cfg = replace(TrainConfig.from_json({**base_train, "hidden": [net["width"]] * 3}), seed=seed)
            run = train_run(corpus, list(tasks), folder / f"seed{seed}", cfg, resume=True, input_config=input_config)
            for t in tasks:
                measured[t].append(run.metrics["tasks"][t]["multi"][metric])
        export_dir = folder / "seed0" / "export"
        manifest = export_dir / "manifest.json"
        if not manifest.is_file():
            export_run(folder / "seed0", export_dir, formats=[net["format"]], precisions=[net["precision"]],
                       models="multi", force=True, allow_degraded=True)  # marked, reported below
        bench(export_dir, device=costs.device, runtime=net["runtime"], precisions=net["precision"], resume=True,
              min_secs=min_secs, max_secs=max_secs, allow_disagreement=True, listeners=[])
        lines = [line for p in sorted((export_dir / "bench").glob("*.jsonl")) for line in read_lines(p)
                 if line.get("kind") == "measurement" and line.get("model") == "multi"
                 and line.get("precision") == net["precision"] and line.get("runtime") == net["runtime"]]
        # a degraded artefact (this network's own export failed verification at the chosen precision) is still
        # measured: the check reports it rather than stopping
        if not lines or lines[-1].get("status") not in ("ok", "degraded"):
            raise MtlEdgeError(f"{name}: the benchmark of its {net['precision']} artefact did not finish ok; see {export_dir / 'bench'}")
        line = lines[-1]
        networks.append({"name": name, "tasks": list(tasks), "width": net["width"], "precision": net["precision"],
                         "runtime": net["runtime"], "predicted_latency_ms": net["latency_ms"],
                         "measured_latency_ms": line["p50_ms"], "predicted_memory_mb": net["memory_mb"],
                         "measured_memory_mb": line["delta_rss_mb"], "load_1m_before": line.get("load_1m_before"),
                         "artefact_status": _artefact_status(export_dir, line["artefact"]),
                         "answers_status": line.get("answers_status"),
                         "busy": line.get("busy")})
        for t in tasks:
            value = statistics.fmean(measured[t])
            single = _sweep_metric(sweep, (t,), t, seed_list, metric) if sweep else None
            everything = _sweep_metric(sweep, tuple(record["tasks"]), t, seed_list, metric) if sweep else None
            rows.append({"task": t, "network": name, "predicted_score": net["task_scores"][t]["score"],
                         "score_from": net["task_scores"][t]["from"], metric: value,
                         "single": single, "all_in_one": everything,
                         "gain_vs_single": None if single is None else value - single,
                         "gain_vs_all_in_one": None if everything is None else value - everything,
                         "deployed_accuracy": line.get(f"answers_accuracy_{t}")})
    fixed_lat, fixed_mem = costs.frontend_ms(), costs.base_mb.get(chosen["runtime"], 0.0) + costs.frontend_mb()
    measured_latency = fixed_lat + sum(n["measured_latency_ms"] for n in networks)
    measured_memory = fixed_mem + sum(n["measured_memory_mb"] for n in networks)

    def mean_of(key):
        values = [r[key] for r in rows]
        return None if any(v is None for v in values) else statistics.fmean(values)

    check = {"metric": metric, "seeds": seed_list, "baselines": str(sweep) if sweep else None, "grouping": chosen["grouping"],
             "tasks": rows, "networks": networks,
             "mean": {"plan": mean_of(metric), "single": mean_of("single"), "all_in_one": mean_of("all_in_one")},
             "latency_ms": {"predicted": chosen["latency_ms"], "measured": round(measured_latency, 5)},
             "memory_mb": {"predicted": chosen["memory_mb"], "measured": round(measured_memory, 3)},
             "note": "measured latency and memory: the front-end and the runtime's base counted once, as in the prediction; "
                     "each network measured alone in its own runner process"}
    if sweep and scores.source == "sweep":
        predicted = [r["predicted_score"] for r in rows if r["gain_vs_single"] is not None]
        actual = [r["gain_vs_single"] for r in rows if r["gain_vs_single"] is not None]
        check["predicted_vs_measured_gain_sum"] = {"predicted": sum(predicted), "measured": sum(actual)}
    m = check["mean"]
    parts = [f"plan {chosen['grouping']}: mean test {metric} {m['plan']:.4f}"]
    if m["single"] is not None:
        parts.append(f"every task alone {m['single']:.4f}")
    if m["all_in_one"] is not None:
        parts.append(f"all in one network {m['all_in_one']:.4f}")
    parts.append(f"latency predicted {chosen['latency_ms']:.4f} ms, measured {measured_latency:.4f} ms; memory predicted "
                 f"{chosen['memory_mb']:.2f} MB, measured {measured_memory:.2f} MB")
    check["summary"] = "; ".join(parts)
    atomic.write_json(outcome.folder / "check.json", check, sort_keys=False)
    atomic.write_text(outcome.folder / "check.md", _markdown(check))
    return check


def _artefact_status(export_dir: Path, artefact: str) -> str | None:
    manifest = atomic.read_json(export_dir / "manifest.json", "")
    return next((a.get("status") for a in manifest.get("artefacts", []) if a.get("path") == artefact), None)


def _f(v, fmt="{:.4f}"):
    return "-" if v is None else fmt.format(v)


def _markdown(check: dict) -> str:
    metric = check["metric"]
    lines = [f"# Plan check: {check['grouping']}", "",
             f"Seeds {check['seeds']}; baselines from {check['baselines'] or '(no sweep given)'}.", "",
             f"| task | network | predicted score | test {metric} | alone | all in one | vs alone | vs all in one | deployed accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in check["tasks"]:
        lines.append(f"| {r['task']} | {r['network']} | {r['predicted_score']:+.4f} ({r['score_from']}) | {_f(r[metric])} | "
                     f"{_f(r['single'])} | {_f(r['all_in_one'])} | {_f(r['gain_vs_single'], '{:+.4f}')} | "
                     f"{_f(r['gain_vs_all_in_one'], '{:+.4f}')} | {_f(r['deployed_accuracy'])} |")
    m = check["mean"]
    lines += ["", f"Mean test {metric}: plan {_f(m['plan'])}, every task alone {_f(m['single'])}, all in one network "
              f"{_f(m['all_in_one'])}.", "",
              "| network | width | precision | runtime | p50 predicted ms | p50 measured ms | memory predicted MB | memory measured MB | load before | artefact | answers |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in check["networks"]:
        lines.append(f"| {n['name']} | {n['width']} | {n['precision']} | {n['runtime']} | {n['predicted_latency_ms']:.4f} | "
                     f"{n['measured_latency_ms']:.4f} | {n['predicted_memory_mb']:.2f} | {n['measured_memory_mb']:.2f} | "
                     f"{n['load_1m_before']} | {n['artefact_status']} | {n['answers_status']} |")
    degraded = [n["name"] for n in check["networks"] if n["artefact_status"] == "degraded"]
    if degraded:
        lines += ["", f"Degraded: the {', '.join(degraded)} artefact failed verification against its PyTorch model at the "
                  "chosen precision (see its export's verification.md); the plan chose that precision from the cost "
                  "export's artefact, which passed. Its deployed accuracy is in the table above."]
    lines += ["", f"Plan: latency predicted {check['latency_ms']['predicted']:.4f} ms, measured {check['latency_ms']['measured']:.4f} ms; "
              f"memory predicted {check['memory_mb']['predicted']:.2f} MB, measured {check['memory_mb']['measured']:.2f} MB "
              f"({check['note']}).", ""]
    return "\n".join(lines)
