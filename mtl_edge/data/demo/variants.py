"""Corpus variants: what the demo corpus is made of, and how it places its sound events in its scenes.

``default`` draws every clip's scene independently of its labels, so every event occurs in every
scene and no event says anything about the scene. ``overlap`` places each event only in the scenes
of ``EVENT_SCENES``, as in real recordings: some events belong to one scene (a label of ``event``
then gives the ``scene`` away), others occur in several. Only the event clips' scenes differ
between those two (their rooms and backgrounds follow the scene); every other clip, label, split
and render setting is the same for a seed.

``other`` is a second corpus whose sources share nothing with the default's (``OTHER`` below): so
that an auxiliary task from "another corpus" can be compared with the same task from the main
task's own corpus (Experiment 4). It speaks with espeak-ng's own formant voices (not the mbrola
recordings: the mbrola voices the default corpus leaves out stay for independent evaluation),
mixes other real recordings (``sources.OTHER_*``) in rooms of other kinds, plays other General MIDI
instruments, and draws everything from a random stream of its own. Its ``gender``, ``vad`` and
``music_speech`` tasks have the default's label names; ``speaker``, ``scene``, ``event`` and
``instrument`` have labels of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtl_edge.data.demo import sources
from mtl_edge.errors import MtlEdgeError

VARIANTS = ("default", "overlap", "other")

# event -> the scenes it occurs in (variant "overlap"). Three events belong to one scene, four are
# shared; every scene holds at least one shared event and the event clips spread over the scenes
# about evenly (per scene 1.0-1.7 events' worth of clips).
EVENT_SCENES: dict[str, tuple[str, ...]] = {
    "glass_break": ("office",),  # exclusive
    "dog_bark": ("windy_outdoors",),  # exclusive
    "metal_clank": ("fireside",),  # exclusive (pots and the furnace)
    "door": ("office", "crowded_hall"),
    "alarm_bell": ("crowded_hall", "riverside"),
    "explosion": ("windy_outdoors", "riverside", "fireside"),
    "footsteps": ("office", "crowded_hall", "windy_outdoors", "riverside", "fireside"),
}

# scene -> (room size range in metres [min, max] per axis, RT60 range in seconds); see rooms.py
ROOM_KINDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float]]] = {
    "office": ((3.0, 3.0, 2.5), (6.0, 5.0, 3.0), (0.35, 0.6)),
    "crowded_hall": ((15.0, 12.0, 6.0), (30.0, 20.0, 12.0), (1.4, 2.4)),
    "windy_outdoors": ((20.0, 20.0, 10.0), (40.0, 40.0, 20.0), (0.0, 0.0)),  # open air: see rooms.OUTDOOR
    "riverside": ((20.0, 20.0, 10.0), (40.0, 40.0, 20.0), (0.0, 0.0)),
    "fireside": ((4.0, 4.0, 2.4), (7.0, 6.0, 3.0), (0.5, 0.9)),
    # the other corpus's scenes
    "lava_cave": ((8.0, 6.0, 4.0), (20.0, 14.0, 8.0), (1.0, 1.8)),
    "stadium": ((20.0, 20.0, 10.0), (40.0, 40.0, 20.0), (0.0, 0.0)),
    "mine_cart": ((20.0, 2.5, 2.5), (50.0, 4.0, 3.5), (0.7, 1.3)),  # a long narrow tunnel
}


@dataclass(frozen=True)
class CorpusSources:
    """What a variant renders from: voices, recordings, instruments, rooms and its random stream."""

    voices: str | None  # the voice set it must speak with (None: --voices decides)
    scene_backgrounds: dict[str, list[sources.Source]]
    events: dict[str, list[sources.Source]]
    music: list[sources.Source]
    instruments: dict[str, tuple[int, int, int]]  # name: (General MIDI program, lowest note, highest note)
    stream: tuple[int, ...] = ()  # mixed into every seed: a variant with its own draws
    room_stream: int = 7919  # seed of the room impulse responses


DEFAULT_INSTRUMENTS = {
    "piano": (0, 48, 84), "church_organ": (19, 36, 79), "acoustic_guitar": (24, 40, 76), "violin": (40, 55, 91),
    "cello": (42, 36, 67), "trumpet": (56, 55, 82), "clarinet": (71, 50, 86), "flute": (73, 60, 96),
}
DEFAULT = CorpusSources(None, sources.SCENE_BACKGROUNDS, sources.EVENTS, sources.MUSIC, DEFAULT_INSTRUMENTS)
OTHER = CorpusSources(
    "espeak", sources.OTHER_SCENE_BACKGROUNDS, sources.OTHER_EVENTS, sources.OTHER_MUSIC,
    {"harpsichord": (6, 48, 84), "marimba": (12, 48, 84), "accordion": (21, 53, 89), "acoustic_bass": (32, 28, 55),
     "harp": (46, 36, 84), "french_horn": (60, 41, 77), "alto_sax": (65, 49, 80), "oboe": (68, 58, 91)},
    stream=(20261207,), room_stream=7927)


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise MtlEdgeError(f"unknown corpus variant {variant!r}; variants: {', '.join(VARIANTS)}")


def variant_sources(variant: str) -> CorpusSources:
    check_variant(variant)
    return OTHER if variant == "other" else DEFAULT


def seed_key(seed: int, variant: str) -> list[int]:
    """The seed sequence a variant's random generators start from (the default's and overlap's: [seed])."""
    return [seed, *variant_sources(variant).stream]
