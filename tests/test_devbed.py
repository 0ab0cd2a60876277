"""The emulated Raspberry Pi 4 test bed: real aarch64 code under qemu-user, its own sshd in a network namespace.

The session fixture brings the bed up once through the CLI (a cold build of the arm64 rootfs takes
~5 minutes and is cached; later sessions restore it in ~15 s) and down at the end. Needs root,
binfmt_misc and network namespaces: without them the tests skip with the reason, except on CI
(CI=true), where a skip is a failure. The last test brings the bed down and checks nothing is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import _require, need
from mtl_edge.bench.devices import load_device

CLI = [sys.executable, "-m", "mtl_edge", "devbed"]


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _ssh_opts(device, known_hosts: str | None = None) -> list[str]:
    return ["-i", device.extra["key"], "-o", f"UserKnownHostsFile={known_hosts or device.extra['known_hosts']}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"]


def _ssh(device, *remote: str, known_hosts: str | None = None, input: str | None = None, timeout: float = 300):
    argv = ["ssh", *_ssh_opts(device, known_hosts), "-p", str(device.extra["port"]),
            f"{device.extra['user']}@{device.extra['host']}", *remote]
    return subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


@pytest.fixture(scope="session")
def bed():
    need(os.geteuid() == 0, "the device test bed needs root (chroot, mounts, binfmt_misc, network namespaces)")
    need(Path("/proc/sys/fs/binfmt_misc").is_dir(), "this kernel has no binfmt_misc: arm64 programs cannot run")
    from mtl_edge.devbed.netns import ip_netns_available

    reason = ip_netns_available()
    need(reason is None, f"no network namespaces: {reason}")
    for tool, package in (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"), ("scp", "openssh-client"),
                          ("zstd", "zstd"), ("mmdebstrap", "mmdebstrap"), ("arch-test", "arch-test")):
        _require(tool, package)
    started = time.monotonic()
    done = _cli("up", "pi4")
    assert done.returncode == 0, f"devbed up pi4 failed:\n{done.stderr}"
    profile = Path(done.stdout.strip().splitlines()[-1])
    yield {"profile": profile, "device": load_device(profile), "seconds": time.monotonic() - started}
    _cli("down", "pi4", timeout=300)


@pytest.mark.slow
def test_profile_of_the_bed(bed):
    device = bed["device"]
    assert bed["profile"].name == "pi4-emulated.toml"
    assert (device.name, device.transport, device.emulated) == ("pi4-emulated", "ssh", True)
    assert device.python == "/opt/mtl-edge/venv/bin/python" and device.runtime == "onnxruntime"
    assert device.cpu_affinity == "0" and device.threads == 1 and device.workdir == "/root/mtl-edge-bench"
    assert device.extra["user"] == "root" and device.extra["port"] == 22 and device.extra["host"] == "10.213.7.2"
    assert Path(device.extra["key"]).is_file() and Path(device.extra["known_hosts"]).read_text().startswith("10.213.7.2 ")


@pytest.mark.slow
def test_ssh_reaches_an_aarch64_userland(bed):
    done = _ssh(bed["device"], "uname -m; echo $QEMU_CPU")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["aarch64", "cortex-a72"]


def _tiny_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


REMOTE = """
import json, sys
import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
folder = sys.argv[1]
session = ort.InferenceSession(folder + "/tiny.onnx", providers=["CPUExecutionProvider"])
y = session.run(None, {"x": np.load(folder + "/x.npy")})[0]
print(json.dumps({"y": y.tolist(), "numpy": np.__version__, "ort": ort.__version__, "litert": Interpreter.__name__}))
"""


@pytest.mark.slow
def test_bed_runs_onnx_like_the_host(bed, tmp_path):
    import onnxruntime as ort

    device = bed["device"]
    _tiny_model(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    host = ort.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    remote = f"{device.workdir}/test-devbed"
    assert _ssh(device, "mkdir", "-p", remote).returncode == 0
    copy = subprocess.run(["scp", "-q", *_ssh_opts(device), "-P", str(device.extra["port"]), str(tmp_path / "tiny.onnx"),
                           str(tmp_path / "x.npy"), f"root@{device.extra['host']}:{remote}/"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert copy.returncode == 0, copy.stderr
    done = _ssh(device, device.python, "-", remote, input=REMOTE)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["ort"], result["numpy"], result["litert"]) == ("1.31.1", "2.4.6", "Interpreter")
    np.testing.assert_allclose(np.array(result["y"], dtype=np.float32), host, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_unknown_host_key_is_refused(bed, tmp_path):
    device = bed["device"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    key_type, key = (tmp_path / "other.pub").read_text().split()[:2]
    (tmp_path / "wrong").write_text(f"{device.extra['host']} {key_type} {key}\n")
    done = _ssh(device, "true", known_hosts=str(tmp_path / "wrong"))
    assert done.returncode == 255 and "host key" in done.stderr.lower(), done.stderr
    (tmp_path / "empty").write_text("")
    done = _ssh(device, "true", known_hosts=str(tmp_path / "empty"))
    assert done.returncode == 255 and "host key verification failed" in done.stderr.lower(), done.stderr


@pytest.mark.slow
def test_up_again_is_idempotent(bed):
    from mtl_edge.devbed import pi4

    before = pi4.status()
    assert before["state"] == "up" and before["sshd_pid"]
    done = _cli("up", "pi4", timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(bed["profile"])
    assert pi4.status()["sshd_pid"] == before["sshd_pid"]


@pytest.mark.slow
def test_a_half_dead_bed_is_cleared_by_up(bed):
    """sshd killed, its namespace and mounts left: `up` clears what is left and starts a fresh bed."""
    from mtl_edge.devbed import pi4, process_alive

    before = pi4.status()
    os.kill(before["sshd_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_alive(before["sshd_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    partial = pi4.status()
    assert (partial["state"], partial["sshd_pid"], partial["netns"]) == ("partial", None, pi4.NET.name)
    done = _cli("up", "pi4", timeout=900)
    assert done.returncode == 0, done.stderr
    assert "clearing a half-started bed" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(bed["profile"])
    after = pi4.status()
    assert after["state"] == "up" and after["sshd_pid"] not in (None, before["sshd_pid"])
    assert _ssh(bed["device"], "uname -m").stdout.strip() == "aarch64"


@pytest.mark.slow
def test_link_can_be_cut_and_restored(bed):
    from mtl_edge.devbed import pi4

    pi4.link(down=True)
    try:
        cut = subprocess.run(pi4.ssh_argv("true", connect_timeout=3), capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        assert cut.returncode == 255
    finally:
        pi4.link(down=False)
    done = subprocess.run(pi4.ssh_argv("true"), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child of a finished CLI waits for init to collect it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def tiny_export(demo_corpus, tmp_path_factory):
    """A small multi-task run with its single-task baselines, exported fp32 to ONNX and TFLite."""
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    run = tmp_path_factory.mktemp("bed-bench") / "run"
    train_run(demo_corpus, ["kws", "speaker", "scene", "instrument"], run,
              TrainConfig(hidden=(128, 128, 128), epochs=2), single=True)
    return export_run(run, allow_degraded=True, latency_runs=5, precisions=("fp32",), progress=False).folder


@pytest.mark.slow
def test_bench_on_the_emulated_pi4_over_ssh(bed, tiny_export, demo_corpus, tmp_path):
    """The "done when" command: bench --device <bed profile> --compare single, through the CLI."""
    from mtl_edge.bench import read_lines
    from mtl_edge.report import render_report

    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "mtl_edge", "bench", str(tiny_export), "--device", str(bed["profile"]),
                           "--runtime", "onnxruntime,litert", "--compare", "single", "--min-runs", "3",
                           "--min-secs", "0", "--max-secs", "1", "--results", str(results)],
                          capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "EMULATED" in done.stdout
    lines = [m for f in sorted(results.glob("*.jsonl")) for m in read_lines(f)]
    measurements = [m for m in lines if m["kind"] == "measurement"]
    compares = [m for m in lines if m["kind"] == "compare"]
    assert len(measurements) == 2 * (1 + 4 + 1) and len(compares) == 2
    for m in measurements:
        assert (m["device"], m["transport"], m["machine"], m["emulated"]) == ("pi4-emulated", "ssh", "aarch64", True)
        # answers on the whole test split match the desktop's, run by the aarch64 runtimes under qemu: the real
        # cross-architecture check (the desktop and loopback ones are equal by construction); on CI a missing
        # bed fails instead of skipping (`need`)
        assert m["answers_status"] == "ok" and m["answers_agreement_min"] >= 0.99, m
        assert m["runtime_version"] and m["p50_ms"] > 0 and m["peak_rss_mb"] > 0 and m["cpu_count"] >= 1
        assert "temperature_before_c" in m and "temperature_c" in m and isinstance(m["device_missing"], list)
        assert "vcgencmd_temperature_c" in m["device_missing"]  # no vcgencmd on the bed: recorded, not an error
    assert all(c["emulated"] is True and c["machine"] == "aarch64" and c["runtime_ratio"] > 0 for c in compares)
    report = render_report(results)
    assert "EMULATED device(s): pi4-emulated" in report.markdown.read_text()

    # plan on the bed's lines: the path works and the costs are marked emulated (the figures mean nothing)
    tasks = "kws,speaker,scene,instrument"
    gains = tmp_path / "affinity"
    run = subprocess.run([sys.executable, "-m", "mtl_edge", "affinity", "--corpus", str(demo_corpus), "--tasks", tasks,
                          "--steps", "20", "--every", "5", "--hidden", "128,128,128", "--out", str(gains)],
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-2000:]
    planned = subprocess.run([sys.executable, "-m", "mtl_edge", "plan", "--gains", str(gains), "--bench", str(results),
                              "--device", "pi4-emulated", "--out", str(tmp_path / "plan")],
                             capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "EMULATED" in planned.stdout
    record = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert record["emulated"] is True and record["device"] == "pi4-emulated"
    assert sorted(t for n in record["chosen"]["networks"] for t in n["tasks"]) == sorted(tasks.split(","))
    assert "EMULATED" in (tmp_path / "plan" / "plan.md").read_text()


@pytest.mark.slow
def test_bench_on_the_pi4_resumes_after_a_dropped_link(bed, tiny_export, tmp_path):
    from mtl_edge.bench import bench
    from mtl_edge.devbed import pi4
    from mtl_edge.errors import MtlEdgeError

    quick = dict(runtime="onnxruntime", precisions="fp32", min_runs=3, min_secs=0, max_secs=1, warmup=1,
                 progress=False, results=tmp_path / "results")
    first = bench(tiny_export, bed["profile"], **quick)
    assert len(first.measurements) == 5
    pi4.link(down=True)
    try:
        with pytest.raises(MtlEdgeError, match="pi4-emulated"):
            bench(tiny_export, bed["profile"], resume=True, timeout=60, **quick)
    finally:
        pi4.link(down=False)
    again = bench(tiny_export, bed["profile"], resume=True, **quick)
    assert again.skipped == 5 and again.measurements == []


@pytest.mark.slow
def test_down_leaves_no_namespace_and_no_process(bed):
    from mtl_edge.devbed import pi4, rootfs

    status = pi4.status()
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", pi4.NET.name], capture_output=True,
                                           text=True).stdout.split()]
    assert status["sshd_pid"] in pids
    done = _cli("down", "pi4", timeout=300)
    assert done.returncode == 0, done.stderr
    assert pi4.NET.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", "dev", pi4.NET.host_dev], capture_output=True).returncode != 0
    assert not [pid for pid in pids if _running(pid)]
    holders = rootfs.mounted_holders(Path(status["rootfs"]))
    assert "pi4" not in holders
    if not holders:  # another bed (android) may share the rootfs and keep its mounts
        assert rootfs.mounts_under(Path(status["rootfs"])) == []
    assert pi4.status()["state"] == "down"
    again = _cli("down", "pi4", timeout=120)
    assert again.returncode == 0, again.stderr


# ---- no root needed ---------------------------------------------------------------------------------

def test_unknown_bed_is_a_clean_error():
    done = _cli("up", "no-such-bed", timeout=120)
    assert done.returncode == 1 and "unknown test bed 'no-such-bed'; known: " in done.stderr and "pi4" in done.stderr


def test_profile_is_loadable(tmp_path, monkeypatch):
    from mtl_edge.devbed import pi4

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = pi4.BED.write_profile({})
    assert path == tmp_path / "config" / "mtl-edge" / "devices" / "pi4-emulated.toml"
    key = tmp_path / "state" / "mtl-edge" / "devbed" / "pi4" / "id_ed25519"
    assert tomllib.loads(path.read_text()) == {
        "name": "pi4-emulated", "transport": "ssh", "host": "10.213.7.2", "port": 22, "user": "root",
        "key": str(key), "known_hosts": str(key.with_name("known_hosts")), "workdir": "/root/mtl-edge-bench",
        "python": "/opt/mtl-edge/venv/bin/python", "runtime": "onnxruntime", "cpu_affinity": "0", "threads": 1,
        "emulated": True}
    assert path.read_text().startswith("# Written by `mtl-edge devbed up pi4`")
    device = load_device(path)
    assert device.emulated and device.extra["key"] == str(key)


def test_android_profile_parses_and_quotes_any_value(tmp_path, monkeypatch):
    from mtl_edge.devbed import android

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / 'a "quoted"\\ folder'))
    path = android.BED.write_profile({"serial": "127.0.0.1:5601", "server_port": 5137})
    assert tomllib.loads(path.read_text()) == {
        "name": "android-emulated", "transport": "adb", "serial": "127.0.0.1:5601", "adb_server_port": 5137,
        "workdir": "/data/local/tmp/mtl-edge-bench", "python": "/opt/mtl-edge/venv/bin/python",
        "runtime": "litert", "cpu_affinity": "0", "threads": 1, "emulated": True}
    device = load_device(path)
    assert (device.name, device.transport, device.extra["adb_server_port"]) == ("android-emulated", "adb", 5137)


def test_needs_root_is_a_clear_error(monkeypatch):
    from mtl_edge import devbed
    from mtl_edge.errors import MtlEdgeError

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MtlEdgeError, match="devbed pi4: needs root"):
        devbed.up("pi4")
