"""A device-side adb protocol server (a small ``adbd``) for the Android test bed.

No Android device or emulator can run on the machines this project is tested on, and no adbd
exists for them. This server is the one test double at that boundary: the REAL adb client and
server (Debian's ``adb``, 29.0.6) connect to it over TCP (``adb connect 127.0.0.1:PORT``) exactly as
they connect to a phone with wireless debugging, and it answers with the adb wire protocol:

* messages: the 24-byte header (command, arg0, arg1, data length, data checksum, magic =
  command ^ 0xffffffff); the checksum is computed on what we send and never checked on what we
  receive (protocol version 0x01000001 skips it, and the client sends 0);
* the connect handshake: CNXN answered with CNXN(0x01000001, max payload, banner
  ``device::ro.product.name=...;ro.product.model=...;ro.product.device=...;features=...``); no AUTH;
* streams: OPEN / OKAY / WRTE / CLSE with local and remote ids, one WRTE in flight per stream
  (the next one waits for the peer's OKAY), every received WRTE acknowledged with OKAY;
* ``shell:CMD`` (v1: one raw stream, stdout and stderr merged, closed at exit, no exit code),
  ``shell,v2[,TERM=...][,raw|pty]:CMD`` (shell protocol v2 packets: id 0 stdin, 1 stdout,
  2 stderr, 3 exit code, 4 close stdin, 5 window size (ignored); ``adb shell`` then returns the
  remote exit code), ``exec:CMD`` (raw stream, as ``adb exec-out``);
* ``sync:``: STAT (lstat v1), STA2 / LST2 (stat v2), LIST / LIS2 (DENT / DNT2 entries), SEND
  ``path,mode`` + DATA chunks + DONE mtime -> OKAY or FAIL, RECV -> DATA chunks + DONE or FAIL,
  QUIT. Because the banner lists stat_v2 and ls_v2, the client 29.0.6 sends STA2 (push, pull) and
  LIS2 (ls, pulling a folder); STAT, LST2 and LIST are answered for other clients. SEND creates
  the parent folders (feature ``fixed_push_mkdir``).

Commands are shell strings on the device side, as on a phone: the adb client sends the command
line as text and adbd hands it to ``/bin/sh -c``. With a ``--root`` folder (the arm64 Debian
userland of the pi4 bed) a command runs as ``chroot ROOT /bin/sh -c CMD`` with
``QEMU_CPU=cortex-a72`` (the kernel runs the aarch64 binaries through qemu-user via binfmt_misc),
so the "phone" executes aarch64 code; sync paths are resolved inside ROOT (absolute symlinks are
re-rooted, ``..`` in a requested path is refused). Without ``--root`` (or ``--root /``) commands run
on this host: the fast mode the protocol tests use.

What it does NOT emulate (a command that needs one of these fails as it would on a device that
lacks it): ``getprop`` / system properties (the banner's product fields are the only ones),
``dumpsys``, ``pm`` / ``am`` / ``cmd`` / ``adb install``, SELinux, Android users and app processes
(everything runs as the user that started this server), authentication (no AUTH, no keys, no TLS:
instead only connections from this server's own uid are accepted, see ``peer_uid``),
USB, ``adb root`` / ``remount`` / ``reboot`` / ``reverse`` / ``jdwp`` / ``abb`` and ptys (a pty shell
runs without a terminal). Timing under qemu is meaningless: results from this bed are marked
``emulated``.

Entry point (the bed starts it as a background process)::

    python -m mtl_edge.devbed.adbd --port 5601 --root ROOTFS [--serial S] [--ready-file F]

It prints ``mtl-edge-adbd ready port=P pid=N`` once listening (and writes the same facts as JSON to
``--ready-file``); SIGTERM kills the commands it started and exits, which the adb server sees as
the device going away.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import shutil
import signal
import socket
import stat
import struct
import sys
import threading
from collections import deque
from pathlib import Path

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453
COMMAND_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE",
                 A_WRTE: "WRTE", A_STLS: "STLS"}

A_VERSION = 0x01000001  # the first version that skips the data checksum
MAX_PAYLOAD = 256 * 1024
HEADER = struct.Struct("<6I")
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")
DEVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY = "mtl-edge-adbd ready"
MARKER_ENV = "MTL_EDGE_ADBD_PID"  # in every command's environment: the bed finds strays of a killed adbd by it

# shell protocol v2 packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = 0, 1, 2, 3, 4, 5

STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")  # id, error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # the same + namelen


class StreamClosed(Exception):
    """The peer closed the stream (or the connection went away)."""


class SyncError(Exception):
    """A sync request that fails: sent to the client as FAIL + message."""


def checksum(data: bytes) -> int:
    """adb's 'crc': the byte sum (only checked by peers older than protocol 0x01000001)."""
    return sum(data) & 0xFFFFFFFF


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return HEADER.pack(command, arg0, arg1, len(data), checksum(data), command ^ 0xFFFFFFFF) + data


# ------------------------------------------------------------------------------------------------ device

class DeviceConfig:
    """What the emulated device is: where its files live and how it runs commands."""

    def __init__(self, root: str | None = None, serial: str = "mtl-edge-bed", model: str = "mtl-edge_emulated_arm64",
                 product: str = "mtl_edge_bed", qemu_cpu: str = "cortex-a72"):
        self.root = None if root in (None, "", "/") else os.path.abspath(root)
        self.chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        self.serial = serial
        self.model = model
        self.product = product
        self.qemu_cpu = qemu_cpu

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


# ------------------------------------------------------------------------------------------------ streams

class Stream:
    """One adb stream (a service opened by the host): buffered input, flow-controlled output."""

    def __init__(self, conn: "Connection", local_id: int, remote_id: int):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.buffer = bytearray()
        self.readable = asyncio.Event()
        self.acked = asyncio.Event()
        self.acked.set()
        self.remote_closed = False
        self.close_sent = False
        self.on_close = None  # called when the host closes the stream

    # input (WRTE from the host)
    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.readable.set()

    async def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (StreamClosed when the stream ends first)."""
        while len(self.buffer) < n:
            if self.remote_closed:
                raise StreamClosed()
            self.readable.clear()
            await self.readable.wait()
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def read_some(self) -> bytes:
        """What is buffered (waiting for some); b'' at the end of the stream."""
        while not self.buffer:
            if self.remote_closed:
                return b""
            self.readable.clear()
            await self.readable.wait()
        out = bytes(self.buffer)
        self.buffer.clear()
        return out

    # output (WRTE to the host, one in flight)
    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        step = self.conn.max_payload
        for start in range(0, len(view), step):
            await self.acked.wait()
            if self.remote_closed or self.close_sent or self.conn.closed:
                raise StreamClosed()
            self.acked.clear()
            self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[start:start + step]))
            await self.conn.drain()

    def okay(self) -> None:
        self.acked.set()

    def close(self) -> None:
        """Close from our side (CLSE to the host)."""
        if not self.close_sent:
            self.close_sent = True
            if not self.remote_closed and not self.conn.closed:
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.conn.streams.pop(self.local_id, None)

    def closed_by_remote(self) -> None:
        self.remote_closed = True
        self.readable.set()
        self.acked.set()
        self.conn.streams.pop(self.local_id, None)
        if self.on_close is not None:
            self.on_close()


# ------------------------------------------------------------------------------------------------ services

class Processes:
    """The commands this server started (killed with their process groups on close or SIGTERM)."""

    def __init__(self):
        self.pids: set[int] = set()

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_all(self) -> None:
        for pid in list(self.pids):
            self.kill(pid)


PROCESSES = Processes()


def parse_shell_service(service: str) -> tuple[bool, str | None, str]:
    """``shell[,v2][,TERM=x][,raw|pty]:CMD`` -> (shell protocol v2?, TERM, command)."""
    head, _, command = service.partition(":")
    args = head.split(",")[1:]
    v2 = "v2" in args
    term = next((a[5:] for a in args if a.startswith("TERM=")), None)
    return v2, term, command


async def run_command(stream: Stream, device: DeviceConfig, command: str, protocol_v2: bool,
                      term: str | None = None) -> None:
    """Run a device command on a stream: v2 packets with the exit code, or a raw stream."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *device.command_argv(command), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if protocol_v2 else asyncio.subprocess.STDOUT,
            env=device.command_env(term), cwd="/", start_new_session=True)
    except OSError as exc:
        message = f"adbd: cannot start the shell: {exc}\n".encode()
        try:
            if protocol_v2:
                await stream.write(_shell_packet(SHELL_STDERR, message) + _shell_packet(SHELL_EXIT, bytes([127])))
            else:
                await stream.write(message)
        except StreamClosed:
            pass
        stream.close()
        return
    PROCESSES.pids.add(proc.pid)

    def host_closed():
        PROCESSES.kill(proc.pid, signal.SIGHUP)
        PROCESSES.kill(proc.pid)

    stream.on_close = host_closed

    async def pump(reader, packet_id):
        while True:
            chunk = await reader.read(SYNC_DATA_MAX)
            if not chunk:
                return
            try:
                await stream.write(_shell_packet(packet_id, chunk) if protocol_v2 else chunk)
            except StreamClosed:
                return

    async def feed_stdin():
        try:
            if protocol_v2:
                while True:
                    kind, size = struct.unpack("<BI", await stream.read(5))
                    data = await stream.read(size) if size else b""
                    if kind == SHELL_STDIN:
                        await _write_stdin(proc, data)
                    elif kind == SHELL_CLOSE_STDIN:
                        _close_stdin(proc)
            else:
                while True:
                    data = await stream.read_some()
                    if not data:
                        break
                    await _write_stdin(proc, data)
        except StreamClosed:
            pass
        _close_stdin(proc)

    stdin_task = asyncio.create_task(feed_stdin())
    pumps = [pump(proc.stdout, SHELL_STDOUT)]
    if protocol_v2:
        pumps.append(pump(proc.stderr, SHELL_STDERR))
    try:
        await asyncio.gather(*pumps)
        code = await proc.wait()
    finally:
        PROCESSES.pids.discard(proc.pid)
        stdin_task.cancel()
    if code < 0:  # killed by a signal: a shell reports 128 + signal
        code = 128 - code
    if protocol_v2:
        try:
            await stream.write(_shell_packet(SHELL_EXIT, bytes([code & 0xFF])))
        except StreamClosed:
            pass
    stream.close()


def _shell_packet(packet_id: int, data: bytes) -> bytes:
    return struct.pack("<BI", packet_id, len(data)) + data


async def _write_stdin(proc, data: bytes) -> None:
    if proc.stdin is None or proc.stdin.is_closing():
        return
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass


def _close_stdin(proc) -> None:
    if proc.stdin is not None and not proc.stdin.is_closing():
        try:
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass


def _sync_status(kind: bytes, message: str = "") -> bytes:
    data = message.encode(errors="replace")
    return kind + struct.pack("<I", len(data)) + data


def _fail(what: str, exc: OSError) -> SyncError:
    return SyncError(f"{what}: {exc.strerror or exc}")


def _stat_v2(ident: bytes, st: os.stat_result | None, error: int = 0) -> bytes:
    if st is None:
        return STAT_V2.pack(ident, error, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return STAT_V2.pack(ident, 0, st.st_dev & (2**64 - 1), st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                        st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime))


async def sync_service(stream: Stream, device: DeviceConfig) -> None:
    """The file sync protocol (adb push / pull / ls) on one stream."""
    try:
        while True:
            header = await stream.read(8)
            ident, size = header[:4], struct.unpack("<I", header[4:])[0]
            if ident == b"QUIT":
                break
            if ident not in (b"STAT", b"STA2", b"LST2", b"LIST", b"LIS2", b"SEND", b"RECV"):
                await stream.write(_sync_status(b"FAIL", f"unknown sync request {ident!r}"))
                break
            if size > SYNC_PATH_MAX:
                await stream.write(_sync_status(b"FAIL", f"path too long ({size} bytes)"))
                break
            path = (await stream.read(size)).decode("utf-8", errors="surrogateescape")
            try:
                if ident == b"STAT":
                    await stream.write(_sync_stat_v1(device, path))
                elif ident in (b"STA2", b"LST2"):
                    await stream.write(_sync_stat(device, path, ident))
                elif ident in (b"LIST", b"LIS2"):
                    await _sync_list(stream, device, path, v2=ident == b"LIS2")
                elif ident == b"SEND":
                    await _sync_send(stream, device, path)
                else:
                    await _sync_recv(stream, device, path)
            except SyncError as exc:  # as adbd: FAIL, then the sync session ends
                await stream.write(_sync_status(b"FAIL", str(exc)))
                break
    except StreamClosed:
        return
    stream.close()


def _sync_stat_v1(device: DeviceConfig, path: str) -> bytes:
    try:
        st = os.lstat(device.host_path(path, follow_last=False))
        return struct.pack("<4sIII", b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
    except (OSError, SyncError):
        return struct.pack("<4sIII", b"STAT", 0, 0, 0)


def _sync_stat(device: DeviceConfig, path: str, ident: bytes) -> bytes:
    try:
        host = device.host_path(path, follow_last=ident == b"STA2")
        st = os.stat(host) if ident == b"STA2" else os.lstat(host)
        return _stat_v2(ident, st)
    except OSError as exc:
        return _stat_v2(ident, None, exc.errno or errno.EIO)
    except SyncError:
        return _stat_v2(ident, None, errno.EACCES)


async def _sync_list(stream: Stream, device: DeviceConfig, path: str, v2: bool) -> None:
    out = bytearray()
    try:
        folder = device.host_path(path)
        names = [".", ".."] + sorted(os.listdir(folder))
    except (OSError, SyncError):
        names, folder = [], ""
    for name in names:
        try:
            st = os.lstat(os.path.join(folder, name))
        except OSError:
            continue
        raw = name.encode(errors="surrogateescape")
        if v2:
            out += DENT_V2.pack(b"DNT2", 0, st.st_dev & (2**64 - 1), st.st_ino, st.st_mode, st.st_nlink, st.st_uid,
                                st.st_gid, st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime), len(raw))
        else:
            out += struct.pack("<4sIIII", b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw))
        out += raw
        if len(out) >= SYNC_DATA_MAX:
            await stream.write(bytes(out))
            out.clear()
    out += (DENT_V2.pack(b"DONE", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) if v2
            else struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))
    await stream.write(bytes(out))


async def _sync_send(stream: Stream, device: DeviceConfig, spec: str) -> None:
    """SEND path,mode: DATA chunks then DONE mtime; the file appears whole (temporary name + rename)."""
    path, _, mode_text = spec.rpartition(",")
    if not path or not mode_text.isdigit():
        path, mode_text = spec, str(0o100644)
    mode = int(mode_text)
    error: SyncError | None = None
    handle = None
    tmp = target = ""
    try:
        target = device.host_path(path, follow_last=False)
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise _fail("secure_mkdirs failed", exc) from None
        if not stat.S_ISLNK(mode):
            if os.path.isdir(target) and not os.path.islink(target):
                raise SyncError(f"couldn't create file: {os.strerror(errno.EISDIR)}")
            tmp = os.path.join(parent, f".adbd-{os.getpid()}-{stream.local_id}.{os.path.basename(target)}.tmp")
            try:
                handle = open(tmp, "wb")
            except OSError as exc:
                raise _fail("couldn't create file", exc) from None
    except SyncError as exc:
        error = exc
    link_target = bytearray()
    mtime = 0
    while True:  # read the whole transfer even after an error, then answer once (as adbd does)
        header = await stream.read(8)
        ident, size = header[:4], struct.unpack("<I", header[4:])[0]
        if ident == b"DONE":
            mtime = size
            break
        if ident != b"DATA" or size > SYNC_DATA_MAX:
            error = error or SyncError(f"invalid data message {ident!r} ({size} bytes)")
            if handle is not None:
                handle.close()
                os.unlink(tmp)
            raise error
        data = await stream.read(size)
        if error is not None:
            continue
        if stat.S_ISLNK(mode):
            link_target += data
            continue
        try:
            handle.write(data)
        except OSError as exc:
            error = _fail("write failed", exc)
    try:
        if error is None and stat.S_ISLNK(mode):
            try:
                if os.path.lexists(target):
                    os.unlink(target)
                os.symlink(bytes(link_target).decode(errors="surrogateescape"), target)
            except OSError as exc:
                error = _fail("symlink failed", exc)
        elif handle is not None:
            try:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                handle = None
                if error is None:
                    os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
                    os.utime(tmp, (mtime, mtime))
                    os.replace(tmp, target)
            except OSError as exc:
                error = error or _fail("write failed", exc)
    finally:
        if handle is not None:
            handle.close()
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    if error is not None:
        raise error
    await stream.write(_sync_status(b"OKAY"))


async def _sync_recv(stream: Stream, device: DeviceConfig, path: str) -> None:
    try:
        handle = open(device.host_path(path), "rb")
    except OSError as exc:
        raise _fail("open failed", exc) from None
    with handle:
        while True:
            try:
                chunk = handle.read(SYNC_DATA_MAX)
            except OSError as exc:
                raise _fail("read failed", exc) from None
            if not chunk:
                break
            await stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
    await stream.write(b"DONE" + struct.pack("<I", 0))


# ------------------------------------------------------------------------------------------------ connection

class Connection:
    """One TCP connection from an adb server: the handshake, then streams."""

    def __init__(self, device: DeviceConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.device = device
        self.reader = reader
        self.writer = writer
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.online = False
        self.closed = False
        self.tasks: set[asyncio.Task] = set()

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        if not self.closed:
            self.writer.write(pack_message(command, arg0, arg1, data))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def serve(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(HEADER.size)
                command, arg0, arg1, length, _check, magic = HEADER.unpack(header)
                if magic != command ^ 0xFFFFFFFF or length > 16 * 1024 * 1024:
                    _log(f"protocol error: bad header {header.hex()}")
                    break
                data = await self.reader.readexactly(length) if length else b""
                self.dispatch(command, arg0, arg1, data)
                await self.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.shutdown()

    def dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            for stream in list(self.streams.values()):  # a new handshake resets the connection
                stream.closed_by_remote()
            self.max_payload = max(4096, min(arg1, MAX_PAYLOAD))
            self.online = True
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner())
        elif not self.online:
            _log(f"{COMMAND_NAMES.get(command, hex(command))} before CNXN ignored")
        elif command == A_OPEN:
            self.open(arg0, data.rstrip(b"\0").decode("utf-8", errors="surrogateescape"))
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None or stream.remote_id != arg0:
                self.send(A_CLSE, 0, arg0)
                return
            stream.feed(data)
            self.send(A_OKAY, stream.local_id, stream.remote_id)
        elif command == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.okay()
        elif command == A_CLSE:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.closed_by_remote()
        # AUTH (we never ask for it), SYNC (obsolete), STLS (newer clients only): ignored

    def open(self, remote_id: int, service: str) -> None:
        if service.startswith("shell"):
            v2, term, command = parse_shell_service(service)
            job = lambda stream: run_command(stream, self.device, command, v2, term)  # noqa: E731
        elif service.startswith("exec:"):
            command = service[5:]
            job = lambda stream: run_command(stream, self.device, command, False)  # noqa: E731
        elif service == "sync:":
            job = lambda stream: sync_service(stream, self.device)  # noqa: E731
        else:
            _log(f"service refused (not emulated): {service[:80]!r}")
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = self.next_id
        self.next_id += 1
        stream = Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        task = asyncio.create_task(self._run(stream, job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, stream: Stream, job) -> None:
        try:
            await job(stream)
        except StreamClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - one broken service must not take the device down
            _log(f"service error on stream {stream.local_id}: {exc!r}")
        finally:
            stream.close()
            await self.drain()

    def shutdown(self) -> None:
        for stream in list(self.streams.values()):
            stream.closed_by_remote()
        self.closed = True
        try:
            self.writer.close()
        except RuntimeError:
            pass


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid that owns the client end of a loopback TCP connection (from /proc/net/tcp[6]), or None.

    No adb authentication is emulated, and the commands run as this server's user (root for the bed):
    only connections from that same user (the private adb server it started) are accepted, so another
    local user cannot run commands through the bed.
    """
    peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    if not peer or not local:
        return None
    family = writer.get_extra_info("socket").family

    def key(address: tuple) -> str:
        raw = socket.inet_pton(family, address[0])
        words = struct.unpack(f"={len(raw) // 4}I", raw)  # /proc prints each 32-bit word in host order
        return "".join(f"{w:08X}" for w in words) + f":{address[1]:04X}"

    wanted = (key(peer), key(local))
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    try:
        with open(table) as fh:
            next(fh, None)
            for line in fh:
                fields = line.split()
                if len(fields) > 7 and (fields[1], fields[2]) == wanted:
                    return int(fields[7])
    except OSError:
        return None
    return None


def _log(message: str) -> None:
    sys.stderr.write(f"adbd: {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------------ main

async def serve(device: DeviceConfig, host: str, port: int, ready_file: str | None = None,
                allow_uid: int | None = None) -> None:
    connections: set[Connection] = set()

    async def handle(reader, writer):
        if allow_uid is not None:
            uid = peer_uid(writer)
            if uid != allow_uid:
                _log(f"connection from {writer.get_extra_info('peername')} (uid {uid}) refused: only uid {allow_uid}")
                writer.close()
                return
        conn = Connection(device, reader, writer)
        connections.add(conn)
        try:
            await conn.serve()
        finally:
            connections.discard(conn)

    server = await asyncio.start_server(handle, host, port)
    actual = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():  # (serve() may also run in a test's thread)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    facts = {"port": actual, "pid": os.getpid(), "host": host, "serial": device.serial, "root": device.root or "/"}
    if ready_file:
        tmp = f"{ready_file}.tmp"
        Path(tmp).write_text(json.dumps(facts) + "\n")
        os.replace(tmp, ready_file)
    print(f"{READY} port={actual} pid={os.getpid()}", flush=True)
    async with server:
        await stop.wait()
    PROCESSES.kill_all()  # the device goes away with everything it ran
    for conn in list(connections):
        conn.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_edge.devbed.adbd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5601,
                        help="TCP port (0 = a free one, printed when ready); keep it outside 5555-5585, where every "
                             "adb server looks for emulators")
    parser.add_argument("--root", default=None,
                        help="the device's root folder (an arm64 userland run by chroot); none or / = this host")
    parser.add_argument("--serial", default="mtl-edge-bed", help="serial reported to commands (ANDROID_SERIAL)")
    parser.add_argument("--model", default="mtl-edge_emulated_arm64", help="ro.product.model in the banner")
    parser.add_argument("--ready-file", default=None, help="write {port, pid} as JSON here once listening")
    parser.add_argument("--any-user", action="store_true",
                        help="accept connections from every local user (default: only this server's own uid)")
    args = parser.parse_args(argv)
    if args.root not in (None, "", "/") and not os.path.isdir(args.root):
        parser.error(f"--root {args.root}: not a folder")
    device = DeviceConfig(args.root, serial=args.serial, model=args.model)
    try:
        asyncio.run(serve(device, args.host, args.port, args.ready_file,
                          allow_uid=None if args.any_user else os.getuid()))
    except OSError as exc:
        _log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
