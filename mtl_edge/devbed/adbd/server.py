"""One adb server's TCP connection (handshake, stream table, services), the listener and the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

from mtl_edge.devbed.adbd.device import READY, DeviceConfig
from mtl_edge.devbed.adbd.shell import PROCESSES, parse_shell_service, run_command
from mtl_edge.devbed.adbd.sync import sync_service
from mtl_edge.devbed.adbd.wire import (A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE, COMMAND_NAMES, HEADER,
                                       MAX_PAYLOAD, Stream, StreamClosed, pack_message)


AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3  # AUTH arg0 (adb's protocol.txt)
AUTH_TOKEN_SIZE = 20


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
            if self.device.unauthorized:  # a phone whose owner has not (yet) allowed this computer
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(AUTH_TOKEN_SIZE))
                return
            self.online = True
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.device.banner())
        elif command == A_AUTH and self.device.unauthorized:
            # every signature is rejected with a fresh token, as adbd does for an unknown key; the public
            # key the client then sends would raise the "Allow USB debugging?" prompt: nobody answers it
            if arg0 == AUTH_SIGNATURE:
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(AUTH_TOKEN_SIZE))
            else:
                _log("AUTH RSAPUBLICKEY received: the USB debugging prompt stays unanswered")
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
        # AUTH (only asked for when unauthorized), SYNC (obsolete), STLS (newer clients only): ignored

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
    """The uid of the process at the client end of a loopback TCP connection, or None when none is found.

    No adb authentication is emulated, and the commands run as this server's user (root for the bed):
    only connections from that same user (the private adb server it started) are accepted, so another
    local user cannot run commands through the bed.
    """
    import psutil

    peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    if not peer or not local:
        return None
    for conn in psutil.net_connections(kind="tcp"):  # the client's socket: its address is our peer's
        if conn.pid and conn.laddr and conn.raddr and tuple(conn.laddr) == tuple(peer[:2]) \
                and tuple(conn.raddr) == tuple(local[:2]):
            try:
                return psutil.Process(conn.pid).uids().effective
            except psutil.Error:
                return None
    return None


def _log(message: str) -> None:
    sys.stderr.write(f"adbd: {message}\n")
    sys.stderr.flush()



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
    parser = argparse.ArgumentParser(prog="python -m mtl_edge.devbed.adbd",
                                     description="A device-side adb protocol server (a small adbd) for the Android "
                                                 "test bed.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5601,
                        help="TCP port (0 = a free one, printed when ready); keep it outside 5555-5585, where every "
                             "adb server looks for emulators")
    parser.add_argument("--root", default=None,
                        help="the device's root folder (an arm64 userland run by chroot); none or / = this host")
    parser.add_argument("--serial", default="mtl-edge-bed", help="serial reported to commands (ANDROID_SERIAL)")
    parser.add_argument("--model", default="mtl-edge_emulated_arm64", help="ro.product.model in the banner")
    parser.add_argument("--unauthorized", action="store_true",
                        help="answer the handshake with AUTH and reject every key: adb lists the device as "
                             "'unauthorized', as a phone whose USB debugging prompt was not accepted")
    parser.add_argument("--ready-file", default=None, help="write {port, pid} as JSON here once listening")
    parser.add_argument("--any-user", action="store_true",
                        help="accept connections from every local user (default: only this server's own uid)")
    args = parser.parse_args(argv)
    if args.root not in (None, "", "/") and not os.path.isdir(args.root):
        parser.error(f"--root {args.root}: not a folder")
    device = DeviceConfig(args.root, serial=args.serial, model=args.model, unauthorized=args.unauthorized)
    try:
        asyncio.run(serve(device, args.host, args.port, args.ready_file,
                          allow_uid=None if args.any_user else os.getuid()))
    except OSError as exc:
        _log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    return 0
