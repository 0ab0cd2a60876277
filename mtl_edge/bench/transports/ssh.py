"""The SSH transport: the runner on a remote Linux device (a Raspberry Pi) over one paramiko connection.

Security rules, because a benchmark harness must never be the weak link on a lab network:

* host keys are checked against the profile's ``known_hosts`` only; an unknown key is refused unless
  the profile sets ``accept_unknown_host = true`` (then it is logged with its fingerprint and
  appended to that file, like OpenSSH's ``accept-new``); a changed key is always refused;
* key-based authentication with the profile's ``key`` (no agent, no ``~/.ssh/id_*`` guessing unless
  ``allow_agent`` / ``look_for_keys`` say so); key contents never appear in messages;
* every command is built from argv lists: each argument ``shlex.quote``-d, the whole script run by
  ``sh -c`` so the login shell's syntax does not matter.

Files go over SFTP into the remote work folder under a temporary name and are renamed into place,
so an interrupted upload never leaves a half file under the real name; a file already there with
the same size and sha256 is not sent again. A silent dead link is found by keepalive probes within
seconds (``keepalive``, default 5 s; dead after three intervals without an answer).

One concept, one file (about 470 lines): connection, host-key policy, uploads, remote runs with
timeouts and the dead-link detection share one paramiko session and its error mapping; splitting them
would spread that state over several modules.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
import os
import posixpath
import re
import select
import shlex
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paramiko

from mtl_edge.bench.devices import profile_flag
from mtl_edge.bench.transports import FileDigests, RunnerTimeout, shell_assignments
from mtl_edge.errors import MtlEdgeError

log = logging.getLogger(__name__)

PID_MARKER = "MTL_EDGE_PID "
COMMAND_TIMEOUT = 300.0  # housekeeping commands (probe, mkdir, sha256sum of an artefact on an SD card)


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a host key (what ``ssh-keygen -lf`` prints)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _sh(script: str) -> str:
    """Run ``script`` with POSIX sh whatever the user's login shell is (fish, csh, ...)."""
    return "exec sh -c " + shlex.quote(script)


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, key):
        super().__init__("unknown host key")
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(key)


class _AcceptAndRecord(paramiko.AutoAddPolicy):
    """AutoAddPolicy that warns with the fingerprint and appends the key to known_hosts (never rewrites it)."""

    def __init__(self, device_name: str, known_hosts: Path):
        self.device_name = device_name
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("device %s: accepting the UNKNOWN host key of %s (%s %s) because the profile sets "
                    "accept_unknown_host = true; recorded in %s", self.device_name, hostname, key.get_name(),
                    fingerprint(key), self.known_hosts)
        try:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.known_hosts, "a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            log.warning("device %s: could not record the host key in %s (%s)", self.device_name,
                        self.known_hosts, exc)


class SshTransport:
    """Runs the runner on a device reached over SSH; one connection serves the whole bench call."""

    def __init__(self, device):
        self.device = device
        extra = device.extra
        self.host = str(extra.get("host") or "")
        if not self.host:
            raise MtlEdgeError(f"device {device.name}: the profile needs a `host` for the ssh transport")
        try:
            self.port = int(extra.get("port", 22))
            self.connect_timeout = float(extra.get("connect_timeout", 10))
            self.keepalive = float(extra.get("keepalive", 5))
        except (TypeError, ValueError):
            raise MtlEdgeError(f"device {device.name}: port, connect_timeout and keepalive must be numbers") from None
        self.user = str(extra.get("user") or getpass.getuser())
        key = extra.get("key")
        self.key = Path(os.path.expanduser(str(key))) if key else None
        self.known_hosts = Path(os.path.expanduser(str(extra.get("known_hosts") or "~/.ssh/known_hosts")))
        where = f"device {device.name}"
        self.accept_unknown = profile_flag(extra, "accept_unknown_host", where)
        self.allow_agent = profile_flag(extra, "allow_agent", where)
        self.look_for_keys = profile_flag(extra, "look_for_keys", where)
        self.python = device.python or "python3"
        self.where = f"device {device.name} ({self.user}@{self.host}:{self.port})"
        self.dead_after = 3 * self.keepalive
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._remote: dict[str, str] = {}  # remote path -> sha256 of what this connection knows is there
        self._digest = FileDigests()
        self._connect()
        try:
            self.remote_workdir = self._prepare()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------ connection

    def _connect(self) -> None:
        """Open the connection; every failure is a message that names the device, step and remedy."""
        name, hostport = self.device.name, f"{self.host}:{self.port}"
        if self.key is None and not (self.allow_agent or self.look_for_keys):
            raise MtlEdgeError(f"{self.where}: the profile needs `key` (the path of a private key whose public "
                               "half is in the device's ~/.ssh/authorized_keys) (step: authenticate)")
        if self.key is not None and not self.key.is_file():
            raise MtlEdgeError(f"{self.where}: the private key file {self.key} does not exist (step: authenticate); "
                               "create one with `ssh-keygen -t ed25519` and copy it with `ssh-copy-id`")
        pkey = None
        if self.key is not None:
            try:
                pkey = paramiko.PKey.from_path(self.key)
            except (paramiko.PasswordRequiredException, TypeError) as exc:
                if not isinstance(exc, paramiko.PasswordRequiredException) and "password" not in str(exc).lower():
                    raise MtlEdgeError(f"{self.where}: {self.key} is not a private key paramiko can read "
                                       "(step: authenticate)") from None
                if not self.allow_agent:  # with the agent allowed, the agent holds the unlocked key
                    raise MtlEdgeError(f"{self.where}: the private key {self.key} is protected by a passphrase "
                                       "(step: authenticate); load it into ssh-agent and set allow_agent = true, or "
                                       "use a key without a passphrase for the bench device") from None
            except (paramiko.SSHException, OSError, ValueError) as exc:
                raise MtlEdgeError(f"{self.where}: {self.key} is not a private key paramiko can read "
                                   f"(step: authenticate: {exc.__class__.__name__})") from None
        client = paramiko.SSHClient()
        hosts = client.get_host_keys()  # not load_host_keys: paramiko would rewrite the user's file
        if self.known_hosts.is_file():
            try:
                hosts.load(str(self.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise MtlEdgeError(f"{self.where}: cannot read known_hosts {self.known_hosts} ({exc}) "
                                   "(step: verify host key)") from None
        client.set_missing_host_key_policy(_AcceptAndRecord(name, self.known_hosts) if self.accept_unknown
                                           else _RejectUnknown())
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except socket.gaierror as exc:
            raise MtlEdgeError(f"{self.where}: cannot resolve host {self.host!r} ({exc.strerror}) (step: connect)") from None
        except ConnectionRefusedError:
            raise MtlEdgeError(f"{self.where}: connection refused by {hostport} (step: connect); is sshd running "
                               "on the device and the port right?") from None
        except TimeoutError:
            raise MtlEdgeError(f"{self.where}: no answer from {hostport} within {self.connect_timeout:.0f} s "
                               "(step: connect); is the device on and on this network?") from None
        except OSError as exc:
            raise MtlEdgeError(f"{self.where}: cannot reach {hostport} ({exc.strerror or exc}) (step: connect)") from None
        kh = self.known_hosts
        try:
            client.connect(self.host, port=self.port, username=self.user, sock=sock,
                           pkey=pkey, allow_agent=self.allow_agent,
                           look_for_keys=self.look_for_keys, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
                           channel_timeout=self.connect_timeout)
        except paramiko.BadHostKeyException as exc:
            client.close()
            label = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            raise MtlEdgeError(
                f"{self.where}: the host key of {hostport} has CHANGED (step: verify host key): {kh} expects "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the device offered "
                f"{exc.key.get_name()} {fingerprint(exc.key)}. Refusing to connect: this is what a man-in-the-"
                "middle looks like. If the device was reinstalled, check the new fingerprint on its console "
                f"(`ssh-keygen -lf /etc/ssh/ssh_host_{exc.key.get_name().removeprefix('ssh-')}_key.pub`), then "
                f"remove the old entry with `ssh-keygen -R {shlex.quote(label)} -f {shlex.quote(str(kh))}`") from None
        except _UnknownHostKey as exc:
            client.close()
            where = f"-p {self.port} " if self.port != 22 else ""
            raise MtlEdgeError(
                f"{self.where}: unknown host key for {hostport} (step: verify host key): {kh} has no entry and the "
                f"device offered {exc.key.get_name()} {fingerprint(exc.key)}. Refusing it. Check that fingerprint "
                "on the device's console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then add it with "
                f"`ssh-keyscan {where}{shlex.quote(self.host)} >> {shlex.quote(str(kh))}`, "
                "or set accept_unknown_host = true in the profile to trust it on first use") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise MtlEdgeError(f"{self.where}: authentication failed as {self.user!r} with the key {self.key} "
                               f"(step: authenticate: {exc}); is its public half ({self.key}.pub) in "
                               f"~{self.user}/.ssh/authorized_keys on the device?") from None
        except paramiko.SSHException as exc:
            client.close()
            raise MtlEdgeError(f"{self.where}: the SSH handshake with {hostport} failed (step: connect: {exc})") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise MtlEdgeError(f"{self.where}: the connection to {hostport} failed (step: connect: "
                               f"{exc.__class__.__name__}: {exc})") from None
        transport = client.get_transport()
        transport.set_keepalive(max(1, int(self.keepalive)))
        self._client = client

    def _dropped(self, step: str, why: str) -> MtlEdgeError:
        self.close()
        return MtlEdgeError(f"{self.where}: the connection dropped during step '{step}' ({why}); "
                            "a command running then may still be running on the device")

    def _prepare(self) -> str:
        """Create the remote work folder and check the python (and taskset) once per connection."""
        workdir = self.device.workdir
        if not workdir.startswith("/"):  # "~/bench" or "bench": relative to the login's home folder
            home = self._exec(_sh('printf %s "$HOME"'), COMMAND_TIMEOUT, "find home folder").stdout.strip()
            workdir = posixpath.join(home, workdir.removeprefix("~/").removeprefix("~"))
        python = shlex.quote(self.python)
        check = f"test -x {python}" if "/" in self.python else f"command -v {python} >/dev/null"
        script = (f"mkdir -p -- {shlex.quote(workdir)} || exit 3; {check} || exit 4; "
                  + ("command -v taskset >/dev/null || exit 5; " if self.device.cpu_affinity else "") + "exit 0")
        proc = self._exec(_sh(script), COMMAND_TIMEOUT, "check python")
        if proc.returncode == 3:
            raise MtlEdgeError(f"{self.where}: cannot create the work folder {workdir} on the device "
                               f"(step: create work folder): {proc.stderr.strip()[-300:]}")
        if proc.returncode == 4:
            raise MtlEdgeError(f"{self.where}: the python {self.python} does not exist or is not executable on "
                               "the device (step: check python); set `python` in the profile to an interpreter "
                               "with numpy and the runtime (onnxruntime or ai-edge-litert)")
        if proc.returncode == 5:
            raise MtlEdgeError(f"{self.where}: cpu_affinity {self.device.cpu_affinity!r} needs taskset on the device "
                               "(step: check python); install util-linux there")
        if proc.returncode != 0:
            raise MtlEdgeError(f"{self.where}: the device's shell failed (step: check python, exit code "
                               f"{proc.returncode}): {proc.stderr.strip()[-300:]}")
        return workdir

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            if self._client is None:
                raise MtlEdgeError(f"{self.where}: the connection is closed (step: upload)")
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._dropped("upload", f"cannot open SFTP: {exc}") from None
            self._sftp.get_channel().settimeout(max(self.dead_after, 10.0))  # a dead link fails a transfer
        return self._sftp

    # ------------------------------------------------------------------------------------ commands

    def _exec(self, command: str, timeout: float, step: str, on_timeout=None) -> subprocess.CompletedProcess:
        """Run a remote shell command; stdout and stderr read together (no pipe deadlock), a dead link
        found by keepalive probes, ``on_timeout(stderr_so_far)`` called when ``timeout`` passes."""
        if self._client is None:
            raise MtlEdgeError(f"{self.where}: the connection is closed (step: {step})")
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise self._dropped(step, "the SSH session is no longer active")
        try:
            chan = transport.open_session(timeout=self.connect_timeout)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._dropped(step, f"cannot start a command: {exc}") from None
        chan.settimeout(0.0)
        out, err = bytearray(), bytearray()
        start = last_heard = time.monotonic()
        probe: threading.Thread | None = None
        probe_sent = 0.0
        try:
            while True:
                heard = False
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                    heard = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    heard = True
                now = time.monotonic()
                if heard:
                    last_heard = now
                if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    if chan.exit_status_ready() or chan.closed:
                        break
                if not transport.is_active():
                    raise self._dropped(step, "the SSH session ended")
                if probe is not None and not probe.is_alive():
                    probe, last_heard = None, now  # the device answered: the link is alive
                if probe is None and now - last_heard > self.keepalive:
                    probe = threading.Thread(target=self._probe, args=(transport,), daemon=True)
                    probe.start()
                    probe_sent = now
                elif probe is not None and now - probe_sent > self.dead_after:
                    raise self._dropped(step, f"no answer from the device for {now - last_heard:.0f} s")
                if now - start > timeout:
                    text = err.decode(errors="replace")
                    chan.close()
                    if on_timeout is not None:
                        on_timeout(text)
                    raise RunnerTimeout(text)
                if not heard:
                    if chan.eof_received:  # the channel's pipe stays readable after EOF: do not spin
                        time.sleep(0.02)
                    else:
                        select.select([chan], [], [], 0.05)  # wakes on stdout data; stderr is polled
        finally:
            if not chan.closed:
                chan.close()
        if not chan.exit_status_ready():
            if not transport.is_active():
                raise self._dropped(step, "the SSH session ended")
            status = -1  # the remote shell itself was killed (no exit status)
        else:
            status = chan.recv_exit_status()
        return subprocess.CompletedProcess(command, status, out.decode(errors="replace"), err.decode(errors="replace"))

    @staticmethod
    def _probe(transport) -> None:
        try:  # any answer (OpenSSH replies "failure" to an unknown request) proves the link is alive
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # noqa: BLE001 - a failing probe shows as a dead transport in the caller's loop
            pass

    # ------------------------------------------------------------------------------------ Transport

    def workdir(self) -> Path:
        """A local staging folder: the harness writes job files here, ``put`` sends them to the device."""
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = cache / "mtl-edge" / "bench-staging" / re.sub(r"[^A-Za-z0-9._-]", "_", self.device.name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MtlEdgeError(f"device {self.device.name}: cannot create the local staging folder {folder} "
                               f"({exc})") from None
        return folder

    def put(self, local: Path, name: str) -> str:
        """Upload ``local`` as ``name`` into the remote work folder unless the same bytes are there already."""
        local = Path(local)
        if not name or "/" in name or name in (".", ".."):
            raise MtlEdgeError(f"{self.where}: {name!r} is not a plain file name (step: upload)")
        remote = posixpath.join(self.remote_workdir, name)
        st = local.stat()
        digest = self._digest(local)
        if self._remote.get(remote) == digest:
            return remote
        sftp = self._sftp_client()
        try:
            same_size = sftp.stat(remote).st_size == st.st_size
        except FileNotFoundError:
            same_size = False
        except (TimeoutError, EOFError, paramiko.SSHException) as exc:
            raise self._dropped(f"upload {name}", str(exc) or exc.__class__.__name__) from None
        except OSError:  # e.g. permission denied: the upload below reports it
            same_size = False
        if same_size:
            proc = self._exec(_sh(f"sha256sum -- {shlex.quote(remote)}"), COMMAND_TIMEOUT, f"upload {name}")
            if proc.returncode == 0 and proc.stdout.split()[:1] == [digest]:
                self._remote[remote] = digest
                return remote
        part = posixpath.join(self.remote_workdir, f".{name}.part-{uuid.uuid4().hex[:8]}")
        try:
            sftp.put(str(local), part, confirm=True)
            try:
                sftp.posix_rename(part, remote)  # atomic replace (OpenSSH's posix-rename extension)
            except OSError:  # a server without the extension: plain SFTP rename refuses to overwrite
                if self._exists(sftp, remote):
                    sftp.remove(remote)
                sftp.rename(part, remote)
        except (TimeoutError, EOFError, paramiko.SSHException) as exc:
            raise self._dropped(f"upload {name}", str(exc) or exc.__class__.__name__) from None
        except OSError as exc:
            self._remove_quietly(sftp, part)
            if self._disk_full(exc, st.st_size):
                raise MtlEdgeError(f"device {self.device.name}: the device's disk is full while uploading {name} "
                                   f"to {self.remote_workdir} (step: upload); free space there and run again with "
                                   "--resume") from None
            raise MtlEdgeError(f"{self.where}: cannot upload {name} to {self.remote_workdir} (step: upload): "
                               f"{exc}") from None
        self._remote[remote] = digest
        return remote

    @staticmethod
    def _exists(sftp, path: str) -> bool:
        try:
            sftp.stat(path)
            return True
        except OSError:
            return False

    @staticmethod
    def _remove_quietly(sftp, path: str) -> None:
        try:
            sftp.remove(path)
        except (OSError, paramiko.SSHException, EOFError):
            pass

    def _disk_full(self, exc: OSError, size: int) -> bool:
        """SFTP v3 reports ENOSPC/EDQUOT as a bare "Failure": ask ``df`` whether the file would have fit."""
        if exc.errno in (28, 122) or "space" in str(exc).lower() or "quota" in str(exc).lower():
            return True
        try:
            proc = self._exec(_sh(f"df -Pk -- {shlex.quote(self.remote_workdir)}"), 30, "upload")
            available_kb = int(proc.stdout.strip().splitlines()[-1].split()[3])
        except (MtlEdgeError, RunnerTimeout, ValueError, IndexError):
            return False
        return available_kb * 1024 < size + 64 * 1024

    def argv(self, script: str, job: str) -> list[str]:
        prefix = ["taskset", "-c", self.device.cpu_affinity] if self.device.cpu_affinity else []
        return [*prefix, self.python, script, job]

    def run(self, argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` on the device (each argument quoted); on timeout its process group is killed."""
        assignments = shell_assignments(env, self.where)
        # sshd makes the shell a session (and process group) leader: its pid kills the whole run
        script = (f"printf '{PID_MARKER}%s\\n' \"$$\" >&2; {assignments} {shlex.join(argv)}; exit $?")

        def kill(stderr: str) -> None:
            pids = [line[len(PID_MARKER):].strip() for line in stderr.splitlines() if line.startswith(PID_MARKER)]
            if pids and pids[0].isdigit():
                try:
                    self._exec(_sh(f"kill -KILL -{pids[0]} 2>/dev/null || kill -KILL {pids[0]} 2>/dev/null; true"),
                               30, "stop the timed-out runner")
                except (MtlEdgeError, RunnerTimeout):
                    pass

        try:
            proc = self._exec(_sh(script), timeout, "run runner", on_timeout=kill)
        except RunnerTimeout as exc:
            raise RunnerTimeout(_strip_marker(exc.stderr)) from None
        return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout, _strip_marker(proc.stderr))

    def environment(self) -> dict:
        """Device facts from the fixed probe script (no user input in it)."""
        from mtl_edge.bench.environment import PROBE_SCRIPT, environment_from, parse_probe

        proc = self._exec(_sh(PROBE_SCRIPT), COMMAND_TIMEOUT, "probe device")
        return environment_from(parse_probe(proc.stdout))

    def temperature(self) -> float | None:
        from mtl_edge.bench.environment import TEMPERATURE_SCRIPT, parse_probe, temperature_from

        proc = self._exec(_sh(TEMPERATURE_SCRIPT), COMMAND_TIMEOUT, "read temperature")
        return temperature_from(parse_probe(proc.stdout))

    def conditions(self) -> dict:
        from mtl_edge.bench.environment import CONDITIONS_SCRIPT, conditions_from, parse_probe

        proc = self._exec(_sh(CONDITIONS_SCRIPT), COMMAND_TIMEOUT, "read temperature and load")
        return conditions_from(parse_probe(proc.stdout))

    def close(self) -> None:
        sftp, client, self._sftp, self._client = self._sftp, self._client, None, None
        for thing in (sftp, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a dead link must not hide the real error
                    pass


def _strip_marker(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith(PID_MARKER))
