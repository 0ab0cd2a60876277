"""The SSH transport against a REAL OpenSSH server: sshd on 127.0.0.1 (and one in a network namespace
whose link is cut mid-run), generated host and client keys, key-only auth, SFTP, the real runner."""

from __future__ import annotations

import getpass
import json
import logging
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import need
from mtl_edge.bench import bench, load_device, read_lines
from mtl_edge.bench.transports import RunnerTimeout, transport_for
from mtl_edge.errors import MtlEdgeError

SSHD = "/usr/sbin/sshd"
TASKS = ["kws", "speaker", "scene", "instrument"]


def _require_sshd() -> None:
    need(os.geteuid() == 0, "the sshd test bed needs root (sshd switches to the logged-in user)")
    need(os.access(SSHD, os.X_OK), f"{SSHD} not installed (Debian package openssh-server)")
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen not installed (Debian package openssh-client)")


def _free_port(host: str = "127.0.0.1") -> int:
    with closing(socket.socket()) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mtl-edge-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


def _fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True,
                          text=True).stdout.split()[1]


def _known_line(host: str, port: int, pub: Path) -> str:
    kind, b64 = pub.read_text().split()[:2]
    return f"{host if port == 22 else f'[{host}]:{port}'} {kind} {b64}\n"


@dataclass
class Sshd:
    host: str
    port: int
    folder: Path
    host_pub: Path
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen
    log: Path


def _start_sshd(folder: Path, host: str, port: int, prefix: tuple[str, ...] = ()) -> Sshd:
    """sshd -D -e on host:port with a fresh host key and an authorized client key (caller stops ``proc``)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    host_key = _keygen(folder / "host_ed25519")
    client_key = _keygen(folder / "client_ed25519")
    authorized = folder / "authorized_keys"
    shutil.copyfile(folder / "client_ed25519.pub", authorized)
    config = folder / "sshd_config"
    config.write_text(f"ListenAddress {host}\nPort {port}\nHostKey {host_key}\nUsePAM no\nStrictModes no\n"
                      "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
                      f"KbdInteractiveAuthentication no\nAuthorizedKeysFile {authorized}\nPidFile none\n"
                      "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n")
    checked = subprocess.run([*prefix, SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    log = folder / "sshd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=fh)
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(_known_line(host, port, folder / "host_ed25519.pub"))
    server = Sshd(host, port, folder, folder / "host_ed25519.pub", client_key, known_hosts, proc, log)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return server
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise AssertionError(f"sshd did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    _require_sshd()
    server = _start_sshd(tmp_path_factory.mktemp("sshd"), "127.0.0.1", _free_port())
    try:
        yield server
    finally:
        _stop(server.proc)


@pytest.fixture(autouse=True)
def _staging_in_tmp(tmp_path, monkeypatch):
    """The transport's local staging folder goes under ${XDG_CACHE_HOME}: keep it out of the real home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string (JSON escapes are TOML escapes)


def _profile(folder: Path, server: Sshd, name: str = "loop", **fields) -> Path:
    data = {"name": name, "transport": "ssh", "host": server.host, "port": server.port, "user": getpass.getuser(),
            "key": server.client_key, "known_hosts": server.known_hosts, "workdir": folder / "remote",
            "python": sys.executable, "runtime": "onnxruntime", "cpu_affinity": "", "threads": 1,
            "connect_timeout": 5, "keepalive": 1, **fields}
    path = folder / f"{name}.toml"
    path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in data.items()))
    return path


def _connect(profile: Path):
    return closing(transport_for(load_device(profile)))


def _home() -> Path:
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


# ------------------------------------------------------------------------------------------ push, run, read


def test_put_run_and_read_back_with_hostile_names(sshd, tmp_path):
    canary = tmp_path / "pwned"
    odd_name = "it's a \"$(touch mtl-edge-pwned)\" `touch mtl-edge-pwned`;$HOME & name.txt"
    local = tmp_path / "staging" / odd_name
    local.parent.mkdir()
    local.write_text("hello from the host\n")
    hostile = [f"$(touch {canary})", f"`touch {canary}`", f"; touch {canary}", f"| touch {canary}", "a b", "'",
               '"', "\\", "*", "~", "$HOME", "\n"]
    profile = _profile(tmp_path, sshd)
    with _connect(profile) as t:
        assert t.workdir() == tmp_path / "cache" / "mtl-edge" / "bench-staging" / "loop" and t.workdir().is_dir()
        remote = t.put(local, odd_name)
        assert remote == str(tmp_path / "remote" / odd_name) and Path(remote).read_text() == "hello from the host\n"
        inode = os.stat(remote).st_ino
        assert t.put(local, odd_name) == remote and os.stat(remote).st_ino == inode  # cached: not sent again
        code = ("import os, sys, pathlib; print(pathlib.Path(sys.argv[1]).read_text(), end=''); "
                "print(repr(sys.argv[2:])); print(os.environ['OMP_NUM_THREADS'], repr(os.environ['MTL_X']))")
        proc = t.run([t.python, "-c", code, remote, *hostile], timeout=60, env={"MTL_X": f"$(touch {canary}) x"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"hello from the host\n{hostile!r}\n1 {f'$(touch {canary}) x'!r}\n"
        assert proc.stderr == ""
    with _connect(profile) as t:  # a new connection finds the same bytes by size + sha256 (a quoted sha256sum)
        assert t.put(local, odd_name) == remote and os.stat(remote).st_ino == inode
        local.write_text("changed\n")
        assert t.put(local, odd_name) == remote and Path(remote).read_text() == "changed\n"
    assert not canary.exists() and not (_home() / "mtl-edge-pwned").exists()
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == [odd_name]  # no .part files left


def test_exit_codes_and_both_streams_come_back_without_deadlock(sshd, tmp_path):
    with _connect(_profile(tmp_path, sshd)) as t:
        proc = t.run([t.python, "-c", "import sys; print('out'); print('STEP load multi', file=sys.stderr); "
                                      "print('boom', file=sys.stderr); sys.exit(3)"], timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "STEP load multi\nboom\n")
        assert t.run(["sh", "-c", "kill -SEGV $$"], timeout=60).returncode == 128 + signal.SIGSEGV
        big = t.run([t.python, "-c", "import sys\nfor i in range(3000):\n sys.stdout.write('o' * 999 + '\\n')\n"
                                     " sys.stderr.write('e' * 999 + '\\n')"], timeout=60)
        assert big.returncode == 0 and big.stdout == ("o" * 999 + "\n") * 3000 and big.stderr == ("e" * 999 + "\n") * 3000
        assert t.argv("/w/runner.py", "/w/job.json") == [t.python, "/w/runner.py", "/w/job.json"]
    with _connect(_profile(tmp_path, sshd, cpu_affinity="0")) as t:
        argv = t.argv("/w/runner.py", "/w/job.json")
        assert argv[:3] == ["taskset", "-c", "0"]
        assert t.run([*argv[:3], "cat", "/proc/self/status"], timeout=60).stdout.count("Cpus_allowed_list:\t0\n") == 1


def _wait_for(condition, what: str, limit: float = 120):
    """Poll until ``condition()`` is true (``limit`` only guards a hang; nothing here races a clock)."""
    deadline = time.monotonic() + limit
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (waited {limit:.0f} s)")
        time.sleep(0.02)
    return found


def _argv(proc: Path) -> list[str]:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" in status.read_text()
    except OSError:
        return True


def test_a_timeout_raises_runner_timeout_and_kills_the_remote_run(sshd, tmp_path):
    pid_file = tmp_path / "pid"
    with _connect(_profile(tmp_path, sshd)) as t:
        # the runner sleeps far longer than the test may wait: only the 2 s timeout can end the call
        with pytest.raises(RunnerTimeout) as info:
            t.run([t.python, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
                                   "print('STEP measure multi', file=sys.stderr, flush=True); time.sleep(900)",
                   str(pid_file)], timeout=2)
        assert info.value.stderr == "STEP measure multi\n"
        assert t.run(["true"], timeout=60).returncode == 0  # the connection is still usable
    pid = int(pid_file.read_text())
    _wait_for(lambda: _gone(pid), f"the timed-out runner (pid {pid}) is still running on the device")


def test_environment_and_temperature_come_from_the_device(sshd, tmp_path):
    with _connect(_profile(tmp_path, sshd)) as t:
        env = t.environment()
        temperature = t.temperature()
    assert env["machine"] == platform.machine()
    assert env["cpu_count"] >= 1 and env["cpu_model"]
    assert {"vcgencmd_temperature_c", "throttled"} <= set(env["missing"])  # absent here: recorded, not an error
    assert env["vcgencmd_temperature_c"] is None and env["throttled"] is None
    assert temperature is None or isinstance(temperature, float)
    assert (env["temperature_c"] is None) == ("temperature_c" in env["missing"])


# ------------------------------------------------------------------------------------------ refusals


def test_a_wrong_client_key_fails_authentication(sshd, tmp_path):
    other = _keygen(tmp_path / "not_authorized")
    with pytest.raises(MtlEdgeError, match=r"device loop \(.*127\.0\.0\.1:\d+\): authentication failed.*"
                                           r"step: authenticate") as info:
        transport_for(load_device(_profile(tmp_path, sshd, key=other)))
    assert str(other) in str(info.value)
    secret = "".join(other.read_text().splitlines()[1:-1])
    assert secret[:40] not in str(info.value)
    with pytest.raises(MtlEdgeError, match=r"private key file .*missing_key does not exist.*step: authenticate"):
        transport_for(load_device(_profile(tmp_path, sshd, key=tmp_path / "missing_key")))
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)], check=True)
    with pytest.raises(MtlEdgeError, match=r"private key .*locked is protected by a passphrase.*step: authenticate"):
        transport_for(load_device(_profile(tmp_path, sshd, key=locked)))


def test_an_unknown_host_key_is_refused_with_the_remedy(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(MtlEdgeError, match="unknown host key.*step: verify host key") as info:
        transport_for(load_device(_profile(tmp_path, sshd, known_hosts=empty)))
    message = str(info.value)
    assert _fingerprint(sshd.host_pub) in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in message and "accept_unknown_host = true" in message
    assert empty.read_text() == ""  # nothing was trusted


def test_a_changed_host_key_is_refused(sshd, tmp_path):
    impostor = _keygen(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(_known_line("127.0.0.1", sshd.port, tmp_path / "impostor.pub"))
    with pytest.raises(MtlEdgeError, match="host key of 127.0.0.1:\\d+ has CHANGED.*step: verify host key") as info:
        transport_for(load_device(_profile(tmp_path, sshd, known_hosts=known, accept_unknown_host=True)))
    message = str(info.value)
    assert _fingerprint(tmp_path / "impostor.pub") in message and _fingerprint(sshd.host_pub) in message
    assert str(known) in message and impostor.exists()


def test_accept_unknown_host_is_an_opt_in_that_is_logged_and_recorded(sshd, tmp_path, caplog):
    known = tmp_path / "fresh" / "known_hosts"
    with caplog.at_level(logging.WARNING, logger="mtl_edge.bench.transports.ssh"):
        with _connect(_profile(tmp_path, sshd, known_hosts=known, accept_unknown_host=True)) as t:
            assert t.run(["true"], timeout=60).returncode == 0
    assert any(_fingerprint(sshd.host_pub) in r.getMessage() and "UNKNOWN" in r.getMessage() for r in caplog.records)
    assert known.read_text() == _known_line("127.0.0.1", sshd.port, sshd.host_pub)
    with _connect(_profile(tmp_path, sshd, known_hosts=known)) as t:  # now known: the default policy connects
        assert t.run(["true"], timeout=60).returncode == 0


def test_a_refused_connection_names_host_port_and_step(sshd, tmp_path):
    port = _free_port()
    # refused, not timed out (the profile's connect_timeout is 5 s): the message tells the two apart
    with pytest.raises(MtlEdgeError, match=rf"device loop .*connection refused by 127\.0\.0\.1:{port} "
                                           r"\(step: connect\)"):
        transport_for(load_device(_profile(tmp_path, sshd, port=port)))


def test_a_missing_python_on_the_device_is_named(sshd, tmp_path):
    with pytest.raises(MtlEdgeError, match=r"python /nonexistent/bin/python does not exist .*step: check python"):
        transport_for(load_device(_profile(tmp_path, sshd, python="/nonexistent/bin/python")))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs as the device's work folder (unmounted afterwards)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    need(mounted.returncode == 0, f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_named_and_leaves_no_half_file(sshd, tmp_path, tiny_disk):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    with _connect(_profile(tmp_path, sshd, workdir=tiny_disk)) as t:
        with pytest.raises(MtlEdgeError, match=rf"device loop: the device's disk is full while uploading big\.bin "
                                               rf"to {tiny_disk} \(step: upload\)"):
            t.put(big, "big.bin")
    assert list(tiny_disk.iterdir()) == []


# ------------------------------------------------------------------------------------------ a dropped link


@pytest.fixture
def netns_sshd(tmp_path):
    """sshd inside a network namespace reached through a veth pair; everything is removed afterwards."""
    _require_sshd()
    need(shutil.which("ip") is not None, "ip not installed (Debian package iproute2)")
    tag = os.getpid() % 10_000_000
    ns, veth_host, veth_ns = f"mtlssh{tag}", f"mtlh{tag}", f"mtln{tag}"
    octet = 1 + os.getpid() % 250
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    need(made.returncode == 0, f"cannot create a network namespace ({made.stderr.strip()})")
    server = None
    try:
        for argv in (["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_ns],
                     ["ip", "link", "set", veth_ns, "netns", ns],
                     ["ip", "addr", "add", f"{host_ip}/30", "dev", veth_host],
                     ["ip", "link", "set", veth_host, "up"],
                     ["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", veth_ns],
                     ["ip", "-n", ns, "link", "set", veth_ns, "up"],
                     ["ip", "-n", ns, "link", "set", "lo", "up"]):
            subprocess.run(argv, check=True, capture_output=True)
        server = _start_sshd(tmp_path / "nssshd", ns_ip, 22, prefix=("ip", "netns", "exec", ns))
        yield server, ns, veth_ns
    finally:
        if server is not None:
            _stop(server.proc)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:  # sessions left in OUR namespace (the cut-off `sleep`)
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "link", "del", veth_host], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_link_dropped_mid_run_is_reported_within_seconds(netns_sshd, tmp_path):
    server, ns, veth_ns = netns_sshd
    with _connect(_profile(tmp_path, server, name="pi-in-ns")) as t:
        assert t.run(["true"], timeout=30).returncode == 0

        def cut():  # once the remote command runs (its process exists), the link goes down
            _wait_for(lambda: [p for p in Path("/proc").iterdir() if p.name.isdigit() and _argv(p) == ["sleep", "297"]],
                      "the remote sleep did not start")
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", veth_ns, "down"], check=True)

        cutter = threading.Thread(target=cut, daemon=True)
        cutter.start()
        try:
            # the sleep outlasts the 60 s timeout, which would be a RunnerTimeout: this error is the keepalive's
            # (dead after three 1 s intervals without an answer)
            with pytest.raises(MtlEdgeError, match=r"device pi-in-ns \(.*@10\.213\.\d+\.2:22\): the connection "
                                                   r"dropped during step 'run runner' \(no answer from the device"):
                t.run(["sleep", "297"], timeout=60)
        finally:
            cutter.join(timeout=180)
        with pytest.raises(MtlEdgeError, match="connection is closed"):
            t.run(["true"], timeout=5)


# ------------------------------------------------------------------------------------------ the whole harness


@pytest.fixture(scope="module")
def onnx_export(demo_corpus, tmp_path_factory):
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    run = tmp_path_factory.mktemp("sshbench") / "run"
    train_run(demo_corpus, TASKS, run, TrainConfig(hidden=(128, 128, 128), epochs=1), single=True)
    return export_run(run, allow_degraded=True, latency_runs=5, precisions=("fp32",), formats=("onnx",),
                      progress=False).folder


QUICK = dict(runtime="onnxruntime", precisions="fp32", compare="single", min_runs=5, min_secs=0, max_secs=1, warmup=1,
             progress=False)


@pytest.mark.slow
def test_the_harness_benchmarks_over_ssh_and_resumes(sshd, onnx_export, tmp_path):
    profile = _profile(tmp_path, sshd, name="loopbox")
    results = tmp_path / "results"
    out = bench(onnx_export, device=profile, results=results, **QUICK)
    lines = [m for m in read_lines(results / "loopbox-onnxruntime.jsonl") if m["kind"] == "measurement"]
    assert len(lines) == 1 + len(TASKS) + 1 and len(out.compares) == 1
    for m in lines:
        assert m["transport"] == "ssh" and m["device"] == "loopbox" and m["machine"] == platform.machine()
        assert m["cpu_model"] and m["cpu_count"] >= 1 and m["runs"] >= 5
        assert "temperature_before_c" in m and "temperature_c" in m
        assert {"vcgencmd_temperature_c", "throttled"} <= set(m["device_missing"])
    remote = tmp_path / "remote"
    assert (remote / "mtl_edge_runner.py").is_file() and (remote / "multi.fp32.onnx").is_file()
    assert (remote / "rt_onnxruntime.py").is_file()  # the runtime's module travels with the runner
    assert not list(remote.glob(".*.part-*"))
    again = bench(onnx_export, device=profile, results=results, resume=True, **QUICK)
    assert again.measurements == [] and again.skipped >= len(lines)


@pytest.mark.slow
def test_a_runtime_missing_on_the_device_is_named_over_ssh(sshd, onnx_export, tmp_path):
    bare = tmp_path / "python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # no site-packages: no numpy, no runtime
    bare.chmod(0o755)
    with pytest.raises(MtlEdgeError, match=r"(?s)multi\.fp32\.onnx.*not installed.*measurements already written"):
        bench(onnx_export, device=_profile(tmp_path, sshd, python=bare), results=tmp_path / "r", **QUICK)
