"""Shared fixtures: real audio only (espeak-ng speech, recordings shipped in Debian data packages)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mtl_edge.data.audio import load_audio

FREEDESKTOP_SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")


def need(ok: bool, reason: str, on_ci: str = "CI has it: root, binfmt_misc, network namespaces, `make setup`") -> None:
    """Skip with ``reason`` when a real component is absent here; on CI (CI=true) that is a failure instead."""
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} ({on_ci})")
        pytest.skip(reason)


def _require(tool: str, package: str) -> str:
    exe = shutil.which(tool)
    need(exe is not None, f"{tool} not installed (Debian package {package}; `make setup` installs it)")
    return exe


@pytest.fixture(scope="session")
def speak(tmp_path_factory):
    """Render a word with espeak-ng to a WAV file: ``speak("yes", voice="en-us", rate=160) -> Path``.

    espeak-ng writes 22.05 kHz mono 16-bit PCM for its own voices (real audio from a real synthesiser).
    """
    exe = _require("espeak-ng", "espeak-ng")
    folder = tmp_path_factory.mktemp("speech")
    counter = iter(range(10**9))

    def _speak(word: str, voice: str = "en-us", rate: int = 160, pitch: int = 50, out: Path | None = None) -> Path:
        path = Path(out) if out else folder / f"{next(counter):05d}_{word}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(path), word], check=True)
        return path

    return _speak


@pytest.fixture(scope="session")
def recordings():
    """Real recordings from the sound-theme-freedesktop package (stereo .oga at 44.1/48 kHz)."""
    need(FREEDESKTOP_SOUNDS.is_dir(), "sound-theme-freedesktop not installed (`make setup` installs it)")
    return sorted(FREEDESKTOP_SOUNDS.glob("*.oga"))


@pytest.fixture(scope="session")
def speech_samples(speak):
    """A second of real speech at 16 kHz as float32 (for tests that need samples, not files)."""
    audio = load_audio(speak("seven"))
    return np.pad(audio.samples, (0, max(0, 16000 - len(audio.samples))))[:16000]


DEMO_SCALE = 0.08  # ~400 clips: every class of every task in every split, built in ~15 s


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A small demo corpus rendered from the real sources (shared by the whole session: read only)."""
    from mtl_edge.data.demo.builder import DemoConfig, build_demo

    _require("espeak-ng", "espeak-ng")
    folder = tmp_path_factory.mktemp("demo") / "corpus"
    build_demo(DemoConfig(scale=DEMO_SCALE, seed=0), folder, workers=2)
    return folder


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A corpus of 174 real clips in which every task keeps two labels or more per split (~20 s; read only)."""
    from mtl_edge.data.demo.builder import DemoConfig, build_demo

    _require("espeak-ng", "espeak-ng")
    return build_demo(DemoConfig(scale=0.03, seed=0), tmp_path_factory.mktemp("tiny") / "corpus", workers=2).folder


# `python -m mtl_edge` with SIGINT raising KeyboardInterrupt even where pytest runs with SIGINT ignored (a
# background job of a non-interactive shell inherits the ignore). Set in the child's Python, not in a
# preexec_fn (a fork of this multithreaded process may deadlock).
CTRL_C_ABLE = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                     "runpy.run_module('mtl_edge', run_name='__main__', alter_sys=True)"]


def interrupt_when(argv: list[str], started, what: str, limit: float = 600, while_frozen=None
                   ) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``argv`` in its own process group; once ``started()`` is true, freeze the group (SIGSTOP), call
    ``while_frozen()`` (e.g. to check it is mid-run), SIGINT it as a terminal's Ctrl-C would, let it run on.
    Event-driven rather than timed, so a loaded machine cannot let the command finish first.
    Returns the finished process and its process group."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + limit
        while proc.poll() is None and not started():
            assert time.monotonic() < deadline, f"{what}: not seen within {limit:.0f} s"
            time.sleep(0.02)
        assert proc.poll() is None, f"the command ended before {what}: {proc.stderr.read()[-2000:]}"
        os.killpg(proc.pid, signal.SIGSTOP)
        if while_frozen is not None:
            while_frozen()
        os.killpg(proc.pid, signal.SIGINT)  # pending until the group runs again
        os.killpg(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), proc.pid
