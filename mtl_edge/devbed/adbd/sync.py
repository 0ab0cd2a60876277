"""``sync:``: the file sync protocol (STAT / STA2 / LST2, LIST / LIS2, SEND, RECV, QUIT) on one stream."""

from __future__ import annotations

import errno
import os
import stat
import struct

from mtl_edge.devbed.adbd.device import DeviceConfig, SyncError
from mtl_edge.devbed.adbd.wire import SYNC_DATA_MAX, SYNC_PATH_MAX, Stream, StreamClosed

STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")  # id, error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # the same + namelen


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

