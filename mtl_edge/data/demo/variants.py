"""Corpus variants: how the demo corpus places its sound events in its acoustic scenes.

``default`` draws every clip's scene independently of its labels, so every event occurs in every
scene and no event says anything about the scene. ``overlap`` places each event only in the scenes
of ``EVENT_SCENES``, as in real recordings: some events belong to one scene (a label of ``event``
then gives the ``scene`` away), others occur in several. Only the event clips' scenes differ
between the variants (their rooms and backgrounds follow the scene); every other clip, label,
split and render setting is the same for a seed.
"""

from __future__ import annotations

from mtl_edge.errors import MtlEdgeError

VARIANTS = ("default", "overlap")

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


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise MtlEdgeError(f"unknown corpus variant {variant!r}; variants: {', '.join(VARIANTS)}")

