"""The lifecycle both beds share (``mtl_edge.devbed.lifecycle.Bed``), on a bed of real processes.

The bed here runs ``sh`` with two ``sleep`` children instead of sshd or adbd; the rootfs, binfmt and
mounts are stood in for (the pi4 and Android bed tests run the real ones), so this runs in seconds.
"""

from __future__ import annotations

import os
import tomllib

import pytest

from conftest import need
from mtl_edge.devbed import process_alive, running, spawn, stop, with_children
from mtl_edge.devbed.lifecycle import Bed
from mtl_edge.errors import MtlEdgeError


class Sleepers(Bed):
    name = "sleepers"
    profile_name = "sleepers-emulated"
    transport = "ssh"
    runtime = "onnxruntime"
    workdir = "/root/work"
    tools = ()
    about = ("a shell with two sleeping children.",)
    fail_after_start = False

    def start(self, rootfs, state, progress):
        state["pid"] = spawn(["sh", "-c", "sleep 300 & sleep 300 & wait"], {"PATH": os.defpath}, self.log_file())
        self.write_state(state)
        self.wait_for(lambda: len(with_children(state["pid"])) == 3, state["pid"], "sh", "start its children", 20)
        self.started = with_children(state["pid"])
        if self.fail_after_start:
            raise MtlEdgeError("devbed sleepers: the device did not answer")
        (self.folder() / "answers").touch()

    def stop(self, state, progress):
        if running(state.get("pid"), "sleep 300"):
            stop(with_children(state["pid"]))
        (self.folder() / "answers").unlink(missing_ok=True)

    def probe(self, state):
        alive = running(state.get("pid"), "sleep 300")
        return alive and (self.folder() / "answers").exists(), alive, {"pid": state.get("pid") if alive else None}

    def connection(self, state):
        return {"host": "127.0.0.1", "port": 22}


@pytest.fixture
def bed(tmp_path, monkeypatch):
    need(os.geteuid() == 0, "a bed's up and down need root")
    from mtl_edge.devbed import qemu, rootfs

    holders: list[str] = []
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(rootfs, "ensure_rootfs", lambda progress: tmp_path / "rootfs")
    monkeypatch.setattr(qemu, "ensure_binfmt", lambda progress: None)
    monkeypatch.setattr(rootfs, "mount", lambda tree, holder: holders.append(holder))
    monkeypatch.setattr(rootfs, "unmount", lambda tree, holder: holders.remove(holder) if holder in holders else None)
    monkeypatch.setattr(rootfs, "mounted_holders", lambda tree: list(holders))
    sleepers = Sleepers()
    sleepers.holders = holders
    yield sleepers
    stop(getattr(sleepers, "started", []), grace=0)


def test_up_writes_state_and_a_profile_and_down_stops_the_process_tree(bed):
    profile = bed.up()
    assert profile == bed.profile_path() and tomllib.loads(profile.read_text())["name"] == "sleepers-emulated"
    status = bed.status()
    assert (status["state"], status["pid"], status["profile"]) == ("up", bed.started[0], str(profile))
    assert bed.holders == ["sleepers"] and bed.state_file().is_file()
    assert oct(bed.folder().stat().st_mode & 0o777) == "0o700"
    assert bed.up() == profile and bed.status()["pid"] == bed.started[0]  # up again: the same processes
    bed.down()
    assert not [pid for pid in bed.started if process_alive(pid)]
    assert bed.status()["state"] == "down" and bed.holders == [] and not bed.state_file().exists()
    bed.down()  # safe when nothing is up


def test_a_partial_bed_is_cleared_before_the_next_up(bed):
    bed.up()
    first = bed.started
    (bed.folder() / "answers").unlink()  # the processes run but the device no longer answers
    assert bed.status()["state"] == "partial"
    steps: list[str] = []
    bed.up(steps.append)
    assert "clearing a half-started bed" in steps
    assert not [pid for pid in first if process_alive(pid)]
    assert bed.status()["state"] == "up" and bed.started[0] != first[0] and bed.holders == ["sleepers"]
    bed.down()


def test_a_state_file_alone_is_a_partial_bed(bed):
    bed.write_state({"pid": 2**22 + 1, "rootfs": "/nowhere"})  # a bed that died with this machine's last boot
    assert bed.status()["state"] == "partial"
    bed.down()
    assert bed.status()["state"] == "down"


def test_a_failed_up_leaves_nothing_behind(bed):
    bed.fail_after_start = True
    with pytest.raises(MtlEdgeError, match="did not answer"):
        bed.up()
    assert not [pid for pid in bed.started if process_alive(pid)]
    assert bed.status()["state"] == "down" and bed.holders == [] and not bed.state_file().exists()


def test_a_daemon_that_exits_at_start_is_an_error_with_its_log(bed, tmp_path):
    bed.folder().mkdir(parents=True)
    pid = spawn(["sh", "-c", "echo no such config >&2; exit 3"], {"PATH": os.defpath}, bed.log_file())
    with pytest.raises(MtlEdgeError, match=r"devbed sleepers: sh exited at start \(log .*: .*no such config"):
        bed.wait_for(lambda: False, pid, "sh", "listen", 20)
    assert bed.log_file().read_text().splitlines()[-1] == "no such config"
