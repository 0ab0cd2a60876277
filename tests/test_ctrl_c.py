"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during `export` and a two-worker
`data demo`: nothing half-written is left, an earlier result is kept, and the same command run again
finishes. Event-driven: the command is frozen (SIGSTOP) once its output has started to appear, then
interrupted, so a loaded machine cannot let it finish first."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CTRL_C_ABLE, interrupt_when
from mtl_edge.export.manifest import read_manifest

pytestmark = pytest.mark.slow  # each runs a real export or corpus build twice


def _group_gone(pgid: int, limit: float = 60) -> bool:
    """True once no process of the group is left (the command's workers exit with it)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _partials(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old", ".tmp")))


@pytest.fixture(scope="module")
def small_run(tiny_corpus, tmp_path_factory):
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    out = tmp_path_factory.mktemp("ctrl-c") / "run"
    train_run(tiny_corpus, ["kws", "scene"], out, TrainConfig(hidden=(128, 128, 128), epochs=2), single=True)
    return out


def test_ctrl_c_during_export_leaves_nothing_and_keeps_an_earlier_export(small_run):
    argv = [*CTRL_C_ABLE, "export", str(small_run), "--format", "onnx", "--quantize", "fp32,fp16,int8-dynamic",
            "--allow-degraded"]
    first_artefact = lambda: any(small_run.glob(".export.*.partial/onnx/*.onnx"))  # noqa: E731
    cut, _ = interrupt_when(argv, first_artefact, "the first artefact")
    assert cut.returncode == 130, cut.stderr[-2000:]
    assert "interrupted: nothing was written to" in cut.stderr and "Traceback" not in cut.stderr
    assert not (small_run / "export").exists() and _partials(small_run) == []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest_bytes = (small_run / "export" / "manifest.json").read_bytes()
    artefacts = read_manifest(small_run / "export")["artefacts"]
    assert {a["model"] for a in artefacts} == {"multi", "single:kws", "single:scene"}
    # interrupted while rebuilding in place: the finished export stays as it was
    cut, _ = interrupt_when(argv, first_artefact, "the first artefact of the rebuild")
    assert cut.returncode == 130, cut.stderr[-2000:]
    assert (small_run / "export" / "manifest.json").read_bytes() == manifest_bytes
    assert _partials(small_run) == []
    for entry in artefacts:
        assert (small_run / "export" / entry["path"]).is_file(), entry["path"]


def test_ctrl_c_during_a_two_worker_demo_build_leaves_nothing_and_a_rerun_builds_it(tmp_path):
    out = tmp_path / "corpus"
    argv = [*CTRL_C_ABLE, "data", "demo", "--out", str(out), "--scale", "0.03", "--workers", "2"]
    rendering = lambda: any(tmp_path.glob(".corpus.*.partial/audio/*/*/*.wav"))  # noqa: E731
    cut, group = interrupt_when(argv, rendering, "the first rendered clip")
    assert cut.returncode == 130, cut.stderr[-2000:]
    assert "interrupted: nothing was written to" in cut.stderr
    assert _group_gone(group), "a rendering worker outlived the interrupted build"
    assert not out.exists() and _partials(tmp_path) == []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = json.loads((out / "demo.json").read_text())
    assert settings["workers"] == 2 and settings["clips"] == len(list(out.glob("audio/*/*/*.wav")))
