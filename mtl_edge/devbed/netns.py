"""A network namespace with a veth pair, so that a bed has its own address reachable from the host.

``Netns("mtl-edge-pi4", "mtle-pi4-h", "mtle-pi4-b", "10.213.7.1/30", "10.213.7.2/30")``: the host end
stays in the root namespace with the first address, the bed end moves into the namespace with the
second. ``up()`` and ``down()`` are idempotent; ``link(down=True)`` cuts the link (the bed end goes
down: connections stall, new ones fail) the way a Wi-Fi drop would, ``link(down=False)`` restores it.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mtl_edge.devbed import require_root, run, stop
from mtl_edge.errors import MtlEdgeError

NETNS_DIR = Path("/run/netns")


def _ip(*args: str, step: str, check: bool = True) -> subprocess.CompletedProcess:
    if check:
        return run(["ip", *args], step, timeout=60)
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)


def ip_netns_available() -> str | None:
    """None when ``ip netns`` works here, else the reason it does not."""
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "the ip command is missing (Debian package iproute2)"
    if done.returncode != 0:
        return f"ip netns does not work here: {done.stderr.strip()}"
    return None


@dataclass(frozen=True)
class Netns:
    name: str
    host_dev: str
    bed_dev: str
    host_addr: str  # with prefix, e.g. 10.213.7.1/30
    bed_addr: str

    @property
    def bed_ip(self) -> str:
        return self.bed_addr.split("/")[0]

    @property
    def host_ip(self) -> str:
        return self.host_addr.split("/")[0]

    def exists(self) -> bool:
        return (NETNS_DIR / self.name).exists()

    def _dev_exists(self, dev: str, inside: bool) -> bool:
        args = ["-n", self.name] if inside else []
        return _ip(*args, "link", "show", "dev", dev, step="", check=False).returncode == 0

    def _check_subnet(self) -> None:
        """Refuse to shadow a network the host already uses (another device holding the subnet)."""
        network = ipaddress.ip_interface(self.host_addr).network
        done = _ip("-o", "-4", "addr", "show", step="devbed: ip addr show")
        for line in done.stdout.splitlines():
            fields = line.split()
            dev, addr = fields[1], fields[3]
            if dev != self.host_dev and ipaddress.ip_interface(addr).network.overlaps(network):
                raise MtlEdgeError(f"devbed: the bed's network {network} is already used by {dev} ({addr}) on this host")

    def up(self) -> None:
        require_root("devbed")
        step = f"devbed: network namespace {self.name}"
        if not self.exists():
            self._check_subnet()
            _ip("netns", "add", self.name, step=f"{step}: ip netns add")
        if not self._dev_exists(self.host_dev, inside=False):
            if self._dev_exists(self.bed_dev, inside=True):
                _ip("-n", self.name, "link", "del", self.bed_dev, step=f"{step}: removing a stale veth end")
            self._check_subnet()
            _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.bed_dev, "netns", self.name,
                step=f"{step}: creating the veth pair")
        _ip("addr", "replace", self.host_addr, "dev", self.host_dev, step=f"{step}: host address")
        _ip("link", "set", self.host_dev, "up", step=f"{step}: host link up")
        _ip("-n", self.name, "addr", "replace", self.bed_addr, "dev", self.bed_dev, step=f"{step}: bed address")
        _ip("-n", self.name, "link", "set", "lo", "up", step=f"{step}: loopback up")
        _ip("-n", self.name, "link", "set", self.bed_dev, "up", step=f"{step}: bed link up")
        # no default route: the bed reaches the host's end of the pair and nothing else

    def pids(self) -> list[int]:
        """Every process in the namespace."""
        if not self.exists():
            return []
        done = _ip("netns", "pids", self.name, step="", check=False)
        return sorted({int(p) for p in done.stdout.split() if p.isdigit()})

    def kill_all(self, grace: float = 5.0) -> list[int]:
        """SIGTERM every process in the namespace, SIGKILL what is left after ``grace`` seconds."""
        victims = self.pids()
        stop(victims, grace)
        stop(self.pids(), grace=0.5)  # what forked meanwhile (an sshd session starting)
        left = self.pids()
        if left:
            raise MtlEdgeError(f"devbed: processes {left} in namespace {self.name} survived SIGKILL")
        return victims

    def down(self) -> None:
        """Kill what runs inside, delete the veth pair and the namespace; nothing to do when absent."""
        require_root("devbed")
        if self.exists():
            self.kill_all()
        if self._dev_exists(self.host_dev, inside=False):
            _ip("link", "del", self.host_dev, step=f"devbed: deleting {self.host_dev}")
        if self.exists():
            _ip("netns", "del", self.name, step=f"devbed: ip netns del {self.name}")

    def link(self, down: bool = True) -> None:
        """Cut (``down=True``) or restore the bed's link: ``ip netns exec NS ip link set DEV down|up``."""
        require_root("devbed")
        if not self.exists():
            raise MtlEdgeError(f"devbed: namespace {self.name} does not exist (is the bed up?)")
        run(["ip", "netns", "exec", self.name, "ip", "link", "set", self.bed_dev, "down" if down else "up"],
            f"devbed: setting {self.bed_dev} {'down' if down else 'up'}", timeout=60)
        if not down:
            # wait for the carrier, then forget the failed neighbour entry of the cut (else "No route to host")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self._carrier():
                time.sleep(0.05)
            _ip("neigh", "flush", "dev", self.host_dev, step="", check=False)
            _ip("-n", self.name, "neigh", "flush", "dev", self.bed_dev, step="", check=False)

    def _carrier(self) -> bool:
        try:
            return Path(f"/sys/class/net/{self.host_dev}/carrier").read_text().strip() == "1"
        except OSError:
            return False
