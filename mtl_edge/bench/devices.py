"""Device profiles (TOML files in ``devices/``) and the transports that run the runner on a device.

A profile names its transport, work folder, python, default runtime, CPU affinity (a ``taskset``
list) and threads. ``load_device("desktop")`` reads ``devices/desktop.toml`` (from the current
folder's ``devices/`` or the source tree's); ``load_device("path/to/phone.toml")`` reads that file.
A user adds a device by adding a file.

Transports: only ``local`` is implemented here; ``ssh`` (Raspberry Pi) comes with issue 6 and
``adb`` (Android) with issue 7 and register themselves in ``TRANSPORTS``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mtl_edge.errors import MtlEdgeError

SOURCE_DEVICES = Path(__file__).resolve().parents[2] / "devices"
_PENDING = {"ssh": "issue 6 (Raspberry Pi over SSH)", "adb": "issue 7 (Android over adb)"}


@dataclass
class Device:
    name: str
    transport: str
    workdir: str
    python: str = ""
    runtime: str = "onnxruntime"
    cpu_affinity: str = ""
    threads: int = 1
    emulated: bool = False
    template: bool = False
    path: Path | None = None
    extra: dict = field(default_factory=dict)  # transport fields: host, user, port, serial, ...


def device_folders() -> list[Path]:
    folders = [Path.cwd() / "devices", SOURCE_DEVICES]
    return list(dict.fromkeys(f.resolve() for f in folders if f.is_dir()))


def known_devices() -> list[str]:
    return sorted({p.stem for folder in device_folders() for p in folder.glob("*.toml")})


def load_device(name_or_path: str | Path) -> Device:
    """The profile called ``name_or_path`` (``devices/<name>.toml``) or in the TOML file at that path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or os.sep in text):
        path = next((f / f"{text}.toml" for f in device_folders() if (f / f"{text}.toml").is_file()), path)
    if not path.is_file():
        raise MtlEdgeError(f"unknown device profile {text!r}: no file {path}; known devices: "
                           f"{', '.join(known_devices()) or '(none)'}, or give the path of a .toml profile")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MtlEdgeError(f"{path}: not a valid TOML device profile ({exc})") from None
    for key in ("transport", "workdir"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise MtlEdgeError(f"{path}: the device profile needs a {key!r} (a string)")
    known = {f for f in Device.__dataclass_fields__ if f not in ("path", "extra", "name")}
    try:
        threads = int(data.get("threads", 1))
    except (TypeError, ValueError):
        raise MtlEdgeError(f"{path}: threads must be an integer") from None
    if threads < 1:
        raise MtlEdgeError(f"{path}: threads must be >= 1")
    affinity = data.get("cpu_affinity", "")
    if isinstance(affinity, list):
        affinity = ",".join(str(c) for c in affinity)
    return Device(name=str(data.get("name") or path.stem), transport=data["transport"], workdir=data["workdir"],
                  python=str(data.get("python") or ""), runtime=str(data.get("runtime") or "onnxruntime"),
                  cpu_affinity=str(affinity), threads=threads, emulated=bool(data.get("emulated", False)),
                  template=bool(data.get("template", False)), path=path,
                  extra={k: v for k, v in data.items() if k not in known and k != "name"})


class RunnerTimeout(Exception):
    def __init__(self, stderr: str):
        super().__init__("timeout")
        self.stderr = stderr


class LocalTransport:
    """Runs the runner as a child process of this machine (argv list, no shell)."""

    def __init__(self, device: Device):
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
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environment)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise RunnerTimeout(err) from None
        except OSError as exc:
            raise MtlEdgeError(f"device {self.device.name}: cannot start {argv[0]} ({exc})") from None


TRANSPORTS: dict[str, type] = {"local": LocalTransport}


def transport_for(device: Device):
    cls = TRANSPORTS.get(device.transport)
    if cls is None:
        if device.transport in _PENDING:
            raise MtlEdgeError(f"device {device.name}: transport {device.transport!r} comes with "
                               f"{_PENDING[device.transport]}; only 'local' is implemented")
        raise MtlEdgeError(f"device {device.name}: unknown transport {device.transport!r}; "
                           f"known: {', '.join(sorted({*TRANSPORTS, *_PENDING}))}")
    return cls(device)
