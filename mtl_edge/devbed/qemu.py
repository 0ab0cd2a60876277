"""qemu-user for aarch64, registered with binfmt_misc so that arm64 binaries run on this x86_64 host.

bookworm's qemu-user 7.2 segfaults in onnxruntime 1.31 and ai-edge-litert 2.3, so the bed uses
qemu-user 10 (bookworm-backports; ``scripts/setup-system.sh`` adds that apt source). The .deb is
fetched with ``apt-get download`` into the cache and only its static ``qemu-aarch64`` is unpacked
(nothing is installed on the host). It is registered as ``qemu-aarch64`` with flags ``PF``: P keeps
argv[0], F opens the interpreter now, so it also works inside a chroot that has no qemu of its own.
The registration is system wide and stays after ``devbed down`` (other beds share it).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from mtl_edge.devbed import Progress, _quiet, cache_dir, require_root, run
from mtl_edge.errors import MtlEdgeError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
ENTRY = "qemu-aarch64"
MIN_MAJOR = 10
CPU = "cortex-a72"  # the Raspberry Pi 4's core; QEMU_CPU for every process of the bed
# ELF64 little-endian, e_machine = EM_AARCH64 (the magic and mask of qemu's scripts/qemu-binfmt-conf.sh)
MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


def _candidate_version() -> str:
    """The newest qemu-user version >= 10 that apt knows (bookworm-backports on bookworm)."""
    done = run(["apt-cache", "madison", "qemu-user"], "devbed: looking up qemu-user in apt")
    versions = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0] == "qemu-user":
            upstream = parts[1].split(":", 1)[-1]
            match = re.match(r"(\d+)\.", upstream)
            if match and int(match.group(1)) >= MIN_MAJOR:
                versions.append(parts[1])
    if not versions:
        raise MtlEdgeError(f"devbed: no qemu-user >= {MIN_MAJOR} in the apt sources (bookworm's 7.2 crashes in "
                           "onnxruntime): run scripts/setup-system.sh, which adds bookworm-backports and runs apt-get update")
    best = versions[0]
    for version in versions[1:]:
        if subprocess.run(["dpkg", "--compare-versions", version, "gt", best]).returncode == 0:
            best = version
    return best


def qemu_binary(progress: Progress = _quiet) -> Path:
    """The static ``qemu-aarch64`` of qemu-user >= 10, downloaded and unpacked into the cache once."""
    folder = cache_dir() / "qemu"
    existing = sorted(folder.glob("qemu-aarch64-*"))
    existing = [p for p in existing if not p.name.endswith(".partial")]
    if existing:
        return existing[-1]
    progress("downloading qemu-user (bookworm-backports)")
    version = _candidate_version()
    safe = re.sub(r"[^A-Za-z0-9.+~-]", "_", version)
    folder.mkdir(parents=True, exist_ok=True)
    debs = list(folder.glob("qemu-user_*.deb"))
    if not debs:
        run(["apt-get", "download", f"qemu-user={version}"], "devbed: apt-get download qemu-user", cwd=folder)
        debs = list(folder.glob("qemu-user_*.deb"))
        if not debs:
            raise MtlEdgeError(f"devbed: apt-get download qemu-user={version} wrote no .deb into {folder}")
    deb = debs[0]
    progress("unpacking qemu-aarch64")
    target = folder / f"qemu-aarch64-{safe}"
    partial = folder / f"{target.name}.partial"
    with open(partial, "wb") as out:
        unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        tar = subprocess.run(["tar", "-xO", "./usr/bin/qemu-aarch64"], stdin=unpack.stdout, stdout=out,
                             stderr=subprocess.PIPE)
        unpack.stdout.close()
        unpack_err = unpack.communicate()[1].decode(errors="replace")
    if unpack.returncode != 0 or tar.returncode != 0 or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        raise MtlEdgeError(f"devbed: unpacking qemu-aarch64 from {deb.name} failed: "
                           f"{unpack_err.strip() or tar.stderr.decode(errors='replace').strip()}")
    os.chmod(partial, 0o755)
    done = run([str(partial), "--version"], "devbed: qemu-aarch64 --version")
    if f"version {version.split(':', 1)[-1].split('.', 1)[0]}." not in done.stdout:
        partial.unlink(missing_ok=True)
        raise MtlEdgeError(f"devbed: the unpacked qemu-aarch64 is not version {version}: {done.stdout.strip()}")
    os.replace(partial, target)
    return target


def ensure_binfmt_misc() -> None:
    """binfmt_misc mounted at /proc/sys/fs/binfmt_misc (mounts it if needed)."""
    require_root("devbed")
    if (BINFMT / "register").exists():
        return
    if not BINFMT.is_dir():
        raise MtlEdgeError("devbed: this kernel has no binfmt_misc (/proc/sys/fs/binfmt_misc is missing): "
                           "arm64 programs cannot run here")
    run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], "devbed: mounting binfmt_misc")
    if not (BINFMT / "register").exists():
        raise MtlEdgeError("devbed: binfmt_misc mounted but has no register file")


def registration() -> dict:
    """The current ``qemu-aarch64`` entry (``{}`` when there is none)."""
    entry = BINFMT / ENTRY
    try:
        text = entry.read_text()
    except OSError:
        return {}
    info = {"enabled": text.startswith("enabled")}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "interpreter":
            info["interpreter"] = value.strip()
        elif key == "flags:":
            info["flags"] = value.strip()
    return info


def _good_interpreter(path: str) -> bool:
    """``path`` is a qemu-aarch64 of version >= MIN_MAJOR."""
    if not path or not os.access(path, os.X_OK):
        return False
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    match = re.search(r"version (\d+)\.", done.stdout)
    return done.returncode == 0 and bool(match) and int(match.group(1)) >= MIN_MAJOR


def ensure_binfmt(progress: Progress = _quiet) -> Path:
    """qemu-aarch64 (>= 10) registered with flags PF; idempotent. Returns the interpreter's path."""
    ensure_binfmt_misc()
    interpreter = qemu_binary(progress)
    if ":" in str(interpreter):
        raise MtlEdgeError(f"devbed: the cache path {interpreter} contains ':' which binfmt_misc cannot register")
    current = registration()
    if current.get("enabled") and "F" in current.get("flags", "") and (
            current.get("interpreter") == str(interpreter) or _good_interpreter(current.get("interpreter", ""))):
        return interpreter  # already registered (ours, or another qemu-aarch64 >= 10 with F)
    if current:
        progress(f"replacing the binfmt entry {ENTRY} ({current.get('interpreter')})")
        try:
            (BINFMT / ENTRY).write_text("-1")
        except OSError as exc:
            raise MtlEdgeError(f"devbed: cannot remove the old binfmt entry {ENTRY}: {exc}") from None
    progress("registering qemu-aarch64 with binfmt_misc")
    rule = f":{ENTRY}:M::{MAGIC}:{MASK}:{interpreter}:PF"
    try:
        with open(BINFMT / "register", "w") as fh:
            fh.write(rule)
    except OSError as exc:
        raise MtlEdgeError(f"devbed: registering {ENTRY} with binfmt_misc failed: {exc}") from None
    return interpreter


def env(base: dict | None = None) -> dict:
    """An environment for arm64 processes: a plain PATH and ``QEMU_CPU`` (the Pi 4's Cortex-A72)."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "QEMU_CPU": CPU, **(base or {})}
