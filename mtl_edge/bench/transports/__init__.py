"""Transports: how the harness gets the runner, its job and the artefacts onto a device and runs it there.

Every transport offers the same small interface (``Transport``); the harness never knows which one
it talks to. The registry maps a profile's ``transport`` field to a class, imported only when a
device of that kind is used (paramiko or adb are not needed to benchmark the desktop).
"""

from __future__ import annotations

import hashlib
import importlib
import re
import shlex
import subprocess
from pathlib import Path
from typing import Protocol

from mtl_edge.errors import MtlEdgeError

TRANSPORTS: dict[str, str] = {
    "local": "mtl_edge.bench.transports.local:LocalTransport",
    "ssh": "mtl_edge.bench.transports.ssh:SshTransport",
    "adb": "mtl_edge.bench.transports.adb:AdbTransport",
}

# one BLAS / OpenMP thread: the runtime's own thread count is set by the job; no .pyc files on the device
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "PYTHONDONTWRITEBYTECODE": "1"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def runner_env(env: dict | None = None, where: str = "device") -> dict[str, str]:
    """The environment every transport adds for the runner (``THREAD_ENV`` then ``env``), names checked."""
    environment = {**THREAD_ENV, **(env or {})}
    bad = [k for k in environment if not _ENV_NAME.match(str(k))]
    if bad:
        raise MtlEdgeError(f"{where}: invalid environment variable name(s) {bad!r} (step: run runner)")
    return {str(k): str(v) for k, v in environment.items()}


def shell_assignments(env: dict | None = None, where: str = "device") -> str:
    """``runner_env`` as quoted ``NAME=value`` words for a remote POSIX shell."""
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in runner_env(env, where).items())


class FileDigests:
    """sha256 of local files, remembered per (path, size, mtime) for one transport session."""

    def __init__(self):
        self._known: dict[tuple, str] = {}

    def __call__(self, path: Path) -> str:
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._known:
            with open(path, "rb") as fh:
                self._known[key] = hashlib.file_digest(fh, "sha256").hexdigest()
        return self._known[key]


class RunnerTimeout(Exception):
    """The runner did not finish in time; ``stderr`` holds what it printed (its last STEP line)."""

    def __init__(self, stderr: str):
        super().__init__("timeout")
        self.stderr = stderr


class Transport(Protocol):
    """What the harness needs from a device.

    ``python``: the interpreter on the device that runs the runner.
    ``workdir()``: a LOCAL staging folder (created) where the harness writes job files, the feature
    matrix and the runner script before ``put`` sends them.
    ``put(local, name)``: make a local file available on the device (in the remote work folder,
    skipping the copy when identical content is already there); returns the path the runner sees.
    ``argv(script, job)``: the command, as an argv list on the device, that runs ``script`` on ``job``
    (with ``taskset -c`` for the profile's CPU list).
    ``run(argv, timeout, env)``: run it; a ``CompletedProcess`` with text stdout/stderr and the exit
    code; ``RunnerTimeout`` on timeout; ``MtlEdgeError`` naming the device and step when the device
    cannot be reached or drops.
    ``environment()``: facts about the device (``machine`` = ``uname -m``, ``cpu_model``,
    ``cpu_governor``, ``cpu_freq_mhz``, ``temperature_c``, ``cpu_count`` and transport-specific ones),
    None where a fact is unavailable and its name in ``missing``.
    ``temperature()``: the device's temperature now (°C) or None (read before and after each measurement).
    ``close()``: release connections.
    """

    python: str

    def workdir(self) -> Path: ...

    def put(self, local: Path, name: str) -> str: ...

    def argv(self, script: str, job: str) -> list[str]: ...

    def run(self, argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess: ...

    def environment(self) -> dict: ...

    def temperature(self) -> float | None: ...

    def conditions(self) -> dict: ...  # {"temperature_c": float | None, "load": (1m, 5m, 15m) | None}

    def close(self) -> None: ...


def transport_for(device) -> Transport:
    """The transport of a device profile, connected and ready (raises MtlEdgeError naming the device)."""
    target = TRANSPORTS.get(device.transport)
    if target is None:
        raise MtlEdgeError(f"device {device.name}: unknown transport {device.transport!r}; "
                           f"known: {', '.join(sorted(TRANSPORTS))}")
    if device.template:
        where = f" ({device.path})" if device.path else ""
        raise MtlEdgeError(f"device {device.name}: the profile{where} is a template: copy it, fill in the "
                           "device's address and paths, and remove `template = true`")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(device)
