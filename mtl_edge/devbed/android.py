"""The Android test bed: the real adb client and server talking to a small device-side adbd over TCP.

No Android device or emulator can run here and no adbd exists for this host, so the bed is the
project's own adb protocol server (``mtl_edge.devbed.adbd``) whose commands run inside the arm64
Debian userland of the pi4 bed under qemu-user: the "phone" executes aarch64 code, and everything on
this side of the wire is the real ``adb`` (Debian package adb, 29.0.6) that a real phone would meet.

``up()``: the rootfs (``rootfs.ensure_rootfs``) and qemu-aarch64 in binfmt_misc (shared with the pi4
bed), /proc, /dev and /sys mounted in it, ``/data/local/tmp`` created, then::

    python -m mtl_edge.devbed.adbd --port PORT --root ROOTFS       # 127.0.0.1:5601 or a free port
    adb -P SERVER start-server                                      # a PRIVATE adb server
    adb -P SERVER connect 127.0.0.1:PORT                            # its text is checked (exit 0 on failure)

checks ``adb shell uname -m`` says aarch64, records pids and ports in the state folder and writes the
profile ``${XDG_CONFIG_HOME:-~/.config}/mtl-edge/devices/android-emulated.toml`` (``emulated = true``).
``down()`` stops the private adb server, adbd and whatever it ran, unmounts; safe when nothing is up.

What the bed does not emulate (adbd.py's docstring has the list): getprop (the results record the
Android model and version as missing), dumpsys, pm/am/cmd, SELinux, app processes and users,
authentication, USB. Timings under qemu are not performance figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mtl_edge.atomic import write_json, write_text
from mtl_edge.devbed import (Progress, _quiet, config_dir, locked, log_tail, process_alive, read_state, require_root, run,
                             state_dir)
from mtl_edge.errors import MtlEdgeError

NAME = "android"
PROFILE_NAME = "android-emulated"
HOST = "127.0.0.1"
# used when free, else any free port; outside 5555-5585, the ports every adb server probes for emulators
# (an adbd there would also show up as "emulator-55xx" in every adb server on this machine)
ADBD_PORT = 5601
SERVER_PORT = 5137  # the private adb server (the usual one is 5037), when free
WORKDIR = "/data/local/tmp/mtl-edge-bench"
PYTHON = "/opt/mtl-edge/venv/bin/python"
READY_TIMEOUT = 60.0
ADBD_MODULE = "mtl_edge.devbed.adbd"


def folder() -> Path:
    return state_dir() / NAME


def profile_path() -> Path:
    return config_dir() / "devices" / f"{PROFILE_NAME}.toml"


def _state_file() -> Path:
    return folder() / "state.json"


def _log_file() -> Path:
    return folder() / "adbd.log"


def _adb() -> str:
    exe = shutil.which("adb")
    if exe is None:
        raise MtlEdgeError(f"devbed {NAME}: the adb client is missing (Debian package adb; scripts/setup-system.sh "
                           "installs it)")
    return exe


def adb_argv(server_port: int, *args: str) -> list[str]:
    return [_adb(), "-P", str(server_port), *args]


# ---- processes ----------------------------------------------------------------------------------

def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _is_adbd(pid: int, port: int) -> bool:
    args = _cmdline(pid)
    return process_alive(pid) and ADBD_MODULE in args and str(port) in args


def _adb_server_pids(server_port: int) -> list[int]:
    """The adb server daemons listening on ``server_port`` (``adb -L tcp:PORT fork-server server``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            args = _cmdline(int(entry.name))
            if args and os.path.basename(args[0]) == "adb" and "fork-server" in args and f"tcp:{server_port}" in args:
                found.append(int(entry.name))
    return found


def _strays(adbd_pid: int) -> list[int]:
    """Commands a killed adbd left behind (they carry MTL_EDGE_ADBD_PID=<its pid> in their environment)."""
    from mtl_edge.devbed.adbd import MARKER_ENV

    needle = f"{MARKER_ENV}={adbd_pid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _stop(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            if not process_alive(pid):
                return
            time.sleep(0.1)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
            return True
        except OSError:
            return False


def _pick_port(preferred: int, avoid: set[int] = frozenset()) -> int:
    if preferred not in avoid and _free(preferred):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


# ---- the pieces ---------------------------------------------------------------------------------

def _data_local_tmp(rootfs: Path) -> None:
    """/data/local/tmp in the rootfs (where adb's shell user may write on a phone)."""
    target = rootfs / "data" / "local" / "tmp"
    target.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(target)
    if not real.startswith(os.path.realpath(rootfs) + "/"):
        raise MtlEdgeError(f"devbed {NAME}: /data/local/tmp in the rootfs points outside it ({real})")
    os.chmod(target, 0o1777)


def _start_adbd(rootfs: Path, port: int, serial: str) -> int:
    """adbd.py as a background process in its own session; returns its pid once it listens."""
    ready = folder() / "adbd.ready.json"
    ready.unlink(missing_ok=True)
    source_root = str(Path(__file__).resolve().parents[2])  # importable from a source tree too
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH", "")) if p)}
    argv = [sys.executable, "-m", ADBD_MODULE, "--host", HOST, "--port", str(port), "--root", str(rootfs),
            "--serial", serial, "--ready-file", str(ready)]
    with open(_log_file(), "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        pid = os.posix_spawn(sys.executable, argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ])
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.is_file():
        if not process_alive(pid):
            raise MtlEdgeError(f"devbed {NAME}: adbd exited at start (log {_log_file()}): {log_tail(_log_file())}")
        if time.monotonic() > deadline:
            raise MtlEdgeError(f"devbed {NAME}: adbd did not listen on {HOST}:{port} within {READY_TIMEOUT:.0f} s "
                               f"(log {_log_file()}): {log_tail(_log_file())}")
        time.sleep(0.1)
    return pid


def _start_server(server_port: int) -> int | None:
    run(adb_argv(server_port, "start-server"), f"devbed {NAME}: adb -P {server_port} start-server", timeout=60,
        stdin=subprocess.DEVNULL)
    pids = _adb_server_pids(server_port)
    return pids[0] if pids else None


def _connect(server_port: int, serial: str, progress: Progress) -> None:
    from mtl_edge.bench.transports.adb import connect_failed, parse_devices

    progress(f"adb connect {serial}")
    done = run(adb_argv(server_port, "connect", serial), f"devbed {NAME}: adb connect {serial}", timeout=60,
               stdin=subprocess.DEVNULL)
    text = (done.stdout + done.stderr).strip()
    if connect_failed(text):  # adb connect exits 0 when it fails: its text says so
        raise MtlEdgeError(f"devbed {NAME}: adb connect {serial} failed: {text} (adbd log: {log_tail(_log_file())})")
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        listed = parse_devices(run(adb_argv(server_port, "devices"), f"devbed {NAME}: adb devices", timeout=60,
                                   stdin=subprocess.DEVNULL).stdout)
        if listed.get(serial) == "device":
            return
        if time.monotonic() > deadline:
            raise MtlEdgeError(f"devbed {NAME}: {serial} is {listed.get(serial) or 'not listed'} in `adb devices` "
                               f"after {READY_TIMEOUT:.0f} s (adbd log: {log_tail(_log_file())})")
        time.sleep(0.25)


def _check_aarch64(server_port: int, serial: str, progress: Progress) -> None:
    progress("checking the device runs aarch64 code (adb shell uname -m)")
    done = run(adb_argv(server_port, "-s", serial, "shell", "uname -m"), f"devbed {NAME}: adb shell uname -m",
               timeout=120, stdin=subprocess.DEVNULL)
    if done.stdout.strip() != "aarch64":
        raise MtlEdgeError(f"devbed {NAME}: the device says {done.stdout.strip() or '(nothing)'} for uname -m, not "
                           f"aarch64 (is qemu-aarch64 registered with binfmt_misc?): {done.stderr.strip()}")


def _write_profile(state: dict) -> Path:
    def q(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid TOML basic string

    text = "\n".join([
        f"# Written by `mtl-edge devbed up {NAME}`: an emulated Android device. The real adb client and a",
        "# private adb server talk to mtl-edge's own adbd (mtl_edge/devbed/adbd.py), whose commands run in an",
        "# arm64 Debian userland under qemu-user (Cortex-A72). No getprop, dumpsys, SELinux or apps.",
        "# Timings and memory are not performance figures: results carry emulated = true.",
        f"# `mtl-edge devbed down {NAME}` stops it.",
        f"name = {q(PROFILE_NAME)}",
        'transport = "adb"',
        f"serial = {q(state['serial'])}",
        f"adb_server_port = {int(state['server_port'])}",
        f"workdir = {q(WORKDIR)}",
        f"python = {q(PYTHON)}",
        'runtime = "litert"',
        'cpu_affinity = "0"',
        "threads = 1",
        "emulated = true",
        "",
    ])
    path = profile_path()
    write_text(path, text)
    return path


# ---- up / down / status -------------------------------------------------------------------------

def _check_host() -> None:
    require_root(f"devbed {NAME}")
    _adb()
    for tool, package in (("chroot", "coreutils"), ("zstd", "zstd")):
        if shutil.which(tool) is None:
            raise MtlEdgeError(f"devbed {NAME}: {tool} is missing (Debian package {package}; "
                               "scripts/setup-system.sh installs it)")


def up(progress: Progress = _quiet) -> Path:
    """Start the bed (idempotent: a running bed is left as it is) and return its profile's path."""
    from mtl_edge.devbed import qemu, rootfs as rootfs_mod

    _check_host()
    folder().mkdir(parents=True, exist_ok=True)
    with locked(folder() / ".lock"):
        current = status()
        if current["state"] == "up":
            progress("already up")
            return _write_profile(read_state(_state_file()))
        if current["state"] == "partial":
            progress("clearing a half-started bed")
            _down(progress)
        rootfs = rootfs_mod.ensure_rootfs(progress)
        qemu.ensure_binfmt(progress)
        try:
            rootfs_mod.mount(rootfs, NAME)
            _data_local_tmp(rootfs)
            port = _pick_port(ADBD_PORT)
            server_port = _pick_port(SERVER_PORT, avoid={port})
            serial = f"{HOST}:{port}"
            state = {"rootfs": str(rootfs), "serial": serial, "port": port, "server_port": server_port,
                     "started": time.time()}
            write_json(_state_file(), state)
            progress(f"starting adbd on {serial} (commands: chroot into the arm64 rootfs)")
            state["adbd_pid"] = _start_adbd(rootfs, port, serial)
            write_json(_state_file(), state)
            progress(f"starting a private adb server on port {server_port}")
            state["server_pid"] = _start_server(server_port)
            write_json(_state_file(), state)
            _connect(server_port, serial, progress)
            _check_aarch64(server_port, serial, progress)
        except BaseException:
            try:
                _down(_quiet)
            except MtlEdgeError:
                pass
            raise
        return _write_profile(state)


def _down(progress: Progress) -> None:
    from mtl_edge.devbed import rootfs as rootfs_mod

    state = read_state(_state_file())
    server_port = state.get("server_port")
    if isinstance(server_port, int):
        if _adb_server_pids(server_port):
            progress(f"stopping the private adb server (port {server_port})")
            try:
                subprocess.run(adb_argv(server_port, "kill-server"), capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired, MtlEdgeError):
                pass
        for pid in _adb_server_pids(server_port):
            _stop(pid)
    pid, port = state.get("adbd_pid"), state.get("port")
    if isinstance(pid, int):
        if isinstance(port, int) and _is_adbd(pid, port):
            progress("stopping adbd and what it runs")
            _stop(pid)
        for stray in _strays(pid):
            _stop(stray)
    root = state.get("rootfs")
    if root:
        rootfs_mod.unmount(Path(root), NAME)
    _state_file().unlink(missing_ok=True)
    (folder() / "adbd.ready.json").unlink(missing_ok=True)


def down(progress: Progress = _quiet) -> None:
    """Stop the private adb server, adbd and its commands, unmount. Safe when nothing is up."""
    require_root(f"devbed {NAME}")
    folder().mkdir(parents=True, exist_ok=True)
    with locked(folder() / ".lock"):
        _down(progress)


def status() -> dict:
    """``state``: up (adbd runs and the private adb server lists it as 'device'), partial, down."""
    from mtl_edge.bench.transports.adb import parse_devices

    state = read_state(_state_file())
    pid, port, server_port = state.get("adbd_pid"), state.get("port"), state.get("server_port")
    serial = state.get("serial")
    running = isinstance(pid, int) and isinstance(port, int) and _is_adbd(pid, port)
    server = isinstance(server_port, int) and bool(_adb_server_pids(server_port))
    listed = None
    if running and server:
        try:
            done = subprocess.run(adb_argv(server_port, "devices"), capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
            listed = parse_devices(done.stdout).get(serial)
        except (OSError, subprocess.TimeoutExpired, MtlEdgeError):
            listed = None
    summary = "up" if listed == "device" else ("partial" if running or server or state else "down")
    return {"name": NAME, "state": summary, "serial": serial, "adb_state": listed,
            "adbd_pid": pid if running else None, "adb_server_port": server_port if server else None,
            "profile": str(profile_path()) if profile_path().is_file() else None, "rootfs": state.get("rootfs"),
            "emulated": True}
