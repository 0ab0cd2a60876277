"""Rendering of one demo clip from its plan entry: foreground, room, background, levels.

A ``Renderer`` lives in each worker process and holds what is slow to load (background
tapes, event recordings, the RIR bank). Rendering is a pure function of the plan entry: the
same entry gives the same samples, whichever worker renders it and whatever it rendered before.
"""

from __future__ import annotations

import hashlib
import warnings
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from mtl_edge.data.audio import LowSampleRateWarning, load_audio, write_wav
from mtl_edge.data.demo import sources
from mtl_edge.errors import MissingSourceError

SPLIT_REGIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
ACTIVITY_FLOOR_DB = 35.0  # a frame is active within this many dB of the foreground's loudest frame
NOISE_FLOOR_DBFS = -60.0  # keeps TTS digital silence from being a shortcut


@dataclass(frozen=True)
class RenderedClip:
    index: int
    sha256: str
    activity: str


ESPEAK_RATE = 175  # espeak-ng's default words per minute: the other engines' normal speed
ESPEAK_PITCH = 50  # espeak-ng's default pitch (0-99)


def speech_argv(voice: str, text: str, rate: int, pitch: int, out: Path) -> list[str]:
    """The command that speaks ``text`` into ``out``: espeak-ng's rate (words per minute) and pitch
    (0-99) carried over to flite (duration stretch, f0 shift) and pico (speed and pitch in %)."""
    engine, _, name = voice.partition(":")
    octaves = (pitch - ESPEAK_PITCH) / 100  # 0-99 spans about one octave around the voice's own
    if engine == "flite":
        f0 = {"slt": 170.0}.get(name, 105.0) * 2 ** octaves
        return ["flite", "-voice", name, "--setf", f"duration_stretch={ESPEAK_RATE / rate:.3f}",
                "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(out)]
    if engine == "pico":
        speed, tone = round(100 * rate / ESPEAK_RATE), round(100 * 2 ** octaves)
        return ["pico2wave", "-l", name, "-w", str(out), f"<speed level='{speed}'><pitch level='{tone}'>{text}</pitch></speed>"]
    return ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(out), text]


class Renderer:
    """Holds the loaded sources of one worker and renders plan entries into WAV files."""

    def __init__(self, seed: int, voices: str, rirs: dict, sample_rate: int = 16_000, clip_samples: int = 16_000,
                 variant: str = "default"):
        from mtl_edge.data.demo.variants import seed_key, variant_sources

        src = variant_sources(variant)
        self.seed = seed
        self.key = seed_key(seed, variant)  # the variant's own random stream
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.rirs = rirs
        self.speakers = sources.require_speech(voices)
        warnings.simplefilter("ignore", LowSampleRateWarning)  # a few source recordings are 8-11 kHz: expected
        self.tapes = {scene: self._scene_tapes(scene, srcs) for scene, srcs in src.scene_backgrounds.items()}
        self.events = {
            label: [load_audio(p).samples for p in sources.require_files(srcs, f"'{label}' sound events")]
            for label, srcs in src.events.items()
        }
        music = [load_audio(p).samples for p in sources.require_files(src.music, "recorded music")]
        self.music = {split: _region_tape(music, split) for split in SPLIT_REGIONS}
        self.soundfont = sources.require_files([sources.SOUNDFONT], "the General MIDI soundfont")[0]
        self._tmp = tempfile.TemporaryDirectory(prefix="mtl-edge-speech-")

    # -- sources -------------------------------------------------------------------------------
    def _scene_tapes(self, scene: str, srcs) -> dict[str, np.ndarray]:
        files = sources.require_files(srcs, f"the '{scene}' background")
        recordings = [load_audio(p).samples for p in files]
        if scene == "office":  # single key presses: type them into one tape per split
            return {split: _typing_tape(recordings, np.random.default_rng([*self.key, 31, i]), self.sample_rate * 30)
                    for i, split in enumerate(SPLIT_REGIONS)}
        return {split: _region_tape(recordings, split) for split in SPLIT_REGIONS}

    def _new_synth(self):
        """A fresh synth per phrase: a reused one carries state (block phase, modulators) from clip
        to clip, so a clip would depend on which clips its worker rendered before. With dynamic
        sample loading a new synth costs ~20 ms (only the chosen instrument's samples are read)."""
        import fluidsynth

        synth = fluidsynth.Synth(gain=0.5, samplerate=float(self.sample_rate), **{"synth.dynamic-sample-loading": 1})
        synth.setting("synth.reverb.active", 0)  # the room is added by the RIR, not the synth
        synth.setting("synth.chorus.active", 0)
        sfid = synth.sfload(str(self.soundfont))
        if sfid < 0:
            synth.delete()
            raise MissingSourceError(f"fluidsynth could not load {self.soundfont}")
        return synth, sfid

    # -- foregrounds ---------------------------------------------------------------------------
    def speech(self, spec: dict) -> np.ndarray:
        import librosa

        voice = self.speakers[spec["speaker"]][0]
        out = Path(self._tmp.name) / "word.wav"
        argv = speech_argv(voice, spec["word"] + spec.get("style", ""), spec["rate"], spec["pitch"], out)
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            raise MissingSourceError(f"{argv[0]} failed for voice {voice}: {done.stderr.strip()}")
        samples = load_audio(out).samples
        trimmed, _ = librosa.effects.trim(samples, top_db=40)
        if len(trimmed) == 0:
            raise MissingSourceError(f"{argv[0]} voice {voice} produced no audio for {spec['word']!r}")
        return trimmed

    def instrument(self, spec: dict) -> np.ndarray:
        """Render a pretty_midi phrase in-process (pyfluidsynth; no fluidsynth command per clip)."""
        import pretty_midi

        synth, sfid = self._new_synth()
        synth.program_select(0, sfid, 0, spec["program"])
        notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in spec["notes"]]
        events = sorted([(n.start, 1, n.pitch, n.velocity) for n in notes] + [(n.end, 0, n.pitch, 0) for n in notes])
        chunks, now = [], 0.0
        for time, is_on, pitch, velocity in events:
            n = int(round((time - now) * self.sample_rate))
            if n > 0:
                chunks.append(synth.get_samples(n))
                now += n / self.sample_rate
            if is_on:
                synth.noteon(0, pitch, velocity)
            else:
                synth.noteoff(0, pitch)
        chunks.append(synth.get_samples(int(0.3 * self.sample_rate)))  # release tail
        synth.delete()
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
        return stereo.mean(axis=1)

    def event(self, spec: dict) -> np.ndarray:
        import soxr

        recording = self.events[spec["label"]][spec["file"] % len(self.events[spec["label"]])]
        resampled = soxr.resample(recording, self.sample_rate, self.sample_rate * spec["speed"]).astype(np.float32)
        longest = int(0.9 * self.clip_samples)
        if len(resampled) > longest:
            start = int(spec["crop"] * (len(resampled) - longest))
            resampled = resampled[start:start + longest]
        return resampled

    # -- the clip ------------------------------------------------------------------------------
    def render(self, spec: dict, out: Path) -> RenderedClip:
        n = self.clip_samples
        rng = np.random.default_rng([*self.key, 104729, spec["index"]])
        kind = spec["kind"]
        dry = np.zeros(n, np.float32)
        region = spec.get("acoustics", spec["split"])  # test_* splits hear the test split's rooms and backgrounds
        if kind == "music":
            dry = _crop(self.music[region], spec["crop"], n)
        elif kind != "silence":
            fg = {"speech": self.speech, "instrument": self.instrument, "event": self.event}[kind](spec)[:n]
            start = int(spec["onset"] * (n - len(fg)))
            dry[start:start + len(fg)] = fg
        activity = _activity(dry, self.sample_rate) if kind != "silence" else ""
        background = _crop(self.tapes[spec["scene"]][region], spec["bg_pos"], n)
        if kind == "silence":
            mix = background / (_rms(background) + 1e-9)
        else:
            rir = self.rirs[(spec["scene"], region)][spec["rir"]]
            wet = fftconvolve(dry, rir)[:n].astype(np.float32)
            fg_level = _active_rms(wet, self.sample_rate)
            bg_gain = fg_level / (_rms(background) + 1e-9) * 10 ** (-spec["snr_db"] / 20)
            mix = wet + bg_gain * background
        peak = 10 ** (spec["peak_dbfs"] / 20)
        mix = mix / (np.abs(mix).max() + 1e-9) * peak
        mix = mix + rng.normal(0.0, 10 ** (NOISE_FLOOR_DBFS / 20), n).astype(np.float32)
        pcm = np.clip(np.round(mix * 32767), -32768, 32767).astype(np.int16)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_wav(out, pcm.astype(np.float32) / 32767, self.sample_rate)
        return RenderedClip(spec["index"], hashlib.sha256(pcm.tobytes()).hexdigest(), activity)


# -- helpers -------------------------------------------------------------------------------------
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _frame_energy_db(x: np.ndarray, sample_rate: int) -> np.ndarray:
    hop, win = sample_rate // 100, sample_rate // 40
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    return 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)


def _active_rms(x: np.ndarray, sample_rate: int) -> float:
    """RMS over the frames where the foreground is present (SNR is defined on them)."""
    energy = _frame_energy_db(x, sample_rate)
    active = energy > energy.max() - ACTIVITY_FLOOR_DB
    return float(np.sqrt(np.mean(10 ** (energy[active] / 10))))


def _activity(dry: np.ndarray, sample_rate: int) -> str:
    """Frame-level foreground activity as ``start-end;...`` in seconds (25 ms frames every 10 ms)."""
    hop, win = sample_rate // 100, sample_rate // 40
    energy = _frame_energy_db(dry, sample_rate)
    active = np.append(energy > energy.max() - ACTIVITY_FLOOR_DB, False)
    segments: list[list[float]] = []
    start = None
    for i, on in enumerate(active):
        if on and start is None:
            start = i
        elif not on and start is not None:
            begin, end = start * hop / sample_rate, min(((i - 1) * hop + win) / sample_rate, len(dry) / sample_rate)
            if segments and begin <= segments[-1][1]:
                segments[-1][1] = end  # frames overlap: one segment
            else:
                segments.append([begin, end])
            start = None
    return ";".join(f"{a:.3f}-{b:.3f}" for a, b in segments)


def _crop(tape: np.ndarray, position: float, n: int) -> np.ndarray:
    if len(tape) < n:
        tape = np.tile(tape, n // len(tape) + 1)
    start = int(position * (len(tape) - n))
    return tape[start:start + n].astype(np.float32)


def _region_tape(recordings: list[np.ndarray], split: str) -> np.ndarray:
    """The part of every recording that belongs to ``split`` (first 80 %, next 10 %, last 10 %), joined.

    Splits never share a stretch of background audio, while every split hears every recording.
    """
    lo, hi = SPLIT_REGIONS[split]
    parts = [r[int(lo * len(r)):int(hi * len(r))] for r in recordings]
    return _join([p for p in parts if len(p) > 0])


def _join(parts: list[np.ndarray], fade: int = 160) -> np.ndarray:
    """Concatenate with short crossfades, so joins do not click."""
    out = parts[0].astype(np.float32)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    for p in parts[1:]:
        p = p.astype(np.float32)
        k = min(fade, len(out), len(p))
        if k < fade:
            out = np.concatenate([out, p])
            continue
        out = np.concatenate([out[:-k], out[-k:] * (1 - ramp) + p[:k] * ramp, p[k:]])
    return out


def _typing_tape(keys: list[np.ndarray], rng: np.random.Generator, length: int, sample_rate: int = 16_000) -> np.ndarray:
    """Real key-press recordings placed at human typing intervals (bursts and pauses)."""
    tape = np.zeros(length + sample_rate, np.float32)
    t = 0
    while t < length:
        key = keys[rng.integers(len(keys))] * rng.uniform(0.4, 1.0)
        tape[t:t + len(key)] += key[: len(tape) - t]
        gap = rng.uniform(0.06, 0.25) if rng.random() > 0.08 else rng.uniform(0.4, 1.2)
        t += int(gap * sample_rate)
    return tape[:length]
