"""Device profiles (TOML files in ``devices/``) and the transports that run the runner on a device.

A profile names its transport, work folder, python, default runtime, CPU affinity (a ``taskset``
list) and threads. ``load_device("desktop")`` reads ``devices/desktop.toml`` (from the current
folder's ``devices/`` or the source tree's); ``load_device("path/to/phone.toml")`` reads that file.
A user adds a device by adding a file.

The profile's ``transport`` (local, ssh, adb) picks the class in ``mtl_edge.bench.transports``;
fields the core does not know (host, port, user, key, known_hosts, serial, ...) go to ``extra`` for it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mtl_edge.errors import MtlEdgeError

SOURCE_DEVICES = Path(__file__).resolve().parents[2] / "devices"


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


def profile_flag(data: dict, key: str, where: str) -> bool:
    """A yes/no field of a profile: a TOML boolean, nothing else (the string "false" is not false)."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise MtlEdgeError(f"{where}: {key} must be true or false (a TOML boolean, unquoted), not {value!r}")
    return value


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
                  cpu_affinity=str(affinity), threads=threads, emulated=profile_flag(data, "emulated", str(path)),
                  template=profile_flag(data, "template", str(path)), path=path,
                  extra={k: v for k, v in data.items() if k not in known and k != "name"})
