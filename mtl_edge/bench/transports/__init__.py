"""Transports: how the harness gets the runner, its job and the artefacts onto a device and runs it there.

Every transport offers the same small interface (``Transport``); the harness never knows which one
it talks to. The registry maps a profile's ``transport`` field to a class, imported only when a
device of that kind is used (paramiko or adb are not needed to benchmark the desktop).
"""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Protocol

from mtl_edge.errors import MtlEdgeError

TRANSPORTS: dict[str, str] = {
    "local": "mtl_edge.bench.transports.local:LocalTransport",
    "ssh": "mtl_edge.bench.transports.ssh:SshTransport",
    "adb": "mtl_edge.bench.transports.adb:AdbTransport",
}


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
