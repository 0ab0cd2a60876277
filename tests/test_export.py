"""Export: ONNX and TFLite artefacts of a real (tiny) run, verified by their runtimes on the test split."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.export import ALL_FORMATS, FORMATS, PRECISIONS, export_run, load_artefact, read_manifest
from mtl_edge.export.manifest import sha256_file
from mtl_edge.export.testset import load_testset
from mtl_edge.export.verify import verify_artefact
from mtl_edge.train.checkpoint import load_checkpoint
from mtl_edge.train.trainer import predict

pytestmark = pytest.mark.slow
TASKS = ["kws", "speaker", "scene", "instrument"]


@pytest.fixture(scope="module")
def run_dir(demo_corpus, tmp_path_factory):
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    out = tmp_path_factory.mktemp("export-run") / "run"
    train_run(demo_corpus, TASKS, out, TrainConfig(hidden=(128, 128, 128), epochs=3), single=True)
    return out


@pytest.fixture(scope="module")
def exported(run_dir):
    # A 3-epoch model has near-tied logits; int8 may legitimately flip a sample, so keep such artefacts (degraded).
    return export_run(run_dir, allow_degraded=True, progress=False, latency_runs=50)


@pytest.fixture(scope="module")
def torch_exported(run_dir, tmp_path_factory):
    # the torch format is not a default: its own small export of the same run (fp32 traced, the rest unsupported)
    return export_run(run_dir, tmp_path_factory.mktemp("torch-export") / "export", formats="torch", progress=False,
                      latency_runs=20)


@pytest.fixture(scope="module")
def testset(exported):
    return load_testset(exported.folder / "testset.npz")


@pytest.fixture(scope="module")
def multi(run_dir):
    return load_checkpoint(run_dir / "multi" / "model.pt")[0]


def _entry(manifest, model="multi", fmt="onnx", precision="fp32"):
    (entry,) = [a for a in manifest["artefacts"] if (a["model"], a["format"], a["precision"]) == (model, fmt, precision)]
    return entry


def test_every_artefact_is_listed_with_its_hash_and_size(exported, run_dir):
    folder, manifest = exported.folder, exported.manifest
    assert folder == run_dir / "export"
    assert read_manifest(folder, check_files=True) == json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "mtl-edge-export" and manifest["version"] == 1
    assert manifest["testset"] == "testset.npz" and manifest["calibration"] == "calibration_indices.json"
    assert set(manifest["checkpoint_sha256"]) == {"multi"} | {f"single:{t}" for t in TASKS}
    assert manifest["checkpoint_sha256"]["multi"] == sha256_file(run_dir / "multi" / "model.pt")
    combos = {(a["model"], a["format"], a["precision"]) for a in manifest["artefacts"]}
    assert combos == {(m, f, p) for m in ["multi"] + [f"single:{t}" for t in TASKS] for f in FORMATS for p in PRECISIONS}
    for a in manifest["artefacts"]:
        assert a["status"] in ("ok", "degraded"), a  # nothing unsupported with these pins (fp16 TFLite included)
        path = folder / a["path"]
        assert path.is_file() and path.stat().st_size == a["bytes"] and sha256_file(path) == a["sha256"]
        assert a["source_checkpoint_sha256"] == manifest["checkpoint_sha256"][a["model"]]
        assert a["tasks"] == (TASKS if a["model"] == "multi" else [a["model"].split(":")[1]])
        assert ("opset" in a) if a["format"] == "onnx" else a["schema"] == 3
        assert a["inputs"][0]["name"] == "features" and a["inputs"][0]["dtype"] == "float32"
        assert a["latency"]["median_ms"] > 0 and a["parameters"] > 0
        if a["precision"] == "int8":
            assert a["quantization"]["per_channel"] is True
            assert a["quantization"]["calibration"]["file"] == "calibration_indices.json"
        if (a["format"], a["precision"]) == ("onnx", "int8-dynamic"):  # a graph of MatMuls: signed weights
            assert a["quantization"]["weight_type"] == "QInt8"
    assert not list(folder.parent.glob(".export*"))  # no temporary folder left beside it


def test_onnx_outputs_are_the_tasks_in_order(exported):
    import onnxruntime as ort

    for a in exported.manifest["artefacts"]:
        if a["format"] == "onnx":
            session = ort.InferenceSession(str(exported.folder / a["path"]), providers=["CPUExecutionProvider"])
            assert [o.name for o in session.get_outputs()] == a["tasks"]
            assert [i.name for i in session.get_inputs()] == ["features"]
            assert [o["name"] for o in a["outputs"]] == a["tasks"]


def test_tflite_signature_outputs_are_the_tasks(exported):
    from ai_edge_litert.interpreter import Interpreter

    for a in exported.manifest["artefacts"]:
        if a["format"] == "tflite":
            interp = Interpreter(model_path=str(exported.folder / a["path"]))
            runner = interp.get_signature_runner("serving_default")
            assert sorted(runner.get_output_details()) == sorted(a["tasks"])  # the signature map is keyed by name
            assert list(runner.get_input_details()) == ["features"]
            index = {d["index"]: name for name, d in runner.get_output_details().items()}
            assert [index[d["index"]] for d in interp.get_output_details()] == a["tasks"]  # graph order = task order
            assert [o["name"] for o in a["outputs"]] == a["tasks"]


def test_verification_is_recorded_and_float_artefacts_agree(exported):
    for a in exported.manifest["artefacts"]:
        v = a["verification"]
        assert v["output_order"] == a["tasks"] and v["rows"] > 0
        for task in a["tasks"]:
            e = v["tasks"][task]
            assert {"agreement", "accuracy", "torch_accuracy", "max_abs_diff", "n"} <= set(e)
            assert 0 <= e["agreement"] <= 1 and e["n"] > 0
            if a["precision"] in ("fp32", "fp16"):
                assert e["agreement"] >= 0.99 and a["status"] == "ok"
            if a["precision"] == "fp32":
                assert e["max_abs_diff"] < 1e-4 and e["accuracy"] == e["torch_accuracy"]
        assert (a["status"] == "degraded") == bool(a["reason"])
    table = (exported.folder / "verification.md").read_text()
    assert "| onnx/multi.fp32.onnx | multi | onnx | fp32 | ok | kws |" in table
    assert json.loads((exported.folder / "verification.json").read_text())["artefacts"][0]["verification"]


def test_load_artefact_gives_the_torch_logits(exported, testset, multi):
    reference = predict(multi, testset.features)
    assert testset.features.dtype == np.float32 and list(testset.tasks) == TASKS
    for fmt in FORMATS:
        out = load_artefact(_entry(exported.manifest, fmt=fmt), exported.folder)(testset.features)
        assert list(out) == TASKS if fmt == "onnx" else sorted(out) == sorted(TASKS)
        for task in TASKS:
            np.testing.assert_allclose(out[task], reference[task], atol=1e-4)
        q = load_artefact(_entry(exported.manifest, fmt=fmt, precision="int8"), exported.folder)(testset.features)
        assert q["kws"].dtype == np.float32 and np.abs(q["kws"] - reference["kws"]).max() < 0.5  # dequantised


def test_testset_holds_the_whole_test_split(exported, testset, run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for task in TASKS:
        t = testset.tasks[task]
        assert len(t.rows) == len(t.labels) == metrics["tasks"][task]["test_samples"]
        assert t.rows.max() < len(testset) and (t.labels >= 0).all()
        assert t.label_names == load_checkpoint(run_dir / "multi" / "model.pt")[1]["labels"][task]
    assert len(testset.paths) == len(testset) == len(set(testset.paths))
    assert exported.manifest["testset_contents"][:4] == ["features", "paths", "matrix_rows", "tasks"]


def _swap_onnx_outputs(src: Path, dst: Path, a: str, b: str) -> None:
    import onnx

    model = onnx.load(str(src))
    rename = {a: b, b: a}
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = f"__{rename[name]}"
    for out in model.graph.output:
        out.name = f"__{rename.get(out.name, out.name)}" if out.name in rename else out.name
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name.startswith("__"):
                node.output[i] = name[2:]
    for out in model.graph.output:
        out.name = out.name.removeprefix("__")
    onnx.save(model, str(dst))


def test_swapped_outputs_are_rejected(exported, testset, multi, tmp_path):
    reference = predict(multi, testset.features)
    swapped = tmp_path / "swapped.onnx"
    _swap_onnx_outputs(exported.folder / _entry(exported.manifest)["path"], swapped, "kws", "speaker")
    import onnxruntime as ort

    assert [o.name for o in ort.InferenceSession(str(swapped)).get_outputs()] == ["speaker", "kws", "scene", "instrument"]
    with pytest.raises(MtlEdgeError, match=r"swapped.onnx.*task 'kws'"):
        verify_artefact("onnx", swapped, reference, testset, TASKS, "fp32")
    kept = verify_artefact("onnx", swapped, reference, testset, TASKS, "fp32", allow_degraded=True)
    assert kept["status"] == "degraded" and kept["tasks"]["kws"]["agreement"] < 0.99

    # the same mistake made in PyTorch and converted to TFLite: names right, tensors swapped
    from mtl_edge.export import tflite
    from mtl_edge.export.graph import ExportGraph

    class Swap(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model(x)
            return {"kws": out["scene"], "speaker": out["speaker"], "scene": out["kws"], "instrument": out["instrument"]}

    path = tmp_path / "swapped.tflite"
    tflite.build(ExportGraph(Swap(multi), TASKS), testset.features.shape[1], "fp32", path, tmp_path, "swap")
    with pytest.raises(MtlEdgeError, match=r"task 'kws'.*(shape|agreement)"):
        verify_artefact("tflite", path, reference, testset, TASKS, "fp32")
    assert verify_artefact("tflite", path, reference, testset, TASKS, "fp32", allow_degraded=True)["status"] == "degraded"


def test_perturbed_weights_are_rejected(testset, multi, tmp_path):
    from mtl_edge.export import onnx as onnx_export
    from mtl_edge.export.graph import ExportGraph

    reference = predict(multi, testset.features)
    noisy = copy.deepcopy(multi)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in noisy.trunk.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.std() * 2)
    path = tmp_path / "noisy.onnx"
    onnx_export.build(ExportGraph(noisy, TASKS), testset.features.shape[1], "fp32", path, tmp_path, "noisy")
    with pytest.raises(MtlEdgeError, match=r"noisy.onnx.*top-1 agreement with PyTorch 0\.\d+ is below the fp32 threshold 0\.990"):
        verify_artefact("onnx", path, reference, testset, TASKS, "fp32")
    kept = verify_artefact("onnx", path, reference, testset, TASKS, "fp32", allow_degraded=True)
    assert kept["status"] == "degraded" and kept["problems"]


def test_calibration_rows_and_int8_artefacts_are_reproducible(exported, run_dir, tmp_path):
    again = export_run(run_dir, tmp_path / "again", models="multi", precisions=("int8",), progress=False,
                       allow_degraded=True, latency_runs=5)
    first = json.loads((exported.folder / "calibration_indices.json").read_text())
    second = json.loads((again.folder / "calibration_indices.json").read_text())
    assert first["models"]["multi"] == second["models"]["multi"] and len(first["models"]["multi"]) > 0
    assert first["seed"] == 0 and first["split"] == "train"
    for fmt in FORMATS:  # both converters are deterministic for the same calibration rows
        assert _entry(again.manifest, fmt=fmt, precision="int8")["sha256"] == \
            _entry(exported.manifest, fmt=fmt, precision="int8")["sha256"]


def test_an_out_folder_with_another_export_is_refused_without_force(run_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "mtl-edge-export", "version": 1, "run": "/elsewhere",
                                                   "checkpoint_sha256": {"multi": "0" * 64}, "artefacts": []}))
    with pytest.raises(MtlEdgeError, match="holds a different export.*--force"):
        export_run(run_dir, out, models="multi", formats="onnx", precisions="fp32", progress=False)
    result = export_run(run_dir, out, models="multi", formats="onnx", precisions="fp32", progress=False,
                        force=True, latency_runs=5)
    assert [a["path"] for a in read_manifest(out, check_files=True)["artefacts"]] == ["onnx/multi.fp32.onnx"]
    assert result.manifest["run"] == str(run_dir.resolve())
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(MtlEdgeError, match="not an export folder"):
        export_run(run_dir, other, force=True, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_pareto_plot_is_a_png(exported):
    assert (exported.folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_run(run_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "multi").mkdir(parents=True)
    shutil.copy(run_dir / "config.json", run / "config.json")
    config = json.loads((run / "config.json").read_text())
    config["single"] = False
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_bad_checkpoints_and_empty_runs_fail_cleanly(run_dir, tmp_path):
    run = _fake_run(run_dir, tmp_path)
    with pytest.raises(MtlEdgeError, match="no checkpoints"):
        export_run(run, progress=False)
    data = (run_dir / "multi" / "model.pt").read_bytes()
    (run / "multi" / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MtlEdgeError, match="not a readable checkpoint"):
        export_run(run, progress=False)
    torch.save({"format": "someone-elses-model", "weights": torch.zeros(2)}, run / "multi" / "model.pt")
    with pytest.raises(MtlEdgeError, match="not an mtl-edge-checkpoint file"):
        export_run(run, progress=False)
    payload = torch.load(run_dir / "multi" / "model.pt", weights_only=True)
    torch.save({**payload, "version": 99}, run / "multi" / "model.pt")
    with pytest.raises(MtlEdgeError, match="version 99 is not supported"):
        export_run(run, progress=False)
    torch.save({**payload, "model": "wavenet9"}, run / "multi" / "model.pt")
    with pytest.raises(MtlEdgeError, match="unknown model 'wavenet9'"):
        export_run(run, progress=False)
    assert not (run / "export").exists()
    with pytest.raises(MtlEdgeError, match="unknown precision int4"):
        export_run(run_dir, precisions="fp32,int4", progress=False)
    with pytest.raises(MtlEdgeError, match="not a run folder"):
        export_run(tmp_path, progress=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_op_the_format_cannot_take_is_a_clean_error(fmt, tmp_path):
    from mtl_edge.export import onnx as onnx_export
    from mtl_edge.export import tflite
    from mtl_edge.export.graph import ExportGraph

    class Bessel(torch.nn.Module):
        def forward(self, x):
            return {"a": torch.special.bessel_j0(x)}

    builder = {"onnx": onnx_export, "tflite": tflite}[fmt]
    with pytest.raises(MtlEdgeError, match=rf"{fmt} .*bessel.*failed|{fmt} .*failed.*bessel"):
        builder.build(ExportGraph(Bessel(), ["a"]), 4, "fp32", tmp_path / f"x.{fmt}", tmp_path, "bessel-model")


_LOAD_WITHOUT_MTL_EDGE = r"""
import json, sys
class Block:  # any import of mtl_edge fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mtl_edge":
            raise ImportError("mtl_edge must not be needed")
sys.meta_path.insert(0, Block())
import numpy as np, torch
extra = {"mtl_edge.json": ""}
m = torch.jit.load(sys.argv[1], map_location="cpu", _extra_files=extra)
with torch.inference_mode():
    out = m(torch.from_numpy(np.load(sys.argv[2])))
np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
print(json.dumps({"keys": list(out), "meta": json.loads(extra["mtl_edge.json"]), "type": type(m).__name__,
                  "mtl_edge": [k for k in sys.modules if k.startswith("mtl_edge")]}))
"""


def test_torch_format_is_torchscript_loadable_without_mtl_edge(torch_exported, testset, multi, tmp_path):
    import subprocess
    import sys
    import zipfile

    assert "torch" in ALL_FORMATS and FORMATS == ("onnx", "tflite")  # accepted, not a default
    folder, manifest = torch_exported.folder, torch_exported.manifest
    assert read_manifest(folder, check_files=True)["artefacts"] == manifest["artefacts"]
    fp32 = [a for a in manifest["artefacts"] if a["precision"] == "fp32"]
    assert [a["model"] for a in fp32] == ["multi"] + [f"single:{t}" for t in TASKS]
    for a in fp32:
        assert a["format"] == "torch" and a["status"] == "ok" and a["path"] == f"torch/{a['model'].replace(':', '-')}.fp32.pt"
        assert sha256_file(folder / a["path"]) == a["sha256"] and a["bytes"] == (folder / a["path"]).stat().st_size
        assert [o["name"] for o in a["outputs"]] == a["tasks"] and a["inputs"][0]["name"] == "features"
        assert a["verification"]["output_order"] == a["tasks"]
        for task in a["tasks"]:
            e = a["verification"]["tasks"][task]
            assert e["agreement"] == 1.0 and e["max_abs_diff"] < 1e-5 and e["accuracy"] == e["torch_accuracy"]
        assert a["latency"]["runtime"] == "torch" and a["latency"]["median_ms"] > 0
    path = folder / _entry(manifest, fmt="torch")["path"]
    with zipfile.ZipFile(path) as z:  # a TorchScript archive (code + constants), not a pickled mtl_edge object
        names = z.namelist()
    assert any(n.endswith("code/__torch__.py") or "/code/" in n for n in names)
    np.save(tmp_path / "x.npy", testset.features)
    proc = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_MTL_EDGE, str(path), str(tmp_path / "x.npy"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["keys"] == TASKS and info["meta"]["outputs"] == TASKS and info["mtl_edge"] == []
    assert info["type"] == "RecursiveScriptModule"
    reference = predict(multi, testset.features)
    with np.load(tmp_path / "out.npz") as got:
        for task in TASKS:
            np.testing.assert_allclose(got[task], reference[task], atol=1e-5)
    out = load_artefact(_entry(manifest, fmt="torch"), folder)(testset.features[:7])  # any batch size
    assert list(out) == TASKS and out["kws"].shape == reference["kws"][:7].shape


def test_torch_format_other_precisions_are_unsupported_not_faked(torch_exported):
    folder, manifest = torch_exported.folder, torch_exported.manifest
    others = [a for a in manifest["artefacts"] if a["precision"] != "fp32"]
    assert {(a["model"], a["precision"]) for a in others} == {
        (m, p) for m in ["multi"] + [f"single:{t}" for t in TASKS] for p in PRECISIONS if p != "fp32"}
    for a in others:
        assert a["status"] == "unsupported" and a["path"] is None and a["sha256"] is None and a["verification"] is None
        assert "fp32 only" in a["reason"] and a["precision"] in a["reason"]
    assert sorted(p.name for p in (folder / "torch").iterdir()) == sorted(
        f"{m}.fp32.pt" for m in ["multi"] + [f"single-{t}" for t in TASKS])
    with pytest.raises(MtlEdgeError, match="unsupported.*fp32 only"):
        load_artefact(_entry(manifest, fmt="torch", precision="int8"), folder)
    assert "torch/multi.fp32.pt | multi | torch | fp32 | ok |" in (folder / "verification.md").read_text()


def test_recommended_precision_is_the_fastest_verified_one(exported):
    """Which precision wins is this machine's measurement; that it is the fastest one within the accuracy
    threshold of fp32, for every exported format, is not."""
    manifest = json.loads((exported.folder / "manifest.json").read_text())
    assert sorted(manifest["recommended"]) == sorted(FORMATS)  # one pick per format, none left out
    for fmt, pick in manifest["recommended"].items():
        multi = [a for a in manifest["artefacts"] if a["model"] == "multi" and a["format"] == fmt
                 and a["status"] == "ok"]
        fp32 = next(a for a in multi if a["precision"] == "fp32")  # fp32 is verified ok: there is always a pick
        assert pick["precision"] in PRECISIONS, pick
        chosen = next(a for a in multi if a["precision"] == pick["precision"])
        assert pick["path"] == chosen["path"] and pick["median_ms"] == chosen["latency"]["median_ms"]
        assert pick["speedup_vs_fp32"] == round(fp32["latency"]["median_ms"] / chosen["latency"]["median_ms"], 3)

        def drop(a):
            return max(fp32["verification"]["tasks"][t]["accuracy"] - a["verification"]["tasks"][t]["accuracy"]
                       for t in a["tasks"])

        assert chosen is fp32 or drop(chosen) <= manifest["thresholds"]["accuracy_drop"]
        faster = [a for a in multi if a["latency"]["median_ms"] < chosen["latency"]["median_ms"]]
        for a in faster:  # anything faster was rejected for its accuracy, and says so
            assert drop(a) > manifest["thresholds"]["accuracy_drop"]
            assert a["precision"] in pick["reason"].split("rejected for accuracy drop")[1]


def test_recommend_rejects_an_artefact_that_loses_accuracy():
    from mtl_edge.export.recommend import recommend

    def art(precision, ms, acc):
        return {"model": "multi", "format": "onnx", "precision": precision, "status": "ok", "path": precision,
                "latency": {"median_ms": ms}, "verification": {"tasks": {"kws": {"accuracy": acc}}}}

    pick = recommend([art("fp32", 0.04, 0.90), art("int8", 0.01, 0.80), art("int8-dynamic", 0.02, 0.895)], 0.02)
    assert pick["onnx"]["precision"] == "int8-dynamic" and pick["onnx"]["speedup_vs_fp32"] == 2.0
    assert "rejected for accuracy drop > 0.02: int8" in pick["onnx"]["reason"]


def test_artefact_entries_are_typed_and_keep_the_manifest_field_order():
    """An entry is built as an ArtefactEntry; its JSON keeps the manifest's layout (identity, file, the
    format's own details, then the verdict), and an unsupported one has no file and no checks."""
    import dataclasses

    from mtl_edge.export.artefact import ArtefactEntry

    entry = ArtefactEntry("onnx/multi.fp32.onnx", "multi", ["kws"], "onnx", "fp32", "run/multi/model.pt", "c0ffee", 10, False)
    ok = dataclasses.replace(entry, sha256="5a", bytes=3, details={"quantization": {"scheme": "none"}, "opset": 20},
                             verification={"rows": 1}, latency={"median_ms": 0.1})
    assert list(ok.to_json()) == ["path", "model", "tasks", "format", "precision", "source_checkpoint",
                                  "source_checkpoint_sha256", "parameters", "end_to_end", "sha256", "bytes",
                                  "quantization", "opset", "status", "reason", "verification", "latency"]
    assert ok.to_json()["opset"] == 20 and ok.to_json()["status"] == "ok"
    gone = ArtefactEntry.unsupported(entry, "no such op").to_json()
    assert gone["path"] is None and gone["status"] == "unsupported" and gone["reason"] == "no such op"
    assert gone["sha256"] is gone["bytes"] is gone["verification"] is gone["latency"] is gone["inputs"] is None
