"""The runtime registry: a runtime registered here only (onnx's reference evaluator, pure numpy) verifies and
benchmarks a real artefact through the public functions; unknown names fail loudly; torn results are redone."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from mtl_edge import runtimes
from mtl_edge.bench import bench, read_lines
from mtl_edge.bench.results import Csv
from mtl_edge.errors import MtlEdgeError, Unsupported

pytestmark = pytest.mark.slow

TASKS = ["kws", "speaker", "scene", "instrument"]
QUICK = dict(min_runs=5, min_secs=0.0, max_secs=2.0, warmup=1, progress=False)

# The whole runtime: one module, numpy + its runtime only (here onnx.reference, a different ONNX executor).
REFERENCE_RUNTIME = '''
def version(**options):
    import onnx

    return onnx.__version__


class Model:
    batch = None

    def __init__(self, path, threads=1, **options):
        import onnx
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(onnx.load(path))
        self.input_names = list(self.evaluator.input_names)
        self.output_names = list(self.evaluator.output_names)

    def prepare(self, inputs):
        import numpy as np

        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}

    def call(self, feed):
        return self.evaluator.run(None, feed)

    def named(self, raw):
        return dict(zip(self.output_names, raw))


load = Model
'''


@pytest.fixture(scope="module")
def export_dir(demo_corpus, tmp_path_factory):
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    run = tmp_path_factory.mktemp("registry") / "run"
    train_run(demo_corpus, TASKS, run, TrainConfig(hidden=(128, 128, 128), epochs=2), single=False)
    return export_run(run, allow_degraded=True, latency_runs=5, precisions=("fp32",), formats=("onnx",),
                      progress=False).folder


@pytest.fixture
def reference_runtime(tmp_path):
    module = tmp_path / "rt_onnx_reference.py"
    module.write_text(REFERENCE_RUNTIME)
    runtime = runtimes.register_runtime(runtimes.Runtime("onnx-reference", "onnx", module, "onnx"))
    yield runtime
    runtimes.unregister_runtime("onnx-reference")


def test_a_runtime_registered_in_a_test_verifies_and_benchmarks_an_artefact(export_dir, reference_runtime, tmp_path):
    from mtl_edge.export.testset import load_testset
    from mtl_edge.export.verify import verify_artefact

    manifest = json.loads((export_dir / "manifest.json").read_text())
    entry = next(a for a in manifest["artefacts"] if a["model"] == "multi" and a["format"] == "onnx")
    testset = load_testset(export_dir / "testset.npz")
    reference = runtimes.load("onnxruntime", export_dir / entry["path"]).run(testset.features)
    record = verify_artefact("onnx", export_dir / entry["path"], reference, testset, TASKS, "fp32",
                             runtime="onnx-reference")
    assert record["status"] == "ok" and record["output_order"] == TASKS
    assert all(t["agreement"] == 1.0 and t["max_abs_diff"] < 1e-4 for t in record["tasks"].values())

    out = bench(export_dir, "desktop", runtime="onnx-reference", results=tmp_path / "r", **QUICK)
    (m,) = out.measurements
    assert out.results == [tmp_path / "r" / "desktop-onnx-reference.jsonl"]
    assert m["runtime"] == "onnx-reference" and m["runtime_version"] == __import__("onnx").__version__
    assert m["model"] == "multi" and m["runs"] >= QUICK["min_runs"] and 0 < m["p50_ms"] <= m["max_ms"]
    # the device (this runner with the reference evaluator) answers like onnxruntime on this machine. The
    # reference evaluator is another implementation, but the same machine and the same float32 arithmetic; the
    # check across architectures is tests/test_devbed.py and tests/test_adb.py (aarch64 under qemu).
    assert m["answers_status"] == "ok" and m["answers_agreement_min"] == 1.0


def test_unknown_runtimes_and_formats_fail_loudly(tmp_path):
    with pytest.raises(MtlEdgeError, match="unknown runtime 'executorch'; choose from onnxruntime, litert"):
        runtimes.get_runtime("executorch")
    with pytest.raises(MtlEdgeError, match="unknown artefact format 'pte'"):
        runtimes.for_format("pte")
    with pytest.raises(MtlEdgeError, match="already registered"):
        runtimes.register_runtime(runtimes.Runtime("onnxruntime", "onnx", runtimes.get_runtime("onnxruntime").file,
                                                   "onnxruntime"))
    missing = tmp_path / "rt_missing.py"
    missing.write_text("def version(**o):\n    import no_such_runtime_package\n\n"
                       "def load(path, threads=1, **o):\n    import no_such_runtime_package\n")
    runtimes.register_runtime(runtimes.Runtime("missing-rt", "onnx", missing, "no-such-runtime-package"))
    try:
        with pytest.raises(Unsupported, match="runtime missing-rt is not installed here"):
            runtimes.load("missing-rt", tmp_path / "x.onnx")
    finally:
        runtimes.unregister_runtime("missing-rt")


def test_resume_redoes_a_torn_last_line_and_keeps_the_earlier_ones(export_dir, tmp_path):
    results = tmp_path / "r"
    common = dict(runtime="onnxruntime", results=results, answers=False, **QUICK)
    table = tmp_path / "m.csv"
    (m1,) = bench(export_dir, "desktop", threads=1, listeners=[Csv(table)], **common).measurements
    rows = list(csv.DictReader(table.open()))  # the CSV listener: one row per measurement, the main fields
    assert len(rows) == 1 and rows[0]["p50_ms"] == str(m1["p50_ms"]) and rows[0]["artefact_sha256"] == m1["artefact_sha256"]
    path = bench(export_dir, "desktop", threads=2, **common).results[0]
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first + second[: len(second) // 2])  # the machine died while writing the second record
    redone = bench(export_dir, "desktop", threads=2, resume=True, **common)
    assert redone.skipped == 0 and [m["threads"] for m in redone.measurements] == [2]  # the torn record is redone
    data = path.read_bytes()
    assert data.startswith(first) and data.endswith(b"\n")  # the earlier line is untouched
    assert [line["threads"] for line in read_lines(path)] == [1, 2] and len(data.splitlines()) == 2
    again = bench(export_dir, "desktop", threads=1, resume=True, **common)
    assert again.skipped == 1 and not again.measurements and path.read_bytes() == data


def test_loaded_artefacts_run_any_number_of_rows(export_dir):
    entry = json.loads((export_dir / "manifest.json").read_text())["artefacts"][0]
    loaded = runtimes.load_format("onnx", export_dir / entry["path"])
    x = np.load(export_dir / "testset.npz")["features"][:5]
    full = loaded.run(x)
    assert list(full) == loaded.output_names == TASKS and all(v.shape[0] == 5 for v in full.values())
    one = loaded.call(x[2:3])
    assert all(np.allclose(one[t][0], full[t][2], atol=1e-6) for t in TASKS)


def test_many_rows_run_in_calls_of_bounded_size_with_the_same_outputs(export_dir, monkeypatch):
    """A whole test split of raw clips in one onnxruntime call held 22 GB: ``run`` splits large inputs."""
    entry = json.loads((export_dir / "manifest.json").read_text())["artefacts"][0]
    loaded = runtimes.load_format("onnx", export_dir / entry["path"])
    rows = np.load(export_dir / "testset.npz")["features"]
    x = np.concatenate([rows] * (1 + 50 // len(rows)))[:50]
    whole = loaded.call(x)
    calls = []
    call = runtimes.Loaded.call
    monkeypatch.setattr(runtimes.Loaded, "call", lambda self, feed: calls.append(len(feed[next(iter(feed))])) or call(self, feed))
    monkeypatch.setattr(runtimes, "CALL_INPUT_ELEMENTS", 16 * x.shape[1] + 5)  # 16 rows a call
    split = loaded.run(x)
    assert calls == [16, 16, 16, 2]
    assert all(np.allclose(split[t], whole[t], atol=1e-6) for t in TASKS)


def test_answers_of_other_task_kinds_are_compared_by_relative_rms(export_dir, tmp_path):
    from mtl_edge.bench.answers import RMS_LIMITS, DesktopAnswers

    folder = tmp_path / "export"
    shutil.copytree(export_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["task_specs"] = {"scene": {"kind": "regression"}}  # its outputs compared as values, not top-1
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (m,) = bench(folder, "desktop", runtime="onnxruntime", results=tmp_path / "r", **QUICK).measurements
    assert m["answers_status"] == "ok" and m["answers_rel_rms_scene"] <= RMS_LIMITS["fp32"]
    assert "answers_agreement_scene" not in m and "answers_accuracy_scene" not in m
    assert m["answers_agreement_kws"] == 1.0 and m["answers_rms_threshold"] == RMS_LIMITS["fp32"]

    entry = manifest["artefacts"][0]
    checker = DesktopAnswers(folder, manifest)
    desktop = runtimes.load_format("onnx", folder / entry["path"]).run(checker.testset.features)
    device = {t: (v.tolist() if t == "scene" else v.argmax(1).tolist()) for t, v in desktop.items()}
    assert checker.compare([entry], {"multi": device})["answers_status"] == "ok"
    device["scene"] = (desktop["scene"] * 1.01).tolist()  # 1 % off: a different computation at fp32
    fields = checker.compare([entry], {"multi": device})
    assert fields["answers_status"] == "disagrees" and fields["answers_rel_rms_scene"] == pytest.approx(0.01, rel=1e-3)


# A runtime that misreads its input layout (it takes the feature vector back to front, as an interpreter with a
# wrong stride would): real onnxruntime on the real artefact, computing something else than this machine.
MISREADING_RUNTIME = '''
def version(**options):
    import onnxruntime

    return onnxruntime.__version__ + "-misread"


class Model:
    batch = None

    def __init__(self, path, threads=1, **options):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def prepare(self, inputs):
        import numpy as np

        return {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)[:, ::-1]) for k, v in inputs.items()}

    def call(self, feed):
        return self.session.run(None, feed)

    def named(self, raw):
        return dict(zip(self.output_names, raw))


load = Model
'''


@pytest.fixture
def misreading_runtime(tmp_path):
    module = tmp_path / "rt_onnx_misread.py"
    module.write_text(MISREADING_RUNTIME)
    yield runtimes.register_runtime(runtimes.Runtime("onnx-misread", "onnx", module, "onnxruntime"))
    runtimes.unregister_runtime("onnx-misread")


def test_a_device_that_answers_differently_fails_the_bench_unless_allowed(export_dir, misreading_runtime, tmp_path):
    from typer.testing import CliRunner

    from mtl_edge.cli import app

    results = tmp_path / "r"
    line_file = results / "desktop-onnx-misread.jsonl"
    with pytest.raises(MtlEdgeError, match=r"device desktop: 1 artefact\(s\) answer differently on the device than "
                                           r"on this machine: onnx/multi\.fp32\.onnx \(onnx-misread .*-misread: "
                                           r"agreement 0\.\d+ < 0\.99\)\. Their timings are written .*"
                                           r"--allow-disagreement to accept"):
        bench(export_dir, "desktop", runtime="onnx-misread", results=results, **QUICK)
    (line,) = read_lines(line_file)  # the timings are kept, marked
    assert line["answers_status"] == "disagrees" and line["answers_agreement_min"] < 0.99
    assert line["answers_threshold"] == 0.99

    allowed = bench(export_dir, "desktop", runtime="onnx-misread", results=tmp_path / "r2", allow_disagreement=True,
                    **QUICK)
    (m,) = allowed.measurements
    assert m["answers_status"] == "disagrees" and m["answers_agreement_min"] == line["answers_agreement_min"]

    # the same through the CLI: exit 1 with the message, exit 0 with --allow-disagreement
    argv = ["bench", str(export_dir), "--runtime", "onnx-misread", "--min-runs", "5", "--min-secs", "0",
            "--max-secs", "2"]
    refused = CliRunner().invoke(app, [*argv, "--results", str(tmp_path / "cli1")])
    assert refused.exit_code == 1 and "answer differently on the device" in refused.output, refused.output
    assert "--allow-disagreement to accept" in refused.output
    accepted = CliRunner().invoke(app, [*argv, "--results", str(tmp_path / "cli2"), "--allow-disagreement"])
    assert accepted.exit_code == 0, accepted.output
    assert "1 measurement(s)" in accepted.output
    assert read_lines(tmp_path / "cli2" / "desktop-onnx-misread.jsonl")[0]["answers_status"] == "disagrees"
