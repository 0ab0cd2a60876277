"""A device-side adb protocol server (a small ``adbd``) for the Android test bed.

No Android device or emulator can run on the machines this project is tested on, and no adbd
exists for them. This server is the one test double at that boundary: the REAL adb client and
server (Debian's ``adb``, 29.0.6) connect to it over TCP (``adb connect 127.0.0.1:PORT``) exactly as
they connect to a phone with wireless debugging, and it answers with the adb wire protocol:

* messages: the 24-byte header (command, arg0, arg1, data length, data checksum, magic =
  command ^ 0xffffffff); the checksum is computed on what we send and never checked on what we
  receive (protocol version 0x01000001 skips it, and the client sends 0);
* the connect handshake: CNXN answered with CNXN(0x01000001, max payload, banner
  ``device::ro.product.name=...;ro.product.model=...;ro.product.device=...;features=...``); no AUTH,
  unless started with ``--unauthorized``: then CNXN is answered with AUTH TOKEN, every signature
  with a new token, and the public key is left unanswered (the phone's prompt nobody accepts), so
  adb lists the device as ``unauthorized``;
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
(everything runs as the user that started this server), authentication (no keys are checked, no TLS:
instead only connections from this server's own uid are accepted, see ``peer_uid``),
USB, ``adb root`` / ``remount`` / ``reboot`` / ``reverse`` / ``jdwp`` / ``abb`` and ptys (a pty shell
runs without a terminal). Timing under qemu is meaningless: results from this bed are marked
``emulated``.

Entry point (the bed starts it as a background process)::

    python -m mtl_edge.devbed.adbd --port 5601 --root ROOTFS [--serial S] [--ready-file F]

It prints ``mtl-edge-adbd ready port=P pid=N`` once listening (and writes the same facts as JSON to
``--ready-file``); SIGTERM kills the commands it started and exits, which the adb server sees as
the device going away.

The modules follow the protocol's own seams: ``wire`` (the 24-byte messages and flow-controlled
streams), ``device`` (what the device is: its banner, how a command runs, where a device path is on
this host), ``shell`` (shell v1 / v2 and exec), ``sync`` (push, pull, ls), ``server`` (one connection's
handshake and stream table, the listener, the command line).
"""

from __future__ import annotations

from mtl_edge.devbed.adbd.device import MARKER_ENV, READY

__all__ = ["MARKER_ENV", "READY"]
