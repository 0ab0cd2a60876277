"""``mtl-edge plan``: the grouping the exact search chooses against a brute force over every grouping and
choice, costs from real bench lines of two real exports (widths 128 and 256), scores from a real sweep
and affinity run, the refusals, and ``--train`` checking the prediction with trained, exported and
benchmarked networks."""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.plan.search import partitions

pytestmark = pytest.mark.slow
TASKS = ["scene", "gender", "kws"]
QUICK = dict(min_runs=20, min_secs=0.02, max_secs=1.0, warmup=2, progress=False)


def cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sources(tiny_corpus, tmp_path_factory):
    """A pair sweep and an affinity run of the tasks, and two benchmarked exports of widths 128 and 256."""
    from mtl_edge.bench.harness import bench
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    root = tmp_path_factory.mktemp("plan")
    common = ["--tasks", ",".join(TASKS), "--steps", "40", "--hidden", "128,128,128"]
    result = cli("sweep", "--corpus", tiny_corpus, "--out", root / "sweep", "--combos", "singles,pairs", "--seeds", "2",
                 *common)
    assert result.exit_code == 0, result.output
    result = cli("affinity", "--corpus", tiny_corpus, "--out", root / "affinity", "--every", "5", *common)
    assert result.exit_code == 0, result.output
    benches = []
    for width in (128, 256):
        run = train_run(tiny_corpus, TASKS, root / f"run{width}", TrainConfig(hidden=(width,) * 3, steps=40), single=True)
        export = export_run(run.folder, formats=("onnx",), precisions=("fp32", "int8-dynamic"), allow_degraded=True,
                            latency_runs=10, progress=False).folder
        bench(export, "desktop", runtime="onnxruntime", compare="single", allow_disagreement=True, **QUICK)
        benches.append(export / "bench")
    return {"sweep": root / "sweep", "affinity": root / "affinity", "bench": benches, "root": root}


def plan(sources, out: Path, *extra, gains="sweep"):
    args = ["plan", "--gains", sources[gains], "--out", out]
    for b in sources["bench"]:
        args += ["--bench", b]
    return cli(*args, *extra)


def _bench_lines(bench_dirs) -> list[dict]:
    return [json.loads(line) for b in bench_dirs for p in sorted(Path(b).glob("*.jsonl"))
            for line in p.read_text().splitlines()]


def _width(bench_dir: Path) -> int:
    return json.loads((bench_dir.parent.parent / "config.json").read_text())["train"]["hidden"][0]


def _measured_costs(bench_dirs):
    """Independently of mtl_edge.plan: (width, precision) -> {heads: (p50, delta)}, accuracy per task, base, front-end."""
    costs, accuracy, base, fe = {}, {}, [], []
    for b in bench_dirs:
        manifest = json.loads((Path(b).parent / "manifest.json").read_text())
        verified = {a["path"]: a["status"] for a in manifest["artefacts"]}
        for line in _bench_lines([b]):
            if line["kind"] == "compare":
                fe.append((line["frontend_p50_ms"], line["frontend_delta_rss_mb"]))
                continue
            if line["mode"] != "alone" or line["model"].startswith("e2e") or line["status"] != "ok" \
                    or line.get("answers_status") != "ok" or verified[line["artefact"]] != "ok":
                continue
            key = (_width(b), line["precision"])
            costs.setdefault(key, {}).setdefault(len(line["tasks"]), []).append((line["p50_ms"], line["delta_rss_mb"]))
            for t in line["tasks"]:
                accuracy.setdefault(key, {}).setdefault(t, []).append(line[f"answers_accuracy_{t}"])
            base.append(line["rss_after_import_mb"])
    med = {k: {h: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for h, vs in by.items()}
           for k, by in costs.items()}
    acc = {k: {t: statistics.fmean(v) for t, v in by.items()} for k, by in accuracy.items()}
    return med, acc, statistics.median(base), (statistics.median(f[0] for f in fe), statistics.median(f[1] for f in fe))


def _sweep_gain(sweep: Path, main: str, aux: str) -> float:
    values = []
    for seed in (0, 1):
        pair = "+".join(sorted((main, aux), key=TASKS.index))
        multi = json.loads((sweep / "runs" / pair / f"seed{seed}" / "metrics.json").read_text())
        single = json.loads((sweep / "runs" / main / f"seed{seed}" / "metrics.json").read_text())
        values.append(multi["tasks"][main]["test"]["macro_f1"] - single["tasks"][main]["test"]["macro_f1"])
    return statistics.fmean(values)


def _brute_force(sources, max_latency, max_memory):
    """Every grouping x every (width, precision) per network: the best by score, then accuracy, then latency."""
    med, acc, base, (fe_ms, fe_mb) = _measured_costs(sources["bench"])
    gain = {(m, a): _sweep_gain(sources["sweep"], m, a) for m in TASKS for a in TASKS if m != a}

    def score(group):
        if len(group) == 1:
            return 0.0
        return sum(statistics.fmean(gain[(t, a)] for a in group if a != t) for t in group)

    def cost(key, heads):
        by = med[key]
        if heads in by:
            return by[heads]
        lo, hi = max((h for h in by if h < heads), default=None), min((h for h in by if h > heads), default=None)
        if lo is None or hi is None:  # nothing measured on one side: the nearest measured network
            return by[hi if lo is None else lo]
        w = (heads - lo) / (hi - lo)
        return tuple(by[lo][i] + w * (by[hi][i] - by[lo][i]) for i in range(2))

    best = None
    for part in partitions(TASKS):
        s = sum(score(g) for g in part)
        for keys in itertools.product(sorted(med), repeat=len(part)):
            lat = fe_ms + sum(cost(k, len(g))[0] for k, g in zip(keys, part))
            mem = base + fe_mb + sum(cost(k, len(g))[1] for k, g in zip(keys, part))
            q = sum(acc[k][t] for k, g in zip(keys, part) for t in g)
            if lat <= max_latency + 1e-12 and mem <= max_memory + 1e-12:
                rank = (round(s, 9), round(q, 9), -lat)
                if best is None or rank > best[0]:
                    best = (rank, part, keys, lat, mem)
    return best


def test_partitions_are_every_set_partition_once():
    bell = [1, 1, 2, 5, 15, 52, 203]
    for n in range(1, 7):
        items = [f"t{i}" for i in range(n)]
        parts = list(partitions(items))
        assert len(parts) == bell[n]
        canonical = {frozenset(frozenset(g) for g in p) for p in parts}
        assert len(canonical) == bell[n]
        assert all(sorted(t for g in p for t in g) == items for p in parts)


def test_the_chosen_grouping_is_the_brute_force_best_under_each_budget(sources, tmp_path):
    free = plan(sources, tmp_path / "free")
    assert free.exit_code == 0, free.output
    record = json.loads((tmp_path / "free" / "plan.json").read_text())
    latencies = sorted(g["latency_ms"] for g in record["front"])
    # a generous budget, and one between the cheapest plan and the unconstrained choice
    tight = (record["cheapest"]["latency"]["latency_ms"] + record["chosen"]["latency_ms"]) / 2
    for name, lat in (("generous", latencies[-1] * 10), ("tight", tight)):
        result = plan(sources, tmp_path / name, "--max-latency-ms", str(lat), "--max-memory-mb", "100000")
        assert result.exit_code == 0, result.output
        chosen = json.loads((tmp_path / name / "plan.json").read_text())["chosen"]
        rank, part, keys, lat_bf, mem_bf = _brute_force(sources, lat, 100000)
        assert sorted(map(sorted, (n["tasks"] for n in chosen["networks"]))) == sorted(map(sorted, part))
        assert chosen["score"] == pytest.approx(rank[0], abs=1e-6)
        assert chosen["latency_ms"] == pytest.approx(lat_bf, rel=1e-4)
        assert chosen["memory_mb"] == pytest.approx(mem_bf, rel=1e-4)
        assert chosen["latency_ms"] <= lat + 5e-6  # plan.json rounds latencies to 5 decimals
        by_tasks = {tuple(sorted(n["tasks"])): (n["width"], n["precision"]) for n in chosen["networks"]}
        assert by_tasks == {tuple(sorted(g)): k for g, k in zip(part, keys)}
    for name in ("plan.md", "pareto.csv", "pareto.png"):
        assert (tmp_path / "tight" / name).stat().st_size > 0


def test_scores_follow_the_stated_rules(sources, tmp_path):
    """Sweep: pairs measured, a group of three the mean of its pairs; affinity: summed Z onto the task."""
    assert plan(sources, tmp_path / "s").exit_code == 0
    record = json.loads((tmp_path / "s" / "plan.json").read_text())
    groupings = [record["chosen"], *record["front"], record["cheapest"]["latency"], record["cheapest"]["memory"]]
    seen = set()
    for g in groupings:
        for n in g["networks"]:
            for t, entry in n["task_scores"].items():
                others = [a for a in n["tasks"] if a != t]
                expected = 0.0 if not others else statistics.fmean(_sweep_gain(sources["sweep"], t, a) for a in others)
                assert entry["score"] == pytest.approx(expected, abs=1e-6)
                seen.add(len(n["tasks"]))
    result = plan(sources, tmp_path / "a", gains="affinity")
    assert result.exit_code == 0, result.output
    affinity = json.loads((sources["affinity"] / "affinity.json").read_text())
    z = {(affinity["tasks"][i], affinity["tasks"][j]): affinity["tag"][i][j]
         for i in range(3) for j in range(3) if i != j}
    record = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert "TAG" in record["gains"]["rule"] and "TAG" in result.output
    for g in [record["chosen"], *record["front"]]:
        for n in g["networks"]:
            for t, entry in n["task_scores"].items():
                assert entry["score"] == pytest.approx(sum(z[(a, t)] for a in n["tasks"] if a != t), abs=1e-6)
    # the whole-set grouping has the best summed affinity or not: its score is the sum over tasks either way
    assert len(seen) >= 2


def test_a_budget_no_grouping_meets_says_so_and_shows_the_cheapest(sources, tmp_path):
    result = plan(sources, tmp_path / "p", "--max-latency-ms", "0.0001")
    assert result.exit_code == 1
    assert "no grouping meets the budget" in result.output and "cheapest in latency" in result.output
    record = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert record["feasible"] is False and record["chosen"] is None
    cheapest = record["cheapest"]["latency"]
    assert all(cheapest["latency_ms"] <= g["latency_ms"] for g in record["front"])
    assert f"{cheapest['latency_ms']:.4f}" in result.output


def test_bad_input_exits_1_naming_the_problem(sources, tmp_path):
    result = plan(sources, tmp_path / "p", "--device", "pi4")
    assert result.exit_code == 1 and "not 'pi4'" in result.output and "desktop" in result.output
    result = plan(sources, tmp_path / "p", "--tasks", "scene,speaker")
    assert result.exit_code == 1 and "speaker missing from the gains" in result.output

    other = tmp_path / "other-export"
    shutil.copytree(sources["bench"][0].parent, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["artefacts"][0]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = cli("plan", "--gains", sources["sweep"], "--bench", other / "bench", "--out", tmp_path / "p")
    assert result.exit_code == 1 and "measured on another export" in result.output

    sweep = tmp_path / "sweep-elsewhere"
    shutil.copytree(sources["sweep"], sweep, ignore=shutil.ignore_patterns("*.pt"))
    config = json.loads((sweep / "sweep.json").read_text())
    config["corpus_fingerprint"] = "f" * 64
    (sweep / "sweep.json").write_text(json.dumps(config))
    result = cli("plan", "--gains", sweep, "--bench", sources["bench"][0], "--out", tmp_path / "p")
    assert result.exit_code == 1 and "another corpus" in result.output

    result = cli("plan", "--gains", tmp_path, "--bench", sources["bench"][0], "--out", tmp_path / "p")
    assert result.exit_code == 1 and "neither a sweep folder" in result.output
    assert not (tmp_path / "p").exists()  # nothing half-written by a refusal


def test_train_checks_the_prediction_with_trained_exported_benchmarked_networks(sources, tmp_path):
    result = plan(sources, tmp_path / "p", "--train", "--train-seeds", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "plan.json").read_text())
    check = json.loads((tmp_path / "p" / "check.json").read_text())
    assert [n["tasks"] for n in check["networks"]] == [n["tasks"] for n in record["chosen"]["networks"]]
    for row in check["tasks"]:
        network = tmp_path / "p" / "train" / row["network"]
        values = [json.loads((network / f"seed{s}" / "metrics.json").read_text())["tasks"][row["task"]]["multi"]["macro_f1"]
                  for s in (0, 1)]
        assert row["macro_f1"] == pytest.approx(statistics.fmean(values))
        singles = [json.loads((sources["sweep"] / "runs" / row["task"] / f"seed{s}" / "metrics.json").read_text())
                   ["tasks"][row["task"]]["test"]["macro_f1"] for s in (0, 1)]
        assert row["single"] == pytest.approx(statistics.fmean(singles))
        assert row["gain_vs_single"] == pytest.approx(row["macro_f1"] - row["single"])
    for n, chosen in zip(check["networks"], record["chosen"]["networks"]):
        export = tmp_path / "p" / "train" / n["name"] / "seed0" / "export"
        config = json.loads((export.parent / "config.json").read_text())
        assert config["train"]["hidden"] == [chosen["width"]] * 3 and config["train"]["steps"] == 40
        lines = [line for line in _bench_lines([export / "bench"]) if line["kind"] == "measurement"]
        assert [(line["precision"], line["runtime"]) for line in lines] == [(chosen["precision"], chosen["runtime"])]
        assert n["measured_latency_ms"] == lines[0]["p50_ms"]
    assert "check ->" in result.output and (tmp_path / "p" / "check.md").is_file()
