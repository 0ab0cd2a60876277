"""``shell:``, ``shell,v2,...:`` and ``exec:``: a device command on one stream (v2 packets carry stderr and the exit code)."""

from __future__ import annotations

import asyncio
import os
import signal
import struct

from mtl_edge.devbed.adbd.device import DeviceConfig
from mtl_edge.devbed.adbd.wire import SYNC_DATA_MAX, Stream, StreamClosed

# shell protocol v2 packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = 0, 1, 2, 3, 4, 5


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
