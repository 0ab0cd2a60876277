"""Device test beds: emulated devices that run the whole benchmark path on real foreign-architecture code.

A bed is a module with ``up(progress) -> Path`` (starts the bed, writes a device profile for it and
returns the profile's path), ``down(progress)`` (stops everything the bed started; safe when nothing is
up) and ``status() -> dict``; both beds here get them from one ``lifecycle.Bed`` subclass each. Beds
register by name in ``BEDS`` (module paths, imported only when used)::

    from mtl_edge import devbed
    profile = devbed.up("pi4")          # -> ~/.config/mtl-edge/devices/pi4-emulated.toml
    devbed.down("pi4")

Shared pieces for every bed: ``lifecycle.Bed`` (lock, status, partial-bed cleanup, state paths,
the profile), the process helpers below (psutil), ``rootfs.ensure_rootfs`` (an arm64 Debian
userland with the runtimes), ``qemu.ensure_binfmt`` (qemu-user registered with binfmt_misc),
``netns.Netns`` (a network namespace with a veth pair). Emulated timings and memory are not performance figures: profiles say ``emulated``.
Nothing here does any work at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil

from mtl_edge.errors import MtlEdgeError

Progress = Callable[[str], None]

# name -> module that defines up(progress) -> Path, down(progress) -> None, status() -> dict
BEDS: dict[str, str] = {"pi4": "mtl_edge.devbed.pi4", "android": "mtl_edge.devbed.android"}


def register(name: str, module: str) -> None:
    """Add a bed (``register("android", "mtl_edge.devbed.android")``)."""
    BEDS[name] = module


def names() -> list[str]:
    return sorted(BEDS)


def bed(name: str):
    """The module of the bed called ``name`` (imported now)."""
    if name not in BEDS:
        raise MtlEdgeError(f"unknown test bed {name!r}; known: {', '.join(names())}")
    return importlib.import_module(BEDS[name])


def up(name: str, progress: Progress | None = None) -> Path:
    """Start the bed (idempotent) and return the path of its device profile."""
    return bed(name).up(progress=progress or _quiet)


def down(name: str, progress: Progress | None = None) -> None:
    """Stop every process the bed started and remove what it set up (safe when it is not up)."""
    bed(name).down(progress=progress or _quiet)


def status(name: str) -> dict:
    return bed(name).status()


# ---- shared helpers -------------------------------------------------------------------------------

def _quiet(step: str) -> None:
    pass


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var, "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / default
    return base / "mtl-edge"


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/mtl-edge/devbed``: downloads and the rootfs tarball (kept)."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "devbed"


def state_dir() -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/mtl-edge/devbed``: extracted rootfs, keys, pids."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "devbed"


def config_dir() -> Path:
    """``${XDG_CONFIG_HOME:-~/.config}/mtl-edge``: the device profiles the beds write go to ``devices/``."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def process_alive(pid: int) -> bool:
    """``pid`` runs and is not a zombie (a child of ours that ended is reaped first)."""
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        os.waitpid(proc.pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass
    try:  # is_running also tells a recycled pid from the process we looked at
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def running(pid: object, *needles: str) -> bool:
    """``pid`` is alive and its command line holds every one of ``needles``: ours, not a recycled pid."""
    if not isinstance(pid, int) or not process_alive(pid):
        return False
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return all(any(needle in arg for arg in argv) for needle in needles)


def with_children(pid: int) -> list[int]:
    """``pid`` and every process below it (a bed's daemon with the commands it runs)."""
    try:
        parent = psutil.Process(pid)
        return [pid, *(child.pid for child in parent.children(recursive=True))]
    except psutil.Error:
        return []


def stop(pids: list[int], grace: float = 5.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those still alive after ``grace`` seconds; returns the ones that survived."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    for send, wait in ((psutil.Process.terminate, grace), (psutil.Process.kill, 5.0)):
        for proc in procs:
            try:
                send(proc)
            except psutil.Error:
                pass
        deadline = time.monotonic() + wait
        # a zombie counts as gone: its parent (or init) collects it; psutil.wait_procs would wait for that
        while (procs := [proc for proc in procs if _alive(proc)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not procs:
            break
    return [proc.pid for proc in procs]


def spawn(argv: list[str], env: dict, log: Path) -> int:
    """Start ``argv`` in its own session with output appended to ``log``; it outlives this command.

    posix_spawn, not Popen: nothing waits for it here, and it gets no terminal signals.
    """
    exe = shutil.which(argv[0], path=env.get("PATH"))
    if exe is None:
        raise MtlEdgeError(f"devbed: {argv[0]} is not installed (scripts/setup-system.sh installs it)")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        fh.flush()
        return os.posix_spawn(exe, argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fh.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, fh.fileno(), 2),
        ])


def read_state(path: Path) -> dict:
    """A bed's state file ({} when absent or damaged: the bed is then treated as down)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def log_tail(path: Path, lines: int = 8) -> str:
    """The last lines of a bed process's log, for error messages."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def require_root(who: str) -> None:
    if os.geteuid() != 0:
        raise MtlEdgeError(f"{who}: needs root (chroot, mounts, binfmt_misc, network namespaces); "
                           f"run it as root, e.g. with sudo")


def run(argv: list[str], step: str, timeout: float | None = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` (a list, never a shell); a failure raises MtlEdgeError naming ``step``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError:
        raise MtlEdgeError(f"{step} failed: {argv[0]} is not installed (scripts/setup-system.sh installs it)") from None
    except subprocess.TimeoutExpired:
        raise MtlEdgeError(f"{step} failed: {argv[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-8:]
        raise MtlEdgeError(f"{step} failed (exit {done.returncode}): " + (" | ".join(detail) or "no output"))
    return done


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (waits for the holder: one bed setup at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
