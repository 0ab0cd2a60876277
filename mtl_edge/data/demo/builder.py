"""Plan and build the demo corpus: which clips exist, their labels, splits and render settings.

The plan is drawn in one process from the seed, so the corpus is identical for a seed however
many workers render it. Every clip's render settings are drawn independently (speaker rate and
pitch, room, background stretch, SNR, level), and backgrounds and rooms are disjoint per split,
so no rendering appears in two splits.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.data.demo import sources
from mtl_edge.data.demo.variants import DEFAULT_INSTRUMENTS, EVENT_SCENES, check_variant, seed_key, variant_sources
from mtl_edge.data.manifest import MANIFEST_NAME, Row, make_manifest
from mtl_edge.data.task_kinds import TaskKind
from mtl_edge.errors import MtlEdgeError

RECIPE_VERSION = 4  # bump when rendering changes, so cached corpora are rebuilt
# bump when the manifest's rows change but the audio does not: a corpus of an older manifest is rebuilt
# too (re-rendered: identical audio, the new rows). 2: tasks tagging and event_activity, tasks.json
MANIFEST_VERSION = 2
CLIP_SECONDS = 1.0
# Tasks beyond one label per clip (tasks.json): a clip's tags (its foreground's class and its
# background's source) and its foreground's activity per 10 ms frame
TASK_KINDS = {"tagging": TaskKind("multilabel"),
              "event_activity": TaskKind("frame", hop_ms=10.0, frames=int(round(CLIP_SECONDS * 100)), segment_ms=100.0)}
# (segments of 100 ms: DCASE's 1 s segments would make the segment-based metrics clip-level on 1 s clips)
FOREGROUND = "foreground"  # event_activity's one label
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
                 "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
INSTRUMENTS = DEFAULT_INSTRUMENTS  # name: (General MIDI program, lowest note, highest note); the default corpus's
SCENES = tuple(sources.SCENE_BACKGROUNDS)  # the default corpus's; a variant's are in its CorpusSources
EVENTS = tuple(sources.EVENTS)
SPLIT_SHARES = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
# speech of voices no training clip has (kws, gender, and the clip-level tasks; no speaker label:
# speaker identification is closed-set); as many clips as the test split's speech
UNSEEN_SPLIT = "test_unseen_speakers"
# intonation per utterance: espeak-ng reads a word as a statement, question, exclamation or
# continuation from its punctuation (each has its own pitch contour)
SPEAKING_STYLES = (".", "?", "!", ",")
# clips at --scale 1 per kind (total ~5,350, plus ~260 of the held-out voices): every class of every task gets >= ~100 clips; an
# instrument needs ~200 phrases before timbre, not pitch range, decides its class
FULL_COUNTS = {"speech": 2600, "silence": 300, "instrument": 1600, "event": 700, "music": 150}
MANIFEST_EXTRA = ("clip_id", "kind", "source", "scene", "snr_db", "activity", "sha256")


@dataclass(frozen=True)
class DemoConfig:
    scale: float = 1.0  # 1 = full corpus (~5,600 clips)
    seed: int = 0
    voices: str = "mbrola"  # mbrola (recordings of real speakers) or espeak (fallback; the other variant's voices)
    snr_db: tuple[float, float] = (5.0, 20.0)  # foreground over background
    peak_dbfs: tuple[float, float] = (-20.0, -1.0)  # random clip level: loudness is no cue
    rooms_per_split: int = 0  # RIRs per scene and split; 0 = by scale (8 at full scale, 2 for tiny corpora)
    unseen_speakers: int = 2  # voices held out of training (half female, half male, drawn from the seed)
    recipe: int = RECIPE_VERSION
    variant: str = "default"  # default, overlap (events as EVENT_SCENES says) or other (disjoint sources; variants.py)

    def to_json(self) -> dict:
        """The settings a built corpus records (demo.json) and is reused for."""
        d = asdict(self)
        if self.variant == "default":  # corpora built before variants existed stay equal (and reused)
            del d["variant"]
        return json.loads(json.dumps(d))

    def rooms(self) -> int:
        return self.rooms_per_split or int(min(8, max(2, np.ceil(self.scale * 25))))

    def counts(self) -> dict[str, int]:
        # small corpora still hold every class in every split
        minimum = {"speech": 60, "silence": 6, "instrument": 40, "event": 35, "music": 3}
        return {k: max(minimum[k], int(round(v * self.scale))) for k, v in FULL_COUNTS.items()}


@dataclass
class BuildResult:
    folder: Path
    clips: int
    rows: int
    seconds: float
    reused: bool
    per_task: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        how = "reused cached" if self.reused else f"built in {self.seconds:.1f} s"
        tasks = ", ".join(f"{t} {n}" for t, n in sorted(self.per_task.items()))
        return f"demo corpus {how}: {self.clips} clips, {self.rows} manifest rows -> {self.folder}\n  tasks: {tasks}"


def _balanced(rng: np.random.Generator, labels, n: int) -> list:
    """``n`` labels, as equal in count as possible, in random order."""
    labels = list(labels)
    out = (labels * (n // len(labels) + 1))[:n]
    return [out[i] for i in rng.permutation(n)]


def _split_sizes(n: int, n_classes: int) -> dict[str, int]:
    """80/10/10, with at least one clip per class in each held-out split."""
    held_out = min(max(int(round(n * 0.1)), n_classes), n // 3)
    return {"train": n - 2 * held_out, "validation": held_out, "test": held_out}


def unseen_speakers(config: DemoConfig, speakers: dict[str, tuple[str, str, str]]) -> list[str]:
    """The voices held out of training: ``config.unseen_speakers``, alternately female and male, from the seed."""
    rng = np.random.default_rng([*seed_key(config.seed, config.variant), 2])
    # drawn from the recordings of people (mbrola) when the set has them: the other engines' voices only train
    people = {s: v for s, v in speakers.items() if v[2].startswith("mbrola")} or speakers
    by_gender = {g: [s for s, v in people.items() if v[1] == g] for g in ("female", "male")}
    if config.unseen_speakers < 0 or any(config.unseen_speakers > 2 * (len(v) - 2) for v in by_gender.values()):
        raise MtlEdgeError(f"--unseen-speakers must leave at least two voices of each gender for training, not {config.unseen_speakers}")
    picked = {g: list(rng.permutation(v)) for g, v in by_gender.items()}
    return sorted(str(picked[("female", "male")[i % 2]].pop()) for i in range(config.unseen_speakers))


def plan_corpus(config: DemoConfig, speakers: dict[str, tuple[str, str, str]]) -> list[dict]:
    """Every clip of the corpus: kind, labels per task, split and render settings.

    Splits are balanced by construction: each split's clips of a kind are drawn with their own
    balanced class counts (speakers and words for speech, instruments, events, scenes). The voices
    of ``unseen_speakers`` speak only in the ``test_unseen_speakers`` split. The ``overlap`` variant
    then moves each event clip into one of its event's scenes (``variants.EVENT_SCENES``), from a
    generator of its own, so that every other draw stays the default variant's.
    """
    check_variant(config.variant)
    src = variant_sources(config.variant)
    instruments, events, scenes = src.instruments, tuple(src.events), tuple(src.scene_backgrounds)
    rng = np.random.default_rng([*seed_key(config.seed, config.variant), 1])
    placing = np.random.default_rng([*seed_key(config.seed, config.variant), 3])
    counts = config.counts()
    unseen = unseen_speakers(config, speakers)
    speaker_ids = list(speakers)
    # each speaker speaks with a pitch centre of their own and a habitual rate (espeak would
    # otherwise give every voice of a gender identical prosody)
    pitch_centre = dict(zip(speaker_ids, np.linspace(25, 75, len(speaker_ids))[rng.permutation(len(speaker_ids))]))
    rate_centre = {s: rng.uniform(140, 190) for s in speaker_ids}
    word_classes = [*KEYWORDS, "_unknown_"]

    def speech(split: str, n: int) -> list[dict]:
        out = []
        voices = unseen if split == UNSEEN_SPLIT else [s for s in speaker_ids if s not in unseen]
        for speaker, word_class in zip(_balanced(rng, voices, n), _balanced(rng, word_classes, n)):
            word = str(rng.choice(UNKNOWN_WORDS)) if word_class == "_unknown_" else word_class
            labels = {"kws": word_class, "speaker": speaker, "gender": speakers[speaker][1],
                      "music_speech": "speech", "vad": "speech"}
            if split == UNSEEN_SPLIT:
                del labels["speaker"]
            out.append({
                "kind": "speech", "speaker": speaker, "word": word,
                "style": str(rng.choice(SPEAKING_STYLES)),
                # slow to fast speech around each speaker's habit, and a wide pitch spread per speaker
                "rate": int(np.clip(rate_centre[speaker] * rng.uniform(0.7, 1.35), 100, 260)),
                "pitch": int(np.clip(pitch_centre[speaker] + rng.normal(0, 9), 0, 99)),
                "labels": labels,
                "source": f"{speakers[speaker][0]}:{word}",
            })
        return out

    def silence(split: str, n: int) -> list[dict]:
        return [{"kind": "silence", "labels": {"kws": "_silence_", "music_speech": "noise", "vad": "no_speech"},
                 "source": "background"} for _ in range(n)]

    def instrument(split: str, n: int) -> list[dict]:
        out = []
        for name in _balanced(rng, list(instruments), n):
            program, low, high = instruments[name]
            notes, t = [], rng.uniform(0.0, 0.1)
            for _ in range(int(rng.integers(2, 6))):  # a phrase: 2-5 notes (or chords)
                length = rng.uniform(0.12, 0.45)
                chord = [int(rng.integers(low, high + 1))]
                if program in (0, 19, 24) and rng.random() < 0.3:  # polyphonic instruments sometimes play a chord
                    chord.append(min(high, chord[0] + int(rng.choice([3, 4, 7]))))
                for pitch in chord:
                    notes.append((pitch, round(t, 4), round(t + length, 4), int(rng.integers(50, 120))))
                t += length * rng.uniform(0.8, 1.1)
                if t > 0.8:
                    break
            out.append({"kind": "instrument", "program": program, "notes": notes,
                        "labels": {"instrument": name, "music_speech": "music", "vad": "no_speech"},
                        "source": f"GM program {program}"})
        return out

    def event(split: str, n: int) -> list[dict]:
        return [{"kind": "event", "label": label, "file": int(rng.integers(0, 1 << 30)),
                 "speed": float(rng.uniform(0.9, 1.1)), "crop": float(rng.random()),
                 "labels": {"event": label, "music_speech": "noise", "vad": "no_speech"}, "source": label}
                for label in _balanced(rng, list(events), n)]

    def music(split: str, n: int) -> list[dict]:
        return [{"kind": "music", "crop": float(rng.random()), "labels": {"music_speech": "music", "vad": "no_speech"},
                 "source": "recorded music"} for _ in range(n)]

    makers = {"speech": (speech, len(word_classes)), "silence": (silence, 1), "instrument": (instrument, len(instruments)),
              "event": (event, len(events)), "music": (music, 1)}
    specs: list[dict] = []
    for kind, (make, n_classes) in makers.items():
        sizes = _split_sizes(counts[kind], max(n_classes, len(scenes) if kind == "speech" else n_classes))
        if kind == "speech" and unseen:
            sizes[UNSEEN_SPLIT] = sizes["test"]
        for split, n in sizes.items():
            members = make(split, n)
            # every clip happens in an acoustic scene (a room kind and a real background), balanced too
            for spec, scene in zip(members, _balanced(rng, scenes, n)):
                spec["split"] = split
                if split == UNSEEN_SPLIT:  # new voices in the test split's rooms and backgrounds
                    spec["acoustics"] = "test"
                spec["scene"] = scene
                spec["labels"]["scene"] = scene
            if kind == "event" and config.variant == "overlap":
                _place_events(placing, members)
            specs.extend(members)
    for i, spec in enumerate(specs):
        spec.update({
            "index": i,
            "rir": int(rng.integers(config.rooms())),
            "bg_pos": float(rng.random()),
            "snr_db": round(float(rng.uniform(*config.snr_db)), 2),
            "peak_dbfs": float(rng.uniform(*config.peak_dbfs)),
            "onset": float(rng.random()),
        })
        spec["clip_id"] = f"{spec['kind']}_{i:05d}"
        spec["path"] = f"audio/{spec['split']}/{spec['kind']}/{spec['clip_id']}.wav"
    return specs


def _place_events(rng: np.random.Generator, specs: list[dict]) -> None:
    """Each event clip of ``specs`` (one split's) into one of its event's scenes, spread evenly over them."""
    for event in EVENTS:
        members = [s for s in specs if s["label"] == event]
        for spec, scene in zip(members, _balanced(rng, EVENT_SCENES[event], len(members))):
            spec["scene"] = spec["labels"]["scene"] = scene


# -- rendering in worker processes ---------------------------------------------------------------
_RENDERER = None


def _init_worker(seed: int, voices: str, rirs: dict, variant: str) -> None:
    global _RENDERER
    from mtl_edge.data.demo.render import Renderer

    _RENDERER = Renderer(seed, voices, rirs, variant=variant)


def _render_batch(args: tuple[str, list[dict]]):
    folder, specs = args
    return [_RENDERER.render(spec, Path(folder) / spec["path"]) for spec in specs]


def _settings_path(folder: Path) -> Path:
    return folder / "demo.json"


def _existing_matches(folder: Path, config: DemoConfig) -> dict | None:
    try:
        info = json.loads(_settings_path(folder).read_text())
    except (OSError, ValueError):
        return None
    if info.get("config") == config.to_json() and info.get("manifest_version", 1) == MANIFEST_VERSION \
            and (folder / MANIFEST_NAME).is_file():
        return info
    return None


def build_demo(config: DemoConfig, out: str | Path, workers: int = 2, force: bool = False) -> BuildResult:
    """Build the corpus into ``out`` (atomically), or reuse it when it was built with ``config``."""
    from mtl_edge.progress import progress_bar, stderr

    out = Path(out)
    src = variant_sources(config.variant)
    if src.voices and config.voices != src.voices:
        raise MtlEdgeError(f"the {config.variant} corpus speaks with espeak-ng's own voices only (--voices {src.voices}), "
                           f"not {config.voices}: the mbrola voices belong to the default corpus and its held-out voices")
    if not force and (info := _existing_matches(out, config)):
        return BuildResult(out, info["clips"], info["rows"], info["build_seconds"], True, info["per_task"])
    if out.exists() and any(out.iterdir()) and not _settings_path(out).exists():
        raise MtlEdgeError(f"{out} exists and is not a demo corpus; choose another --out or remove it")
    if config.voices == "espeak" and not src.voices:
        import warnings

        warnings.warn("--voices espeak: espeak-ng's own formant voices, not recordings of people; "
                      "speaker identification on them says little about real speakers", stacklevel=2)
    speakers = sources.require_speech(config.voices)
    # fail early, in this process, on any missing package
    used = source_files(config.variant)  # fails early, in this process, on any missing package

    started = time.perf_counter()
    specs = plan_corpus(config, speakers)
    from mtl_edge.data.demo.rooms import rir_bank

    splits = [s for s, _ in SPLIT_SHARES]
    rendered: dict[int, object] = {}
    with atomic.atomic_dir(out) as tmp:
        batches = [specs[i:i + 32] for i in range(0, len(specs), 32)]
        with progress_bar() as bar:
            scenes = list(src.scene_backgrounds)
            rooms = bar.add_task("designing rooms", total=len(scenes) * len(splits))
            rirs = rir_bank(scenes, splits, config.rooms(), config.seed, lambda: bar.advance(rooms), stream=src.room_stream)
            task = bar.add_task("rendering demo corpus", total=len(specs))
            with ProcessPoolExecutor(
                max_workers=max(1, workers), initializer=_init_worker, initargs=(config.seed, config.voices, rirs, config.variant),
                mp_context=multiprocessing.get_context("spawn"),
            ) as pool:
                for results in pool.map(_render_batch, [(str(tmp), b) for b in batches]):
                    for clip in results:
                        rendered[clip.index] = clip
                    bar.advance(task, len(results))
        _check_no_cross_split_duplicates(specs, rendered)
        rows = []
        for spec in specs:
            clip = rendered[spec["index"]]
            extra = {"clip_id": spec["clip_id"], "kind": spec["kind"], "source": spec["source"], "scene": spec["scene"],
                     "snr_db": "" if spec["kind"] == "silence" else f"{spec['snr_db']:.2f}",
                     "activity": clip.activity, "sha256": clip.sha256}
            for task_name, label in spec["labels"].items():
                rows.append(Row(spec["path"], task_name, label, spec["split"], extra))
            rows += _multi_rows(spec, extra)
        manifest = make_manifest(tmp, rows, TASK_KINDS)
        manifest.write(tmp)
        seconds = time.perf_counter() - started
        per_task = dict(sorted(Counter(r.task for r in rows).items()))
        atomic.write_json(_settings_path(tmp), {
            "config": config.to_json(), "manifest_version": MANIFEST_VERSION, "clips": len(specs), "rows": len(rows), "per_task": per_task,
            "build_seconds": round(seconds, 2), "workers": workers, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "speakers": {k: v[:2] for k, v in speakers.items()},
            "unseen_speakers": unseen_speakers(config, speakers),
            **({"event_scenes": {e: list(s) for e, s in EVENT_SCENES.items()}} if config.variant == "overlap" else {}),
            "sources": {"voices": sorted(v[0] for v in speakers.values()), "files": used,
                        "instruments": {k: v[0] for k, v in src.instruments.items()}},
        })
    stderr.print(f"rendered {len(specs)} clips in {seconds:.1f} s with {workers} worker(s)", highlight=False)
    return BuildResult(out, len(specs), len(rows), seconds, False, per_task)


def source_files(variant: str) -> list[str]:
    """Every recording the variant renders from (relative to the source root, sorted): recorded in
    demo.json, so that two corpora can be checked for shared recordings. Missing packages are an error."""
    src, root = variant_sources(variant), sources.source_root()
    files = [f for scene, srcs in src.scene_backgrounds.items() for f in sources.require_files(srcs, f"the '{scene}' background")]
    files += [f for label, srcs in src.events.items() for f in sources.require_files(srcs, f"'{label}' sound events")]
    files += sources.require_files(src.music, "recorded music") + sources.require_files([sources.SOUNDFONT], "the General MIDI soundfont")
    return sorted({str(f.relative_to(root)) for f in files})


def clip_tags(spec: dict) -> list[str]:
    """A clip's tags: its foreground's class (``speech``, the instrument, the event, ``music``; a
    background-only clip has none) and its background's source."""
    foreground = {"speech": "speech", "instrument": spec["labels"].get("instrument"), "event": spec.get("label"),
                  "music": "music", "silence": None}[spec["kind"]]
    return [t for t in (foreground, sources.BACKGROUND_TAGS[spec["scene"]]) if t]


def _multi_rows(spec: dict, extra: dict) -> list[Row]:
    """The clip's rows of the multi-row tasks: one per tag, and its foreground activity (empty for a
    background-only clip: every frame inactive)."""
    rows = [Row(spec["path"], "tagging", tag, spec["split"], extra) for tag in clip_tags(spec)]
    return rows + [Row(spec["path"], "event_activity", FOREGROUND, spec["split"], extra)]


def _check_no_cross_split_duplicates(specs: list[dict], rendered: dict) -> None:
    split_of: dict[str, str] = {}
    for spec in specs:
        digest = rendered[spec["index"]].sha256
        if split_of.setdefault(digest, spec["split"]) != spec["split"]:
            raise MtlEdgeError(f"internal error: {spec['path']} duplicates audio of another split")
