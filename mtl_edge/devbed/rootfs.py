"""The arm64 Debian userland every emulated bed runs: built once, cached as a zstd tarball, extracted to work in.

Recipe: ``mmdebstrap --arch=arm64 --variant=apt --include=python3,python3-venv,openssh-server,...
bookworm``, then a venv at ``/opt/mtl-edge/venv`` inside it with the aarch64 wheels of numpy,
onnxruntime and ai-edge-litert (and their dependencies). The wheels are downloaded on the host
(``pip download --only-binary=:all: --platform <every manylinux aarch64 tag>``; listing fewer tags
silently picks old versions) and installed by the chroot's own pip with ``--no-index --find-links``.
The finished tree is packed as ``rootfs-arm64-<recipe hash>.tar.zst`` in the cache folder; later beds
extract it (seconds) instead of building it (minutes). A changed recipe has a new hash.

``ensure_rootfs(progress)`` is safe to call again and from several beds (a lock serialises builds).
``mount(rootfs, holder)`` / ``unmount(rootfs, holder)`` mount /proc, /dev, /dev/pts and /sys inside it,
counted per holder (a bed name; the count lives in /run, so a reboot clears it with the mounts): the
mounts go away when the last holder lets go. A rootfs tree is only ever removed after every mount
below it is gone (``rm --one-file-system`` as well), never recursing into the host's /dev.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mtl_edge.atomic import write_json
from mtl_edge.devbed import Progress, _quiet, cache_dir, locked, require_root, run, state_dir
from mtl_edge.errors import MtlEdgeError

SUITE = "bookworm"
ARCH = "arm64"
INCLUDE = ["python3", "python3-venv", "openssh-server", "procps", "time", "util-linux"]
# documentation and translations are not needed on a bed: smaller tarball, faster restore
DPKG_OPTS = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/locale/*",
             "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright"]
VENV = "/opt/mtl-edge/venv"
PYTHON = f"{VENV}/bin/python"
REQUIREMENTS = ["numpy==2.4.6", "onnxruntime==1.31.1", "ai-edge-litert==2.3.0", "psutil==7.2.2"]
PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64"]
PYTHON_VERSION = "3.11"  # bookworm's python3
IMPORT_CHECK = ("import numpy, onnxruntime, psutil; from ai_edge_litert.interpreter import Interpreter; "
                "print(numpy.__version__, onnxruntime.__version__)")
RECIPE_VERSION = 1  # bump when the build steps below change


def recipe() -> dict:
    return {"version": RECIPE_VERSION, "suite": SUITE, "arch": ARCH, "variant": "apt", "include": INCLUDE,
            "dpkg": DPKG_OPTS, "venv": VENV, "requirements": REQUIREMENTS, "platforms": PLATFORMS,
            "python": PYTHON_VERSION}


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def tarball_path() -> Path:
    return cache_dir() / f"rootfs-{ARCH}-{recipe_hash()}.tar.zst"


def rootfs_path() -> Path:
    """The working tree (extracted from the tarball) that the beds chroot into."""
    return state_dir() / f"rootfs-{ARCH}-{recipe_hash()}"


def inside(rootfs: Path, relative: str) -> Path:
    """A path in the rootfs that no symlink in the rootfs redirects to the host (a bed writes there as root)."""
    path = rootfs / relative.lstrip("/")
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(rootfs) + "/"):
        raise MtlEdgeError(f"devbed: {relative} in the rootfs points outside it ({real})")
    return path


# ---- mounts -------------------------------------------------------------------------------------

def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest last, as /proc/self/mountinfo lists them)."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = _unescape(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def _umount_all(path: Path, step: str) -> None:
    for _ in range(4):  # stacked mounts need more than one pass
        points = mounts_under(path)
        if not points:
            break
        for point in reversed(points):
            done = subprocess.run(["umount", point], capture_output=True, text=True)
            if done.returncode != 0 and point in mounts_under(path):
                subprocess.run(["umount", "-l", point], capture_output=True, text=True)
    left = mounts_under(path)
    if left:
        raise MtlEdgeError(f"{step}: cannot unmount {', '.join(left)}")


# (source, target inside the rootfs, mount argv options); a bind of /dev is not recursive: a private devpts
MOUNTS = [
    ("proc", "proc", ["-t", "proc", "-o", "nosuid,nodev,noexec"]),
    ("/dev", "dev", ["--bind"]),
    ("devpts", "dev/pts", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec"]),
    ("sysfs", "sys", ["-t", "sysfs", "-o", "ro,nosuid,nodev,noexec"]),
]


RUN_DIR = Path("/run/mtl-edge-devbed")  # tmpfs: the holder counts vanish with the mounts at a reboot


def _holders_file(rootfs: Path) -> Path:
    key = hashlib.sha256(os.path.realpath(rootfs).encode()).hexdigest()[:16]
    return RUN_DIR / f"{Path(rootfs).name}-{key}.holders.json"


def _read_holders(rootfs: Path) -> list[str]:
    try:
        return list(json.loads(_holders_file(rootfs).read_text()))
    except (OSError, ValueError):
        return []


def mount(rootfs: Path, holder: str) -> None:
    """Mount /proc, /dev, /dev/pts, /sys in ``rootfs`` for ``holder`` (idempotent per holder)."""
    require_root("devbed")
    with locked(RUN_DIR / "mounts.lock"):
        present = set(mounts_under(rootfs))
        for source, target, options in MOUNTS:
            point = rootfs / target
            expected = os.path.join(os.path.realpath(rootfs), target)
            if os.path.realpath(point) != expected:  # a symlink planted in the rootfs must not redirect a mount
                raise MtlEdgeError(f"devbed: {point} is a symlink in the rootfs; refusing to mount on it")
            if expected in present:
                continue
            point.mkdir(parents=True, exist_ok=True)
            run(["mount", *options, source, str(point)], f"devbed: mounting {target} in the rootfs")
            # private: nothing mounted below it (dev/pts) propagates to the host's /dev on a shared-mount system
            run(["mount", "--make-private", str(point)], f"devbed: making {target} in the rootfs private")
        holders = _read_holders(rootfs)
        if holder not in holders:
            write_json(_holders_file(rootfs), [*holders, holder])


def unmount(rootfs: Path, holder: str) -> None:
    """Let go of ``holder``'s mounts; the last holder unmounts them. Safe when nothing is mounted."""
    with locked(RUN_DIR / "mounts.lock"):
        holders = [h for h in _read_holders(rootfs) if h != holder]
        if holders:
            write_json(_holders_file(rootfs), holders)
            return
        _umount_all(rootfs, "devbed: unmounting the rootfs")
        _holders_file(rootfs).unlink(missing_ok=True)


def mounted_holders(rootfs: Path) -> list[str]:
    return _read_holders(rootfs)


def _remove_tree(path: Path) -> None:
    """``rm -rf`` a rootfs only after every mount below it is gone (never recurse into the host's /dev)."""
    if not path.exists():
        return
    _umount_all(path, f"devbed: removing {path}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    if path.exists():
        raise MtlEdgeError(f"devbed: could not remove {path}")


# ---- build --------------------------------------------------------------------------------------

def _run_logged(argv: list[str], log: Path, step: str, env: dict | None = None, timeout: float = 1800) -> None:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        try:
            done = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                  timeout=timeout)
        except FileNotFoundError:
            raise MtlEdgeError(f"{step} failed: {argv[0]} is not installed (scripts/setup-system.sh installs it)") from None
        except subprocess.TimeoutExpired:
            raise MtlEdgeError(f"{step} failed: no result after {timeout:.0f} s (log: {log})") from None
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        raise MtlEdgeError(f"{step} failed (exit {done.returncode}; log {log}): " + " | ".join(tail))


def download_wheels(progress: Progress = _quiet) -> Path:
    """The aarch64 wheels (and their dependencies) for the bed's venv, downloaded once into the cache."""
    folder = cache_dir() / f"wheels-{recipe_hash()}"
    if (folder / ".complete").exists():
        return folder
    progress("downloading the aarch64 wheels")
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
            "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        argv += ["--platform", platform]
    argv += ["-d", str(folder), *REQUIREMENTS]
    run(argv, "devbed: pip download of the aarch64 wheels", timeout=900)
    (folder / ".complete").write_text("\n".join(sorted(p.name for p in folder.glob("*.whl"))) + "\n")
    return folder


def _build(tree: Path, log: Path, progress: Progress) -> None:
    from mtl_edge.devbed import qemu

    qemu.ensure_binfmt(progress)
    wheels = download_wheels(progress)
    progress(f"mmdebstrap: arm64 {SUITE} userland (a few minutes)")
    argv = ["mmdebstrap", f"--arch={ARCH}", "--variant=apt", f"--include={','.join(INCLUDE)}", "--mode=root",
            *[f"--dpkgopt={opt}" for opt in DPKG_OPTS], SUITE, str(tree)]
    _run_logged(argv, log, "devbed: mmdebstrap", env={**os.environ, "QEMU_CPU": qemu.CPU})
    progress("venv with numpy, onnxruntime, ai-edge-litert (under qemu)")
    inside = tree / "tmp" / "mtl-edge-wheels"
    shutil.copytree(wheels, inside, ignore=shutil.ignore_patterns(".complete"))
    mount(tree, "build")
    try:
        chroot_env = qemu.env({"HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"})
        _run_logged(["chroot", str(tree), "python3", "-m", "venv", VENV], log, "devbed: python3 -m venv in the rootfs",
                    env=chroot_env)
        _run_logged(["chroot", str(tree), f"{VENV}/bin/pip", "install", "--no-index", "--find-links",
                     "/tmp/mtl-edge-wheels", *REQUIREMENTS], log, "devbed: pip install in the rootfs", env=chroot_env)
        _run_logged(["chroot", str(tree), PYTHON, "-c", IMPORT_CHECK], log,
                    "devbed: importing onnxruntime and ai_edge_litert in the rootfs", env=chroot_env)
    finally:
        unmount(tree, "build")
    shutil.rmtree(inside)
    # sshd of a bed logs in as root by key only; a locked root account ('!') would refuse even keys
    shadow = tree / "etc" / "shadow"
    lines = shadow.read_text().splitlines(keepends=True)
    shadow.write_text("".join("root:*:" + line.split(":", 2)[2] if line.startswith("root:!") else line for line in lines))


def _pack(tree: Path, tarball: Path, progress: Progress) -> None:
    progress(f"packing the rootfs into {tarball.name}")
    partial = tarball.with_name(tarball.name + ".partial")
    tar = subprocess.Popen(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", "-", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    zst = subprocess.run(["zstd", "-q", "-f", "-T2", "-12", "-o", str(partial)], stdin=tar.stdout,
                         capture_output=True, text=True)
    tar.stdout.close()
    tar_err = tar.communicate()[1].decode(errors="replace")
    if tar.returncode != 0 or zst.returncode != 0:
        partial.unlink(missing_ok=True)
        raise MtlEdgeError(f"devbed: packing the rootfs failed: {tar_err.strip()} {zst.stderr.strip()}")
    os.replace(partial, tarball)


def _unpack(tarball: Path, tree: Path, progress: Progress) -> None:
    progress(f"restoring the rootfs from {tarball.name}")
    tree.mkdir(parents=True)
    zst = subprocess.Popen(["zstd", "-q", "-d", "-c", str(tarball)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tar = subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-xpf", "-"], stdin=zst.stdout,
                         capture_output=True, text=True)
    zst.stdout.close()
    zst_err = zst.communicate()[1].decode(errors="replace")
    if zst.returncode != 0 or tar.returncode != 0:
        raise MtlEdgeError(f"devbed: restoring {tarball} failed (a damaged cache? delete it to rebuild): "
                           f"{zst_err.strip()} {tar.stderr.strip()}")


def ensure_rootfs(progress: Progress = _quiet) -> Path:
    """The extracted arm64 rootfs: as it is when present, else restored from the cache, else built.

    Safe to call again (returns at once) and from several beds at the same time (a lock serialises).
    """
    require_root("devbed")
    tree = rootfs_path()
    if tree.is_dir():
        return tree
    with locked(cache_dir() / ".rootfs.lock"):
        if tree.is_dir():
            return tree
        state_dir().mkdir(parents=True, exist_ok=True)
        partial = tree.with_name(tree.name + ".partial")
        _remove_tree(partial)  # a build or restore that was killed
        tarball = tarball_path()
        started = time.monotonic()
        try:
            if tarball.is_file():
                _unpack(tarball, partial, progress)
            else:
                log = cache_dir() / f"build-{recipe_hash()}.log"
                log.write_text(f"devbed rootfs build {time.strftime('%Y-%m-%d %H:%M:%S')} recipe {recipe()}\n")
                _build(partial, log, progress)
                _pack(partial, tarball, progress)
            os.replace(partial, tree)
        except BaseException:
            try:
                _remove_tree(partial)
            except MtlEdgeError:
                pass
            raise
        progress(f"rootfs ready in {time.monotonic() - started:.0f} s")
        _remove_stale(tree)
        return tree


def _remove_stale(current: Path) -> None:
    """Extracted trees of older recipes that no bed holds (each is ~300 MB)."""
    for other in state_dir().glob(f"rootfs-{ARCH}-*"):
        if other == current or not other.is_dir() or other.name.endswith(".partial"):
            continue
        if _read_holders(other) or mounts_under(other):
            continue
        try:
            _remove_tree(other)
        except MtlEdgeError:
            pass
