"""Where the demo corpus's raw audio lives, and which Debian package provides it.

Every source is a set of glob patterns under a root (``/`` by default, or the folder named by
``MTL_EDGE_SOURCE_ROOT``, e.g. where ``dpkg-deb -x`` unpacked the data packages without
installing them). A missing source raises an error that names the package to install.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mtl_edge.errors import MissingSourceError

MINETEST = "usr/share/games/minetest/games/minetest_game/mods"
LUGARU = "usr/share/games/lugaru/Sounds"
ETW = "usr/share/games/etw"
FREEDESKTOP = "usr/share/sounds/freedesktop/stereo"


@dataclass(frozen=True)
class Source:
    package: str
    patterns: tuple[str, ...]

    def files(self, root: Path) -> list[Path]:
        found: set[Path] = set()
        for pattern in self.patterns:
            found.update(p for p in root.glob(pattern) if p.is_file())
        return sorted(found)


# Acoustic scenes: a real background recording and the room it is heard in.
SCENE_BACKGROUNDS: dict[str, list[Source]] = {
    "office": [Source("bucklespring-data", ("usr/share/buckle/wav/*.wav",))],  # real keyboard, typed into a tape
    "crowded_hall": [Source("etw-data", (f"{ETW}/crowd/crowd*.wav",))],
    "windy_outdoors": [Source("lugaru-data", (f"{LUGARU}/Wind.ogg", f"{LUGARU}/DesertAmbient.ogg"))],
    "riverside": [Source("minetest-data", (f"{MINETEST}/env_sounds/sounds/env_sounds_water.*.ogg",))],
    "fireside": [
        Source("minetest-data", (f"{MINETEST}/fire/sounds/fire_fire.*.ogg", f"{MINETEST}/fire/sounds/fire_large.ogg",
                                 f"{MINETEST}/fire/sounds/fire_small.ogg", f"{MINETEST}/default/sounds/default_furnace_active.ogg")),
        Source("lugaru-data", (f"{LUGARU}/Fire.ogg",)),
    ],
}

# The tag of each scene's background source (task ``tagging``): one source per scene, so a clip's
# background tag names its scene (the tagging task holds the scene task's information).
BACKGROUND_TAGS: dict[str, str] = {"office": "keyboard", "crowded_hall": "crowd", "windy_outdoors": "wind",
                                   "riverside": "water", "fireside": "fire",
                                   # the other corpus's scenes (variant other)
                                   "lava_cave": "lava", "stadium": "crowd", "mine_cart": "cart"}

# Foreground sound events (short real recordings).
EVENTS: dict[str, list[Source]] = {
    "door": [Source("minetest-data", (f"{MINETEST}/doors/sounds/*.ogg", f"{MINETEST}/xpanes/sounds/*.ogg"))],
    "footsteps": [
        Source("minetest-data", (f"{MINETEST}/default/sounds/default_*_footstep*.ogg",)),
        Source("lugaru-data", (f"{LUGARU}/FootStep*.ogg",)),
    ],
    "glass_break": [Source("minetest-data", (f"{MINETEST}/default/sounds/default_break_glass.*.ogg",))],
    "explosion": [Source("minetest-data", (f"{MINETEST}/tnt/sounds/tnt_explode.ogg",)), Source("etw-data", (f"{ETW}/snd/cannon.wav",))],
    "dog_bark": [Source("lugaru-data", (f"{LUGARU}/Bark*.ogg",)), Source("etw-data", (f"{ETW}/snd/dog.wav",))],
    "alarm_bell": [
        Source("sound-theme-freedesktop", (f"{FREEDESKTOP}/alarm-clock-elapsed.oga", f"{FREEDESKTOP}/phone-incoming-call.oga",
                                           f"{FREEDESKTOP}/bell.oga", f"{FREEDESKTOP}/complete.oga")),
        Source("lugaru-data", (f"{LUGARU}/Alarm.ogg",)),
    ],
    "metal_clank": [
        Source("lugaru-data", (f"{LUGARU}/Clank*.ogg", f"{LUGARU}/MetalHit.ogg")),
        Source("minetest-data", (f"{MINETEST}/default/sounds/default_dig_metal.ogg", f"{MINETEST}/default/sounds/default_dug_metal.*.ogg")),
    ],
}

# Real recorded music (no instrument label: it only serves the music/speech/noise task).
# asterisk-moh-opsound-wav is 8 kHz telephone audio: its empty top band would let a model tell
# "recorded music" from everything else without listening, so it stays out.
MUSIC = [Source("etw-data", (f"{ETW}/music/*.wav",))]

SOUNDFONT = Source("fluid-soundfont-gm", ("usr/share/sounds/sf2/FluidR3_GM.sf2",))

# The ten demo speakers: mbrola diphone recordings of real people, speaking English through espeak-ng.
MBROLA_SPEAKERS: dict[str, tuple[str, str, str]] = {
    # speaker id: (espeak-ng voice, gender, Debian package)
    "us1": ("mb-us1", "female", "mbrola-us1"),
    "us2": ("mb-us2", "male", "mbrola-us2"),
    "en1": ("mb-en1", "male", "mbrola-en1"),
    "de1": ("mb-de1-en", "female", "mbrola-de1"),
    "de2": ("mb-de2-en", "male", "mbrola-de2"),
    "de5": ("mb-de5-en", "female", "mbrola-de5"),
    "de6": ("mb-de6-en", "male", "mbrola-de6"),
    "fr4": ("mb-fr4-en", "female", "mbrola-fr4"),
    "nl2": ("mb-nl2-en", "male", "mbrola-nl2"),
    "pl1": ("mb-pl1-en", "female", "mbrola-pl1"),
}
# More voices (--voices mbrola+tts): other engines' English voices, so that the keyword task hears
# sixteen voices rather than ten; voices no default corpus leaves out for independent evaluation.
# speaker id: ("engine:voice", gender, Debian package)
TTS_SPEAKERS: dict[str, tuple[str, str, str]] = {
    "slt": ("flite:slt", "female", "flite"),  # CMU ARCTIC recordings, clustergen
    "awb": ("flite:awb", "male", "flite"),  # Scottish English
    "rms": ("flite:rms", "male", "flite"),
    "kal": ("flite:kal16", "male", "flite"),  # diphones
    "pus": ("pico:en-US", "female", "libttspico-utils"),
    "pgb": ("pico:en-GB", "female", "libttspico-utils"),
}
TTS_PROGRAMS = {"flite": "flite", "pico": "pico2wave"}  # engine: its command
VOICE_SETS = ("mbrola", "mbrola+tts", "espeak")
# Fallback (--voices espeak): espeak-ng's own formant voices, no recordings of people.
ESPEAK_SPEAKERS: dict[str, tuple[str, str, str]] = {
    f"{g[0]}{i}": (f"en-us+{g[0]}{i}", g, "espeak-ng") for g in ("female", "male") for i in range(1, 6)
}
MBROLA_VOICE_DIR = "usr/share/mbrola"

# -- the "other" corpus (variant other): recordings the default corpus never uses ---------------
# Its own scenes, events and instruments (label names of its own; music, speech and noise, and
# speech / no_speech are the same as the default's), from files of the same Debian packages that no
# default source pattern matches (tests/test_multicorpus.py checks the two file sets are disjoint).
OTHER_SCENE_BACKGROUNDS: dict[str, list[Source]] = {
    "lava_cave": [Source("minetest-data", (f"{MINETEST}/env_sounds/sounds/env_sounds_lava.*.ogg",
                                           f"{MINETEST}/default/sounds/default_cool_lava.*.ogg"))],
    "stadium": [Source("etw-data", (f"{ETW}/snd/fondo.wav", f"{ETW}/snd/crowd.wav", f"{ETW}/snd/boou.wav"))],
    "mine_cart": [Source("minetest-data", (f"{MINETEST}/carts/sounds/carts_cart_moving.*.ogg",))],
}
OTHER_EVENTS: dict[str, list[Source]] = {
    "whoosh": [Source("lugaru-data", (f"{LUGARU}/*Whoosh*.ogg", f"{LUGARU}/KnifeSwish.ogg"))],
    "growl": [Source("lugaru-data", (f"{LUGARU}/Growl*.ogg", f"{LUGARU}/Snarl*.ogg"))],
    "impact": [Source("lugaru-data", (f"{LUGARU}/Thud.ogg", f"{LUGARU}/HeavyImpact.ogg", f"{LUGARU}/Land*.ogg",
                                      f"{LUGARU}/StaffBody.ogg", f"{LUGARU}/StaffHead.ogg"))],
    "digging": [Source("minetest-data", (f"{MINETEST}/default/sounds/default_dig_[cdos]*.ogg",
                                         f"{MINETEST}/default/sounds/default_gravel_dig.*.ogg",
                                         f"{MINETEST}/default/sounds/default_ice_dig.*.ogg"))],
    "blade": [Source("lugaru-data", (f"{LUGARU}/KnifeDraw.ogg", f"{LUGARU}/KnifeSlice.ogg", f"{LUGARU}/KnifeSheathe.ogg", f"{LUGARU}/Sword*.ogg",
                                     f"{LUGARU}/ClawSlice.ogg"))],
    "chime": [Source("sound-theme-freedesktop", tuple(f"{FREEDESKTOP}/{name}.oga" for name in (
        "message", "message-new-instant", "dialog-information", "dialog-warning", "window-attention",
        "service-login", "service-logout", "device-added", "device-removed")))],
}
OTHER_MUSIC = [Source("lugaru-data", (f"{LUGARU}/Music*.ogg",))]


def source_root() -> Path:
    return Path(os.environ.get("MTL_EDGE_SOURCE_ROOT", "/"))


def require_files(sources: list[Source], what: str, root: Path | None = None) -> list[Path]:
    """All files of ``sources``; an error naming the packages when any source has none."""
    root = root or source_root()
    files: list[Path] = []
    missing: list[str] = []
    for source in sources:
        found = source.files(root)
        if not found:
            missing.append(source.package)
        files.extend(found)
    if missing:
        raise MissingSourceError(
            f"the demo corpus needs {what} from Debian package(s) {', '.join(sorted(set(missing)))}: "
            f"install with `apt-get install {' '.join(sorted(set(missing)))}` (or run `make setup`)"
        )
    return files


def require_speech(voices: str, root: Path | None = None) -> dict[str, tuple[str, str, str]]:
    """The speaker table for ``voices``; an error naming what to install when a voice is missing."""
    root = root or source_root()
    if shutil.which("espeak-ng") is None:
        raise MissingSourceError("espeak-ng is not installed: `apt-get install espeak-ng` (or run `make setup`)")
    if voices == "espeak":
        return ESPEAK_SPEAKERS
    if voices not in VOICE_SETS:
        raise MissingSourceError(f"--voices must be one of {', '.join(VOICE_SETS)}, not {voices!r}")
    missing = [pkg for sid, (_, _, pkg) in MBROLA_SPEAKERS.items() if not (root / MBROLA_VOICE_DIR / sid).exists()]
    if missing or shutil.which("mbrola") is None:
        packages = (["mbrola"] if shutil.which("mbrola") is None else []) + missing
        raise MissingSourceError(
            f"mbrola voices missing: install `apt-get install {' '.join(packages)}` (Debian contrib/non-free "
            "components must be enabled in the apt sources; `make setup` does it), or use --voices espeak "
            "(espeak-ng's own voices only)"
        )
    if voices == "mbrola":
        return MBROLA_SPEAKERS
    missing = sorted({pkg for voice, _, pkg in TTS_SPEAKERS.values() if shutil.which(TTS_PROGRAMS[voice.split(":")[0]]) is None})
    if missing:
        raise MissingSourceError(f"--voices mbrola+tts needs `apt-get install {' '.join(missing)}` (libttspico-utils is in "
                                 "Debian's non-free component; `make setup` does it), or use --voices mbrola")
    return {**MBROLA_SPEAKERS, **TTS_SPEAKERS}
