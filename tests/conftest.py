"""Shared fixtures: real audio only (espeak-ng speech, recordings shipped in Debian data packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
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
    if not FREEDESKTOP_SOUNDS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("sound-theme-freedesktop is missing on CI (make setup installs it)")
        pytest.skip("sound-theme-freedesktop not installed (`make setup` installs it)")
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
