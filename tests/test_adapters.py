"""Dataset layout adapters: each one on a small fixture in the real layout, made from real audio."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data.adapters import LayoutWarning, hash_split, import_corpus, known_layouts
from mtl_edge.data.manifest import SingleExampleLabelWarning, read_manifest
from mtl_edge.errors import AudioError, MtlEdgeError

# Tiny fixtures have speakers/labels with one clip: that warning is expected here.
pytestmark = pytest.mark.filterwarnings(f"ignore::{SingleExampleLabelWarning.__module__}.SingleExampleLabelWarning")

LAYOUTS = ["esc50", "folders", "fsdkaggle2018", "librispeech", "ravdess", "speech-commands"]


# ---------------------------------------------------------------- helpers


def _mono(path: Path, rate: int) -> np.ndarray:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, sr, rate).astype(np.float32) if sr != rate else mono


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return np.pad(x, (0, max(0, n - len(x))))[:n]


def _write(path: Path, samples: np.ndarray, rate: int, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, format=fmt, subtype="PCM_16")
    return path


def _word(speak, word: str, out: Path, sr: int = 16000, seconds: float | None = 1.0, fmt: str | None = None, **voice) -> Path:
    """A real espeak-ng utterance, resampled (and padded/trimmed) like the dataset's own files."""
    samples = _mono(speak(word, **voice), sr)
    if seconds is not None:
        samples = _fit(samples, int(seconds * sr))
    return _write(out, samples, sr, fmt)


def _recording(recordings, name: str, out: Path, rate: int, seconds: float | None = None) -> Path:
    src = next(p for p in recordings if p.name == name)
    samples = _mono(src, rate)
    if seconds is not None:
        samples = _fit(samples, int(seconds * rate))
    return _write(out, samples, rate)


def _rows(manifest, task: str) -> dict[str, tuple[str, str]]:
    """path -> (label, split) for one task."""
    return {r.path: (r.label, r.split) for r in manifest.rows_for(task)}


# ---------------------------------------------------------------- fixtures in the real layouts

SPEAKERS = {"0a2b400e": dict(voice="en-us", pitch=30), "1f3c5a7d": dict(voice="en-gb", pitch=60), "9e8d7c6b": dict(voice="en-us", pitch=80, rate=140)}


@pytest.fixture(scope="module")
def speech_commands_src(tmp_path_factory, speak, recordings) -> Path:
    src = tmp_path_factory.mktemp("speech_commands_v0.02")
    files = [("yes", "0a2b400e", 0), ("yes", "1f3c5a7d", 0), ("yes", "9e8d7c6b", 0), ("yes", "0a2b400e", 1),
             ("no", "0a2b400e", 0), ("no", "1f3c5a7d", 0), ("stop", "9e8d7c6b", 0),
             ("cat", "1f3c5a7d", 0), ("house", "9e8d7c6b", 0), ("house", "0a2b400e", 0)]
    for word, spk, n in files:
        _word(speak, word, src / word / f"{spk}_nohash_{n}.wav", **SPEAKERS[spk])
    (src / "validation_list.txt").write_text("no/1f3c5a7d_nohash_0.wav\nhouse/9e8d7c6b_nohash_0.wav\n")
    (src / "testing_list.txt").write_text("yes/9e8d7c6b_nohash_0.wav\ncat/1f3c5a7d_nohash_0.wav\n\n")
    bg = src / "_background_noise_"
    _recording(recordings, "alarm-clock-elapsed.oga", bg / "alarm_clock.wav", 16000, seconds=6.5)  # 6 clips
    _recording(recordings, "phone-outgoing-busy.oga", bg / "busy_tone.wav", 16000, seconds=2.4)  # 2 clips
    (bg / "README.md").write_text("background noise\n")
    (src / "LICENSE").write_text("CC-BY-4.0\n")
    return src


ESC_ROWS = [  # filename, fold, target, category, source recording
    ("1-100032-A-0.wav", 1, 0, "clock_alarm", "alarm-clock-elapsed.oga"),
    ("2-100038-A-1.wav", 2, 1, "church_bells", "bell.oga"),
    ("3-100051-A-2.wav", 3, 2, "camera_shutter", "camera-shutter.oga"),
    ("3-100051-B-2.wav", 3, 2, "camera_shutter", "screen-capture.oga"),
    ("4-100210-A-3.wav", 4, 3, "phone_ringing", "phone-incoming-call.oga"),
    ("5-100260-A-0.wav", 5, 0, "clock_alarm", "suspend-error.oga"),
    ("5-100290-A-1.wav", 5, 1, "church_bells", "complete.oga"),
]


def _make_esc50(src: Path, recordings, rows=ESC_ROWS) -> Path:
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for fname, fold, target, category, rec in rows:
        _recording(recordings, rec, src / "audio" / fname, 44100, seconds=5.0)
        lines.append(f"{fname},{fold},{target},{category},False,{fname.split('-')[1]},{fname.split('-')[2]}")
    (src / "meta").mkdir(parents=True, exist_ok=True)
    (src / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return src


@pytest.fixture(scope="module")
def esc50_src(tmp_path_factory, recordings) -> Path:
    return _make_esc50(tmp_path_factory.mktemp("ESC-50-master"), recordings)


FSD_TRAIN = [  # fname, label, manually_verified, recording
    ("00044347.wav", "Bus", 0, "service-login.oga"),
    ("001ca53d.wav", "Telephone", 1, "phone-outgoing-calling.oga"),
    ("002d256b.wav", "Telephone", 0, "phone-outgoing-busy.oga"),
    ("0033e230.wav", "Gong", 1, "bell.oga"),
    ("00353774.wav", "Gong", 1, "complete.oga"),
    ("003b91e8.wav", "Bus", 1, "service-logout.oga"),
    ("003da8e5.wav", "Knock", 0, "device-added.oga"),
    ("0048fd00.wav", "Knock", 1, "device-removed.oga"),
]
FSD_TEST = [("00063640.wav", "Gong", "Public", "message.oga"), ("0013a1db.wav", "Knock", "Private", "power-plug.oga")]


def _make_fsd(src: Path, recordings, meta: str, train_csv: str, audio_train: str, audio_test: str) -> Path:
    (src / meta).mkdir(parents=True, exist_ok=True)
    lines = ["fname,label,manually_verified,freesound_id,license"]
    for i, (fname, label, mv, rec) in enumerate(FSD_TRAIN):
        _recording(recordings, rec, src / audio_train / fname, 44100)
        lines.append(f"{fname},{label},{mv},{1000 + i},Attribution")
    (src / meta / train_csv).write_text("\n".join(lines) + "\n")
    lines = ["fname,label,usage,freesound_id,license"]
    for i, (fname, label, usage, rec) in enumerate(FSD_TEST):
        _recording(recordings, rec, src / audio_test / fname, 44100)
        lines.append(f"{fname},{label},{usage},{2000 + i},Creative Commons 0")
    (src / meta / "test_post_competition_scoring_clips.csv").write_text("\n".join(lines) + "\n")
    return src


@pytest.fixture(scope="module")
def fsd_src(tmp_path_factory, recordings) -> Path:
    return _make_fsd(tmp_path_factory.mktemp("fsd"), recordings, "FSDKaggle2018.meta", "train_post_competition.csv",
                     "FSDKaggle2018.audio_train", "FSDKaggle2018.audio_test")


SPEAKERS_TXT = """\
; Some comments about the speakers
;ID  |SEX| SUBSET           |MINUTES| NAME
84   | F | dev-clean        |  8.02 | Christie Nowak
174  | M | dev-clean        |  8.04 | Peter Eastman
1089 | M | test-clean       |  8.01 | Rob Marland
121  | F | test-clean       |  8.00 | Ann
"""
LIBRI = {  # subset -> speaker -> (chapter, voice)
    "dev-clean": {"84": ("121123", dict(voice="en-us+f3", pitch=70)), "174": ("50561", dict(voice="en-us", pitch=30))},
    "test-clean": {"1089": ("134686", dict(voice="en-gb", pitch=40))},
}
LIBRI_WORDS = ["chapter one", "the quick brown fox", "a red sky at night", "good morning"]


@pytest.fixture(scope="module")
def librispeech_src(tmp_path_factory, speak) -> Path:
    root = tmp_path_factory.mktemp("libri") / "LibriSpeech"
    for subset, speakers in LIBRI.items():
        for spk, (chapter, voice) in speakers.items():
            for utt, text in enumerate(LIBRI_WORDS[: 4 if subset == "dev-clean" else 2]):
                out = root / subset / spk / chapter / f"{spk}-{chapter}-{utt:04d}.flac"
                _word(speak, text, out, seconds=None, fmt="FLAC", **voice)
            (root / subset / spk / chapter / f"{spk}-{chapter}.trans.txt").write_text("0000 CHAPTER ONE\n")
    (root / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    (root / "README.TXT").write_text("LibriSpeech ASR corpus\n")
    return root


RAVDESS_AUDIO = {  # file -> expected (emotion, intensity, gender, speaker)
    "Actor_01/03-01-05-02-01-01-01.wav": ("angry", "strong", "male", "actor_01"),
    "Actor_01/03-01-01-01-02-02-01.wav": ("neutral", "normal", "male", "actor_01"),
    "Actor_01/03-01-03-02-01-02-01.wav": ("happy", "strong", "male", "actor_01"),
    "Actor_02/03-02-03-01-01-01-02.wav": ("happy", "normal", "female", "actor_02"),
    "Actor_02/03-01-08-02-02-01-02.wav": ("surprised", "strong", "female", "actor_02"),
    "Actor_02/03-01-04-01-01-02-02.wav": ("sad", "normal", "female", "actor_02"),
}
RAVDESS_VIDEO = ["Actor_01/01-01-05-02-01-01-01.mp4", "Actor_02/02-01-08-02-02-01-02.mp4"]


@pytest.fixture(scope="module")
def ravdess_src(tmp_path_factory, speak) -> Path:
    src = tmp_path_factory.mktemp("ravdess")
    statements = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}
    for rel, (_, intensity, gender, _) in RAVDESS_AUDIO.items():
        voice = dict(voice="en-us" if gender == "male" else "en-us+f2", pitch=30 if gender == "male" else 70,
                     rate=190 if intensity == "strong" else 150)
        _word(speak, statements[Path(rel).name[12:14]], src / rel, sr=48000, seconds=None, **voice)
    for rel in RAVDESS_VIDEO:  # never read: video files are counted and left out
        (src / rel).write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return src


@pytest.fixture(scope="module")
def folders_src(tmp_path_factory, speak, recordings) -> Path:
    src = tmp_path_factory.mktemp("folders")
    _word(speak, "hello", src / "greeting" / "hello_1.wav", voice="en-us")
    _word(speak, "good morning", src / "greeting" / "take2" / "morning.flac", voice="en-gb", fmt="FLAC")
    _word(speak, "hi there", src / "greeting" / "hi.wav", voice="en-us", pitch=80)
    _word(speak, "goodbye", src / "farewell" / "bye.wav", voice="en-us")
    _word(speak, "see you later", src / "farewell" / "later.flac", voice="en-gb", fmt="FLAC")
    shutil.copy(next(p for p in recordings if p.name == "service-logout.oga"), src / "farewell" / "logout.oga")
    (src / "farewell" / "notes.txt").write_text("not audio\n")
    return src


# ---------------------------------------------------------------- the shared split


def test_hash_split_is_deterministic_and_80_10_10():
    keys = [f"audio/x/{i}.wav" for i in range(20000)]
    first = [hash_split(k) for k in keys]
    assert first == [hash_split(k) for k in keys]
    counts = Counter(first)
    assert abs(counts["train"] / len(keys) - 0.8) < 0.02
    assert abs(counts["validation"] / len(keys) - 0.1) < 0.01
    assert abs(counts["test"] / len(keys) - 0.1) < 0.01
    assert set(hash_split(k, validation=0.1, test=0.0) for k in keys) == {"train", "validation"}


# ---------------------------------------------------------------- Speech Commands


def test_speech_commands(speech_commands_src, tmp_path):
    dst = tmp_path / "kws"
    result = import_corpus("speech-commands", speech_commands_src, dst)
    m = read_manifest(dst)
    assert m.tasks == ["kws", "speaker"]
    kws = _rows(m, "kws")
    spk = _rows(m, "speaker")

    # Official splits: listed files in validation/test, the rest train.
    assert kws["audio/yes/9e8d7c6b_nohash_0.wav"] == ("yes", "test")
    assert kws["audio/cat/1f3c5a7d_nohash_0.wav"] == ("_unknown_", "test")
    assert kws["audio/no/1f3c5a7d_nohash_0.wav"] == ("no", "validation")
    assert kws["audio/house/9e8d7c6b_nohash_0.wav"] == ("_unknown_", "validation")
    assert kws["audio/yes/0a2b400e_nohash_1.wav"] == ("yes", "train")
    assert kws["audio/stop/9e8d7c6b_nohash_0.wav"] == ("stop", "train")
    assert kws["audio/house/0a2b400e_nohash_0.wav"] == ("_unknown_", "train")

    # Speaker from the <hash> in <hash>_nohash_<n>; silence clips have no speaker.
    assert spk["audio/yes/0a2b400e_nohash_1.wav"] == ("0a2b400e", "train")
    assert spk["audio/cat/1f3c5a7d_nohash_0.wav"] == ("1f3c5a7d", "test")
    assert set(m.labels("speaker")) == set(SPEAKERS)
    assert len(spk) == 10

    # Background noise -> 1 s, 16 kHz silence clips (6 from 6.5 s, 2 from 2.4 s), split by hash of path.
    silence = {p: s for p, (label, s) in kws.items() if label == "_silence_"}
    assert len(silence) == 8
    assert sum(p.startswith("audio/_silence_/alarm_clock_") for p in silence) == 6
    for path, split in silence.items():
        info = sf.info(str(dst / path))
        assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)
        assert split == hash_split(path)
        assert path not in spk
    assert set(m.labels("kws")) == {"yes", "no", "stop", "_unknown_", "_silence_"}
    assert not (dst / "audio" / "_background_noise_").exists()

    # The original word is kept for 35-word experiments; the audio is a byte copy.
    assert {r.extra["word"] for r in m.rows_for("kws") if r.label == "_unknown_"} == {"cat", "house"}
    copied = dst / "audio/yes/0a2b400e_nohash_0.wav"
    assert not copied.is_symlink()
    assert copied.read_bytes() == (speech_commands_src / "yes/0a2b400e_nohash_0.wav").read_bytes()
    assert "speech-commands" in result.summary() and "18 clips" in result.summary()


def test_speech_commands_missing_listed_file(speech_commands_src, tmp_path):
    src = tmp_path / "sc"
    shutil.copytree(speech_commands_src, src)
    (src / "testing_list.txt").write_text("yes/ffffffff_nohash_0.wav\n")
    with pytest.raises(MtlEdgeError, match=r"testing_list.txt line 1.*ffffffff_nohash_0.wav does not exist"):
        import_corpus("speech-commands", src, tmp_path / "out")


# ---------------------------------------------------------------- ESC-50


def test_esc50_folds_and_categories(esc50_src, tmp_path):
    dst = tmp_path / "esc"
    import_corpus("esc50", esc50_src, dst)
    m = read_manifest(dst)
    assert m.tasks == ["event"]
    event = _rows(m, "event")
    assert event == {
        "audio/audio/1-100032-A-0.wav": ("clock_alarm", "train"),
        "audio/audio/2-100038-A-1.wav": ("church_bells", "train"),
        "audio/audio/3-100051-A-2.wav": ("camera_shutter", "train"),
        "audio/audio/3-100051-B-2.wav": ("camera_shutter", "train"),
        "audio/audio/4-100210-A-3.wav": ("phone_ringing", "validation"),
        "audio/audio/5-100260-A-0.wav": ("clock_alarm", "test"),
        "audio/audio/5-100290-A-1.wav": ("church_bells", "test"),
    }
    assert {r.extra["fold"] for r in m.rows} == {"1", "2", "3", "4", "5"}


def test_esc50_missing_audio_is_named(esc50_src, tmp_path):
    src = tmp_path / "esc"
    shutil.copytree(esc50_src, src)
    (src / "audio" / "4-100210-A-3.wav").unlink()
    with pytest.raises(MtlEdgeError, match=r"esc50.csv line 6: audio file .*4-100210-A-3.wav does not exist"):
        import_corpus("esc50", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_esc50_bad_fold(esc50_src, tmp_path):
    src = tmp_path / "esc"
    shutil.copytree(esc50_src, src)
    meta = src / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().replace("4-100210-A-3.wav,4,", "4-100210-A-3.wav,7,"))
    with pytest.raises(MtlEdgeError, match="line 6: fold '7'"):
        import_corpus("esc50", src, tmp_path / "out")


# ---------------------------------------------------------------- FSDKaggle2018


def test_fsdkaggle2018(fsd_src, tmp_path):
    dst = tmp_path / "fsd"
    import_corpus("fsdkaggle2018", fsd_src, dst)
    m = read_manifest(dst)
    assert m.tasks == ["tagging"]
    assert m.extra_columns == ("manually_verified",)
    rows = {r.path: r for r in m.rows}
    for fname, label, mv, _ in FSD_TRAIN:
        r = rows[f"audio/FSDKaggle2018.audio_train/{fname}"]
        assert (r.label, r.extra["manually_verified"]) == (label, str(mv))
        assert r.split == hash_split(r.path, validation=0.1, test=0.0) != "test"
    for fname, label, _, _ in FSD_TEST:
        r = rows[f"audio/FSDKaggle2018.audio_test/{fname}"]
        assert (r.label, r.split, r.extra["manually_verified"]) == (label, "test", "1")
    assert len(rows) == len(FSD_TRAIN) + len(FSD_TEST)


def test_fsdkaggle2018_kaggle_names(recordings, tmp_path):
    """The Kaggle download: train.csv at the root, audio_train/ and audio_test/."""
    src = _make_fsd(tmp_path / "kaggle", recordings, ".", "train.csv", "audio_train", "audio_test")
    import_corpus("fsdkaggle2018", src, tmp_path / "out")
    m = read_manifest(tmp_path / "out")
    assert Counter(r.split for r in m.rows)["test"] == 2
    assert "audio/audio_train/0033e230.wav" in m.clips()


# ---------------------------------------------------------------- LibriSpeech


def test_librispeech_root(librispeech_src, tmp_path):
    dst = tmp_path / "ls"
    import_corpus("librispeech", librispeech_src, dst)
    m = read_manifest(dst)
    assert m.tasks == ["gender", "speaker"]
    speaker, gender = _rows(m, "speaker"), _rows(m, "gender")
    assert len(speaker) == 10 and set(m.labels("speaker")) == {"84", "174", "1089"}
    assert speaker["audio/dev-clean/84/121123/84-121123-0002.flac"][0] == "84"
    assert gender["audio/dev-clean/84/121123/84-121123-0002.flac"][0] == "female"
    assert gender["audio/dev-clean/174/50561/174-50561-0000.flac"][0] == "male"
    assert gender["audio/test-clean/1089/134686/1089-134686-0001.flac"][0] == "male"
    for path, (_, split) in speaker.items():
        assert split == hash_split(path)
    assert {r.extra["subset"] for r in m.rows} == {"dev-clean", "test-clean"}
    assert sf.info(str(dst / "audio/dev-clean/174/50561/174-50561-0000.flac")).format == "FLAC"


def test_librispeech_subset_folder_gives_same_paths(librispeech_src, tmp_path):
    whole = import_corpus("librispeech", librispeech_src, tmp_path / "a").manifest
    subset = import_corpus("librispeech", librispeech_src / "dev-clean", tmp_path / "b").manifest
    assert set(subset.clips()) == {p for p in whole.clips() if "/dev-clean/" in p}
    assert subset.tasks == ["gender", "speaker"]  # SPEAKERS.TXT found one level up
    assert {r.path: r.split for r in subset.rows} == {r.path: r.split for r in whole.rows if "/dev-clean/" in r.path}


def test_librispeech_without_speakers_txt_warns(librispeech_src, tmp_path):
    src = tmp_path / "LibriSpeech"
    shutil.copytree(librispeech_src, src)
    (src / "SPEAKERS.TXT").unlink()
    with pytest.warns(LayoutWarning, match="no SPEAKERS.TXT"):
        result = import_corpus("librispeech", src, tmp_path / "out")
    assert result.manifest.tasks == ["speaker"]
    assert "no gender task" in result.summary()


def test_librispeech_speaker_missing_from_speakers_txt(librispeech_src, tmp_path):
    src = tmp_path / "LibriSpeech"
    shutil.copytree(librispeech_src, src)
    (src / "SPEAKERS.TXT").write_text(SPEAKERS_TXT.replace("174  | M", "175  | M"))
    with pytest.raises(MtlEdgeError, match="no row for speaker 174"):
        import_corpus("librispeech", src, tmp_path / "out")


# ---------------------------------------------------------------- RAVDESS


def test_ravdess_codes(ravdess_src, tmp_path):
    dst = tmp_path / "rav"
    result = import_corpus("ravdess", ravdess_src, dst)
    m = read_manifest(dst)
    assert m.tasks == ["emotion", "gender", "intensity", "speaker"]
    by = {t: _rows(m, t) for t in m.tasks}
    for rel, (emotion, intensity, gender, speaker) in RAVDESS_AUDIO.items():
        path = f"audio/{rel}"
        assert by["emotion"][path][0] == emotion
        assert by["intensity"][path][0] == intensity
        assert by["gender"][path][0] == gender
        assert by["speaker"][path][0] == speaker
        assert by["emotion"][path][1] == hash_split(path)
    assert len(m.clips()) == len(RAVDESS_AUDIO)
    assert not any(p.endswith(".mp4") for p in m.clips())
    assert "skipped 2 non-audio-only" in result.summary()
    assert {r.extra["vocal_channel"] for r in m.rows if "03-02-03" in r.path} == {"song"}


# ---------------------------------------------------------------- generic folders


def test_folders(folders_src, tmp_path):
    dst = tmp_path / "f"
    import_corpus("folders", folders_src, dst, task="intent")
    m = read_manifest(dst)
    assert m.tasks == ["intent"]
    rows = _rows(m, "intent")
    assert {p: label for p, (label, _) in rows.items()} == {
        "audio/greeting/hello_1.wav": "greeting",
        "audio/greeting/hi.wav": "greeting",
        "audio/greeting/take2/morning.flac": "greeting",
        "audio/farewell/bye.wav": "farewell",
        "audio/farewell/later.flac": "farewell",
        "audio/farewell/logout.oga": "farewell",
    }
    assert all(split == hash_split(p) for p, (_, split) in rows.items())


def test_folders_needs_task(folders_src, tmp_path):
    with pytest.raises(MtlEdgeError, match="needs --task"):
        import_corpus("folders", folders_src, tmp_path / "out")


def test_import_is_deterministic(folders_src, ravdess_src, tmp_path):
    for layout, src, task in (("folders", folders_src, "intent"), ("ravdess", ravdess_src, None)):
        a = import_corpus(layout, src, tmp_path / f"{layout}1", task=task).manifest
        b = import_corpus(layout, src, tmp_path / f"{layout}2", task=task).manifest
        assert a.to_csv() == b.to_csv()


def test_link_makes_symlinks(folders_src, tmp_path):
    dst = tmp_path / "linked"
    import_corpus("folders", folders_src, dst, task="intent", link=True)
    clip = dst / "audio/farewell/bye.wav"
    assert clip.is_symlink()
    assert clip.resolve() == (folders_src / "farewell/bye.wav").resolve()
    assert read_manifest(dst).clips()  # reads back, every file reachable


# ---------------------------------------------------------------- bad audio, bad input


@pytest.fixture
def folders_with_bad_file(folders_src, tmp_path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(folders_src, src)
    (src / "farewell" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt this is not audio at all")
    return src


def test_bad_audio_fail_names_the_file(folders_with_bad_file, tmp_path):
    dst = tmp_path / "out"
    with pytest.raises(AudioError, match=r"broken\.wav"):
        import_corpus("folders", folders_with_bad_file, dst, task="intent")
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # nothing half-written


def test_bad_audio_skip_is_counted(folders_with_bad_file, tmp_path):
    dst = tmp_path / "out"
    result = import_corpus("folders", folders_with_bad_file, dst, task="intent", on_bad_audio="skip")
    assert len(result.skipped) == 1 and "broken.wav" in result.skipped[0]
    assert "skipped 1 bad audio file" in result.summary()
    m = read_manifest(dst)
    assert len(m.clips()) == 6 and not any("broken" in p for p in m.clips())
    assert not (dst / "audio/farewell/broken.wav").exists()


def test_unknown_layout_lists_known_ones(tmp_path):
    with pytest.raises(MtlEdgeError, match="unknown layout 'voxceleb'") as err:
        import_corpus("voxceleb", tmp_path, tmp_path / "out")
    assert all(name in str(err.value) for name in LAYOUTS)
    assert known_layouts() == LAYOUTS


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("esc50", r"expected the file esc50.csv"),
        ("fsdkaggle2018", r"train_post_competition.csv"),
        ("librispeech", r"expected subset folders"),
        ("ravdess", r"expected Actor_NN/ folders"),
    ],
)
def test_wrong_layout_says_what_was_expected(speech_commands_src, tmp_path, layout, expected):
    with pytest.raises(MtlEdgeError, match=expected):
        import_corpus(layout, speech_commands_src, tmp_path / "out")


def test_speech_commands_on_esc50_says_what_was_expected(esc50_src, tmp_path):
    with pytest.raises(MtlEdgeError, match="expected the file validation_list.txt"):
        import_corpus("speech-commands", esc50_src, tmp_path / "out")


def test_refuses_non_empty_destination(esc50_src, tmp_path):
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine\n")
    with pytest.raises(MtlEdgeError, match="already exists and is not an empty folder"):
        import_corpus("esc50", esc50_src, dst)
    assert (dst / "keep.txt").read_text() == "mine\n"
    (tmp_path / "empty").mkdir()
    import_corpus("esc50", esc50_src, tmp_path / "empty")  # an empty folder is fine
    assert read_manifest(tmp_path / "empty").tasks == ["event"]


def test_task_option_only_for_folders(esc50_src, tmp_path):
    with pytest.raises(MtlEdgeError, match="--task applies to --layout folders only"):
        import_corpus("esc50", esc50_src, tmp_path / "out", task="event")


# ---------------------------------------------------------------- CLI


def test_cli_import(esc50_src, tmp_path):
    dst = tmp_path / "cli"
    result = CliRunner().invoke(app, ["data", "import", "--layout", "esc50", str(esc50_src), str(dst)])
    assert result.exit_code == 0, result.output
    assert "imported esc50: 7 clips" in result.output
    assert "test 2" in result.output
    assert read_manifest(dst).tasks == ["event"]


def _flat(result) -> str:
    """CLI output without whitespace: rich wraps stderr lines at the terminal width (long tmp paths)."""
    return "".join(result.output.split())


def test_cli_bad_cases_exit_1(folders_with_bad_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "import", "--layout", "nope", str(folders_with_bad_file), str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "unknownlayout'nope'" in _flat(result) and "speech-commands" in _flat(result)

    result = runner.invoke(app, ["data", "import", "--layout", "folders", str(folders_with_bad_file), str(tmp_path / "b")])
    assert result.exit_code == 1 and "needs--task" in _flat(result)

    args = ["data", "import", "--layout", "folders", "--task", "intent", str(folders_with_bad_file)]
    result = runner.invoke(app, [*args, str(tmp_path / "c")])
    assert result.exit_code == 1 and "broken.wav" in _flat(result) and "--on-bad-audioskip" in _flat(result)
    result = runner.invoke(app, [*args, str(tmp_path / "d"), "--on-bad-audio", "skip", "--link"])
    assert result.exit_code == 0, result.output
    assert "skipped1badaudiofile" in _flat(result)
    assert (tmp_path / "d/audio/greeting/hi.wav").is_symlink()
