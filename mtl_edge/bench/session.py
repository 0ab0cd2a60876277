"""One bench call on one device: the transport, the staged runner and runtime modules, the inputs, runner runs.

The runner (``mtl_edge/runtimes/runner.py``) and the module of the runtime it drives are staged in the
transport's work folder and sent with ``put`` like any other file, so a device needs only Python,
numpy and the runtime.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from mtl_edge import atomic
from mtl_edge.bench.devices import Device
from mtl_edge.bench.transports import RunnerTimeout, transport_for
from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.manifest import sha256_file
from mtl_edge.runtimes import Runtime, runner_file
from mtl_edge.runtimes.runner import END_MARKER, parse_report


class Session:
    """The transport of one device and what was already sent to it during this bench call."""

    def __init__(self, device: Device, export: Path, timeout: float | None, log: Callable):
        self.device = device
        self.transport = transport_for(device)
        self.export = export
        self.timeout = timeout
        self.log = log
        self.work = self.transport.workdir()
        self._sent: dict[str, str] = {}
        self.script = self._ship(runner_file(), "mtl_edge_runner.py")

    def _ship(self, src: Path, name: str) -> str:
        """Stage ``src`` in the work folder as ``name`` (rewritten only when it changed) and put it on the device."""
        if name not in self._sent:
            staged = self.work / name
            if not staged.is_file() or staged.read_bytes() != Path(src).read_bytes():
                with atomic.atomic_path(staged) as tmp:
                    shutil.copyfile(src, tmp)
            self._sent[name] = self.transport.put(staged, staged.name)
        return self._sent[name]

    def runtime_module(self, runtime: Runtime) -> str:
        """The runtime's module file as the runner on the device sees it."""
        return self._ship(Path(runtime.file), Path(runtime.file).name)

    def inputs(self, array: np.ndarray, name: str) -> str:
        """An input array (one row per clip) as a .npy file on the device, named by its content."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        digest = hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()[:16]
        prefix = "features" if name == "features" else f"inputs-{name}"
        local = self.work / f"{prefix}-{digest}.npy"
        if local.name not in self._sent:
            if not local.is_file():
                with atomic.atomic_path(local) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, array)
            self._sent[local.name] = self.transport.put(local, local.name)
        return self._sent[local.name]

    def temperature(self, label: str, results: Path) -> float | None:
        try:
            return self.transport.temperature()
        except MtlEdgeError as exc:
            raise MtlEdgeError(f"{label}: {exc}; measurements already written are kept in {results}") from None

    def conditions(self, label: str, results: Path) -> dict:
        """The device's temperature and load averages now (``{"temperature_c", "load"}``, None where not exposed)."""
        try:
            if hasattr(self.transport, "conditions"):
                return self.transport.conditions()
            return {"temperature_c": self.transport.temperature(), "load": None}
        except MtlEdgeError as exc:
            raise MtlEdgeError(f"{label}: {exc}; measurements already written are kept in {results}") from None

    def run(self, argv_prefix: list[str] | None, job: dict, label: str, results: Path, timeout: float) -> dict:
        """Run the runner (or ``argv_prefix`` + the job file) on ``job``; its parsed report."""
        job_hash = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
        job_file = self.work / f"job-{job_hash}.json"
        atomic.write_json(job_file, job)
        remote_job = self.transport.put(job_file, job_file.name)
        argv = self.transport.argv(self.script, remote_job) if argv_prefix is None else [*argv_prefix, remote_job]
        try:
            proc = self.transport.run(argv, timeout=timeout)
        except MtlEdgeError as exc:
            raise MtlEdgeError(f"{label}: {exc}; measurements already written are kept in {results}") from None
        except RunnerTimeout as exc:
            step = last_step(exc.stderr)
            raise MtlEdgeError(f"{label}: the runner timed out after {timeout:.0f} s at step '{step}' on device "
                               f"{self.device.name} (a longer limit: --timeout SECONDS; --resume keeps what is done); measurements "
                               f"already written are kept in {results}") from None
        finally:
            job_file.unlink(missing_ok=True)
        out, err = proc.stdout or "", proc.stderr or ""
        if proc.returncode != 0 or END_MARKER not in out:
            tail = "\n".join(line for line in err.strip().splitlines()[-6:] if not line.startswith("STEP "))
            hint = ""
            if "ModuleNotFoundError" in err or "No module named" in err:
                hint = f" (the runtime {job.get('runtime', '')!r} is not installed for {self.transport.python})"
            raise MtlEdgeError(f"{label}: the runner failed at step '{last_step(err)}' (exit code {proc.returncode})"
                               f"{hint}: {tail[-800:] or '(no error output)'}; measurements already written are "
                               f"kept in {results}")
        try:
            return parse_report(out)
        except ValueError:
            raise MtlEdgeError(f"{label}: the runner's report is not JSON: {out[-300:]!r}") from None


def last_step(stderr: str) -> str:
    """The last ``STEP`` line the runner printed (where it hung or crashed)."""
    steps = [line[5:].strip() for line in stderr.splitlines() if line.startswith("STEP ")]
    return steps[-1] if steps else "start"


def label(entry: dict) -> str:
    return f"artefact {entry.get('path')} ({entry.get('model')}, {entry.get('format')} {entry.get('precision')})"


def check_artefact(export: Path, entry: dict) -> Path:
    """The artefact's file, after checking it exists and matches the manifest's sha256."""
    name = label(entry)
    if not entry.get("path") or entry.get("status") == "unsupported":
        raise MtlEdgeError(f"{name}: unsupported in this export, no artefact ({entry.get('reason')})")
    path = export / entry["path"]
    if not path.is_file():
        raise MtlEdgeError(f"{name}: artefact file {path} is missing (step: verify sha256 before running)")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise MtlEdgeError(f"{name}: artefact {path} does not match the manifest (sha256 {digest[:12]}... != "
                           f"{str(entry.get('sha256'))[:12]}...; tampered or replaced) (step: verify sha256 before running)")
    return path
