"""Room impulse responses for the acoustic scenes (pyroomacoustics shoebox rooms).

Each scene has its own kind of room; every split gets its own rooms, so no rendering's room
is shared between train and test. The reflection order follows Sabine's formula for the target
reverberation time, capped at 40: enough for the tail of every room kind within a 1 s clip
(a cap near 12 would cut the tail off; 60 costs 3x the time for energy past the clip's end).
"""

from __future__ import annotations

import numpy as np

from mtl_edge.data.demo.variants import ROOM_KINDS  # scene -> room sizes and RT60 range

MAX_ORDER = 40
OUTDOOR = (0.9, 2)  # open air (RT60 0): walls that absorb 90 %, reflections up to order 2 (ground, a wall)


def room_impulse_response(scene: str, rng: np.random.Generator, sample_rate: int = 16_000) -> np.ndarray:
    """One RIR for a random room of ``scene``'s kind, source and microphone placed at random inside."""
    import pyroomacoustics as pra

    low, high, (rt_low, rt_high) = ROOM_KINDS[scene]
    dims = rng.uniform(low, high)
    rt60 = rng.uniform(rt_low, rt_high)
    absorption, order = pra.inverse_sabine(rt60, dims) if rt60 > 0 else OUTDOOR
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=min(order, MAX_ORDER))
    margin = 0.5
    source = rng.uniform([margin] * 2 + [1.0], [dims[0] - margin, dims[1] - margin, min(2.0, dims[2] - margin)])
    while True:  # a microphone between 0.5 m and 4 m from the talker
        mic = rng.uniform([margin] * 2 + [0.8], [dims[0] - margin, dims[1] - margin, min(1.8, dims[2] - margin)])
        if 0.5 <= np.linalg.norm(mic - source) <= 4.0:
            break
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    return (rir / np.abs(rir).max()).astype(np.float32)


def rir_bank(scenes: list[str], splits: list[str], per_split: int, seed: int, advance=lambda: None,
             stream: int = 7919) -> dict[tuple[str, str], list[np.ndarray]]:
    """``per_split`` RIRs for every (scene, split), deterministic for ``seed`` and ``stream`` (a corpus
    variant's own rooms); ``advance`` ticks a progress bar."""
    bank = {}
    for i, scene in enumerate(scenes):
        for j, split in enumerate(splits):
            rng = np.random.default_rng([seed, stream, i, j])
            bank[(scene, split)] = [room_impulse_response(scene, rng) for _ in range(per_split)]
            advance()
    return bank
