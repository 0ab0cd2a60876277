"""The emulated Raspberry Pi 4: an arm64 Debian userland under qemu-user (Cortex-A72) with its own sshd and address.

``up()``: the rootfs (``rootfs.ensure_rootfs``), qemu-aarch64 in binfmt_misc, a network namespace
``mtl-edge-pi4`` with a veth pair (host 10.213.7.1/30, bed 10.213.7.2/30), an ed25519 host key and a
client key (ssh-keygen), a known_hosts entry for the bed's address written here (the host key is
verified: nothing is accepted on first use), then the rootfs's own aarch64 sshd::

    ip netns exec mtl-edge-pi4 chroot ROOTFS /usr/sbin/sshd -D -e -f /etc/ssh/mtl-edge/sshd_config

(key-only, root by key, ``UsePAM no``, ``StrictModes no``, ``QEMU_CPU=cortex-a72`` for sshd and every
session). It waits until a real ``ssh ... true`` succeeds, records the pid, and writes the device
profile ``${XDG_CONFIG_HOME:-~/.config}/mtl-edge/devices/pi4-emulated.toml`` (``emulated = true``).
``down()`` kills every process in the namespace (and the recorded sshd), unmounts, deletes the
namespace; it is safe when nothing is up. ``link(down=True)`` cuts the bed's link for tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from mtl_edge.atomic import write_json, write_text
from mtl_edge.devbed import (Progress, _quiet, config_dir, locked, log_tail, process_alive, read_state, require_root, run,
                             state_dir)
from mtl_edge.devbed.netns import Netns, ip_netns_available
from mtl_edge.errors import MtlEdgeError

NAME = "pi4"
PROFILE_NAME = "pi4-emulated"
NET = Netns(name="mtl-edge-pi4", host_dev="mtle-pi4-h", bed_dev="mtle-pi4-b",
            host_addr="10.213.7.1/30", bed_addr="10.213.7.2/30")
PORT = 22
USER = "root"
WORKDIR = "/root/mtl-edge-bench"
SSHD_DIR = "/etc/ssh/mtl-edge"  # inside the rootfs
READY_TIMEOUT = 120.0  # sshd and the first login under qemu take a few seconds; a loaded machine more


def folder() -> Path:
    return state_dir() / NAME


def profile_path() -> Path:
    return config_dir() / "devices" / f"{PROFILE_NAME}.toml"


def client_key() -> Path:
    return folder() / "id_ed25519"


def host_key() -> Path:
    return folder() / "ssh_host_ed25519_key"


def known_hosts() -> Path:
    return folder() / "known_hosts"


def _state_file() -> Path:
    return folder() / "state.json"


def _log_file() -> Path:
    return folder() / "sshd.log"


def ssh_argv(*remote: str, connect_timeout: int = 30) -> list[str]:
    """An ``ssh`` argv to the bed as root with its key and known_hosts (strict host key checking)."""
    return ["ssh", "-i", str(client_key()), "-o", f"UserKnownHostsFile={known_hosts()}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
            "-p", str(PORT), f"{USER}@{NET.bed_ip}", *remote]


# ---- keys and sshd ------------------------------------------------------------------------------

def _keygen(path: Path, comment: str) -> None:
    if path.is_file() and path.with_name(path.name + ".pub").is_file():
        return
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        f"devbed {NAME}: ssh-keygen {path.name}", timeout=60)


def _ensure_keys() -> None:
    folder().mkdir(parents=True, exist_ok=True)
    os.chmod(folder(), 0o700)
    _keygen(host_key(), f"mtl-edge devbed {NAME} host")
    _keygen(client_key(), f"mtl-edge devbed {NAME} client")
    key_type, key_data = host_key().with_name(host_key().name + ".pub").read_text().split()[:2]
    host = NET.bed_ip if PORT == 22 else f"[{NET.bed_ip}]:{PORT}"
    write_text(known_hosts(), f"{host} {key_type} {key_data}\n")


def _inside(rootfs: Path, relative: str) -> Path:
    """A path in the rootfs that no symlink in the rootfs redirects to the host."""
    path = rootfs / relative.lstrip("/")
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(rootfs) + "/"):
        raise MtlEdgeError(f"devbed {NAME}: {relative} in the rootfs points outside it ({real})")
    return path


def sshd_config() -> str:
    from mtl_edge.devbed.qemu import CPU

    return "\n".join([
        f"# written by mtl-edge devbed {NAME}: key-only root login, no PAM (chroot in a network namespace)",
        f"ListenAddress {NET.bed_ip}",
        f"Port {PORT}",
        f"HostKey {SSHD_DIR}/ssh_host_ed25519_key",
        f"AuthorizedKeysFile {SSHD_DIR}/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "PidFile none",
        "LoginGraceTime 120",
        "MaxStartups 20:30:60",
        "Subsystem sftp internal-sftp",
        f"SetEnv QEMU_CPU={CPU}",
        "",
    ])


def _install_sshd(rootfs: Path) -> None:
    from mtl_edge.devbed import qemu

    conf = _inside(rootfs, SSHD_DIR)
    conf.mkdir(parents=True, exist_ok=True)
    os.chmod(conf, 0o755)
    key = conf / "ssh_host_ed25519_key"
    with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as fh:
        fh.write(host_key().read_text())
    os.chmod(key, 0o600)
    write_text(conf / "ssh_host_ed25519_key.pub", host_key().with_name(host_key().name + ".pub").read_text())
    write_text(conf / "authorized_keys", client_key().with_name(client_key().name + ".pub").read_text())
    write_text(conf / "sshd_config", sshd_config())
    run(["chroot", str(rootfs), "mkdir", "-p", "/run/sshd", WORKDIR], f"devbed {NAME}: mkdir -p /run/sshd in the rootfs",
        env=qemu.env(), timeout=120)


def _start_sshd(rootfs: Path) -> int:
    from mtl_edge.devbed import qemu

    argv = ["ip", "netns", "exec", NET.name, "chroot", str(rootfs), "/usr/sbin/sshd", "-D", "-e",
            "-f", f"{SSHD_DIR}/sshd_config"]
    ip = shutil.which("ip")
    if ip is None:
        raise MtlEdgeError(f"devbed {NAME}: the ip command is missing (Debian package iproute2)")
    with open(_log_file(), "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        # posix_spawn, own session: sshd outlives this command and gets no terminal signals
        pid = os.posix_spawn(ip, argv, qemu.env(), setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
        ])
    return pid


def _ours(pid: int, rootfs: str) -> bool:
    """``pid`` is alive and chrooted into our rootfs (not a recycled pid of something else)."""
    try:
        return process_alive(pid) and os.path.realpath(f"/proc/{pid}/root") == os.path.realpath(rootfs)
    except OSError:
        return False


def _banner(timeout: float = 3.0) -> bool:
    """The bed's port answers with an SSH banner."""
    try:
        with socket.create_connection((NET.bed_ip, PORT), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _wait_ready(pid: int, progress: Progress) -> None:
    progress("waiting for sshd (aarch64, under qemu)")
    deadline = time.monotonic() + READY_TIMEOUT
    while not _banner():
        if not process_alive(pid):
            raise MtlEdgeError(f"devbed {NAME}: sshd exited at start (log {_log_file()}): {log_tail(_log_file())}")
        if time.monotonic() > deadline:
            raise MtlEdgeError(f"devbed {NAME}: sshd did not answer on {NET.bed_ip}:{PORT} within "
                               f"{READY_TIMEOUT:.0f} s (log {_log_file()}): {log_tail(_log_file())}")
        time.sleep(0.3)
    progress("checking a login with the client key")
    remaining = max(10.0, deadline - time.monotonic())
    try:
        done = subprocess.run(ssh_argv("true"), capture_output=True, text=True, timeout=remaining,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MtlEdgeError(f"devbed {NAME}: the ssh client is missing (Debian package openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise MtlEdgeError(f"devbed {NAME}: ssh login did not finish in {remaining:.0f} s: {log_tail(_log_file())}") from None
    if done.returncode != 0:
        raise MtlEdgeError(f"devbed {NAME}: ssh login with the client key failed: {done.stderr.strip()} "
                           f"(sshd log: {log_tail(_log_file())})")


def _write_profile() -> Path:
    def q(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid TOML basic string

    text = "\n".join([
        f"# Written by `mtl-edge devbed up {NAME}`: an emulated Raspberry Pi 4 (arm64 Debian under qemu-user,",
        "# Cortex-A72) in a network namespace on this machine. Its timings and memory are not performance",
        "# figures: results carry emulated = true. `mtl-edge devbed down pi4` stops it.",
        f"name = {q(PROFILE_NAME)}",
        'transport = "ssh"',
        f"host = {q(NET.bed_ip)}",
        f"port = {PORT}",
        f"user = {q(USER)}",
        f"key = {q(str(client_key()))}",
        f"known_hosts = {q(str(known_hosts()))}",
        f"workdir = {q(WORKDIR)}",
        'python = "/opt/mtl-edge/venv/bin/python"',
        'runtime = "onnxruntime"',
        'cpu_affinity = "0"',
        "threads = 1",
        "emulated = true",
        "",
    ])
    path = profile_path()
    write_text(path, text)
    return path


# ---- up / down / status -------------------------------------------------------------------------

def _check_host() -> None:
    require_root(f"devbed {NAME}")
    reason = ip_netns_available()
    if reason:
        raise MtlEdgeError(f"devbed {NAME}: {reason}")
    for tool, package in (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"), ("chroot", "coreutils"),
                          ("zstd", "zstd")):
        if shutil.which(tool) is None:
            raise MtlEdgeError(f"devbed {NAME}: {tool} is missing (Debian package {package}; "
                               f"scripts/setup-system.sh installs it)")


def up(progress: Progress = _quiet) -> Path:
    """Start the bed (idempotent: a running bed is left as it is) and return its profile's path."""
    from mtl_edge.devbed import qemu, rootfs as rootfs_mod

    _check_host()
    with locked(folder() / ".lock"):
        current = status()
        if current["state"] == "up":
            progress("already up")
            return _write_profile()
        if current["state"] == "partial":
            progress("clearing a half-started bed")
            _down(progress)
        rootfs = rootfs_mod.ensure_rootfs(progress)
        qemu.ensure_binfmt(progress)
        _ensure_keys()
        try:
            progress(f"network namespace {NET.name} ({NET.host_ip} <-> {NET.bed_ip})")
            NET.up()
            rootfs_mod.mount(rootfs, NAME)
            _install_sshd(rootfs)
            progress("starting sshd")
            pid = _start_sshd(rootfs)
            write_json(_state_file(), {"pid": pid, "rootfs": str(rootfs), "netns": NET.name, "host": NET.bed_ip,
                                       "port": PORT, "started": time.time()})
            _wait_ready(pid, progress)
        except BaseException:
            try:
                _down(_quiet)
            except MtlEdgeError:
                pass
            raise
        return _write_profile()


def _down(progress: Progress) -> None:
    from mtl_edge.devbed import rootfs as rootfs_mod

    state = read_state(_state_file())
    root = state.get("rootfs") or str(rootfs_mod.rootfs_path())
    if NET.exists():
        progress(f"stopping the processes in {NET.name}")
        NET.kill_all()
    pid = state.get("pid")
    if isinstance(pid, int) and _ours(pid, root):
        for sig in (15, 9):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            for _ in range(50):
                if not process_alive(pid):
                    break
                time.sleep(0.1)
            if not process_alive(pid):
                break
    progress("unmounting and removing the namespace")
    rootfs_mod.unmount(Path(root), NAME)
    NET.down()
    _state_file().unlink(missing_ok=True)


def down(progress: Progress = _quiet) -> None:
    """Stop every process the bed started, unmount, delete the namespace. Safe when nothing is up."""
    require_root(f"devbed {NAME}")
    with locked(folder() / ".lock"):
        _down(progress)


def status() -> dict:
    """``state``: up (sshd answers), partial (something is left), down (nothing)."""
    from mtl_edge.devbed import rootfs as rootfs_mod

    require_root(f"devbed {NAME}")  # the state, the namespace's processes and the keys are root's
    state = read_state(_state_file())
    pid = state.get("pid")
    root = state.get("rootfs") or str(rootfs_mod.rootfs_path())
    running = isinstance(pid, int) and _ours(pid, root)
    netns = NET.exists()
    reachable = running and netns and _banner()
    mounted = bool(rootfs_mod.mounted_holders(Path(root))) and NAME in rootfs_mod.mounted_holders(Path(root))
    if reachable:
        summary = "up"
    elif running or netns or mounted or state:
        summary = "partial"
    else:
        summary = "down"
    return {"name": NAME, "state": summary, "host": NET.bed_ip, "port": PORT, "netns": NET.name if netns else None,
            "sshd_pid": pid if running else None, "processes": len(NET.pids()) if netns else 0,
            "profile": str(profile_path()) if profile_path().is_file() else None, "rootfs": root,
            "emulated": True}


def link(down: bool = True) -> None:
    """Cut (``down=True``) or restore the bed's network link, as a dropped Wi-Fi would."""
    NET.link(down=down)
