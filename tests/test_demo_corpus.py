"""The demo corpus: real sources, labels of every task, clean splits, determinism, atomic builds."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter, defaultdict

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data.demo import builder, sources
from mtl_edge.data.demo.builder import DemoConfig, build_demo, plan_corpus
from mtl_edge.data.manifest import read_manifest
from mtl_edge.errors import MissingSourceError, MtlEdgeError

EXPECTED_CLASSES = {
    "kws": 12, "speaker": 8, "gender": 2, "instrument": 8, "music_speech": 3, "scene": 5, "event": 7, "vad": 2,
    "tagging": 22,  # the foreground's class (speech, 8 instruments, 7 events, music) and the background's source (5)
    "event_activity": 1,  # foreground, per 10 ms frame
}


def test_every_task_has_its_classes_in_every_split(demo_corpus):
    manifest = read_manifest(demo_corpus)
    assert set(manifest.tasks) == set(EXPECTED_CLASSES)
    for task, n_classes in EXPECTED_CLASSES.items():
        labels = manifest.labels(task)
        assert len(labels) == n_classes, (task, labels)
        for split in ("train", "validation", "test"):
            in_split = {r.label for r in manifest.rows_for(task) if r.split == split}
            assert in_split == set(labels), (task, split, set(labels) - in_split)
    assert set(manifest.labels("kws")) >= {"yes", "no", "stop", "go", "_unknown_", "_silence_"}
    genders = {r.label for r in manifest.rows_for("gender")}
    assert genders == {"female", "male"}
    speaker_gender = {r.extra["source"].split(":")[0]: r.label for r in manifest.rows_for("gender")}
    assert Counter(speaker_gender.values()) == {"female": 5, "male": 5}  # the ten voices, two of them held out


def test_two_voices_are_heard_only_in_the_unseen_speakers_split(demo_corpus):
    """One female and one male voice speak in test_unseen_speakers and nowhere else; those clips carry
    kws, gender and the clip-level tasks but no speaker label (speaker identification is closed-set)."""
    manifest = read_manifest(demo_corpus)
    info = json.loads((demo_corpus / "demo.json").read_text())
    held_out = info["unseen_speakers"]
    voice = {sid: v[0] for sid, v in sources.MBROLA_SPEAKERS.items()}
    assert sorted(sources.MBROLA_SPEAKERS[s][1] for s in held_out) == ["female", "male"]
    voices_by_split = defaultdict(set)
    tasks_by_split = defaultdict(set)
    for r in manifest.rows:
        if r.extra["kind"] == "speech":
            voices_by_split[r.split].add(r.extra["source"].split(":")[0])
        tasks_by_split[r.split].add(r.task)
    assert voices_by_split["test_unseen_speakers"] == {voice[s] for s in held_out}
    for split in ("train", "validation", "test"):
        assert not voices_by_split[split] & voices_by_split["test_unseen_speakers"], split
        assert len(voices_by_split[split]) == 8
    assert tasks_by_split["test_unseen_speakers"] == {"kws", "gender", "music_speech", "vad", "scene", "tagging", "event_activity"}
    assert set(manifest.labels("speaker")) == set(sources.MBROLA_SPEAKERS) - set(held_out)
    unseen = [r for r in manifest.rows_for("kws") if r.split == "test_unseen_speakers"]
    test = [r for r in manifest.rows_for("kws") if r.split == "test" and r.label != "_silence_"]
    assert len(unseen) == len(test)  # as many clips as the test split's speech
    assert {r.label for r in unseen} == set(manifest.labels("kws")) - {"_silence_"}


def test_held_out_voices_come_from_the_seed_and_can_be_turned_off():
    a = builder.unseen_speakers(DemoConfig(seed=0), sources.MBROLA_SPEAKERS)
    assert a == builder.unseen_speakers(DemoConfig(seed=0), sources.MBROLA_SPEAKERS)
    drawn = {tuple(builder.unseen_speakers(DemoConfig(seed=s), sources.MBROLA_SPEAKERS)) for s in range(6)}
    assert len(drawn) > 1
    specs = plan_corpus(DemoConfig(scale=0.05, unseen_speakers=0), sources.MBROLA_SPEAKERS)
    assert {s["split"] for s in specs} == {"train", "validation", "test"}
    assert len({s["speaker"] for s in specs if s["kind"] == "speech" and s["split"] == "train"}) == 10
    with pytest.raises(MtlEdgeError, match="at least two voices of each gender"):
        builder.unseen_speakers(DemoConfig(unseen_speakers=8), sources.MBROLA_SPEAKERS)


def test_words_are_spoken_in_several_styles_and_a_wide_range_of_rates():
    specs = [s for s in plan_corpus(DemoConfig(scale=0.3), sources.MBROLA_SPEAKERS) if s["kind"] == "speech"]
    assert {s["style"] for s in specs} == set(builder.SPEAKING_STYLES)
    for speaker in {s["speaker"] for s in specs}:
        rates = [s["rate"] for s in specs if s["speaker"] == speaker]
        assert max(rates) / min(rates) > 1.6, speaker


def test_clips_are_one_second_16k_and_not_digitally_silent(demo_corpus):
    import soundfile as sf

    manifest = read_manifest(demo_corpus)
    for path in sorted(manifest.clips())[::7]:
        samples, rate = sf.read(demo_corpus / path, dtype="float32")
        assert rate == 16000 and samples.ndim == 1 and len(samples) == 16000
        assert np.isfinite(samples).all()
        # no run of exact zeros longer than 10 ms anywhere: the noise floor hides TTS silence
        zero_run = max((len(run) for run in np.split(samples, np.flatnonzero(samples != 0)) if len(run)), default=0)
        assert zero_run < 160, path


def test_no_audio_or_rendering_shared_between_splits(demo_corpus):
    manifest = read_manifest(demo_corpus)
    splits_of_hash = defaultdict(set)
    for row in manifest.rows:
        splits_of_hash[row.extra["sha256"]].add(row.split)
    assert all(len(s) == 1 for s in splits_of_hash.values())
    # speech renderings: (speaker, word, rate, pitch) never repeat across splits
    specs = plan_corpus(DemoConfig(scale=0.08, seed=0), sources.MBROLA_SPEAKERS)
    split_of = {}
    for spec in specs:
        if spec["kind"] == "speech":
            key = (spec["speaker"], spec["word"], spec["rate"], spec["pitch"], spec["rir"], spec["bg_pos"])
            assert split_of.setdefault(key, spec["split"]) == spec["split"]


def test_speakers_differ_in_pitch_and_rate():
    """espeak would give all voices of a gender the same prosody; the plan must not."""
    specs = plan_corpus(DemoConfig(scale=0.3, seed=3), sources.MBROLA_SPEAKERS)
    pitch = defaultdict(list)
    for spec in specs:
        if spec["kind"] == "speech":
            pitch[spec["speaker"]].append(spec["pitch"])
    centres = sorted(np.mean(v) for v in pitch.values())
    assert centres[-1] - centres[0] > 30
    assert all(np.std(v) > 2 for v in pitch.values())  # and each varies from clip to clip


def test_plan_is_deterministic_for_a_seed_and_differs_between_seeds():
    a = plan_corpus(DemoConfig(scale=0.05, seed=1), sources.MBROLA_SPEAKERS)
    b = plan_corpus(DemoConfig(scale=0.05, seed=1), sources.MBROLA_SPEAKERS)
    c = plan_corpus(DemoConfig(scale=0.05, seed=2), sources.MBROLA_SPEAKERS)
    assert a == b
    assert a != c


def test_full_scale_plan_has_about_5600_clips_and_100_per_class():
    specs = plan_corpus(DemoConfig(scale=1.0), sources.MBROLA_SPEAKERS)
    assert 5000 <= len(specs) <= 6000
    counts = defaultdict(Counter)
    for spec in specs:
        for task, label in spec["labels"].items():
            counts[task][label] += 1
    for task, counter in counts.items():
        assert len(counter) == EXPECTED_CLASSES[task]
        assert min(counter.values()) >= 95, (task, counter.most_common()[-1])


@pytest.mark.slow
def test_rendering_is_identical_across_worker_counts(tmp_path, demo_corpus):
    config = DemoConfig(scale=0.01, seed=5)
    one = build_demo(config, tmp_path / "one", workers=1)
    two = build_demo(config, tmp_path / "two", workers=2)
    hashes = [{r.path: r.extra["sha256"] for r in read_manifest(x.folder).rows} for x in (one, two)]
    assert hashes[0] == hashes[1]
    again = build_demo(config, tmp_path / "one", workers=2)
    assert again.reused and again.clips == one.clips


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "_check_no_cross_split_duplicates", crash)
    with pytest.raises(KeyboardInterrupt):
        build_demo(DemoConfig(scale=0.01, seed=9), tmp_path / "corpus", workers=1)
    assert not (tmp_path / "corpus").exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_sources_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_EDGE_SOURCE_ROOT", str(tmp_path))
    with pytest.raises(MissingSourceError, match="mbrola-us1"):
        build_demo(DemoConfig(scale=0.01), tmp_path / "out")
    with pytest.raises(MissingSourceError, match="bucklespring-data"):
        sources.require_files(sources.SCENE_BACKGROUNDS["office"], "the office background")
    result = CliRunner().invoke(app, ["data", "demo", "--out", str(tmp_path / "out"), "--scale", "0.01"])
    assert result.exit_code == 1
    assert "apt-get install" in result.output and "--voices espeak" in result.output


def test_refuses_to_overwrite_a_folder_that_is_not_a_demo_corpus(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(MtlEdgeError, match="not a demo corpus"):
        build_demo(DemoConfig(scale=0.01), tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_espeak_fallback_warns_and_builds(tmp_path):
    with pytest.warns(UserWarning, match="not recordings of people"):
        result = build_demo(DemoConfig(scale=0.01, seed=2, voices="espeak"), tmp_path / "c", workers=1)
    manifest = read_manifest(result.folder)
    assert len(manifest.labels("speaker")) == 8  # two of espeak-ng's ten voices are held out too
    unseen = json.loads((result.folder / "demo.json").read_text())["unseen_speakers"]
    assert len(unseen) == 2 and not set(unseen) & set(manifest.labels("speaker"))


@pytest.mark.slow
def test_cli_builds_with_a_progress_bar_and_records_its_settings(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["data", "demo", "--out", str(out), "--scale", "0.01", "--seed", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "rendering demo corpus" in result.output  # the bar's label (CliRunner mixes stderr in)
    info = json.loads((out / "demo.json").read_text())
    assert info["config"]["seed"] == 4 and info["clips"] == len(read_manifest(out).clips())


@pytest.mark.slow
def test_shuffled_labels_stay_at_chance_and_true_labels_do_not(demo_corpus):
    """A model trained on shuffled labels must not beat chance on the test split (no leak, no shortcut)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mtl_edge.features.cache import prepare_features
    from mtl_edge.features.logmel import FeatureConfig

    manifest = read_manifest(demo_corpus)
    table = prepare_features(demo_corpus, FeatureConfig(), cache_dir=demo_corpus.parent / "features")
    index = {p: i for i, p in enumerate(table.paths)}
    rng = np.random.default_rng(0)
    for task in ("scene", "music_speech", "speaker"):
        rows = manifest.rows_for(task)
        train = [r for r in rows if r.split != "test"]
        test = [r for r in rows if r.split == "test"]
        x_train = np.asarray(table.features)[[index[r.path] for r in train]]
        x_test = np.asarray(table.features)[[index[r.path] for r in test]]
        y_train = np.array([r.label for r in train])
        y_test = np.array([r.label for r in test])
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        true_acc = model.fit(x_train, y_train).score(x_test, y_test)
        shuffled_acc = np.mean([
            model.fit(x_train, rng.permutation(y_train)).score(x_test, y_test) for _ in range(5)
        ])
        majority = Counter(y_test).most_common(1)[0][1] / len(y_test)
        chance = max(1 / len(set(y_train)), majority)
        bound = chance + 3 * np.sqrt(chance * (1 - chance) / (5 * len(y_test)))
        assert shuffled_acc <= bound, (task, shuffled_acc, bound)
        assert true_acc > bound, (task, true_acc, bound)


def test_more_voices_come_from_other_engines_and_the_held_out_voices_stay_recorded_people():
    """--voices mbrola+tts: sixteen voices; the held-out pair is drawn from the mbrola recordings as with
    --voices mbrola (the same pair for a seed), so the unseen-voice split is the same people."""
    every = {**sources.MBROLA_SPEAKERS, **sources.TTS_SPEAKERS}
    assert len(every) == 16 and {v[1] for v in sources.TTS_SPEAKERS.values()} == {"female", "male"}
    for seed in range(6):
        held_out = builder.unseen_speakers(DemoConfig(seed=seed), every)
        assert held_out == builder.unseen_speakers(DemoConfig(seed=seed), sources.MBROLA_SPEAKERS)
        assert set(held_out) <= set(sources.MBROLA_SPEAKERS)
    specs = [s for s in plan_corpus(DemoConfig(scale=0.2, voices="mbrola+tts"), every) if s["kind"] == "speech"]
    train = {s["speaker"] for s in specs if s["split"] == "train"}
    assert train == set(every) - set(builder.unseen_speakers(DemoConfig(), every))


@pytest.mark.parametrize("voice", ["flite:slt", "flite:awb", "pico:en-US", "pico:en-GB"])
def test_other_engines_speak_the_word_at_the_planned_rate_and_pitch(voice, tmp_path):
    import librosa

    from mtl_edge.data.audio import load_audio
    from mtl_edge.data.demo.render import speech_argv

    from conftest import _require

    package = {v[0]: v[2] for v in sources.TTS_SPEAKERS.values()}[voice]
    _require(sources.TTS_PROGRAMS[voice.split(":")[0]], package)

    def spoken(rate: int, pitch: int) -> tuple[float, float]:
        out = tmp_path / f"{rate}-{pitch}.wav"
        subprocess.run(speech_argv(voice, "seven", rate, pitch, out), check=True, capture_output=True)
        audio = load_audio(out)
        assert audio.sample_rate == 16000
        trimmed, _ = librosa.effects.trim(audio.samples, top_db=40)
        f0, voiced, _ = librosa.pyin(trimmed, fmin=60, fmax=500, sr=16000, frame_length=1024)
        return len(trimmed) / 16000, float(np.nanmedian(f0[voiced]))

    slow, fast = spoken(110, 50), spoken(250, 50)
    assert slow[0] > 1.5 * fast[0]  # rate: words per minute, as espeak-ng's -s
    low, high = spoken(175, 10), spoken(175, 90)
    assert high[1] > 1.4 * low[1]  # pitch 10 -> 90: about 0.8 octave


def test_missing_engines_are_named_with_their_packages(tmp_path, monkeypatch):
    from conftest import _require

    espeak = _require("espeak-ng", "espeak-ng")
    (tmp_path / "espeak-ng").symlink_to(espeak)
    (tmp_path / "mbrola").symlink_to(shutil.which("mbrola") or espeak)
    monkeypatch.setenv("PATH", str(tmp_path))  # espeak-ng and mbrola only: no flite, no pico2wave
    with pytest.raises(MissingSourceError, match="apt-get install flite libttspico-utils"):
        sources.require_speech("mbrola+tts")
    with pytest.raises(MissingSourceError, match="must be one of mbrola, mbrola\\+tts, espeak"):
        sources.require_speech("festival")
