"""The Android test bed: the real adb client and server talking to a small device-side adbd over TCP.

No Android device or emulator can run here and no adbd exists for this host, so the bed is the
project's own adb protocol server (``mtl_edge.devbed.adbd``) whose commands run inside the arm64
Debian userland of the pi4 bed under qemu-user: the "phone" executes aarch64 code, and everything on
this side of the wire is the real ``adb`` (Debian package adb, 29.0.6) that a real phone would meet.

``up()`` (the shared ``lifecycle.Bed``): the rootfs and qemu-aarch64 in binfmt_misc (shared with the
pi4 bed), /proc, /dev and /sys mounted in it, then this bed's own part (``Android.start``):
``/data/local/tmp`` created, then::

    python -m mtl_edge.devbed.adbd --port PORT --root ROOTFS       # 127.0.0.1:5601 or a free port
    adb -P SERVER start-server                                      # a PRIVATE adb server
    adb -P SERVER connect 127.0.0.1:PORT                            # its text is checked (exit 0 on failure)

checks ``adb shell uname -m`` says aarch64, records pids and ports in the state folder and writes the
profile ``${XDG_CONFIG_HOME:-~/.config}/mtl-edge/devices/android-emulated.toml`` (``emulated = true``).
``down()`` stops the private adb server, adbd and whatever it ran, unmounts; safe when nothing is up.

What the bed does not emulate (the docstring of ``mtl_edge.devbed.adbd`` has the list): getprop
(the results record the Android model and version as missing), dumpsys, pm/am/cmd, SELinux, app
processes and users, authentication, USB. Timings under qemu are not performance figures.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mtl_edge.devbed import Progress, run, running, spawn, stop, with_children
from mtl_edge.devbed.lifecycle import Bed
from mtl_edge.errors import MtlEdgeError

NAME = "android"
PROFILE_NAME = "android-emulated"
HOST = "127.0.0.1"
# used when free, else any free port; outside 5555-5585, the ports every adb server probes for emulators
# (an adbd there would also show up as "emulator-55xx" in every adb server on this machine)
ADBD_PORT = 5601
SERVER_PORT = 5137  # the private adb server (the usual one is 5037), when free
WORKDIR = "/data/local/tmp/mtl-edge-bench"
READY_TIMEOUT = 60.0
ADBD_MODULE = "mtl_edge.devbed.adbd"


def _adb() -> str:
    exe = shutil.which("adb")
    if exe is None:
        raise MtlEdgeError(f"devbed {NAME}: the adb client is missing (Debian package adb; scripts/setup-system.sh "
                           "installs it)")
    return exe


def adb_argv(server_port: int, *args: str) -> list[str]:
    return [_adb(), "-P", str(server_port), *args]


def _adb_call(server_port: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``adb -P PORT ARGS`` that must succeed (its exit code; ``connect`` needs its text checked too)."""
    return run(adb_argv(server_port, *args), f"devbed {NAME}: adb {' '.join(args)}", timeout=timeout,
               stdin=subprocess.DEVNULL)


# ---- processes ----------------------------------------------------------------------------------

def _adb_server_pids(server_port: int) -> list[int]:
    """The adb server daemons listening on ``server_port`` (``adb -L tcp:PORT fork-server server``)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if argv and os.path.basename(argv[0]) == "adb" and "fork-server" in argv and f"tcp:{server_port}" in argv:
            found.append(proc.pid)
    return found


def _strays(adbd_pid: int) -> list[int]:
    """Commands a killed adbd left behind (they carry MTL_EDGE_ADBD_PID=<its pid> in their environment)."""
    from mtl_edge.devbed.adbd import MARKER_ENV

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV) == str(adbd_pid):
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


def _adbd(state: dict) -> bool:
    """The recorded pid is still the bed's adbd (its command line names the module and the port)."""
    return isinstance(state.get("port"), int) and running(state.get("adbd_pid"), ADBD_MODULE, str(state["port"]))


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


def _listed(server_port: int, serial: str) -> str | None:
    """What the private adb server says of ``serial`` (device, offline, ...), None when it is not listed."""
    from mtl_edge.bench.transports.adb import parse_devices

    return parse_devices(_adb_call(server_port, "devices").stdout).get(serial)


# ---- the bed ------------------------------------------------------------------------------------

class Android(Bed):
    """The bed's own parts: adbd over the rootfs, a private adb server, ``adb connect``."""

    name = NAME
    profile_name = PROFILE_NAME
    transport = "adb"
    runtime = "litert"
    workdir = WORKDIR
    log_name = "adbd.log"
    about = ("an emulated Android device. The real adb client and a",
             "private adb server talk to mtl-edge's own adbd (mtl_edge/devbed/adbd), whose commands run in an",
             "arm64 Debian userland under qemu-user (Cortex-A72). No getprop, dumpsys, SELinux or apps.")

    def ready_file(self) -> Path:
        return self.folder() / "adbd.ready.json"

    def check_host(self) -> None:
        super().check_host()
        _adb()

    def start(self, rootfs: Path, state: dict, progress: Progress) -> None:
        from mtl_edge.devbed.rootfs import inside

        data = inside(rootfs, "/data/local/tmp")  # where adb's shell user may write on a phone
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o1777)
        port = _pick_port(ADBD_PORT)
        server_port = _pick_port(SERVER_PORT, avoid={port})
        serial = f"{HOST}:{port}"
        state.update(serial=serial, port=port, server_port=server_port)
        progress(f"starting adbd on {serial} (commands: chroot into the arm64 rootfs)")
        self.ready_file().unlink(missing_ok=True)
        source_root = str(Path(__file__).resolve().parents[2])  # importable from a source tree too
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH", "")) if p)}
        state["adbd_pid"] = spawn([sys.executable, "-m", ADBD_MODULE, "--host", HOST, "--port", str(port),
                                   "--root", str(rootfs), "--serial", serial, "--ready-file", str(self.ready_file())],
                                  env, self.log_file())
        self.write_state(state)
        self.wait_for(self.ready_file().is_file, state["adbd_pid"], "adbd", f"listen on {serial}", READY_TIMEOUT,
                      interval=0.1)
        progress(f"starting a private adb server on port {server_port}")
        _adb_call(server_port, "start-server")
        state["server_pid"] = next(iter(_adb_server_pids(server_port)), None)
        self.write_state(state)
        progress(f"adb connect {serial}")
        self._connect(server_port, serial)
        progress("checking the device runs aarch64 code (adb shell uname -m)")
        done = _adb_call(server_port, "-s", serial, "shell", "uname -m", timeout=120)
        if done.stdout.strip() != "aarch64":
            raise MtlEdgeError(f"devbed {NAME}: the device says {done.stdout.strip() or '(nothing)'} for uname -m, "
                               f"not aarch64 (is qemu-aarch64 registered with binfmt_misc?): {done.stderr.strip()}")

    def _connect(self, server_port: int, serial: str) -> None:
        from mtl_edge.bench.transports.adb import connect_failed

        done = _adb_call(server_port, "connect", serial)
        text = (done.stdout + done.stderr).strip()
        if connect_failed(text):  # adb connect exits 0 when it fails: its text says so
            raise self.fail(f"adb connect {serial} failed: {text}")
        deadline = time.monotonic() + READY_TIMEOUT
        while (listed := _listed(server_port, serial)) != "device":
            if time.monotonic() > deadline:
                raise self.fail(f"{serial} is {listed or 'not listed'} in `adb devices` after {READY_TIMEOUT:.0f} s")
            time.sleep(0.25)

    def stop(self, state: dict, progress: Progress) -> None:
        server_port = state.get("server_port")
        if isinstance(server_port, int) and _adb_server_pids(server_port):
            progress(f"stopping the private adb server (port {server_port})")
            try:
                subprocess.run(adb_argv(server_port, "kill-server"), capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired, MtlEdgeError):
                pass
            stop(_adb_server_pids(server_port))
        pid = state.get("adbd_pid")
        if isinstance(pid, int):
            if _adbd(state):
                progress("stopping adbd and what it runs")
                stop(with_children(pid))
            stop(_strays(pid))  # what an adbd killed earlier left behind
        self.ready_file().unlink(missing_ok=True)

    def probe(self, state: dict) -> tuple[bool, bool, dict]:
        server_port, serial = state.get("server_port"), state.get("serial")
        adbd = _adbd(state)
        server = isinstance(server_port, int) and bool(_adb_server_pids(server_port))
        listed = None
        if adbd and server:
            try:
                listed = _listed(server_port, serial)
            except MtlEdgeError:
                listed = None
        facts = {"serial": serial, "adb_state": listed, "adbd_pid": state.get("adbd_pid") if adbd else None,
                 "adb_server_port": server_port if server else None}
        return listed == "device", adbd or server, facts

    def connection(self, state: dict) -> dict:
        return {"serial": state["serial"], "adb_server_port": int(state["server_port"])}


BED = Android()
up, down, status, folder, profile_path = BED.up, BED.down, BED.status, BED.folder, BED.profile_path
