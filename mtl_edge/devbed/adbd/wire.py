"""adb's wire format: the 24-byte message header, and one stream with adb's one-write-in-flight flow control."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtl_edge.devbed.adbd.server import Connection

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
SYNC_DATA_MAX = 64 * 1024  # also the chunk a shell command's output is sent in
SYNC_PATH_MAX = 1024


class StreamClosed(Exception):
    """The peer closed the stream (or the connection went away)."""



def checksum(data: bytes) -> int:
    """adb's 'crc': the byte sum (only checked by peers older than protocol 0x01000001)."""
    return sum(data) & 0xFFFFFFFF


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return HEADER.pack(command, arg0, arg1, len(data), checksum(data), command ^ 0xFFFFFFFF) + data


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

