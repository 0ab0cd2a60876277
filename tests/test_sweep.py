"""Sweeps over task combinations: step budgets, shared baselines, workers, resume, refusals, failures."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import CTRL_C_ABLE, interrupt_when
from mtl_edge.cli import app
from mtl_edge.research.runs import RunSpec
from mtl_edge.research.sweep import plan_runs
from mtl_edge.train.trainer import TrainConfig

pytestmark = pytest.mark.slow
RUNS = {"scene", "gender", "scene+gender"}  # the pair and its two baselines
ARGS = ["--tasks", "scene,gender", "--combos", "pairs", "--seeds", "2", "--steps", "30", "--hidden", "128,128,128"]


@pytest.fixture(scope="module")
def tiny(tiny_corpus):
    return tiny_corpus


def sweep(corpus: Path, out: Path, *extra: str, args=ARGS):
    return CliRunner().invoke(app, ["sweep", "--corpus", str(corpus), "--out", str(out), *args, *extra])


def files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def steps_trained(run: Path) -> int:
    rows = (run / "curves.csv").read_text().splitlines()[1:]
    return len({tuple(r.split(",")[:2]) for r in rows})  # distinct (epoch, batch) = optimizer steps


@pytest.fixture(scope="module")
def swept(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "one"
    result = sweep(tiny, out, "--workers", "1")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_step_budget_trains_exactly_that_many_steps_without_early_stopping(tiny, tmp_path):
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import fit

    data = load_task_data(tiny, ["scene"], workers=1, progress=False)
    batches = -(-len(data.tasks["scene"].rows["train"]) // 64)
    # patience 0 and epochs 1 would stop after one epoch; the budget overrides both
    fit(data, TrainConfig(hidden=(128, 128, 128), steps=5 * batches + 1, patience=0, epochs=1), tmp_path / "r")
    assert steps_trained(tmp_path / "r") == 5 * batches + 1
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert history["epochs_run"] == 6  # validated after each epoch, the last one cut short
    # configs without a budget keep the JSON (and resumable states) they always had
    assert "steps" not in TrainConfig().to_json() and TrainConfig(steps=3).to_json()["steps"] == 3
    old = TrainConfig().to_json()  # a config.json written before the field existed
    assert TrainConfig.from_json(old) == TrainConfig()


def test_plan_adds_each_baseline_once():
    runs = plan_runs(["a", "b", "c"], ["pairs", "all"], 2)
    names = [r.name for r in runs]
    assert names[:6] == ["a", "a", "b", "b", "c", "c"]  # baselines first, once per seed
    assert sorted(set(names)) == ["a", "a+b", "a+b+c", "a+c", "b", "b+c", "c"]
    assert len(runs) == 14 and RunSpec(("a", "b"), 1) in runs
    assert [r.name for r in plan_runs(["a", "b"], ["singles"], 1)] == ["a", "b"]


def test_sweep_writes_every_run_once_and_the_results(swept):
    out, output = swept
    config = json.loads((out / "sweep.json").read_text())
    assert config["tasks"] == ["scene", "gender"] and config["seeds"] == [0, 1] and config["train"]["steps"] == 30
    assert len(config["corpus_fingerprint"]) == 64 and "seed" not in config["train"]
    assert {p.name for p in (out / "runs").iterdir()} == RUNS
    for name in RUNS:
        assert {p.name for p in (out / "runs" / name).iterdir()} == {"seed0", "seed1"}
        for seed in (0, 1):
            run = out / "runs" / name / f"seed{seed}"
            assert {p.name for p in run.iterdir()} == {"model.pt", "state.pt", "curves.csv", "history.json",
                                                       "metrics.json", "status.json"}
            status = json.loads((run / "status.json").read_text())
            assert status["status"] == "done" and status["seed"] == seed and status["wall_s"] > 0
            assert steps_trained(run) == 30  # equal budgets for single- and multi-task runs
    metrics = {(n, s): json.loads((out / "runs" / n / f"seed{s}" / "metrics.json").read_text()) for n in RUNS for s in (0, 1)}
    assert set(metrics["scene+gender", 0]["tasks"]) == {"scene", "gender"}
    assert set(metrics["scene+gender", 0]["tasks"]["scene"]["test"]) == {"accuracy", "macro_f1", "micro_f1", "roc_auc", "map_at_3"}
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["combo"], r["seed"], r["task"]) for r in rows] == [
        ("scene+gender", "0", "scene"), ("scene+gender", "0", "gender"),
        ("scene+gender", "1", "scene"), ("scene+gender", "1", "gender")]
    for row in rows:
        seed = int(row["seed"])
        single = metrics[row["task"], seed]["tasks"][row["task"]]["test"]["accuracy"]
        multi = metrics["scene+gender", seed]["tasks"][row["task"]]["test"]["accuracy"]
        assert row["metric"] == "accuracy"
        assert float(row["single"]) == pytest.approx(single) and float(row["multi"]) == pytest.approx(multi)
        assert float(row["gain"]) == pytest.approx(multi - single, abs=1e-6)
    assert "6 run(s) trained, 0 already done, 0 failed" in output and "scene+gender" in output


def test_two_workers_give_the_same_results_as_one(swept, tiny, tmp_path):
    out, _ = swept
    result = sweep(tiny, tmp_path / "two", "--workers", "2")
    assert result.exit_code == 0, result.output
    for name in RUNS:
        for seed in (0, 1):
            rel = Path("runs") / name / f"seed{seed}"
            assert (tmp_path / "two" / rel / "metrics.json").read_bytes() == (out / rel / "metrics.json").read_bytes()
            assert (tmp_path / "two" / rel / "curves.csv").read_bytes() == (out / rel / "curves.csv").read_bytes()
    assert (tmp_path / "two" / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_rerun_trains_only_unfinished_runs_and_leaves_finished_ones_untouched(swept, tiny, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(swept[0], out)
    before = files(out)
    killed = Path("runs/scene+gender/seed1")
    (out / killed / "status.json").unlink()  # as if killed before the run finished
    result = sweep(tiny, out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "1 run(s) trained, 5 already done, 0 failed" in result.output
    after = files(out)
    for rel, content in before.items():
        if not rel.startswith(str(killed)) and rel != "results.csv":
            assert after[rel] == content, rel  # same bytes, never rewritten
    assert json.loads((out / killed / "status.json").read_text())["status"] == "done"
    assert after[str(killed / "metrics.json")][0] == before[str(killed / "metrics.json")][0]  # resumed to the same model
    assert after["results.csv"][0] == before["results.csv"][0]


def test_a_damaged_run_fails_alone_and_the_sweep_goes_on(swept, tiny, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(swept[0], out)
    damaged, killed = out / "runs/scene/seed0", out / "runs/gender/seed1"
    for run in (damaged, killed):
        (run / "status.json").unlink()
    (damaged / "state.pt").write_bytes(b"not a checkpoint")
    result = sweep(tiny, out, "--workers", "1")
    assert result.exit_code == 1
    assert "1 run(s) trained, 4 already done, 1 failed" in result.output
    status = json.loads((damaged / "status.json").read_text())
    assert status["status"] == "failed" and "scene seed 0" in status["error"] and "state.pt" in status["error"]
    assert json.loads((killed / "status.json").read_text())["status"] == "done"
    with open(out / "results.csv", newline="") as fh:
        scene0 = [r for r in csv.DictReader(fh) if r["seed"] == "0" and r["task"] == "scene"]
    assert scene0[0]["single"] == "" and scene0[0]["gain"] == "" and scene0[0]["multi"] != ""


def test_diverging_runs_are_recorded_as_failed(tiny, tmp_path):
    args = ["--tasks", "scene", "--combos", "singles", "--seeds", "2", "--steps", "30", "--hidden", "128,128,128"]
    result = sweep(tiny, tmp_path / "nan", "--lr", "1e6", "--workers", "1", args=args)
    assert result.exit_code == 1 and "2 run(s) failed" in result.output
    for seed in (0, 1):  # the first failure did not stop the sweep
        status = json.loads((tmp_path / "nan" / "runs" / "scene" / f"seed{seed}" / "status.json").read_text())
        assert status["status"] == "failed" and "loss became nan" in status["error"]
    assert (tmp_path / "nan" / "results.csv").read_text() == "combo,seed,task,metric,single,multi,gain\n"


def test_a_sweep_folder_refuses_other_settings_naming_them(swept, tiny, tmp_path):
    out, _ = swept
    before = files(out)
    result = sweep(tiny, out, "--lr", "0.01")
    assert result.exit_code == 1 and "train.lr (0.001 -> 0.01)" in result.output
    result = sweep(tiny, out, args=[a if a != "30" else "31" for a in ARGS])
    assert result.exit_code == 1 and "train.steps (30 -> 31)" in result.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "audio").symlink_to(tiny / "audio")
    (other / "tasks.json").symlink_to(tiny / "tasks.json")
    lines = (tiny / "manifest.csv").read_text().splitlines(keepends=True)
    (other / "manifest.csv").write_text("".join(lines[:-1]))  # one clip fewer
    result = sweep(other, out)
    assert result.exit_code == 1 and "corpus_fingerprint" in result.output and "differs in its manifest or audio" in result.output
    assert files(out) == before  # nothing was written


def test_bad_input_exits_1_with_a_message(tiny, tmp_path):
    result = sweep(tiny, tmp_path / "a", args=["--tasks", "scene,emotion"])
    assert result.exit_code == 1 and "unknown task(s) emotion" in result.output and "scene" in result.output.split("has")[-1]
    result = sweep(tiny, tmp_path / "a", args=["--tasks", "scene,gender", "--combos", "pairs,quads"])
    assert result.exit_code == 1 and "unknown combination kind(s) quads" in result.output
    result = sweep(tiny, tmp_path / "a", "--executor", "slurm")
    assert result.exit_code == 1 and "unknown executor 'slurm'; executors: local, ray" in result.output
    result = sweep(tiny, tmp_path / "a", "--address", "127.0.0.1:6379")
    assert result.exit_code == 1 and "--address names a Ray cluster: it needs --executor ray" in result.output
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    result = sweep(tiny, tmp_path / "b")
    assert result.exit_code == 1 and "is not a sweep folder" in result.output
    assert not (tmp_path / "a").exists()


def test_dry_run_lists_the_runs_and_estimates_without_writing(swept, tiny, tmp_path):
    result = sweep(tiny, tmp_path / "new", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("todo  ") == 6 and "todo  scene+gender seed 1" in result.output
    assert "6 run(s), 0 done, 30 steps each" in result.output and "documented constants" in result.output
    assert not (tmp_path / "new").exists()
    result = sweep(tiny, swept[0], "--dry-run")
    assert result.exit_code == 0, result.output
    assert "6 run(s), 6 done" in result.output and "mean of 6 finished run(s)" in result.output


def test_dry_run_of_a_wavenet_sweep_times_its_largest_run_here(tiny, tmp_path):
    import re

    args = ["--tasks", "scene,next_step", "--combos", "singles,pairs", "--seeds", "1", "--steps", "40", "--model", "wavenet",
            "--model-args", "channels=4,blocks=1,layers=3,tag_hidden=8,aux_hidden=8"]
    result = sweep(tiny, tmp_path / "wave", "--dry-run", args=args)
    assert result.exit_code == 0, result.output
    assert "3 run(s), 0 done, 40 steps each" in result.output
    timed = re.search(r"estimated ([\d.]+) min .*timed here on the largest run: ([\d.]+) s per step, ([\d.]+) s per "
                      r"validation, ([\d.]+) s to load", result.output)
    assert timed, result.output
    minutes, step, validation, load = map(float, timed.groups())
    assert step > 0 and minutes > 0
    assert not (tmp_path / "wave").exists() and not list(Path(tiny).glob(".mtl-edge-estimate-*"))


def test_timed_costs_give_the_estimate_per_run():
    from mtl_edge.research.sweep import estimate

    cfg = TrainConfig(model="wavenet", steps=100, batch_size=10)
    todo = [RunSpec(("a",), 0), RunSpec(("b",), 0), RunSpec(("a", "b"), 0)]
    timed = {"load_s": 2.0, "step_s": 0.5, "validation_s": 3.0}
    seconds, source = estimate(todo, cfg, 1, [], {"a": 100, "b": 100}, timed)
    # every run: load + 100 steps + (epochs + 1) validations, one epoch a pass over its samples
    epochs = [cfg.epochs_for(10), cfg.epochs_for(10), cfg.epochs_for(20)]
    assert seconds == pytest.approx(sum(2.0 + 50.0 + (e + 1) * 3.0 for e in epochs))
    assert "0.50 s per step" in source
    assert estimate(todo, cfg, 2, [], {"a": 100, "b": 100}, timed)[0] == pytest.approx(seconds / 2)


def test_ctrl_c_mid_sweep_then_rerun_finishes_it(tiny, tmp_path):
    """SIGINT (a terminal's Ctrl-C, to the whole process group) while the second run trains.

    Event-driven, not timed: the sweep is frozen (SIGSTOP) as soon as the second run has saved its
    first epoch, checked to be mid-run, and only then interrupted, so a loaded machine cannot let
    the run finish before the signal lands."""
    out = tmp_path / "cut"
    args = ["--tasks", "scene", "--combos", "singles", "--seeds", "2", "--steps", "150", "--hidden", "128,128,128"]
    first, second = out / "runs/scene/seed0", out / "runs/scene/seed1"

    def mid_run():
        assert (second / "state.pt").exists() and not (second / "status.json").exists(), "not mid-run"

    # the sweep builds the feature cache first: minutes on a loaded machine
    proc, _ = interrupt_when([*CTRL_C_ABLE, "sweep", "--corpus", str(tiny), "--out", str(out), *args, "--workers", "1"],
                             lambda: (second / "state.pt").exists(), "the second run's first epoch", while_frozen=mid_run)
    stderr = proc.stderr
    assert proc.returncode == 1 and "interrupted: 1 run(s) unfinished" in stderr
    assert json.loads((first / "status.json").read_text())["status"] == "done"
    assert not (second / "status.json").exists() and not (second / "metrics.json").exists()
    before = files(first)
    result = sweep(tiny, out, "--workers", "1", args=args)
    assert result.exit_code == 0, result.output
    assert "1 run(s) trained, 1 already done, 0 failed" in result.output
    assert files(first) == before and steps_trained(second) == 150
    # the resumed run is the run an uninterrupted worker trains
    from mtl_edge.research.runs import RunJob, run_job

    config = json.loads((out / "sweep.json").read_text())
    whole = tmp_path / "whole"
    job = RunJob(RunSpec(("scene",), 1), str(whole), config["corpus"], {**config["train"], "seed": 1}, config["features"])
    assert run_job(job)["status"] == "done"
    assert (whole / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    assert (whole / "curves.csv").read_bytes() == (second / "curves.csv").read_bytes()


# --- the Ray executor, on a real Ray cluster started on loopback -------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RayCluster:
    address: str
    pid: int  # of `ray start --block`: every Ray process of this cluster descends from it


@pytest.fixture(scope="module")
def ray_auth():
    """Token authentication with a token of this test module, for the cluster and for this process
    (Ray's token file in the home folder is neither read nor written, so concurrent Ray instances
    cannot clash). Set before anything imports ray: Ray reads the token once per process."""
    import secrets

    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in auth.items():
            patch.setenv(name, value)
        yield auth


@pytest.fixture(scope="module")
def ray_cluster(ray_auth):
    """A one-node Ray cluster (`ray start --head --block`) on loopback; stopped afterwards through its
    own process group, never with `ray stop` (which stops every Ray on the machine)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    pytest.importorskip("ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit in 107 bytes
    ray = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
        yield RayCluster(f"127.0.0.1:{port}", proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_client(ray_auth, monkeypatch):
    """This process talks to Ray with the module's token, and to no cluster unless a test names one."""
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def same_runs(a: Path, b: Path) -> None:
    for name in RUNS:
        for seed in (0, 1):
            rel = Path("runs") / name / f"seed{seed}"
            for file in ("metrics.json", "curves.csv"):
                assert (a / rel / file).read_bytes() == (b / rel / file).read_bytes(), rel / file
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()


def test_ray_cluster_through_address_gives_the_same_results_as_local(swept, tiny, ray_cluster, ray_client, tmp_path):
    result = sweep(tiny, tmp_path / "ray", "--executor", "ray", "--address", ray_cluster.address, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "6 run(s) trained, 0 already done, 0 failed" in result.output
    same_runs(tmp_path / "ray", swept[0])


def test_ray_address_from_the_environment_resumes_only_unfinished_runs(swept, tiny, ray_cluster, ray_client, tmp_path,
                                                                       monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(swept[0], out)
    killed = Path("runs/scene+gender/seed0")
    (out / killed / "status.json").unlink()
    before = files(out)
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    result = sweep(tiny, out, "--executor", "ray")
    assert result.exit_code == 0, result.output
    assert "1 run(s) trained, 5 already done, 0 failed" in result.output
    after = files(out)
    for rel, content in before.items():
        if not rel.startswith(str(killed)) and rel != "results.csv":
            assert after[rel] == content, rel  # finished runs: same bytes, same mtime
    same_runs(out, swept[0])


def test_a_lost_ray_worker_is_retried_from_its_last_epoch(tiny, ray_cluster, ray_client, tmp_path):
    """SIGKILL to the worker process training a run (as when a node goes away): Ray retries the task,
    which resumes from state.pt and ends with the run an uninterrupted worker trains."""
    import signal
    import threading
    import time

    from mtl_edge.research.runs import RunJob, run_job

    args = ["--tasks", "scene", "--combos", "singles", "--seeds", "1", "--steps", "150", "--hidden", "128,128,128"]
    out, killed = tmp_path / "lost", []
    state = out / "runs/scene/seed0/state.pt"

    def kill_the_worker_mid_run():
        deadline = time.time() + 300
        while time.time() < deadline and not state.exists():
            time.sleep(0.02)
        for proc in ray_workers_running(ray_cluster):
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)

    killer = threading.Thread(target=kill_the_worker_mid_run)
    killer.start()
    result = sweep(tiny, out, "--executor", "ray", "--address", ray_cluster.address, args=args)
    killer.join()
    assert killed, "no Ray worker was training when the run saved its first epoch"
    assert result.exit_code == 0, result.output
    assert "1 run(s) trained, 0 already done, 0 failed" in result.output
    config = json.loads((out / "sweep.json").read_text())
    whole = tmp_path / "whole"
    assert run_job(RunJob(RunSpec(("scene",), 0), str(whole), config["corpus"], {**config["train"], "seed": 0},
                          config["features"]))["status"] == "done"
    run = out / "runs/scene/seed0"
    assert (whole / "metrics.json").read_bytes() == (run / "metrics.json").read_bytes()
    assert (whole / "curves.csv").read_bytes() == (run / "curves.csv").read_bytes()


def ray_workers_running(cluster: RayCluster) -> list:
    import psutil

    out = []
    for proc in psutil.Process(cluster.pid).children(recursive=True):
        try:
            if (proc.cmdline() or [""])[0].startswith("ray::run_job"):  # a worker's title while it runs the task
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def test_ctrl_c_on_ray_cancels_the_runs_in_flight_and_a_rerun_finishes(tiny, ray_cluster, ray_client, tmp_path):
    """SIGINT to the sweep (the driver) while its run trains on the cluster: the Ray task is cancelled,
    nothing is recorded as done, and the same command trains the run again. The worker is frozen
    (SIGSTOP) while the driver is interrupted, so the run cannot finish first on a loaded machine."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "cut"
    run = out / "runs/scene/seed0"
    args = ["--tasks", "scene", "--combos", "singles", "--seeds", "1", "--steps", "150", "--hidden", "128,128,128"]
    command = [*CTRL_C_ABLE, "sweep", "--corpus", str(tiny), "--out", str(out), *args,
               "--executor", "ray", "--address", ray_cluster.address]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (run / "state.pt").exists():
            time.sleep(0.02)
        workers = ray_workers_running(ray_cluster)
        assert len(workers) == 1, "no Ray worker was training when the run saved its first epoch"
        workers[0].send_signal(signal.SIGSTOP)
        assert not (run / "status.json").exists(), "not mid-run"
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        for worker in workers:
            try:
                worker.send_signal(signal.SIGCONT)
            except Exception:
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1 and "interrupted: 1 run(s) unfinished" in stderr
    deadline = time.time() + 60
    while time.time() < deadline and ray_workers_running(ray_cluster):
        time.sleep(0.1)
    assert not ray_workers_running(ray_cluster), "the cancelled run still trains on the cluster"
    assert not (run / "status.json").exists() and not (run / "metrics.json").exists()
    result = sweep(tiny, out, "--executor", "ray", "--address", ray_cluster.address, args=args)
    assert result.exit_code == 0, result.output
    assert "1 run(s) trained, 0 already done, 0 failed" in result.output and steps_trained(run) == 150


def test_ray_without_an_address_starts_a_local_instance(tiny, ray_client, tmp_path):
    args = ["--tasks", "gender", "--combos", "singles", "--seeds", "1", "--steps", "30", "--hidden", "128,128,128"]
    result = sweep(tiny, tmp_path / "local-ray", "--executor", "ray", "--workers", "1", args=args)
    assert result.exit_code == 0, result.output
    assert "1 run(s) trained, 0 already done, 0 failed" in result.output
    assert json.loads((tmp_path / "local-ray/runs/gender/seed0/status.json").read_text())["status"] == "done"


def test_an_unreachable_ray_address_is_a_clear_error_and_writes_nothing(tiny, swept, ray_client, tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = sweep(tiny, tmp_path / "new", "--executor", "ray", "--address", address)
    assert result.exit_code == 1
    assert f"cannot reach the Ray cluster at {address}" in result.output and "nothing was trained" in result.output
    assert not (tmp_path / "new").exists()
    before = files(swept[0])
    result = sweep(tiny, swept[0], "--executor", "ray", "--address", address)
    assert result.exit_code == 1 and files(swept[0]) == before  # an existing sweep: nothing lost
    result = sweep(tiny, tmp_path / "new", "--executor", "ray", "--address", "localhost:port")
    assert result.exit_code == 1 and "is not host:port" in result.output
