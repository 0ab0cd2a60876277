"""The local transport: the runner as a child process of this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mtl_edge.bench.transports import RunnerTimeout, runner_env
from mtl_edge.errors import MtlEdgeError


class LocalTransport:
    """Runs the runner as a child process of this machine (argv list, no shell)."""

    def __init__(self, device):
        self.device = device
        self.python = device.python or sys.executable
        if device.cpu_affinity and shutil.which("taskset") is None:
            raise MtlEdgeError(f"device {device.name}: cpu_affinity {device.cpu_affinity!r} needs taskset (util-linux)")

    def workdir(self) -> Path:
        folder = Path(self.device.workdir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MtlEdgeError(f"device {self.device.name}: cannot create work folder {folder} ({exc})") from None
        return folder

    def put(self, local: Path, name: str) -> str:
        """The path the runner sees for a local file (a local run reads it in place)."""
        return str(Path(local).resolve())

    def argv(self, script: str, job: str) -> list[str]:
        prefix = ["taskset", "-c", self.device.cpu_affinity] if self.device.cpu_affinity else []
        return [*prefix, self.python, script, job]

    def run(self, argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        environment = {**os.environ, **runner_env(env, f"device {self.device.name}")}
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environment)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise RunnerTimeout(err) from None
        except OSError as exc:
            raise MtlEdgeError(f"device {self.device.name}: cannot start {argv[0]} ({exc})") from None

    def environment(self) -> dict:
        from mtl_edge.bench.environment import local_environment

        return local_environment()

    def temperature(self) -> float | None:
        from mtl_edge.bench.environment import local_environment

        return local_environment()["temperature_c"]

    def conditions(self) -> dict:
        from mtl_edge.bench.environment import local_environment
        from mtl_edge.bench.load import local_load

        return {"temperature_c": local_environment()["temperature_c"], "load": local_load()}

    def close(self) -> None:
        pass
