"""Task affinity from one run (TAG lookahead, gradient cosine): values, no effect on training, resume, refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mtl_edge.cli import app

pytestmark = pytest.mark.slow
TASKS = ["scene", "gender", "kws"]
ARGS = ["--tasks", ",".join(TASKS), "--steps", "40", "--every", "5", "--hidden", "128,128,128"]


def affinity(corpus: Path, out: Path, *extra: str, args=ARGS):
    return CliRunner().invoke(app, ["affinity", "--corpus", str(corpus), "--out", str(out), *args, *extra])


@pytest.fixture(scope="module")
def measured(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("affinity") / "one"
    result = affinity(tiny_corpus, out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_probe_does_not_change_what_is_trained(tiny_corpus, tmp_path):
    from mtl_edge.research.affinity import AffinityProbe
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import TrainConfig, fit

    data = load_task_data(tiny_corpus, TASKS, workers=1, progress=False)
    cfg = TrainConfig(hidden=(128, 128, 128), steps=40)
    torch.set_num_threads(1)
    fit(data, cfg, tmp_path / "plain")
    probe = AffinityProbe(TASKS, data.specs, cfg.lr, every=5)
    fit(data, cfg, tmp_path / "probed", probe=probe)
    assert probe.measurements == 8  # steps 0, 5, ..., 35
    assert (tmp_path / "plain" / "curves.csv").read_bytes() == (tmp_path / "probed" / "curves.csv").read_bytes()
    plain = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)["state_dict"]
    probed = torch.load(tmp_path / "probed" / "model.pt", weights_only=True)["state_dict"]
    assert plain.keys() == probed.keys() and all(torch.equal(plain[k], probed[k]) for k in plain)


def test_affinity_writes_both_matrices_and_their_tables(measured):
    out, output = measured
    record = json.loads((out / "affinity.json").read_text())
    assert record["tasks"] == TASKS and record["measurements"] == 8 and record["steps"] == 40
    assert record["settings"]["every"] == 5 and record["settings"]["lookahead_lr"] == 0.001
    assert len(record["settings"]["corpus_fingerprint"]) == 64
    tag, cosine = record["tag"], record["cosine"]
    for k in range(len(TASKS)):
        # a small gradient step on a task's own loss lowers that loss (first order): Z[i->i] > 0
        assert tag[k][k] > 0
        assert cosine[k][k] == pytest.approx(1.0, abs=1e-5)
        for j in range(len(TASKS)):
            assert -1.0 - 1e-6 <= cosine[k][j] <= 1.0 + 1e-6
            assert record["pair_measurements"][k][j] > 0
            assert cosine[k][j] == pytest.approx(cosine[j][k], abs=1e-6)  # symmetric by definition
    with open(out / "tag.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step_on", *TASKS] and [r[0] for r in rows[1:]] == TASKS
    for row, values in zip(rows[1:], tag):
        assert [float(v) for v in row[1:]] == pytest.approx(values, rel=1e-5)
    assert (out / "affinity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "8 measurement(s) over 40 steps" in output and "TAG affinity" in output


def test_a_finished_folder_is_reused_and_refuses_other_settings(measured, tiny_corpus):
    out, _ = measured
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    result = affinity(tiny_corpus, out)
    assert result.exit_code == 0 and "already measured" in result.output
    result = affinity(tiny_corpus, out, args=[a if a != "5" else "7" for a in ARGS])
    assert result.exit_code == 1 and "every (5 -> 7)" in result.output
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_a_killed_run_resumes_to_the_same_affinity(measured, tiny_corpus, tmp_path):
    """SIGKILL once the run has saved an epoch (frozen first, so it cannot finish on a loaded machine)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mtl_edge", "affinity", "--corpus", str(tiny_corpus), "--out", str(out),
                             *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (out / "run" / "state.pt").exists():
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGSTOP)
        assert not (out / "affinity.json").exists(), "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result = affinity(tiny_corpus, out)
    assert result.exit_code == 0, result.output
    resumed, whole = (json.loads((p / "affinity.json").read_text()) for p in (out, measured[0]))
    for key in ("tag", "cosine", "pair_measurements", "measurements"):
        assert resumed[key] == whole[key], key


def test_bad_input_exits_1_with_a_message(tiny_corpus, tmp_path):
    result = affinity(tiny_corpus, tmp_path / "a", args=["--tasks", "scene"])
    assert result.exit_code == 1 and "at least two tasks" in result.output
    result = affinity(tiny_corpus, tmp_path / "a", args=["--tasks", "scene,emotion"])
    assert result.exit_code == 1 and "unknown task(s) emotion" in result.output
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    result = affinity(tiny_corpus, tmp_path / "b")
    assert result.exit_code == 1 and "is not an affinity folder" in result.output
    assert not (tmp_path / "a").exists()
