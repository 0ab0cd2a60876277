"""The emulated Raspberry Pi 4: an arm64 Debian userland under qemu-user (Cortex-A72) with its own sshd and address.

``up()`` (the shared ``lifecycle.Bed``): the rootfs, qemu-aarch64 in binfmt_misc, then this bed's
own part (``Pi4.start``): a network namespace
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

import os
import socket
import subprocess
from pathlib import Path

from mtl_edge.atomic import write_text
from mtl_edge.devbed import Progress, require_root, run, running, spawn, stop
from mtl_edge.devbed.lifecycle import Bed
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


def client_key() -> Path:
    return BED.folder() / "id_ed25519"


def host_key() -> Path:
    return BED.folder() / "ssh_host_ed25519_key"


def known_hosts() -> Path:
    return BED.folder() / "known_hosts"


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
    _keygen(host_key(), f"mtl-edge devbed {NAME} host")
    _keygen(client_key(), f"mtl-edge devbed {NAME} client")
    key_type, key_data = host_key().with_name(host_key().name + ".pub").read_text().split()[:2]
    host = NET.bed_ip if PORT == 22 else f"[{NET.bed_ip}]:{PORT}"
    write_text(known_hosts(), f"{host} {key_type} {key_data}\n")


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
    from mtl_edge.devbed.rootfs import inside

    conf = inside(rootfs, SSHD_DIR)
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


def _banner(timeout: float = 3.0) -> bool:
    """The bed's port answers with an SSH banner."""
    try:
        with socket.create_connection((NET.bed_ip, PORT), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _check_login() -> None:
    """A real ``ssh ... true`` with the client key, the host key verified against known_hosts."""
    try:
        done = subprocess.run(ssh_argv("true"), capture_output=True, text=True, timeout=READY_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MtlEdgeError(f"devbed {NAME}: the ssh client is missing (Debian package openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise BED.fail(f"ssh login did not finish in {READY_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise BED.fail(f"ssh login with the client key failed: {done.stderr.strip()}")


class Pi4(Bed):
    """The bed's own parts: keys, a namespace, sshd in the rootfs."""

    name = NAME
    profile_name = PROFILE_NAME
    transport = "ssh"
    runtime = "onnxruntime"
    workdir = WORKDIR
    log_name = "sshd.log"
    tools = (("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"), *Bed.tools)
    about = ("an emulated Raspberry Pi 4 (arm64 Debian under qemu-user,",
             "Cortex-A72) in a network namespace on this machine.")

    def check_host(self) -> None:
        super().check_host()
        reason = ip_netns_available()
        if reason:
            raise MtlEdgeError(f"devbed {NAME}: {reason}")

    def start(self, rootfs: Path, state: dict, progress: Progress) -> None:
        from mtl_edge.devbed import qemu

        _ensure_keys()
        progress(f"network namespace {NET.name} ({NET.host_ip} <-> {NET.bed_ip})")
        NET.up()
        _install_sshd(rootfs)
        progress("starting sshd")
        pid = spawn(["ip", "netns", "exec", NET.name, "chroot", str(rootfs), "/usr/sbin/sshd", "-D", "-e",
                     "-f", f"{SSHD_DIR}/sshd_config"], qemu.env(), self.log_file())
        state.update(pid=pid, netns=NET.name, host=NET.bed_ip, port=PORT)
        self.write_state(state)
        progress("waiting for sshd (aarch64, under qemu)")
        self.wait_for(_banner, pid, "sshd", f"answer on {NET.bed_ip}:{PORT}", READY_TIMEOUT, interval=0.3)
        progress("checking a login with the client key")
        _check_login()

    def stop(self, state: dict, progress: Progress) -> None:
        if NET.exists():
            progress(f"stopping the processes in {NET.name}")
            NET.kill_all()
        if _sshd(state.get("pid")):
            stop([state["pid"]])
        NET.down()

    def probe(self, state: dict) -> tuple[bool, bool, dict]:
        require_root(f"devbed {NAME}")  # the state, the namespace's processes and the keys are root's
        pid = state.get("pid")
        sshd, netns = _sshd(pid), NET.exists()
        facts = {"host": NET.bed_ip, "port": PORT, "netns": NET.name if netns else None,
                 "sshd_pid": pid if sshd else None, "processes": len(NET.pids()) if netns else 0}
        return sshd and netns and _banner(), sshd or netns, facts

    def connection(self, state: dict) -> dict:
        return {"host": NET.bed_ip, "port": PORT, "user": USER, "key": str(client_key()),
                "known_hosts": str(known_hosts())}


def _sshd(pid: object) -> bool:
    """The recorded pid is still the bed's sshd (its command line names the bed's sshd_config)."""
    return running(pid, "/usr/sbin/sshd", f"{SSHD_DIR}/sshd_config")


BED = Pi4()
up, down, status, folder, profile_path = BED.up, BED.down, BED.status, BED.folder, BED.profile_path


def link(down: bool = True) -> None:
    """Cut (``down=True``) or restore the bed's network link, as a dropped Wi-Fi would."""
    NET.link(down=down)
