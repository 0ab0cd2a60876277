"""TFLite artefacts cross-checked under the older tflite-runtime (its own numpy<2 environment), as on many Pi images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need
from mtl_edge.bench import bench, read_lines
from mtl_edge.errors import MtlEdgeError

pytestmark = pytest.mark.slow

TASKS = ["kws", "speaker", "scene", "instrument"]
TFLITE_RUNTIME_ENV = ["numpy<2", "tflite-runtime==2.14.0"]


@pytest.fixture(scope="module")
def old_python(tmp_path_factory) -> str:
    """A venv with tflite-runtime 2.14 and numpy<2 (tflite-runtime does not import under numpy 2)."""
    env = tmp_path_factory.mktemp("tflite-runtime-env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    proc = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", *TFLITE_RUNTIME_ENV], capture_output=True, text=True)
    need(proc.returncode == 0, f"cannot install {' '.join(TFLITE_RUNTIME_ENV)} (the package registry is not reached?): "
                               f"{proc.stderr.strip()[-300:]}", on_ci="CI reaches the package registry")
    return str(env / "bin" / "python")


@pytest.fixture(scope="module")
def crosschecked(demo_corpus, tmp_path_factory, old_python):
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    run = tmp_path_factory.mktemp("tfrt") / "run"
    train_run(demo_corpus, TASKS, run, TrainConfig(hidden=(128, 128, 128), epochs=2), single=False)
    return export_run(run, formats=("tflite",), precisions=("fp32", "int8-dynamic", "int8"), allow_degraded=True,
                      latency_runs=5, progress=False, tflite_runtime=old_python)


# What tflite-runtime 2.14 makes of each precision with the pinned converters (litert-torch 0.10.0,
# ai-edge-quantizer 0.10.0): dynamic-range int8 writes FULLY_CONNECTED at an op version 2.14 predates, so its
# interpreter cannot register the op; fp32 and full-integer int8 use op versions it knows and must agree.
EXPECTED = {"fp32": "ok", "int8-dynamic": "cannot-load", "int8": "ok"}


def test_every_tflite_artefact_carries_its_crosscheck(crosschecked):
    verification = (crosschecked.folder / "verification.md").read_text()
    assert {a["precision"]: a["tflite_runtime"]["status"] for a in crosschecked.artefacts} == EXPECTED, \
        {a["precision"]: (a["tflite_runtime"]["status"], a["tflite_runtime"]["reason"]) for a in crosschecked.artefacts}
    for a in crosschecked.artefacts:
        check = a["tflite_runtime"]
        assert check["version"] == "2.14.0"
        if check["status"] == "cannot-load":
            assert check["reason"] == "Registration failed." and check["agreement"] is None
        else:
            assert sorted(check["agreement"]) == sorted(check["agreement_with_pytorch"]) == sorted(a["tasks"])
            assert min(check["agreement"].values()) >= 0.99 and check["reason"] is None
        assert f"{a['path']}: tflite-runtime 2.14.0: {check['status']}" in verification


def test_static_int8_runs_under_tflite_runtime_and_agrees(crosschecked):
    # full-integer static int8 uses op versions 2.14 knows: it must load and answer like ai-edge-litert
    static = next(a for a in crosschecked.artefacts if a["precision"] == "int8")
    assert static["tflite_runtime"]["status"] == "ok", static["tflite_runtime"]


def test_a_python_without_tflite_runtime_is_a_clear_error(tmp_path):
    from mtl_edge.export.crosscheck import check_interpreter

    with pytest.raises(MtlEdgeError, match=r"cannot import tflite_runtime.*pip install 'numpy<2' tflite-runtime"):
        check_interpreter(sys.executable)
    with pytest.raises(MtlEdgeError, match="cannot run it"):
        check_interpreter(str(tmp_path / "no-such-python"))


def test_bench_refuses_what_the_crosscheck_rejected_and_runs_the_rest(crosschecked, old_python, tmp_path):
    profile = tmp_path / "old-pi.toml"
    profile.write_text(f'name = "old-pi"\ntransport = "local"\nworkdir = "{tmp_path / "work"}"\n'
                       f'python = "{old_python}"\nruntime = "tflite-runtime"\n')
    quick = dict(min_runs=5, min_secs=0, max_secs=0.5, warmup=1, progress=False, results=tmp_path / "results")
    statuses = {a["precision"]: a["tflite_runtime"]["status"] for a in crosschecked.artefacts}
    assert statuses == EXPECTED  # both branches below are taken
    for precision, status in statuses.items():
        if status == "ok":
            out = bench(crosschecked.folder, profile, precisions=precision, **quick)
            (line,) = [m for m in out.measurements]
            assert line["runtime"] == "tflite-runtime" and line["runtime_version"] == "2.14.0"
            assert line["answers_status"] == "ok"
        else:
            with pytest.raises(MtlEdgeError, match=f"refused for tflite-runtime.*{status}"):
                bench(crosschecked.folder, profile, precisions=precision, **quick)
    lines = read_lines(Path(tmp_path / "results" / "old-pi-tflite-runtime.jsonl"))
    assert sorted(line["precision"] for line in lines) == ["fp32", "int8"]
