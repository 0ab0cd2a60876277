"""The adb transport: an Android phone (or the Android test bed) through the real ``adb`` client.

As Android benchmarks are run in practice: the runner, job, features and artefacts are pushed with
``adb push`` into the profile's ``workdir`` (``/data/local/tmp/...``: writable by the shell user),
and the runner is started with ``adb shell`` under ``taskset MASK`` (toybox's taskset takes a hex
mask; it is computed from ``cpu_affinity`` unless the profile gives ``cpu_mask``). Peak memory comes
from the runner's own ``VmHWM``. Every call is an argv list for the local ``adb`` binary; the one
string that reaches the device is the remote command line, which the device's shell parses, so every
argument in it is quoted with ``shlex.quote``.

Profile fields (see ``devices/android.toml``): ``serial`` (``adb devices``; ``host:port`` for a phone
over Wi-Fi, which is ``adb connect``-ed when not attached yet; empty = the only device),
``adb_server_port`` (a private adb server, ``adb -P PORT``; default: the usual 5037), ``workdir``,
``python`` (a Python on the phone with numpy + the runtime, e.g. Termux's) or ``runner`` (an
executable on the phone that takes the job file and prints the same JSON report and end marker as
``runner.py``), ``cpu_affinity`` / ``cpu_mask``, ``threads``, ``adb_timeout`` (seconds for adb's
own steps; default 120).

Facts seen with the real client (29.0.6): ``adb connect`` exits 0 when it fails (its text says so),
and a device that vanishes during ``adb shell`` lets the client exit 0 while ``adb devices`` shows it
``offline``: after every run the device's state is checked, and the harness treats a report without
the runner's end marker as a failure.

One concept, one file (about 380 lines): every step is an ``adb`` call whose failures mean the same few
device states (offline, unauthorised, storage full), mapped in one place.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from mtl_edge.bench.transports import FileDigests, RunnerTimeout, shell_assignments
from mtl_edge.errors import MtlEdgeError

CHECK_BYTES = 64 * 1024  # files at least this big are compared by sha256 on the device before a push
# the client's own errors about the device (not the remote command's output)
ADB_DEVICE_ERROR = re.compile(r"^(adb: )?error: (device offline|device '.*' not found|no devices|device unauthorized"
                              r"|device still authorizing|closed|protocol fault)", re.MULTILINE)
TERMUX_HINT = ("a phone has no Python of its own: install Termux, then in it `pkg install python` and "
               "`pip install numpy onnxruntime` (or a LiteRT wheel built for the phone), and set `python` in the "
               "profile to /data/data/com.termux/files/usr/bin/python (adb's shell user can enter Termux's "
               "private folder only on a rooted phone; otherwise put a Python built for Android under "
               "/data/local/tmp); or set `runner` to a benchmark executable on the phone that takes the job file "
               "and prints the runner's JSON report")


def cpu_mask(affinity: str) -> str:
    """The hex CPU mask (toybox/util-linux ``taskset MASK``) of a taskset list such as "0", "4-7", "0,2"."""
    mask = 0
    for part in str(affinity).replace(" ", "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"not a CPU list: {affinity!r}")
        for cpu in range(int(low), int(high or low) + 1):
            mask |= 1 << cpu
    if not mask:
        raise ValueError(f"not a CPU list: {affinity!r}")
    return format(mask, "x")


def parse_devices(text: str) -> dict[str, str]:
    """``adb devices`` output -> {serial: state} (device, offline, unauthorized, no permissions, ...)."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(("List of devices", "*", "adb ")):
            continue
        serial, _, state = line.partition("\t")
        if state:
            out[serial.strip()] = state.strip()
    return out


def connect_failed(text: str) -> bool:
    """``adb connect`` exits 0 even when it fails: its text says whether it connected."""
    low = text.lower()
    return not ("connected to" in low and not any(w in low for w in ("failed", "unable", "cannot", "error")))


def _staging_root() -> Path:
    value = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(value) if value and os.path.isabs(value) else Path.home() / ".cache"
    return base / "mtl-edge" / "adb-staging"


class AdbTransport:
    """Runs the runner on an Android device through the real ``adb`` client (argv lists, no host shell)."""

    def __init__(self, device):
        self.device = device
        extra = device.extra
        self.adb = shutil.which("adb")
        if self.adb is None:
            raise MtlEdgeError(f"device {device.name}: the adb client is missing (Debian package adb, which "
                               "`make setup` installs; or Android platform-tools on PATH)")
        port = extra.get("adb_server_port")
        try:
            self.server_port = int(port) if port not in (None, "") else None
            self.adb_timeout = float(extra.get("adb_timeout", 120))
        except (TypeError, ValueError):
            raise MtlEdgeError(f"device {device.name}: adb_server_port and adb_timeout must be numbers") from None
        self.serial = str(extra.get("serial") or "")
        self.runner = str(extra.get("runner") or "")
        self.python = device.python or self.runner
        self.remote_dir = device.workdir.rstrip("/") or "/"
        if not self.remote_dir.startswith("/"):
            raise MtlEdgeError(f"device {device.name}: workdir {device.workdir!r} must be an absolute path on the "
                               "device")
        try:
            if extra.get("cpu_mask"):
                self.cpu_mask = format(int(str(extra["cpu_mask"]).lower().removeprefix("0x"), 16), "x")
            else:
                self.cpu_mask = cpu_mask(device.cpu_affinity) if device.cpu_affinity else ""
        except ValueError:
            raise MtlEdgeError(f"device {device.name}: cpu_affinity {device.cpu_affinity!r} / cpu_mask "
                               f"{extra.get('cpu_mask')!r} is not a CPU list (\"0,2-3\") or hex mask") from None
        self._pushed: dict[str, str] = {}  # remote path -> sha256 pushed (or found) in this session
        self._digest = FileDigests()
        self._attach()
        self._check_device()

    # ------------------------------------------------------------------------------------------ adb calls

    def _who(self) -> str:
        return f"device {self.device.name} (serial {self.serial or '?'})"

    def _base(self, with_serial: bool = True) -> list[str]:
        argv = [self.adb]
        if self.server_port is not None:
            argv += ["-P", str(self.server_port)]
        if with_serial and self.serial:
            argv += ["-s", self.serial]
        return argv

    def _adb(self, args: list[str], step: str, timeout: float | None = None, with_serial: bool = True,
             ) -> subprocess.CompletedProcess:
        """Run the adb client (argv list); a missing binary or a hang is an MtlEdgeError naming the step."""
        limit = self.adb_timeout if timeout is None else timeout
        try:
            return subprocess.run(self._base(with_serial) + args, capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL, timeout=limit)
        except OSError as exc:
            raise MtlEdgeError(f"{self._who()}: cannot run adb (step '{step}'): {exc}") from None
        except subprocess.TimeoutExpired:
            raise MtlEdgeError(f"{self._who()}: adb did not answer within {limit:.0f} s (step '{step}')") from None

    def _shell(self, command: str, step: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """``adb shell COMMAND``: the command is a device shell string built from quoted parts only."""
        done = self._adb(["shell", command], step, timeout)
        if done.returncode != 0 and ADB_DEVICE_ERROR.search(done.stderr or ""):
            self._raise_state(step)
        return done

    def devices(self) -> dict[str, str]:
        """What the adb server lists: {serial: state}."""
        done = self._adb(["devices"], "adb devices", with_serial=False)
        if done.returncode != 0:
            raise MtlEdgeError(f"device {self.device.name}: `adb devices` failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-400:]}")
        return parse_devices(done.stdout)

    def state(self) -> str | None:
        return self.devices().get(self.serial)

    def _listing(self, devices: dict[str, str]) -> str:
        return ", ".join(f"{s} ({st})" for s, st in devices.items()) or "(none)"

    def _raise_state(self, step: str, devices: dict[str, str] | None = None) -> None:
        """Raise an MtlEdgeError naming the device's state unless adb lists it as ready ('device')."""
        devices = self.devices() if devices is None else devices
        state = devices.get(self.serial)
        if state == "device":
            return
        hints = {"offline": "the device dropped off adb: check the cable or Wi-Fi, `adb reconnect`, replug",
                 "unauthorized": "accept the 'Allow USB debugging' prompt on the phone",
                 "no permissions": "the adb server cannot open the USB device (udev rules / plugdev group)",
                 "authorizing": "the phone is still deciding on the USB debugging prompt"}
        if state is None:
            raise MtlEdgeError(f"{self._who()}: not attached (step '{step}'); attached: {self._listing(devices)}"
                               + ("" if ":" in self.serial else "; a phone over Wi-Fi is `host:port`"))
        hint = next((h for k, h in hints.items() if state.startswith(k)), "")
        raise MtlEdgeError(f"{self._who()} is {state}, not ready (step '{step}')" + (f": {hint}" if hint else "")
                           + f"; attached: {self._listing(devices)}")

    # ------------------------------------------------------------------------------------------ setup

    def _attach(self) -> None:
        """Find the device in ``adb devices`` (``adb connect`` a host:port serial first); it must be 'device'."""
        devices = self.devices()
        if not self.serial:
            ready = [s for s, st in devices.items() if st == "device"]
            if len(ready) != 1:
                raise MtlEdgeError(f"device {self.device.name}: the profile has no serial and "
                                   f"{'no device is' if not ready else 'several devices are'} attached "
                                   f"({self._listing(devices)}); set `serial` in {self.device.path or 'the profile'}")
            self.serial = ready[0]
            return
        connected = False
        if self.serial not in devices and re.fullmatch(r"[^\s:]+:\d+", self.serial):
            done = self._adb(["connect", self.serial], "adb connect", with_serial=False)
            text = (done.stdout + done.stderr).strip()
            # "failed to authenticate": connected, but the phone has not allowed this computer; the state
            # check below names it (unauthorized) with what to do
            if done.returncode != 0 or (connect_failed(text) and "failed to authenticate" not in text.lower()):
                raise MtlEdgeError(f"{self._who()}: `adb connect {self.serial}` failed (step 'connect'): "
                                   f"{text or '(no output)'}")
            devices = self.devices()
            connected = True
        deadline = time.monotonic() + (5.0 if connected else 0.0)  # a fresh connection's handshake takes a moment
        while devices.get(self.serial) in ("offline", "connecting", "authorizing") and time.monotonic() < deadline:
            time.sleep(0.25)
            devices = self.devices()
        if devices.get(self.serial) != "device":
            self._raise_state("connect", devices)

    def _check_device(self) -> None:
        """One shell call: create the work folder, find the runner's interpreter and taskset."""
        q = shlex.quote
        script = (f"mkdir -p {q(self.remote_dir)} && test -w {q(self.remote_dir)} && echo workdir=ok; "
                  f"test -x {q(self.python)} && echo python=ok; "
                  "command -v taskset >/dev/null 2>&1 && echo taskset=ok; true") if self.python else \
                 (f"mkdir -p {q(self.remote_dir)} && test -w {q(self.remote_dir)} && echo workdir=ok; "
                  "command -v taskset >/dev/null 2>&1 && echo taskset=ok; true")
        done = self._shell(script, "check the device")
        found = set(done.stdout.split())
        if done.returncode != 0 and not found:
            raise MtlEdgeError(f"{self._who()}: the device shell failed (step 'check the device', exit "
                               f"{done.returncode}): {(done.stderr or done.stdout).strip()[-400:]}")
        if "workdir=ok" not in found:
            raise MtlEdgeError(f"{self._who()}: cannot create or write the work folder {self.remote_dir} on the "
                               "device (step 'check the device'); /data/local/tmp is writable by adb's shell user")
        if not self.python:
            raise MtlEdgeError(f"{self._who()}: the profile names no `python` (or `runner`) on the device "
                               f"(step 'check the runner'); {TERMUX_HINT}")
        if "python=ok" not in found:
            what = "runner executable" if self.runner and not self.device.python else "Python"
            raise MtlEdgeError(f"{self._who()}: no {what} at {self.python} on the device (step 'check the "
                               f"runner'); the runner needs a Python with numpy and the runtime; {TERMUX_HINT}")
        if self.cpu_mask and "taskset=ok" not in found:
            raise MtlEdgeError(f"{self._who()}: taskset is missing on the device, needed for cpu_affinity "
                               f"{self.device.cpu_affinity or self.cpu_mask!r} (step 'check the device'); "
                               "toybox provides it on Android 7+, or empty cpu_affinity in the profile")

    # ------------------------------------------------------------------------------------------ Transport

    def workdir(self) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.serial) or "device"
        folder = _staging_root() / safe
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MtlEdgeError(f"{self._who()}: cannot create the local staging folder {folder} ({exc})") from None
        return folder

    def _remote_digest(self, remote: str) -> str | None:
        q = shlex.quote(remote)
        done = self._shell(f"sha256sum {q} 2>/dev/null || toybox sha256sum {q} 2>/dev/null; true", "compare sha256")
        first = done.stdout.split()
        return first[0].lower() if first and re.fullmatch(r"[0-9a-fA-F]{64}", first[0]) else None

    def put(self, local: Path, name: str) -> str:
        """``adb push`` into the work folder (skipped when the device already has the same bytes)."""
        local = Path(local)
        if "/" in name or name in ("", ".", ".."):
            raise MtlEdgeError(f"{self._who()}: bad remote file name {name!r}")
        remote = posixpath.join(self.remote_dir, name)
        try:
            digest = self._digest(local)
            size = local.stat().st_size
        except OSError as exc:
            raise MtlEdgeError(f"{self._who()}: cannot read {local} to push it (step 'push {name}'): {exc}") from None
        if self._pushed.get(remote) == digest:
            return remote
        if size >= CHECK_BYTES and self._remote_digest(remote) == digest:
            self._pushed[remote] = digest
            return remote
        done = self._adb(["push", str(local), remote], f"push {name}")
        text = (done.stdout + "\n" + done.stderr).strip()
        low = text.lower()
        if done.returncode != 0 or "failed to copy" in low or "adb: error" in low or "no space left" in low:
            hint = ""
            if "no space left" in low:
                hint = " (the device's storage is full: free space in " + self.remote_dir + ")"
            elif ADB_DEVICE_ERROR.search(done.stderr or ""):
                self._raise_state(f"push {name}")
            raise MtlEdgeError(f"{self._who()}: adb push of {local} to {remote} failed (step 'push {name}', "
                               f"exit {done.returncode}){hint}: {text[-500:] or '(no output)'}")
        self._pushed[remote] = digest
        return remote

    def argv(self, script: str, job: str) -> list[str]:
        command = [self.runner, job] if self.runner and not self.device.python else [self.python, script, job]
        return ["taskset", self.cpu_mask, *command] if self.cpu_mask else command

    def command_line(self, argv: list[str], env: dict | None = None) -> str:
        """The device shell string for ``argv``: cd to the work folder, quoted env assignments, quoted args."""
        assignments = shell_assignments(env, self._who())
        return f"cd {shlex.quote(self.remote_dir)} && {assignments} {shlex.join([str(a) for a in argv])}"

    def run(self, argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        """``adb shell`` the runner: its exit code (shell protocol v2), output, and the device still attached."""
        from mtl_edge.runtimes.runner import END_MARKER

        command = self.command_line(argv, env)
        try:
            done = subprocess.run(self._base() + ["shell", command], capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            self._stop_remote(argv)
            raise RunnerTimeout(err) from None
        except OSError as exc:
            raise MtlEdgeError(f"{self._who()}: cannot run adb (step 'run runner'): {exc}") from None
        complete = END_MARKER in (done.stdout or "")
        # a vanished device: the client exits 0 with the output cut short (no exit packet, no marker)
        state = self._state_after_run(wait=not complete and done.returncode == 0)
        if state != "device":
            marker = "" if complete else " (the runner's output ended without its end marker)"
            raise MtlEdgeError(f"{self._who()} went offline during step 'run runner'{marker}: adb now lists it as "
                               f"{state or 'not attached'}")
        return done

    def _state_after_run(self, wait: bool) -> str | None:
        """The device's state after a run; when the output was cut short, give adb a moment to notice a drop.

        (The adb server marks a dropped device offline before it closes its streams, so the state is
        normally right at once; the grace period is for a loaded machine.)
        """
        deadline = time.monotonic() + (0.5 if wait else 0.0)
        while True:
            try:
                state = self.state()
            except MtlEdgeError:
                state = None
            if state != "device" or time.monotonic() >= deadline:
                return state
            time.sleep(0.1)

    def _stop_remote(self, argv: list[str]) -> None:
        """After a timeout: kill the runner on the device (best effort; the job file names it uniquely)."""
        job = posixpath.basename(str(argv[-1])) if argv else ""
        if not job:
            return
        pattern = f"[{job[0]}]{re.escape(job[1:])}" if job[0].isalnum() else re.escape(job)
        try:
            self._adb(["shell", f"pkill -f {shlex.quote(pattern)} 2>/dev/null; true"], "stop the runner", timeout=15)
        except MtlEdgeError:
            pass

    def environment(self) -> dict:
        from mtl_edge.bench.environment import PROBE_SCRIPT, environment_from, parse_probe

        done = self._shell(PROBE_SCRIPT, "probe the device")
        facts = environment_from(parse_probe(done.stdout))
        for key in ("vcgencmd_temperature_c", "throttled"):  # Raspberry Pi firmware facts: not on a phone
            facts.pop(key)
        facts.pop("missing")
        facts["adb_serial"] = self.serial
        facts["missing"] = sorted(k for k, v in facts.items() if v is None)
        return facts

    def temperature(self) -> float | None:
        from mtl_edge.bench.environment import TEMPERATURE_SCRIPT, parse_probe, temperature_from

        try:
            done = self._shell(TEMPERATURE_SCRIPT, "read the temperature", timeout=60)
        except MtlEdgeError:
            return None
        return temperature_from(parse_probe(done.stdout))

    def conditions(self) -> dict:
        from mtl_edge.bench.environment import CONDITIONS_SCRIPT, conditions_from, parse_probe

        try:
            done = self._shell(CONDITIONS_SCRIPT, "read the temperature and load", timeout=60)
        except MtlEdgeError:
            return {"temperature_c": None, "load": None}
        return conditions_from(parse_probe(done.stdout))

    def close(self) -> None:
        pass
