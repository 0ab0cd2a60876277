"""What the emulated device is: its banner, how it runs a command, where a device path is on this host."""

from __future__ import annotations

import errno
import os
import shutil
from collections import deque

FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")
DEVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY = "mtl-edge-adbd ready"
MARKER_ENV = "MTL_EDGE_ADBD_PID"  # in every command's environment: the bed finds strays of a killed adbd by it


class SyncError(Exception):
    """A sync request that fails: sent to the client as FAIL + message."""



class DeviceConfig:
    """What the emulated device is: where its files live and how it runs commands."""

    def __init__(self, root: str | None = None, serial: str = "mtl-edge-bed", model: str = "mtl-edge_emulated_arm64",
                 product: str = "mtl_edge_bed", qemu_cpu: str = "cortex-a72", unauthorized: bool = False):
        self.root = None if root in (None, "", "/") else os.path.abspath(root)
        self.chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        self.serial = serial
        self.model = model
        self.product = product
        self.qemu_cpu = qemu_cpu
        self.unauthorized = unauthorized  # refuse every key: adb lists the device as 'unauthorized'

    def banner(self) -> bytes:
        props = f"ro.product.name={self.product};ro.product.model={self.model};ro.product.device={self.product};"
        return f"device::{props}features={','.join(FEATURES)}".encode()

    def command_argv(self, command: str) -> list[str]:
        """The argv that runs a device shell command (a shell string, as adbd hands it to sh -c)."""
        shell = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        return [self.chroot, self.root, *shell] if self.root else shell

    def command_env(self, term: str | None = None) -> dict[str, str]:
        env = {"PATH": DEVICE_PATH, "HOME": "/", "SHELL": "/bin/sh", "LANG": "C.UTF-8",
               "ANDROID_SERIAL": self.serial, MARKER_ENV: str(os.getpid())}  # the marker: found and killed by down
        if self.root:
            env["QEMU_CPU"] = self.qemu_cpu
        if term:
            env["TERM"] = term
        return env

    def host_path(self, path: str, follow_last: bool = True) -> str:
        """The host path of a device path: inside the root, symlinks re-rooted; '..' refused."""
        if not path:
            raise SyncError("empty path")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise SyncError(f"refused path {path!r}: '..' is not allowed")
        if self.root is None:
            return "/" + "/".join(parts)
        todo, done, hops = deque(parts), [], 0
        while todo:
            name = todo.popleft()
            if name == "..":  # only from a symlink target: clamp at the device root
                if done:
                    done.pop()
                continue
            candidate = os.path.join(self.root, *done, name)
            if (todo or follow_last) and os.path.islink(candidate):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            done.append(name)
        return os.path.join(self.root, *done)

