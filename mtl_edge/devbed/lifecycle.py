"""The one lifecycle every bed shares; a bed (pi4, android) only says how its own processes start, stop and answer.

``Bed.up()``: checks the host, takes the bed's lock, returns at once when the bed is up (rewriting its
profile), clears a half-started bed, gets the arm64 rootfs and qemu-aarch64 in binfmt_misc, mounts
/proc, /dev, /sys in the rootfs for this bed, then ``start()``; any failure there takes down what was
started, so a failed ``up`` leaves nothing behind. ``Bed.down()`` runs ``stop()``, lets go of the
mounts and removes the state file; it is safe when nothing is up. ``Bed.status()`` is ``up`` when
``probe()`` says the bed answers, ``partial`` when anything of it is left (a process, a mount, the
state file), else ``down``. The profile is TOML written with tomli-w, so that any value quotes right.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import tomli_w

from mtl_edge.atomic import write_json, write_text
from mtl_edge.devbed import (Progress, _quiet, config_dir, locked, log_tail, process_alive, read_state, require_root,
                             state_dir)
from mtl_edge.errors import MtlEdgeError


class Bed:
    """A device test bed in an arm64 rootfs; subclasses fill in the hooks below the line."""

    name = ""
    profile_name = ""
    transport = ""
    runtime = ""
    workdir = ""
    log_name = "bed.log"
    tools: tuple[tuple[str, str], ...] = (("chroot", "coreutils"), ("zstd", "zstd"))  # (command, Debian package)
    about: tuple[str, ...] = ()  # the profile's comment lines: what this device is

    # ---- where things are ------------------------------------------------------------------------

    def folder(self) -> Path:
        """``<state>/devbed/<name>``: keys, pids, logs (root's only)."""
        return state_dir() / self.name

    def profile_path(self) -> Path:
        return config_dir() / "devices" / f"{self.profile_name}.toml"

    def state_file(self) -> Path:
        return self.folder() / "state.json"

    def log_file(self) -> Path:
        return self.folder() / self.log_name

    def read_state(self) -> dict:
        return read_state(self.state_file())

    def write_state(self, state: dict) -> None:
        write_json(self.state_file(), state)

    def fail(self, message: str) -> MtlEdgeError:
        """An error naming the bed, with the tail of its log (what the daemon said last)."""
        return MtlEdgeError(f"devbed {self.name}: {message} (log {self.log_file()}: {log_tail(self.log_file())})")

    # ---- the lifecycle ---------------------------------------------------------------------------

    def check_host(self) -> None:
        require_root(f"devbed {self.name}")
        for tool, package in self.tools:
            if shutil.which(tool) is None:
                raise MtlEdgeError(f"devbed {self.name}: {tool} is missing (Debian package {package}; "
                                   "scripts/setup-system.sh installs it)")

    def up(self, progress: Progress = _quiet) -> Path:
        """Start the bed (idempotent: a running bed is left as it is) and return its profile's path."""
        from mtl_edge.devbed import qemu, rootfs as rootfs_mod

        self.check_host()
        with self._locked():
            current = self.status()["state"]
            if current == "up":
                progress("already up")
                return self.write_profile(self.read_state())
            if current == "partial":
                progress("clearing a half-started bed")
                self._down(progress)
            rootfs = rootfs_mod.ensure_rootfs(progress)
            qemu.ensure_binfmt(progress)
            state = {"rootfs": str(rootfs), "started": time.time()}
            try:
                self.write_state(state)  # from here on, down() finds and undoes what was started
                rootfs_mod.mount(rootfs, self.name)
                self.start(rootfs, state, progress)
            except BaseException:
                try:
                    self._down(_quiet)
                except MtlEdgeError:
                    pass
                raise
            return self.write_profile(state)

    def down(self, progress: Progress = _quiet) -> None:
        """Stop every process the bed started and let go of its mounts. Safe when nothing is up."""
        require_root(f"devbed {self.name}")
        with self._locked():
            self._down(progress)

    def status(self) -> dict:
        """``state``: up (the bed answers), partial (something of it is left), down (nothing)."""
        from mtl_edge.devbed import rootfs as rootfs_mod

        state = self.read_state()
        root = state.get("rootfs") or str(rootfs_mod.rootfs_path())
        answers, left, facts = self.probe(state)
        mounted = self.name in rootfs_mod.mounted_holders(Path(root))
        summary = "up" if answers else "partial" if left or mounted or state else "down"
        profile = self.profile_path()
        return {"name": self.name, "state": summary, **facts,
                "profile": str(profile) if profile.is_file() else None, "rootfs": root, "emulated": True}

    def write_profile(self, state: dict) -> Path:
        """The device profile for ``mtl-edge bench --device``: TOML, ``emulated = true``."""
        from mtl_edge.devbed import rootfs as rootfs_mod

        fields = {"name": self.profile_name, "transport": self.transport, **self.connection(state),
                  "workdir": self.workdir, "python": rootfs_mod.PYTHON, "runtime": self.runtime,
                  "cpu_affinity": "0", "threads": 1, "emulated": True}
        comment = [f"Written by `mtl-edge devbed up {self.name}`: {self.about[0]}", *self.about[1:],
                   "Its timings and memory are not performance figures: results carry emulated = true.",
                   f"`mtl-edge devbed down {self.name}` stops it."]
        path = self.profile_path()
        write_text(path, "".join(f"# {line}\n" for line in comment) + tomli_w.dumps(fields))
        return path

    def _locked(self):
        self.folder().mkdir(parents=True, exist_ok=True)
        self.folder().chmod(0o700)
        return locked(self.folder() / ".lock")

    def _down(self, progress: Progress) -> None:
        from mtl_edge.devbed import rootfs as rootfs_mod

        state = self.read_state()
        self.stop(state, progress)
        progress("unmounting")
        rootfs_mod.unmount(Path(state.get("rootfs") or rootfs_mod.rootfs_path()), self.name)
        self.state_file().unlink(missing_ok=True)

    def wait_for(self, ready: Callable[[], bool], pid: int, daemon: str, what: str, timeout: float,
                 interval: float = 0.2) -> None:
        """Wait until ``ready()``; the daemon ``pid`` ending first, or ``timeout``, is an error with its log."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not process_alive(pid):
                raise self.fail(f"{daemon} exited at start")
            if time.monotonic() > deadline:
                raise self.fail(f"{daemon} did not {what} within {timeout:.0f} s")
            time.sleep(interval)

    # ---- what a bed fills in ---------------------------------------------------------------------

    def start(self, rootfs: Path, state: dict, progress: Progress) -> None:
        """Start the bed's processes in ``rootfs`` (mounted), adding their pids and ports to ``state``.

        Save ``state`` (``write_state``) after each process starts, so that ``down`` can find it.
        """
        raise NotImplementedError

    def stop(self, state: dict, progress: Progress) -> None:
        """Stop what ``start`` left running (any part of it; ``state`` may be {})."""
        raise NotImplementedError

    def probe(self, state: dict) -> tuple[bool, bool, dict]:
        """(the bed answers, something of it is left, the facts ``status()`` shows)."""
        raise NotImplementedError

    def connection(self, state: dict) -> dict:
        """The profile's fields that say how to reach the device (host and key, or serial and adb port)."""
        raise NotImplementedError
