"""The adb transport and the Android test bed, driven by the REAL adb client (Debian adb 29.0.6).

Two beds:

* a host bed (fast): ``mtl_edge.devbed.adbd`` with its commands running on this host, a private adb
  server on a free port and ``adb connect``: the protocol (handshake, streams, shell v1/v2 exit codes,
  exec, sync push/pull/ls), the transport's errors (a failed ``adb connect`` that exits 0, a wrong
  serial, a device that vanishes mid-run, a missing Python) and the whole benchmark harness over adb;
* the Android bed (``mtl_edge.devbed.android.up()``): the same adbd running commands in the arm64
  rootfs under qemu-user. It needs root and binfmt_misc: without them those tests skip with the
  reason, except on CI (CI=true), where a skip is a failure. The last test brings it down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import _require, need
from mtl_edge.bench.devices import load_device
from mtl_edge.bench.transports import RunnerTimeout, transport_for
from mtl_edge.bench.transports.adb import AdbTransport, connect_failed, cpu_mask, parse_devices
from mtl_edge.devbed import process_alive
from mtl_edge.errors import MtlEdgeError

TASKS = ["kws", "speaker", "scene", "instrument"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HostBed:
    """mtl_edge.devbed.adbd running commands on this host + a private adb server connected to it."""

    def __init__(self, adb: str, folder: Path, unauthorized: bool = False):
        self.adb = adb
        self.folder = folder
        self.server_port = _free_port()
        ready = folder / "ready.json"
        self.log = open(folder / "adbd.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "mtl_edge.devbed.adbd", "--port", "0", "--ready-file",
                                      str(ready), *(["--unauthorized"] if unauthorized else [])],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not ready.is_file():
                assert self.proc.poll() is None and time.monotonic() < deadline, (folder / "adbd.log").read_text()
                time.sleep(0.05)
            self.port = json.loads(ready.read_text())["port"]
            self.serial = f"127.0.0.1:{self.port}"
            self.call("start-server")
            done = self.call("connect", self.serial)
            expected = b"failed to authenticate" if unauthorized else b"connected to"
            assert expected in done.stdout, done.stdout + done.stderr
        except BaseException:
            self.stop()
            raise

    def call(self, *args: str, serial: bool = False, input: bytes | None = None, timeout: float = 60):
        argv = [self.adb, "-P", str(self.server_port), *(["-s", self.serial] if serial else []), *args]
        return subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def text(self, *args: str, **kw) -> subprocess.CompletedProcess:
        done = self.call(*args, serial=True, **kw)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))

    def devices(self) -> dict[str, str]:
        return parse_devices(self.call("devices").stdout.decode())

    def profile(self, folder: Path, **fields) -> Path:
        values = {"name": "hostbed", "transport": "adb", "serial": self.serial, "adb_server_port": self.server_port,
                  "workdir": str(folder / "device-work"), "python": sys.executable, "cpu_affinity": "0",
                  "threads": 1, **fields}
        path = folder / f"{values['name']}.toml"
        path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        return path

    def kill_adbd(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        self.call("kill-server")
        self.kill_adbd()
        self.log.close()


@pytest.fixture(scope="module")
def adb():
    return _require("adb", "adb")


@pytest.fixture(scope="module")
def hostbed(adb, tmp_path_factory):
    bed = HostBed(adb, tmp_path_factory.mktemp("hostbed"))
    yield bed
    bed.stop()


# ---------------------------------------------------------------------------------------------- pure helpers

def test_cpu_mask_and_output_parsing():
    assert [cpu_mask(c) for c in ("0", "7", "4-7", "0,2", "0-1,6")] == ["1", "80", "f0", "5", "43"]
    with pytest.raises(ValueError):
        cpu_mask("big")
    assert parse_devices("List of devices attached\nemulator-5554\tdevice\n127.0.0.1:5585\toffline\n\n") == {
        "emulator-5554": "device", "127.0.0.1:5585": "offline"}
    assert not connect_failed("connected to 127.0.0.1:5585")
    assert not connect_failed("already connected to 127.0.0.1:5585")
    assert connect_failed("failed to connect to '127.0.0.1:1': Connection refused")
    assert connect_failed("unable to connect to 10.0.0.9:5555: No route to host")
    assert connect_failed("")


# ---------------------------------------------------------------------------------------------- protocol

def test_connect_lists_the_device_with_its_banner(hostbed):
    done = hostbed.call("devices", "-l")
    line = next(x for x in done.stdout.decode().splitlines() if x.startswith(hostbed.serial))
    assert " device " in f" {line} " and "model:mtl_edge_emulated_arm64" in line
    features = hostbed.text("features")  # what the server learned from the CNXN banner
    assert {"shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir"} <= set(features.stdout.split())


def test_shell_v2_exit_codes_and_stderr_separation(hostbed):
    done = hostbed.text("shell", "echo out; echo err >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert hostbed.text("shell", "true").returncode == 0
    assert hostbed.text("shell", "kill -9 $$").returncode == 137  # killed by a signal: 128 + 9
    # stdin goes to the command (shell v2 stdin packets, then close-stdin)
    fed = hostbed.call("shell", "cat; echo end", serial=True, input=b"line one\nline two\n")
    assert fed.stdout == b"line one\nline two\nend\n"
    # the v1 shell (no shell protocol): one stream, no exit code
    v1 = hostbed.text("shell", "-x", "echo v1; echo e1 >&2; exit 5")
    assert v1.returncode == 0 and "v1" in v1.stdout and "e1" in v1.stdout


def test_exec_out_is_a_raw_binary_stream(hostbed):
    done = hostbed.call("exec-out", "printf 'a\\000b\\377'; exit 4", serial=True)
    assert done.stdout == b"a\x00b\xff" and done.returncode == 0


def test_push_pull_round_trip_byte_for_byte(hostbed, tmp_path):
    rng = np.random.default_rng(7)
    big = tmp_path / "big.bin"
    big.write_bytes(rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes())  # > 64 KiB: several DATA chunks
    small = tmp_path / "small.bin"
    small.write_bytes(b"\x00\xff tiny \n")
    remote = tmp_path / "device" / "nested" / "folder"  # SEND creates the parents (fixed_push_mkdir)
    for f in (big, small):
        done = hostbed.text("push", str(f), f"{remote}/{f.name}")
        assert done.returncode == 0 and "1 file pushed" in done.stdout, done.stdout + done.stderr
        assert (remote / f.name).read_bytes() == f.read_bytes()
    back = tmp_path / "back"
    back.mkdir()
    done = hostbed.text("pull", f"{remote}/big.bin", str(back / "big.bin"))
    assert done.returncode == 0, done.stderr
    assert (back / "big.bin").read_bytes() == big.read_bytes()
    assert (remote / "big.bin").stat().st_mode & 0o777 == big.stat().st_mode & 0o777
    # a folder: push it, list it with adb ls (sync LIS2) and adb shell ls, pull it back whole
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.txt").write_text("beta")
    hostbed.text("shell", f"mkdir -p {tmp_path}/device2")
    assert hostbed.text("push", str(tree), f"{tmp_path}/device2/").returncode == 0
    assert hostbed.text("shell", f"ls {tmp_path}/device2/tree").stdout.split() == ["a.txt", "sub"]
    listing = hostbed.text("ls", f"{tmp_path}/device2/tree").stdout
    assert {line.split()[-1] for line in listing.splitlines()} == {".", "..", "a.txt", "sub"}
    assert hostbed.text("pull", f"{tmp_path}/device2/tree", str(tmp_path / "pulled")).returncode == 0
    assert (tmp_path / "pulled" / "sub" / "b.txt").read_text() == "beta"


def test_sync_failures_are_reported(hostbed, tmp_path):
    missing = hostbed.text("pull", f"{tmp_path}/no/such/file", str(tmp_path / "x"))
    assert missing.returncode == 1 and "No such file" in missing.stdout + missing.stderr  # sync errors: on stdout
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    done = hostbed.text("push", str(blocked), f"{blocked}/inside/it")
    assert done.returncode == 1 and "Not a directory" in done.stdout + done.stderr


def test_adb_connect_to_a_closed_port_exits_0_but_says_failed(hostbed, tmp_path):
    closed = _free_port()
    done = hostbed.call("connect", f"127.0.0.1:{closed}")
    text = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and connect_failed(text), text  # the fact the transport must not trust
    device = load_device(hostbed.profile(tmp_path, serial=f"127.0.0.1:{closed}"))
    with pytest.raises(MtlEdgeError, match=rf"device hostbed \(serial 127\.0\.0\.1:{closed}\): `adb connect "
                                           rf"127\.0\.0\.1:{closed}` failed \(step 'connect'\): .*refused"):
        transport_for(device)


def test_wrong_serial_is_a_clear_error(hostbed, tmp_path):
    done = hostbed.call("-s", "emulator-5999", "shell", "true")
    assert done.returncode == 1 and b"not found" in done.stderr
    device = load_device(hostbed.profile(tmp_path, serial="emulator-5999"))
    with pytest.raises(MtlEdgeError, match=rf"device hostbed \(serial emulator-5999\): not attached \(step "
                                           rf"'connect'\); attached: .*127\.0\.0\.1:{hostbed.port} \(device\)"):
        transport_for(device)
    # no serial: the only device attached is the one
    assert transport_for(load_device(hostbed.profile(tmp_path, serial=""))).serial == hostbed.serial


def test_adbd_refuses_other_local_users(hostbed):
    need(os.geteuid() == 0, "needs root to connect as another user")
    probe = ("import socket, struct, sys\n"
             "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
             "banner = b'host::'\n"
             "cnxn = 0x4E584E43\n"
             "s.sendall(struct.pack('<6I', cnxn, 0x01000001, 4096, len(banner), 0, cnxn ^ 0xFFFFFFFF) + banner)\n"
             "try:\n"
             "    print(len(s.recv(24)))\n"
             "except ConnectionResetError:\n"  # closed with our CNXN unread: the kernel resets
             "    print(0)\n")
    system_python = "/usr/bin/python3"  # readable by 'nobody' (a venv under /root is not)
    need(os.access(system_python, os.X_OK), "no /usr/bin/python3 to run a client as another user")
    nobody = subprocess.run([system_python, "-c", probe, str(hostbed.port)], capture_output=True, text=True,
                            timeout=30, user=65534, group=65534, extra_groups=[], cwd="/")
    assert nobody.stdout.strip() == "0", nobody.stderr  # closed (or reset) without a CNXN
    same = subprocess.run([sys.executable, "-c", probe, str(hostbed.port)], capture_output=True, text=True,
                          timeout=30)
    assert same.stdout.strip() == "24", same.stderr  # the CNXN reply header


# ---------------------------------------------------------------------------------------------- transport

def test_transport_put_skips_identical_files_and_quotes_every_argument(hostbed, tmp_path):
    transport = transport_for(load_device(hostbed.profile(tmp_path, cpu_affinity="0")))
    assert isinstance(transport, AdbTransport)
    assert transport.workdir().is_dir()
    data = tmp_path / "features.npy"
    np.save(data, np.arange(40_000, dtype=np.float32))  # > 64 KiB: compared by sha256 on the device
    remote = transport.put(data, "features.npy")
    assert remote == f"{tmp_path}/device-work/features.npy"
    assert Path(remote).read_bytes() == data.read_bytes()
    pushes = []
    real = transport._adb

    def counting(args, step, timeout=None, with_serial=True):
        if args[:1] == ["push"]:
            pushes.append(args)
        return real(args, step, timeout, with_serial)

    transport._adb = counting
    fresh = transport_for(load_device(hostbed.profile(tmp_path)))  # a new session: the device's sha256 decides
    fresh._adb = counting
    assert transport.put(data, "features.npy") == remote and fresh.put(data, "features.npy") == remote
    assert pushes == []
    data.write_bytes(data.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    fresh.put(data, "features.npy")
    assert len(pushes) == 1 and Path(remote).read_bytes() == data.read_bytes()
    # every argument reaches the device unchanged: the shell sees quoted words only
    tricky = ["a b", "$(id)", "'q'", 'x;y', "*", "$HOME", "new\nline", ""]
    done = transport.run(["printf", "[%s]\\n", *tricky], timeout=60, env={"WEIRD": "a b;$(id)"})
    assert done.returncode == 0 and done.stdout == "".join(f"[{t}]\n" for t in tricky)
    env = transport.run(["sh", "-c", 'echo "$WEIRD|$OMP_NUM_THREADS|$PWD"'], timeout=60, env={"WEIRD": "a b;$(id)"})
    assert env.stdout.strip() == f"a b;$(id)|1|{tmp_path}/device-work"
    assert transport.run(["sh", "-c", "exit 7"], timeout=60).returncode == 7
    with pytest.raises(MtlEdgeError, match="invalid environment variable"):
        transport.run(["true"], timeout=60, env={"A;B": "1"})
    assert transport.argv("/w/runner.py", "/w/job.json") == ["taskset", "1", sys.executable, "/w/runner.py",
                                                            "/w/job.json"]
    big = transport_for(load_device(hostbed.profile(tmp_path, cpu_affinity="4-7")))
    assert big.argv("r.py", "j.json")[:2] == ["taskset", "f0"]
    masked = transport_for(load_device(hostbed.profile(tmp_path, cpu_affinity="", cpu_mask="0x3")))
    assert masked.argv("r.py", "j.json")[:2] == ["taskset", "3"]


def test_transport_errors_name_device_and_step(hostbed, tmp_path):
    with pytest.raises(MtlEdgeError, match=r"device hostbed \(serial .*\): no Python at /no/such/python on the "
                                           r"device \(step 'check the runner'\).*Termux.*pkg install python"):
        transport_for(load_device(hostbed.profile(tmp_path, python="/no/such/python")))
    with pytest.raises(MtlEdgeError, match=r"cannot create or write the work folder /proc/mtl-edge"):
        transport_for(load_device(hostbed.profile(tmp_path, workdir="/proc/mtl-edge")))
    transport = transport_for(load_device(hostbed.profile(tmp_path)))
    transport.remote_dir = "/proc/sys"  # the device refuses the file
    local = tmp_path / "blob.bin"
    local.write_bytes(b"x" * 10)
    with pytest.raises(MtlEdgeError, match=r"adb push of .*blob\.bin to /proc/sys/blob\.bin failed \(step 'push "
                                           r"blob\.bin', exit 1\).*failed to copy"):
        transport.put(local, "blob.bin")
    with pytest.raises(RunnerTimeout):
        transport.run(["sh", "-c", "echo STEP sleeping >&2; exec sleep 339.25"], timeout=2)
    _wait_for(lambda: not _processes("sleep 339.25"), "the timed-out command still runs on the device: its end")


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_environment_records_missing_android_facts(hostbed, tmp_path):
    transport = transport_for(load_device(hostbed.profile(tmp_path)))
    facts = transport.environment()
    assert facts["machine"] == os.uname().machine and facts["adb_serial"] == hostbed.serial
    assert facts["android_model"] is None and facts["android_version"] is None  # no getprop on this host
    assert {"android_model", "android_version"} <= set(facts["missing"])
    assert facts["cpu_count"] == os.cpu_count()


def _wait_for(condition, what: str, limit: float = 120):
    """Poll until ``condition()`` returns something true and return it (``limit`` only guards a hang)."""
    deadline = time.monotonic() + limit
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not seen within {limit:.0f} s"
        time.sleep(0.02)
    return found


def _processes(needle: str) -> list[int]:
    return [p for p in _pids() if needle in _cmdline(p)]


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _running_script(script: str) -> int | None:
    """The pid of ``python SCRIPT ...`` (not of the adb client or shell whose command line mentions it)."""
    return next((p for p in _pids() if _argv(p)[1:2] == [script]), None)


class _Dropper(threading.Thread):
    """Kills the bed's adbd once ``ready()`` gives a pid, after freezing that process (SIGSTOP): the device goes
    away at a known point of the run, however slow the machine, and the frozen process cannot finish first."""

    def __init__(self, bed: "HostBed", ready, what: str):
        super().__init__(daemon=True)
        self.bed, self.ready, self.what, self.pid, self.error = bed, ready, what, None, None

    def run(self):
        try:
            self.pid = _wait_for(self.ready, self.what)
            os.kill(self.pid, signal.SIGSTOP)
            self.bed.kill_adbd()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self):
        self.join(timeout=180)
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.error:
            raise self.error


def test_device_going_offline_mid_run_is_a_failure(adb, tmp_path):
    """adbd is killed while the command runs (its pid file written, frozen in its sleep); the adb client then
    exits 0 with the output cut short: the missing end marker and `adb devices` make that a failure."""
    bed = HostBed(adb, tmp_path)
    pid_file = tmp_path / "command.pid"
    dropper = _Dropper(bed, lambda: pid_file.is_file() and int(pid_file.read_text()), "the command's pid file")
    try:
        transport = transport_for(load_device(bed.profile(tmp_path)))
        dropper.start()
        # the sleep outlasts the run's timeout: only noticing the drop can end the call with this error
        with pytest.raises(MtlEdgeError, match=rf"device hostbed \(serial {bed.serial}\) went offline during step "
                                               r"'run runner' \(the runner's output ended without its end marker\): "
                                               r"adb now lists it as offline"):
            transport.run(["sh", "-c", 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && echo started && exec sleep 300; '
                                       "echo MTL-EDGE-RUNNER-END", str(pid_file)], timeout=60)
        dropper.finish()
        # the facts this relies on: the client exited 0 without the rest of the output, adb says offline
        assert bed.devices()[bed.serial] == "offline"
        with pytest.raises(MtlEdgeError, match=r"is offline, not ready \(step 'connect'\)"):
            transport_for(load_device(bed.profile(tmp_path)))
    finally:
        bed.stop()


def test_an_unauthorized_phone_is_named_with_what_to_do(adb, tmp_path):
    """adbd answers the handshake with AUTH and rejects every key (a phone whose 'Allow USB debugging' prompt
    nobody accepted): the real adb client lists it as unauthorized, and the transport says so, for a profile
    whose serial adb already lists and for one it has to `adb connect` first."""
    bed = HostBed(adb, tmp_path, unauthorized=True)
    try:
        assert bed.devices()[bed.serial] == "unauthorized"
        with pytest.raises(MtlEdgeError, match=rf"device hostbed \(serial {bed.serial}\) is unauthorized, not ready "
                                               r"\(step 'connect'\): accept the 'Allow USB debugging' prompt"):
            transport_for(load_device(bed.profile(tmp_path)))
        bed.call("disconnect", bed.serial)
        assert bed.serial not in bed.devices()
        with pytest.raises(MtlEdgeError, match=r"is unauthorized, not ready \(step 'connect'\)"):
            transport_for(load_device(bed.profile(tmp_path)))  # connects itself: "failed to authenticate"
        assert not (tmp_path / "device-work").exists()  # nothing was run on the device
    finally:
        bed.stop()


def test_a_full_device_storage_is_named_and_leaves_no_partial_file(hostbed, tmp_path):
    """The device's work folder is a real 256 KiB tmpfs: a push that does not fit fails with the device's
    'No space left on device', named as full storage, and no partial file is left behind; once space is
    freed the same push works."""
    need(os.geteuid() == 0, "mounting a small tmpfs needs root")
    work = tmp_path / "device-work"
    work.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(work)], check=True)
    try:
        transport = transport_for(load_device(hostbed.profile(tmp_path)))
        filler = work / "filler.bin"
        filler.write_bytes(b"\0" * 200 * 1024)  # what earlier runs left on the device
        model = tmp_path / "model.onnx"
        model.write_bytes(os.urandom(150 * 1024))
        with pytest.raises(MtlEdgeError, match=r"adb push of .*model\.onnx to .*device-work/model\.onnx failed "
                                               r"\(step 'push model\.onnx', exit 1\) \(the device's storage is full: "
                                               r"free space in .*device-work\):.*No space left on device"):
            transport.put(model, "model.onnx")
        assert sorted(p.name for p in work.iterdir()) == ["filler.bin"]  # no half-written model, no temporary
        filler.unlink()
        remote = transport.put(model, "model.onnx")
        assert Path(remote).read_bytes() == model.read_bytes()
    finally:
        subprocess.run(["umount", str(work)], check=True)


# ---------------------------------------------------------------------------------------------- harness

def _export(demo_corpus, tmp_path_factory) -> Path:
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    run = tmp_path_factory.mktemp("adb-export") / "run"
    train_run(demo_corpus, TASKS, run, TrainConfig(hidden=(128, 128, 128), epochs=2))  # the multi-task model only
    return export_run(run, allow_degraded=True, latency_runs=5, precisions=("fp32",), formats=("onnx",),
                      progress=False).folder


@pytest.fixture(scope="module")
def export_dir(demo_corpus, tmp_path_factory):
    return _export(demo_corpus, tmp_path_factory)


QUICK = dict(runtime="onnxruntime", precisions="fp32", min_runs=3, min_secs=0, max_secs=1, warmup=1, progress=False)


@pytest.mark.slow
def test_bench_over_adb_on_the_host_bed(hostbed, export_dir, tmp_path):
    from mtl_edge.bench import bench

    profile = hostbed.profile(tmp_path)
    out = bench(export_dir, profile, results=tmp_path / "results", **QUICK)
    (m,) = out.measurements
    assert m["device"] == "hostbed" and m["transport"] == "adb" and m["machine"] == os.uname().machine
    assert m["runs"] >= 3 and m["peak_rss_mb"] > 0 and m["hwm_reset"] is True and m["emulated"] is False
    assert m["adb_serial"] == hostbed.serial and "android_model" in m["device_missing"]
    # the host bed runs the runner on this machine with this onnxruntime: its answers equal the export's by
    # construction (the adb path is what is checked); the Android bed's test below is the aarch64 one
    assert m["answers_status"] == "ok", {k: v for k, v in m.items() if k.startswith("answers")}
    assert out.results == [tmp_path / "results" / "hostbed-onnxruntime.jsonl"]


@pytest.mark.slow
def test_bench_fails_clearly_when_the_device_drops_mid_measurement(adb, export_dir, tmp_path):
    from mtl_edge.bench import bench

    bed = HostBed(adb, tmp_path)
    runner = f"{tmp_path / 'device-work'}/mtl_edge_runner.py"
    # the device goes once the runner process is there (frozen, so it cannot finish first)
    dropper = _Dropper(bed, lambda: _running_script(runner), "the runner on the device")
    try:
        dropper.start()
        with pytest.raises(MtlEdgeError, match=r"artefact onnx/multi\.fp32\.onnx .*: device hostbed \(serial "
                                               r".*\) went offline during step 'run runner'.*; measurements already "
                                               r"written are kept in"):
            bench(export_dir, bed.profile(tmp_path), results=tmp_path / "results",
                  **{**QUICK, "min_secs": 6, "max_secs": 8})
        dropper.finish()
        assert not (tmp_path / "results" / "hostbed-onnxruntime.jsonl").exists()  # no half line, no false line
    finally:
        bed.stop()


# ---------------------------------------------------------------------------------------------- Android bed


@pytest.fixture(scope="module")
def android_bed(adb):
    need(os.geteuid() == 0, "the Android test bed needs root (chroot into the arm64 rootfs, mounts, binfmt_misc)")
    need(Path("/proc/sys/fs/binfmt_misc").is_dir(), "this kernel has no binfmt_misc: arm64 programs cannot run")
    for tool, package in (("zstd", "zstd"), ("mmdebstrap", "mmdebstrap"), ("arch-test", "arch-test")):
        _require(tool, package)
    from mtl_edge.devbed import android

    started = time.monotonic()
    profile = android.up()
    yield {"profile": profile, "device": load_device(profile), "seconds": time.monotonic() - started}
    android.down()


def _bed_adb(device, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    argv = [shutil.which("adb"), "-P", str(device.extra["adb_server_port"]), "-s", device.extra["serial"], *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_android_bed_profile_and_aarch64_shell(android_bed):
    device = android_bed["device"]
    assert android_bed["profile"].name == "android-emulated.toml"
    assert (device.name, device.transport, device.emulated, device.template) == ("android-emulated", "adb", True, False)
    assert device.workdir == "/data/local/tmp/mtl-edge-bench" and device.python == "/opt/mtl-edge/venv/bin/python"
    assert device.extra["serial"].startswith("127.0.0.1:") and device.cpu_affinity == "0"
    done = _bed_adb(device, "shell", "uname -m; echo $QEMU_CPU; exit 9")
    assert (done.returncode, done.stdout.split()) == (9, ["aarch64", "cortex-a72"])


@pytest.mark.slow
def test_android_bed_has_no_getprop_and_the_results_say_so(android_bed):
    device = android_bed["device"]
    done = _bed_adb(device, "shell", "getprop ro.product.model")
    assert done.returncode == 127 and "not found" in done.stderr
    facts = transport_for(device).environment()
    assert facts["machine"] == "aarch64" and facts["adb_serial"] == device.extra["serial"]
    assert facts["android_model"] is None and facts["android_version"] is None
    assert {"android_model", "android_version"} <= set(facts["missing"])


@pytest.mark.slow
def test_android_bed_without_python_says_what_is_needed(android_bed, tmp_path):
    text = android_bed["profile"].read_text().replace('python = "/opt/mtl-edge/venv/bin/python"',
                                                       'python = "/data/data/com.termux/files/usr/bin/python"')
    phone = tmp_path / "phone.toml"
    phone.write_text(text)
    with pytest.raises(MtlEdgeError, match=r"no Python at /data/data/com\.termux/files/usr/bin/python on the device "
                                           r"\(step 'check the runner'\); the runner needs a Python with numpy"):
        transport_for(load_device(phone))


ANSWERS = """
import json, sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
names = [o.name for o in session.get_outputs()]
outputs = session.run(None, {session.get_inputs()[0].name: x})
print(json.dumps({n: o.tolist() for n, o in zip(names, outputs)}))
"""


@pytest.mark.slow
def test_android_bed_end_to_end_benchmark(android_bed, export_dir, tmp_path):
    import onnxruntime as ort

    from mtl_edge.bench import bench

    device = android_bed["device"]
    out = bench(export_dir, android_bed["profile"], results=tmp_path / "results", **QUICK)
    (m,) = out.measurements
    assert m["device"] == "android-emulated" and m["transport"] == "adb"
    assert m["machine"] == "aarch64" and m["emulated"] is True
    assert m["runs"] >= 3 and m["peak_rss_mb"] > 0 and m["hwm_reset"] is True
    assert m["adb_serial"] == device.extra["serial"] and m["cpu_count"]
    assert m["android_model"] is None and {"android_model", "android_version"} <= set(m["device_missing"])
    # a real cross-architecture answers check: aarch64 onnxruntime under qemu against this machine's x86_64 one
    # (on CI a missing bed is a failure, not a skip: see `need`)
    assert m["answers_status"] == "ok", {k: v for k, v in m.items() if k.startswith("answers")}
    line = json.loads((tmp_path / "results" / "android-emulated-onnxruntime.jsonl").read_text().splitlines()[-1])
    assert line["emulated"] is True and line["machine"] == "aarch64"

    # the same artefact on the same test features: the phone's logits match this machine's
    manifest = json.loads((export_dir / "manifest.json").read_text())
    entry = next(a for a in manifest["artefacts"] if a["format"] == "onnx" and a["model"] == "multi")
    with np.load(export_dir / manifest.get("testset", "testset.npz")) as ts:
        features = np.ascontiguousarray(ts["features"][:32], dtype=np.float32)
    np.save(tmp_path / "x.npy", features)
    (tmp_path / "answers.py").write_text(ANSWERS)
    transport = transport_for(device)
    model = transport.put(export_dir / entry["path"], "answers-model.onnx")
    x = transport.put(tmp_path / "x.npy", "answers-x.npy")
    script = transport.put(tmp_path / "answers.py", "answers.py")
    done = transport.run([device.python, script, model, x], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    on_phone = json.loads(done.stdout.strip().splitlines()[-1])
    session = ort.InferenceSession(str(export_dir / entry["path"]), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: features})
    here = dict(zip([o.name for o in session.get_outputs()], outputs))
    assert sorted(on_phone) == sorted(here)
    for name, logits in here.items():
        np.testing.assert_allclose(np.asarray(on_phone[name], dtype=np.float32), logits, rtol=1e-3, atol=1e-3)
        assert (np.argmax(on_phone[name], axis=1) == np.argmax(logits, axis=1)).all()


@pytest.mark.slow
def test_android_bed_down_stops_everything(android_bed):
    from mtl_edge.devbed import android

    state = json.loads((android.folder() / "state.json").read_text())
    android.down()
    assert android.status()["state"] == "down"
    assert not process_alive(state["adbd_pid"]) and not android._adb_server_pids(state["server_port"])
    android.down()  # idempotent
    assert android.status()["state"] == "down"
