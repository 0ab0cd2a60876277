"""The benchmark harness on a real tiny export: real onnxruntime and LiteRT runners in their own processes."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from mtl_edge.bench import bench, latency_stats, load_device, read_lines
from mtl_edge.bench.environment import local_environment
from mtl_edge.bench.harness import MAX_STORED_LATENCIES
from mtl_edge.bench.transports import transport_for
from mtl_edge.errors import MtlEdgeError

pytestmark = pytest.mark.slow

TASKS = ["kws", "speaker", "scene", "instrument"]
QUICK = dict(min_runs=20, min_secs=0.02, max_secs=2.0, warmup=2, progress=False)
FIELDS = ("device", "machine", "emulated", "runtime", "runtime_version", "threads", "artefact_sha256", "format",
          "precision", "tasks", "init_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms",
          "max_ms", "window_p50_ms", "peak_rss_mb", "rss_after_import_mb", "delta_rss_mb", "model_bytes",
          "temperature_c", "cpu_model", "cpu_governor", "cpu_freq_mhz", "runs", "mode", "load_1m_before",
          "load_5m_before", "load_15m_before", "load_1m_after", "load_5m_after", "load_15m_after", "load_own_estimate",
          "busy")


@pytest.fixture(scope="module")
def export_dir(demo_corpus, tmp_path_factory):
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    run = tmp_path_factory.mktemp("bench") / "run"
    train_run(demo_corpus, TASKS, run, TrainConfig(hidden=(128, 128, 128), epochs=2), single=True)
    return export_run(run, allow_degraded=True, latency_runs=10, precisions=("fp32",),
                      formats=("onnx", "tflite", "torch"), progress=False).folder


@pytest.fixture(scope="module")
def benched(export_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    out = bench(export_dir, "desktop", runtime="onnxruntime,litert", precisions="fp32", compare="single",
                results=results, **QUICK)
    return out, results


def _copy(export_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(export_dir, dst)
    return dst


def test_measurement_lines_have_the_fields_and_sane_values(benched, export_dir):
    out, results = benched
    manifest = json.loads((export_dir / "manifest.json").read_text())
    by_sha = {a["sha256"]: a for a in manifest["artefacts"]}
    assert sorted(p.name for p in results.glob("*.jsonl")) == ["desktop-litert.jsonl", "desktop-onnxruntime.jsonl"]
    lines = [m for f in out.results for m in read_lines(f) if m["kind"] == "measurement"]
    assert len(lines) == 2 * (1 + len(TASKS) + 1)  # per runtime: multi, 4 singles alone, singles co-resident
    for m in lines:
        assert all(k in m for k in FIELDS), [k for k in FIELDS if k not in m]
        assert m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"] and m["min_ms"] <= m["p50_ms"]
        assert m["runs"] >= QUICK["min_runs"] and len(m["latencies_ms"]) == min(m["runs"], MAX_STORED_LATENCIES)
        assert m["peak_rss_mb"] >= m["rss_after_import_mb"] > 0 and m["delta_rss_mb"] >= 0
        assert m["init_ms"] > 0 and m["first_ms"] > 0 and m["hwm_reset"] is True
        assert m["device"] == "desktop" and m["machine"] and m["emulated"] is False and m["precision"] == "fp32"
        shas = m["artefact_sha256"].split("+")
        assert all(s in by_sha for s in shas)
        assert m["model_bytes"] == sum(by_sha[s]["bytes"] for s in shas)
        assert m["format"] == ("onnx" if m["runtime"] == "onnxruntime" else "tflite")
        # the reported statistics against an independent computation from the stored latencies (numpy), and the
        # latencies against the runner's own wall clock of the measuring loop
        # up to MAX_STORED_LATENCIES runs every latency is stored and the statistics are exactly those of the list;
        # past it (a fast model on a fast machine) the list is an evenly spaced sample of the runs: close, not equal
        every = m["runs"] <= MAX_STORED_LATENCIES
        for q in (50, 90):
            assert m[f"p{q}_ms"] == pytest.approx(np.percentile(m["latencies_ms"], q), **(dict(abs=2e-5) if every else
                                                                                         dict(rel=0.15)))
        if every:
            assert m["p99_ms"] == pytest.approx(np.percentile(m["latencies_ms"], 99), abs=2e-5)
            assert m["mean_ms"] == pytest.approx(np.mean(m["latencies_ms"]), abs=2e-5)
        assert sum(m["latencies_ms"]) / 1e3 <= m["wall_s"] + 1e-3
    co = [m for m in lines if m["mode"] == "coresident"]
    assert len(co) == 2 and all(len(m["members"]) == len(TASKS) and sorted(m["tasks"]) == sorted(TASKS) for m in co)
    # co-resident onnxruntime sessions share one process-wide thread pool, as a user sets them up
    assert {m["runtime"]: m["thread_pool"] for m in co} == {"onnxruntime": "global", "litert": "per-session"}
    assert all(m["thread_pool"] == "per-session" for m in lines if m["mode"] == "alone")


def test_every_line_records_the_load_around_its_measurement(benched):
    out, _ = benched
    lines = [m for f in out.results for m in read_lines(f)]
    measurements = [x for x in lines if x["kind"] == "measurement"]
    for m in measurements:
        for when in ("before", "after"):
            assert all(isinstance(m[f"load_{k}m_{when}"], float) and m[f"load_{k}m_{when}"] >= 0 for k in (1, 5, 15))
        assert 0 <= m["load_own_estimate"] <= m["threads"]
        # busy: the higher 1-minute reading less the benchmark's own share is above 0.5
        assert m["busy"] is (max(m["load_1m_before"], m["load_1m_after"]) - m["load_own_estimate"] > 0.5)
    # the benchmark's own share grows with its running time (runner after runner)
    times = [m["load_own_estimate"] for m in measurements if m["runtime"] == "onnxruntime"]
    assert times == sorted(times) and times[-1] > times[0]
    for c in (x for x in lines if x["kind"] == "compare"):
        assert c["busy"] is any(m["busy"] for m in measurements if m["runtime"] == c["runtime"])


def test_load_fields_and_the_scripts_gate(monkeypatch, capsys):
    from mtl_edge.bench.load import gate, load_fields, own_load

    assert own_load(0, 1) == 0 and own_load(60, 1) == pytest.approx(1 - np.exp(-1)) and own_load(600, 2) < 2
    idle = load_fields((0.1, 0.2, 0.3), (0.4, 0.2, 0.3), 0.0, 1)
    assert idle["busy"] is False and idle["load_1m_after"] == 0.4 and idle["load_15m_before"] == 0.3
    # 1.0 after a minute of benchmarking is mostly the benchmark's own runner (at most 0.63); 1.8 is not
    assert load_fields((0.1,) * 3, (1.0,) * 3, 60.0, 1)["busy"] is False
    assert load_fields((0.1,) * 3, (1.8,) * 3, 60.0, 1)["busy"] is True
    assert load_fields(None, None, 1.0, 1)["busy"] is None  # a device without /proc/loadavg
    monkeypatch.setenv("MTL_EDGE_BUSY_LOAD", "-1")  # every machine is busy
    monkeypatch.setenv("MTL_EDGE_SETTLE_S", "0.2")  # and stays busy while the gate waits
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "x.json"
    with pytest.raises(SystemExit) as refused:
        gate(False, "bench.py", committed)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--allow-busy" in err and "waiting up to 0 s" in err and "after waiting" in err
    fields = gate(True, "bench.py", committed)
    assert fields["allow_busy"] is True and fields["busy"] is True and fields["busy_load_threshold"] == -1
    assert fields["load_1m_at_start"] >= 0
    elsewhere = gate(False, "bench.py", Path("/tmp/x.json"))  # not a committed result: measured, marked busy
    assert elsewhere["busy"] is True and elsewhere["allow_busy"] is False and "WARNING" in capsys.readouterr().err
    assert elsewhere["waited_for_idle_s"] == 0.0  # nothing to protect: no waiting


def test_the_gate_waits_for_the_load_left_by_the_previous_script(monkeypatch, capsys):
    """In `make bench` a script starts while the previous one's load still decays: the gate waits for the
    1-minute average to fall below the threshold, then measures (the readings here: 1.3, 0.9, then 0.4)."""
    import mtl_edge.bench.load as load

    readings = iter([(1.3, 1.0, 0.8), (0.9, 1.0, 0.8), (0.4, 0.9, 0.8)])
    monkeypatch.setattr(load, "local_load", lambda: next(readings))
    monkeypatch.setattr(load.time, "sleep", lambda s: None)
    monkeypatch.setenv("MTL_EDGE_SETTLE_S", "60")
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "x.json"
    fields = load.gate(False, "bench.py", committed)
    assert fields["busy"] is False and fields["load_1m_at_start"] == 0.4
    assert fields["waited_for_idle_s"] >= 0 and "waiting up to 60 s" in capsys.readouterr().err
    assert next(readings, None) is None  # it read the load until it had fallen, and no further


@pytest.mark.parametrize("script", ["features.py", "demo_corpus.py", "train_throughput.py", "harness_overhead.py",
                                    "georgiev.py", "coresident.py"])
def test_benchmark_scripts_refuse_a_committed_result_on_a_busy_machine(script, tmp_path):
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    results = root / "benchmarks" / "results"
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    export = tmp_path / "export"  # never read: the gate comes first
    args = {"features.py": [], "demo_corpus.py": [], "train_throughput.py": ["--corpus", str(tmp_path / "c")],
            "harness_overhead.py": [str(export)], "georgiev.py": ["--export", str(export)],
            "coresident.py": [str(export)]}[script]
    out = ["--results" if script == "demo_corpus.py" else "--out", str(results / f"never-{script}.json")]
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args, *out], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MTL_EDGE_BUSY_LOAD": "-1", "MTL_EDGE_SETTLE_S": "0.2"})
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert "busy" in proc.stderr and "--allow-busy" in proc.stderr
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before  # nothing written


def test_device_answers_are_checked_against_this_machine(benched, export_dir):
    out, _ = benched
    manifest = json.loads((export_dir / "manifest.json").read_text())
    by_sha = {a["sha256"]: a for a in manifest["artefacts"]}
    for m in out.measurements:
        # the same artefact, the same runtime: the runner's answers are this machine's answers
        assert m["answers_status"] == "ok" and m["answers_agreement_min"] == 1.0
        for sha, task in ((s, t) for s in m["artefact_sha256"].split("+") for t in by_sha[s]["tasks"]):
            assert m[f"answers_accuracy_{task}"] == pytest.approx(by_sha[sha]["verification"]["tasks"][task]["accuracy"], abs=1e-4)


def test_answers_that_differ_from_this_machine_are_flagged(export_dir):
    from mtl_edge.bench.answers import DesktopAnswers
    from mtl_edge.export.runtime import load_artefact

    manifest = json.loads((export_dir / "manifest.json").read_text())
    entry = next(a for a in manifest["artefacts"] if a["model"] == "multi" and a["format"] == "onnx")
    checker = DesktopAnswers(export_dir, manifest)
    honest = {t: np.argmax(v, axis=1) for t, v in load_artefact(entry, export_dir)(checker.testset.features).items()}
    fields = checker.compare([entry], {"multi": {t: v.tolist() for t, v in honest.items()}})
    assert fields["answers_status"] == "ok" and fields["answers_agreement_min"] == 1.0
    task = entry["tasks"][1]
    n_labels = len(manifest["labels"][task])
    shifted = {**honest, task: (honest[task] + 1) % n_labels}  # a device that answers one class off
    fields = checker.compare([entry], {"multi": {t: v.tolist() for t, v in shifted.items()}})
    assert fields["answers_status"] == "disagrees" and fields[f"answers_agreement_{task}"] == 0.0
    assert fields[f"answers_agreement_{entry['tasks'][0]}"] == 1.0
    with pytest.raises(MtlEdgeError, match="returned 3 answers"):
        checker.compare([entry], {"multi": {t: v[:3].tolist() for t, v in honest.items()}})


def test_answer_rows_send_a_sample_of_the_test_split_and_check_it(export_dir, tmp_path):
    from mtl_edge.bench.answers import DesktopAnswers
    from mtl_edge.bench.harness import answer_subset
    from mtl_edge.export.runtime import load_artefact

    manifest = json.loads((export_dir / "manifest.json").read_text())
    checker = DesktopAnswers(export_dir, manifest)
    n = len(checker.testset)
    rows = answer_subset(n, 16)
    assert len(rows) == 16 and rows[0] == 0 and rows[-1] == n - 1 and (np.diff(rows) > 0).all()
    assert answer_subset(n, n) is None and answer_subset(n, None) is None
    # the checker scores each task on its own clips among the rows sent, against their labels
    entry = next(a for a in manifest["artefacts"] if a["model"] == "multi" and a["format"] == "onnx")
    sample = DesktopAnswers(export_dir, manifest, rows)
    answers = {t: np.argmax(v, axis=1) for t, v in load_artefact(entry, export_dir)(checker.testset.features[rows]).items()}
    fields = sample.compare([entry], {"multi": {t: v.tolist() for t, v in answers.items()}})
    assert fields["answers_status"] == "ok" and fields["answers_agreement_min"] == 1.0
    for task in entry["tasks"]:
        t = checker.testset.tasks[task]
        kept = np.isin(t.rows, rows)
        expected = float((answers[task][np.searchsorted(rows, t.rows[kept])] == t.labels[kept]).mean())
        assert fields[f"answers_accuracy_{task}"] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(MtlEdgeError, match=f"returned {n} answers for 16 test rows"):
        full = {t: np.argmax(v, axis=1) for t, v in load_artefact(entry, export_dir)(checker.testset.features).items()}
        sample.compare([entry], {"multi": {t: v.tolist() for t, v in full.items()}})
    # through bench: the runner gets 16 clips, every line says so, and the answers agree
    out = bench(export_dir, "desktop", runtime="onnxruntime", precisions="fp32", results=tmp_path / "r",
                answer_rows=16, **QUICK)
    assert out.measurements and all(m["answer_rows"] == 16 and m["answers_status"] == "ok" for m in out.measurements)


def test_compare_line_is_computed_from_the_measurements(benched, export_dir):
    out, _ = benched
    assert len(out.compares) == 2
    for c in out.compares:
        ms = [m for m in out.measurements if m["runtime"] == c["runtime"]]
        multi = next(m for m in ms if m["model"] == "multi")
        singles = [m for m in ms if m["mode"] == "alone" and m["model"].startswith("single:")]
        co = next(m for m in ms if m["mode"] == "coresident")
        assert c["runtime_ratio"] == pytest.approx(multi["p50_ms"] / sum(s["p50_ms"] for s in singles), rel=1e-3)
        assert c["runtime_ratio_coresident"] == pytest.approx(multi["p50_ms"] / co["p50_ms"], rel=1e-3)
        assert c["memory_ratio"] == pytest.approx(multi["delta_rss_mb"] / sum(s["delta_rss_mb"] for s in singles),
                                                  rel=1e-3)
        assert c["memory_ratio_peak"] == pytest.approx(multi["peak_rss_mb"] / sum(s["peak_rss_mb"] for s in singles),
                                                       rel=1e-3)
        assert 0 < c["runtime_ratio"] and 0 < c["memory_ratio"] < 1  # one runtime baseline, not four
        manifest = json.loads((export_dir / "manifest.json").read_text())
        entry = next(a for a in manifest["artefacts"] if a["model"] == "multi" and a["format"] == multi["format"]
                     and a["precision"] == "fp32")
        for t in TASKS:
            assert c[f"accuracy_multi_{t}"] == entry["verification"]["tasks"][t]["accuracy"]
            assert f"accuracy_single_{t}" in c
        # the feature front-end is measured (local corpus clips), once for the whole comparison
        fe, fe_mb = c["frontend_p50_ms"], c["frontend_delta_rss_mb"]
        assert fe is not None and fe > 0 and fe_mb is not None and fe_mb >= 0
        s_p50, s_mb, n = sum(s["p50_ms"] for s in singles), sum(s["delta_rss_mb"] for s in singles), len(singles)
        # headline: the singles of one config share one front-end, computed once (as a user deploys them)
        assert c["runtime_ratio_shared_frontend"] == pytest.approx((multi["p50_ms"] + fe) / (s_p50 + fe), rel=1e-3)
        assert c["memory_ratio_shared_frontend"] == pytest.approx(
            (multi["delta_rss_mb"] + fe_mb) / (s_mb + fe_mb), rel=1e-3)
        assert c["runtime_ratio_coresident_shared_frontend"] == pytest.approx(
            (multi["p50_ms"] + fe) / (co["p50_ms"] + fe), rel=1e-3)
        # the named variant: one front-end per single-task model
        assert c["runtime_ratio_frontend_per_model"] == pytest.approx(
            (multi["p50_ms"] + fe) / (s_p50 + n * fe), rel=1e-3)
        assert c["memory_ratio_frontend_per_model"] == pytest.approx(
            (multi["delta_rss_mb"] + fe_mb) / (s_mb + n * fe_mb), rel=1e-3)
        assert c["runtime_ratio_frontend_per_model"] < c["runtime_ratio_shared_frontend"]


def test_resume_skips_what_is_already_written(benched, export_dir, tmp_path):
    _, results = benched
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    before = (copy / "desktop-onnxruntime.jsonl").read_bytes()
    again = bench(export_dir, "desktop", runtime="onnxruntime", precisions="fp32", compare="single", results=copy,
                  resume=True, **QUICK)
    assert again.measurements == [] and again.compares == [] and again.skipped == 1 + len(TASKS) + 1 + 1
    assert (copy / "desktop-onnxruntime.jsonl").read_bytes() == before
    # other settings are other measurements
    more = bench(export_dir, "desktop", runtime="onnxruntime", precisions="fp32", results=copy, resume=True,
                 **{**QUICK, "min_runs": 21})
    assert len(more.measurements) == 1 + len(TASKS) and more.skipped == 0


class _InterruptAfter:
    """A listener that interrupts the benchmark (as Ctrl-C would) once ``n`` measurement lines are written."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def record(self, results_file, record) -> None:
        if record.kind == "measurement":
            self.seen += 1
            if self.seen == self.n:
                raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_a_bench_interrupted_part_way_is_finished_by_resume(export_dir, tmp_path):
    results = tmp_path / "results"
    args = dict(runtime="onnxruntime", precisions="fp32", compare="single", results=results, **QUICK)
    with pytest.raises(KeyboardInterrupt):  # after the multi-task model and the first single-task model
        bench(export_dir, "desktop", listeners=[_InterruptAfter(2)], **args)
    old = read_lines(results / "desktop-onnxruntime.jsonl")
    assert [(m["kind"], m["model"]) for m in old] == [("measurement", "multi"), ("measurement", "single:kws")]
    again = bench(export_dir, "desktop", resume=True, **args)
    assert again.skipped == 2
    assert [m["model"] for m in again.measurements] == [f"single:{t}" for t in TASKS[1:]] + ["+".join(
        f"single:{t}" for t in TASKS)]
    lines = read_lines(results / "desktop-onnxruntime.jsonl")
    assert lines[:2] == old and len(lines) == 2 + len(again.measurements) + 1  # nothing measured twice
    (c,) = [line for line in lines if line["kind"] == "compare"]
    by_model = {m["model"]: m for m in lines if m["kind"] == "measurement" and m["mode"] == "alone"}
    # the comparison is built from the lines of both calls: the old multi and kws lines, the new others
    assert c["multi_p50_ms"] == old[0]["p50_ms"] and c["multi_delta_rss_mb"] == old[0]["delta_rss_mb"]
    assert c["single_p50_sum_ms"] == pytest.approx(sum(by_model[f"single:{t}"]["p50_ms"] for t in TASKS), abs=1e-5)
    assert by_model["single:kws"] == old[1] and by_model["single:speaker"]["time"] >= old[1]["time"]
    assert c["runtime_ratio"] == pytest.approx(old[0]["p50_ms"] / c["single_p50_sum_ms"], rel=1e-3)


WRAPPER = """#!/bin/sh
# the runner's interpreter: the first time runner number {n} starts, Ctrl-C the benchmark's process group (the
# terminal's SIGINT: the bench process and this runner), at a known point instead of a time
count=$(cat "{state}/count" 2>/dev/null || echo 0); count=$((count + 1)); echo $count > "{state}/count"
if [ "$count" = "{n}" ] && [ ! -e "{state}/interrupted" ]; then
    : > "{state}/interrupted"
    kill -INT 0
    sleep 60
fi
exec "{python}" "$@"
"""


def test_sigint_to_bench_leaves_whole_lines_and_resume_finishes(export_dir, tmp_path):
    import os
    import signal
    import subprocess

    state = tmp_path / "state"
    state.mkdir()
    wrapper = tmp_path / "python"
    wrapper.write_text(WRAPPER.format(n=3, state=state, python=sys.executable))
    wrapper.chmod(0o755)
    results = tmp_path / "results"
    from conftest import CTRL_C_ABLE  # SIGINT raises even where pytest runs with it ignored (a background job)

    argv = [*CTRL_C_ABLE, "bench", str(export_dir), "--device", str(_device(tmp_path, str(wrapper))),
            "--runtime", "onnxruntime", "--precision", "fp32", "--compare", "single", "--results", str(results),
            "--min-runs", "20", "--min-secs", "0.02", "--max-secs", "2"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert (state / "interrupted").exists()
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted" in proc.stderr and "--resume" in proc.stderr
    data = (results / "box-onnxruntime.jsonl").read_bytes()
    assert data.endswith(b"\n")  # nothing half-written: every line whole
    lines = [json.loads(x) for x in data.decode().splitlines()]
    assert [m["model"] for m in lines] == ["multi", "single:kws"]  # runner 3 was interrupted before its line
    assert not [p for p in results.iterdir() if p.name != "box-onnxruntime.jsonl"]  # no temporary files
    # the runner's work folder keeps no job file of the interrupted runner
    assert not list((tmp_path / "work").glob("job-*.json"))
    done = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(TASKS)} measurement(s), 1 comparison(s) written, 2 skipped (resume)" in done.stdout
    final = read_lines(results / "box-onnxruntime.jsonl")
    assert final[:2] == lines and [m["kind"] for m in final].count("compare") == 1
    keys = [(m["mode"], m["artefact_sha256"]) for m in final if m["kind"] == "measurement"]
    assert len(keys) == len(set(keys)) == 1 + len(TASKS) + 1


def test_a_tampered_artefact_is_refused_and_earlier_lines_are_kept(export_dir, tmp_path):
    export = _copy(export_dir, tmp_path)
    victim = export / "onnx" / "single-scene.fp32.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    results = tmp_path / "results"
    with pytest.raises(MtlEdgeError, match=r"single-scene\.fp32\.onnx.*does not match the manifest.*sha256"):
        bench(export, "desktop", runtime="onnxruntime", precisions="fp32", results=results, **QUICK)
    kept = read_lines(results / "desktop-onnxruntime.jsonl")
    assert [m["model"] for m in kept] == ["multi", "single:kws", "single:speaker"]


def test_a_missing_artefact_is_named(export_dir, tmp_path):
    export = _copy(export_dir, tmp_path)
    (export / "tflite" / "multi.fp32.tflite").unlink()
    with pytest.raises(MtlEdgeError, match=r"multi\.fp32\.tflite.*missing"):
        bench(export, "desktop", runtime="litert", precisions="fp32", results=tmp_path / "r", **QUICK)


def test_a_hanging_runner_times_out_with_the_artefact_and_step(export_dir, tmp_path):
    with pytest.raises(MtlEdgeError, match=r"multi\.fp32\.onnx.*timed out after 4 s at step '(import|load|first|"
                                           r"warmup|measure)[^']*'.*--timeout SECONDS"):
        bench(export_dir, "desktop", runtime="onnxruntime", precisions="fp32", results=tmp_path / "r", timeout=4,
              **{**QUICK, "min_secs": 60.0, "max_secs": 60.0})


def _device(tmp_path: Path, python: str) -> Path:
    profile = tmp_path / "box.toml"
    profile.write_text(f'transport = "local"\nworkdir = "{tmp_path / "work"}"\npython = "{python}"\n'
                       'cpu_affinity = ""\nthreads = 1\n')
    return profile


def test_a_crashing_runner_reports_its_error_output(export_dir, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'STEP load multi' >&2\necho 'Fatal Python error: Segmentation fault' >&2\n"
                    "exit 139\n")
    fake.chmod(0o755)
    with pytest.raises(MtlEdgeError, match=r"multi\.fp32\.onnx.*failed at step 'load multi' \(exit code 139\).*"
                                           r"Segmentation fault"):
        bench(export_dir, _device(tmp_path, str(fake)), runtime="onnxruntime", precisions="fp32",
              results=tmp_path / "r", **QUICK)


def test_a_runtime_that_is_not_installed_is_named(export_dir, tmp_path):
    bare = tmp_path / "python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # no site-packages: no numpy, no runtime
    bare.chmod(0o755)
    with pytest.raises(MtlEdgeError, match=r"multi\.fp32\.onnx.*not installed"):
        bench(export_dir, _device(tmp_path, str(bare)), runtime="onnxruntime", precisions="fp32",
              results=tmp_path / "r", **QUICK)


def test_device_profiles(tmp_path):
    desktop = load_device("desktop")
    assert desktop.transport == "local" and desktop.threads >= 1
    with pytest.raises(MtlEdgeError, match="unknown device profile 'nosuch'.*desktop"):
        load_device("nosuch")
    for name in ("pi4", "android"):
        device = load_device(name)
        assert device.template
        with pytest.raises(MtlEdgeError, match=f"device {name}: the profile .* is a template"):
            transport_for(device)
    odd = tmp_path / "odd.toml"
    odd.write_text('transport = "carrier-pigeon"\nworkdir = "/tmp/x"\n')
    with pytest.raises(MtlEdgeError, match="unknown transport 'carrier-pigeon'.*adb, local, ssh"):
        transport_for(load_device(odd))
    bad = tmp_path / "bad.toml"
    bad.write_text("transport = [\n")
    with pytest.raises(MtlEdgeError, match="not a valid TOML"):
        load_device(bad)


def test_bad_requests_are_refused(export_dir):
    with pytest.raises(MtlEdgeError, match="unknown runtime"):
        bench(export_dir, runtime="tensorrt", **QUICK)
    with pytest.raises(MtlEdgeError, match="unknown precision"):
        bench(export_dir, precisions="fp8", **QUICK)
    with pytest.raises(MtlEdgeError, match="no onnx artefacts of precision int8"):
        bench(export_dir, precisions="int8", **QUICK)
    with pytest.raises(MtlEdgeError, match="no torch artefacts of precision int8"):
        bench(export_dir, runtime="torch", precisions="int8", **QUICK)


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])} - sys.stdlib_module_names - {"__future__"}


def test_the_runner_and_the_runtime_modules_import_only_numpy_and_their_runtime():
    from mtl_edge import runtimes

    assert _imported(runtimes.runner_file()) == {"numpy"}
    expected = {"onnxruntime": {"numpy", "onnxruntime"}, "litert": {"numpy", "ai_edge_litert", "tflite_runtime"},
                "tflite-runtime": {"numpy", "ai_edge_litert", "tflite_runtime"}, "torch": {"numpy", "torch"}}
    for name, modules in expected.items():
        assert _imported(Path(runtimes.get_runtime(name).file)) == modules, name


def test_latency_stats_match_numpy():
    x = np.random.default_rng(0).gamma(2.0, 1.0, 1000)
    s = latency_stats(x)
    assert s["p99_ms"] == pytest.approx(np.percentile(x, 99)) and s["std_ms"] == pytest.approx(x.std(ddof=1))
    assert s["window_p50_ms"] == pytest.approx(np.median([np.median(c) for c in np.array_split(x, 10)]))


def test_report_renders_markdown_and_png(benched, tmp_path):
    from mtl_edge.report import render_report

    _, results = benched
    report = render_report([results], tmp_path / "report")
    text = report.markdown.read_text()
    cpu_model = local_environment()["cpu_model"]
    assert cpu_model and f"cpu_model={cpu_model}," in text  # the machine the lines were measured on
    georgiev = text[text.index("## Multi-task model vs the single-task models"):text.index("### Per-task accuracy")]
    header = next(line for line in georgiev.splitlines() if line.startswith("| device |"))
    for column in ("runtime_ratio_shared_frontend", "memory_ratio_shared_frontend", "runtime_ratio",
                   "runtime_ratio_coresident", "memory_ratio", "runtime_ratio_frontend_per_model"):
        assert f" {column} |" in header, column
    # the headline (shared front-end) columns come before the model-only and per-model variants
    assert header.index("runtime_ratio_shared_frontend") < header.index(" runtime_ratio |")
    assert header.index(" runtime_ratio |") < header.index("runtime_ratio_frontend_per_model")
    assert report.compares == 2 and report.measurements == 12
    assert {p.name for p in report.images} == {"latency.png", "compare.png", "pareto.png"}
    for p in report.images:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    with pytest.raises(MtlEdgeError, match="no results files"):
        render_report([tmp_path / "report"], tmp_path / "r2")


def test_torch_runtime_measures_the_torchscript_artefacts(export_dir, tmp_path):
    import torch

    manifest = json.loads((export_dir / "manifest.json").read_text())
    by_sha = {a["sha256"]: a for a in manifest["artefacts"]}
    out = bench(export_dir, "desktop", runtime="torch", precisions="fp32", compare="single", results=tmp_path,
                frontend=False, **QUICK)
    assert out.results == [tmp_path / "desktop-torch.jsonl"]
    lines = read_lines(out.results[0])
    ms = [m for m in lines if m["kind"] == "measurement"]
    assert [m["model"] for m in ms if m["mode"] == "alone"] == ["multi"] + [f"single:{t}" for t in TASKS]
    for m in ms:
        assert all(k in m for k in FIELDS), [k for k in FIELDS if k not in m]
        assert m["runtime"] == "torch" and m["format"] == "torch" and m["runtime_version"] == torch.__version__.split("+")[0]
        assert all(by_sha[s]["path"].endswith(".fp32.pt") for s in m["artefact_sha256"].split("+"))
        assert m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"] and 0 < m["min_ms"] <= m["p50_ms"]
        assert m["runs"] >= QUICK["min_runs"] and m["init_ms"] > 0 and m["first_ms"] > 0 and m["threads"] == 1
        assert m["hwm_reset"] is True and m["peak_rss_mb"] >= m["rss_after_import_mb"] > 100  # torch is imported
        assert 0 <= m["delta_rss_mb"] < m["rss_after_import_mb"]  # the import baseline is not in the delta
    (c,) = [line for line in lines if line["kind"] == "compare"]
    multi = next(m for m in ms if m["model"] == "multi")
    singles = [m for m in ms if m["mode"] == "alone" and m["model"] != "multi"]
    assert c["runtime"] == "torch" and c["format"] == "torch" and c["n_single"] == len(TASKS)
    assert c["runtime_ratio"] == pytest.approx(multi["p50_ms"] / sum(s["p50_ms"] for s in singles), rel=1e-3)
    assert c["memory_ratio_peak"] == pytest.approx(multi["peak_rss_mb"] / sum(s["peak_rss_mb"] for s in singles),
                                                   rel=1e-3)
    assert 0 < c["memory_ratio_peak"] < 1 and c["runtime_ratio_coresident"] > 0
    assert all(c[f"accuracy_multi_{t}"] is not None and f"accuracy_single_{t}" in c for t in TASKS)
