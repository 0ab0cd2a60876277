"""``data describe``: every measurement checked against a hand computation on real audio."""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data import describe as describe_mod
from mtl_edge.data.audio import load_audio, write_wav
from mtl_edge.data.describe import count_labelled_frames, describe_corpus, estimate_snr_db, parse_activity
from mtl_edge.report.tables import render_table
from mtl_edge.errors import AudioError, ManifestError

TASK_KEYS = {
    "channels", "clips", "clips_per_split", "label_counts", "label_entropy_bits", "label_kurtosis_excess",
    "labelled_frames", "labels", "mean_length_s", "sample_rates_hz", "snr_db_mean", "snr_db_median",
    "total_length_s", "type_token_ratio",
}
CORPUS_KEYS = {
    "clips", "clips_per_split", "duplicate_audio_across_splits", "duplicate_examples", "rows", "sample_rates_hz",
    "skipped_clips", "tasks", "total_length_s",
}


def write_manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    """manifest.csv from dicts (columns: the union of their keys, required ones first)."""
    columns = ["path", "task", "label", "split"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def quiet_describe(corpus: Path, on_bad_audio: str = "fail") -> dict:
    """Describe without the manifest's single-example-label warnings (expected in these tiny corpora)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return describe_corpus(corpus, on_bad_audio=on_bad_audio)


def frames_to_end(duration_s: float) -> int:
    """10 ms frames whose centre lies before ``duration_s``: centre (k + .5) / 100 < d."""
    return math.ceil(duration_s * 100 - 0.5)


WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speak, recordings) -> Path:
    """8 espeak clips (22.05 kHz mono) and 2 stereo recordings (44.1 / 22.05 kHz), three tasks.

    kws   : clips 1-4, labels yes:no = 3:1, splits train/train/validation/test, with activity segments
    digit : clips 1-8, labels a:b:c:d = 5:1:1:1
    event : bell.oga (44.1 kHz stereo, train), service-login.oga (22.05 kHz stereo, test)
    """
    root = tmp_path_factory.mktemp("corpus")
    for i, word in enumerate(WORDS, 1):
        speak(word, out=root / "speech" / f"c{i}.wav")
    by_name = {p.name: p for p in recordings}
    (root / "events").mkdir()
    shutil.copy(by_name["bell.oga"], root / "events" / "bell.oga")
    shutil.copy(by_name["service-login.oga"], root / "events" / "login.oga")
    splits = ["train", "train", "validation", "test"] + ["train"] * 4
    kws_labels = ["yes", "yes", "yes", "no"]
    activity = ["0.1-0.35;0.3-0.5", "0-100", "", "0.2-0.25"]
    digit_labels = ["a", "a", "a", "a", "a", "b", "c", "d"]
    rows = [
        {"path": f"speech/c{i + 1}.wav", "task": "kws", "label": kws_labels[i], "split": splits[i], "activity": activity[i]}
        for i in range(4)
    ]
    rows += [{"path": f"speech/c{i + 1}.wav", "task": "digit", "label": digit_labels[i], "split": splits[i]} for i in range(8)]
    rows += [
        {"path": "events/bell.oga", "task": "event", "label": "bell", "split": "train"},
        {"path": "events/login.oga", "task": "event", "label": "login", "split": "test"},
    ]
    write_manifest(root, rows)
    return root


@pytest.fixture(scope="module")
def report(corpus) -> dict:
    return quiet_describe(corpus)


def test_label_distribution_measures(report):
    kws, digit, event = report["tasks"]["kws"], report["tasks"]["digit"], report["tasks"]["event"]
    # 3:1 -> H = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.8113 bits; counts [1, 3]: m2 = 1, m4 = 1 -> 1 - 3 = -2
    assert kws["label_entropy_bits"] == 0.8113
    assert kws["label_kurtosis_excess"] == -2.0
    assert kws["label_counts"] == {"no": 1, "yes": 3}
    assert (kws["clips"], kws["labels"], kws["type_token_ratio"]) == (4, 2, 0.5)
    # 5:1:1:1 -> H = 5/8 log2(8/5) + 3/8 * 3 = 1.5488; counts mean 2, m2 = 3, m4 = 21 -> 21/9 - 3 = -0.6667
    assert digit["label_entropy_bits"] == 1.5488
    assert digit["label_kurtosis_excess"] == -0.6667
    assert (digit["clips"], digit["labels"], digit["type_token_ratio"]) == (8, 4, 0.5)
    # two labels with one clip each: entropy 1 bit, kurtosis undefined (zero variance) -> null
    assert event["label_entropy_bits"] == 1.0
    assert event["label_kurtosis_excess"] is None


def test_splits_per_task_and_corpus(report):
    assert report["tasks"]["kws"]["clips_per_split"] == {"train": 2, "validation": 1, "test": 1}
    assert report["tasks"]["digit"]["clips_per_split"] == {"train": 6, "validation": 1, "test": 1}
    assert report["tasks"]["event"]["clips_per_split"] == {"train": 1, "validation": 0, "test": 1}
    corpus = report["corpus"]
    assert corpus["clips"] == 10 and corpus["rows"] == 14
    assert corpus["clips_per_split"] == {"train": 7, "validation": 1, "test": 2}
    assert corpus["tasks"] == ["digit", "event", "kws"]
    assert report["skipped"] == [] and corpus["skipped_clips"] == 0


def test_lengths_rates_and_channels(corpus, report):
    def seconds(rel: str) -> float:
        info = sf.info(str(corpus / rel))
        return info.frames / info.samplerate

    kws_lengths = [seconds(f"speech/c{i}.wav") for i in range(1, 5)]
    assert report["tasks"]["kws"]["total_length_s"] == pytest.approx(sum(kws_lengths), abs=2e-3)
    assert report["tasks"]["kws"]["mean_length_s"] == pytest.approx(np.mean(kws_lengths), abs=1e-3)
    event_lengths = [seconds("events/bell.oga"), seconds("events/login.oga")]
    assert report["tasks"]["event"]["total_length_s"] == pytest.approx(sum(event_lengths), abs=2e-3)
    all_lengths = [seconds(f"speech/c{i}.wav") for i in range(1, 9)] + event_lengths
    assert report["corpus"]["total_length_s"] == pytest.approx(sum(all_lengths), abs=5e-3)

    assert report["tasks"]["kws"]["sample_rates_hz"] == {"22050": 4}  # espeak-ng's own rate, not the 16 kHz target
    assert report["tasks"]["event"]["sample_rates_hz"] == {"22050": 1, "44100": 1}
    assert report["corpus"]["sample_rates_hz"] == {"22050": 9, "44100": 1}
    assert report["tasks"]["event"]["channels"] == {"mono": 0, "stereo": 2, "multichannel": 0}
    assert report["tasks"]["digit"]["channels"] == {"mono": 8, "stereo": 0, "multichannel": 0}


def test_labelled_frames_from_activity(corpus, report):
    c2 = sf.info(str(corpus / "speech" / "c2.wav"))
    # c1: 0.1-0.35 and 0.3-0.5 merge to 0.1-0.5 -> 40 frames; c2: 0-100 cut at the clip's end;
    # c3: no activity; c4: 0.2-0.25 -> 5 frames
    expected = 40 + frames_to_end(c2.frames / c2.samplerate) + 0 + 5
    assert report["tasks"]["kws"]["labelled_frames"] == expected
    assert report["tasks"]["digit"]["labelled_frames"] is None  # no activity on any of its rows
    assert report["tasks"]["event"]["labelled_frames"] is None


def test_activity_helpers():
    assert parse_activity("0.1-0.5; 1.2-2") == [(0.1, 0.5), (1.2, 2.0)]
    assert parse_activity("") == []
    assert count_labelled_frames([(0.0, 0.5), (1.0, 1.25)]) == 75
    assert count_labelled_frames([(0.29, 0.31)]) == 2  # frames 29 and 30 (centres 0.295, 0.305)
    assert count_labelled_frames([(0.0, 1.0), (0.5, 2.0)], duration_s=1.5) == 150
    for bad in ["0.5", "a-b", "2-1", "-1-2"]:
        with pytest.raises(ValueError):
            parse_activity(bad)


def test_bad_activity_names_the_line(tmp_path, speak):
    speak("yes", out=tmp_path / "a.wav")
    speak("no", out=tmp_path / "b.wav")
    write_manifest(tmp_path, [
        {"path": "a.wav", "task": "kws", "label": "x", "split": "train", "activity": "0-1"},
        {"path": "b.wav", "task": "kws", "label": "x", "split": "test", "activity": "0.5-0.2"},
    ])
    with pytest.raises(ManifestError, match="line 3"):
        quiet_describe(tmp_path)


def test_each_audio_file_loaded_once(corpus, monkeypatch):
    calls: list[str] = []
    real = describe_mod.load_or_skip

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(describe_mod, "load_or_skip", counting)
    quiet_describe(corpus)
    assert len(calls) == 10 and len(set(calls)) == 10  # 14 manifest rows, 10 files


def test_snr_clean_speech_above_speech_in_real_background(tmp_path, speak, speech_samples, recordings):
    background = load_audio(next(p for p in recordings if p.name == "audio-test-signal.oga")).samples
    clean = {"seven": speech_samples}
    other = load_audio(speak("nine")).samples
    clean["nine"] = np.pad(other, (0, max(0, 16000 - len(other))))[:16000]
    rows = []
    for word, speech in clean.items():
        noise = np.resize(background, len(speech))
        noise = noise * np.sqrt(np.mean(speech**2) / np.mean(noise**2))  # 0 dB over the clip
        write_wav(tmp_path / f"clean_{word}.wav", speech)
        write_wav(tmp_path / f"noisy_{word}.wav", 0.5 * (speech + noise))
        rows += [
            {"path": f"clean_{word}.wav", "task": "clean", "label": "speech", "split": "train"},
            {"path": f"noisy_{word}.wav", "task": "noisy", "label": "speech", "split": "train"},
        ]
    write_manifest(tmp_path, rows)
    report = quiet_describe(tmp_path)
    clean_snr, noisy_snr = report["tasks"]["clean"]["snr_db_mean"], report["tasks"]["noisy"]["snr_db_mean"]
    assert math.isfinite(clean_snr) and math.isfinite(noisy_snr)
    assert clean_snr > noisy_snr + 10, (clean_snr, noisy_snr)
    assert report["tasks"]["clean"]["sample_rates_hz"] == {"16000": 2}


def test_snr_estimator_handles_digital_silence(speech_samples):
    assert estimate_snr_db(np.zeros(16000, dtype=np.float32)) == 0.0
    assert estimate_snr_db(np.zeros(10, dtype=np.float32)) == 0.0  # shorter than one frame
    padded = np.concatenate([np.zeros(8000, np.float32), speech_samples, np.zeros(8000, np.float32)])
    snr = estimate_snr_db(padded)
    assert math.isfinite(snr) and snr > 40
    # hand computation on a known signal: 10 frames, one at energy 1e-2, the rest at 1e-4 -> 20 dB
    frames = np.full((10, 320), 1e-2)
    frames[0] = 1e-1
    assert estimate_snr_db(frames.ravel()) == pytest.approx(20.0)


def test_duplicate_audio_across_splits(tmp_path, speak):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    speak("hello", out=tmp_path / "train" / "a.wav")
    speak("world", out=tmp_path / "train" / "b.wav")
    speak("again", out=tmp_path / "validation.wav")
    shutil.copy(tmp_path / "train" / "a.wav", tmp_path / "test" / "a.wav")  # the leak
    shutil.copy(tmp_path / "train" / "b.wav", tmp_path / "train" / "b_copy.wav")  # same split: not a leak
    write_manifest(tmp_path, [
        {"path": "train/a.wav", "task": "kws", "label": "x", "split": "train"},
        {"path": "train/b.wav", "task": "kws", "label": "y", "split": "train"},
        {"path": "train/b_copy.wav", "task": "kws", "label": "y", "split": "train"},
        {"path": "validation.wav", "task": "kws", "label": "x", "split": "validation"},
        {"path": "test/a.wav", "task": "kws", "label": "x", "split": "test"},
    ])
    corpus = quiet_describe(tmp_path)["corpus"]
    assert corpus["duplicate_audio_across_splits"] == 1
    (example,) = corpus["duplicate_examples"]
    assert example["paths"] == ["test/a.wav", "train/a.wav"]
    assert example["splits"] == ["train", "test"]
    assert len(example["sha256"]) == 64


def test_no_duplicates_reported_in_a_clean_corpus(report):
    assert report["corpus"]["duplicate_audio_across_splits"] == 0
    assert report["corpus"]["duplicate_examples"] == []


def test_json_is_stable(corpus, report):
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    assert json.dumps(quiet_describe(corpus), indent=2, sort_keys=True, allow_nan=False) == text
    assert set(report) == {"corpus", "tasks", "skipped"}
    assert set(report["corpus"]) == CORPUS_KEYS
    for task in report["tasks"].values():
        assert set(task) == TASK_KEYS
    assert json.loads(text) == report


def _corpus_with_corrupt_file(root: Path, speak) -> None:
    speak("yes", out=root / "good.wav")
    speak("no", out=root / "other.wav")
    data = (root / "other.wav").read_bytes()
    (root / "broken.wav").write_bytes(data[: len(data) // 2])  # a real WAV cut short
    write_manifest(root, [
        {"path": "good.wav", "task": "kws", "label": "yes", "split": "train"},
        {"path": "other.wav", "task": "kws", "label": "no", "split": "train"},
        {"path": "broken.wav", "task": "kws", "label": "no", "split": "test"},
    ])


def test_bad_audio_fail_names_the_file(tmp_path, speak):
    _corpus_with_corrupt_file(tmp_path, speak)
    with pytest.raises(AudioError, match="broken.wav"):
        quiet_describe(tmp_path, on_bad_audio="fail")


def test_bad_audio_skip_lists_and_leaves_out(tmp_path, speak):
    _corpus_with_corrupt_file(tmp_path, speak)
    report = quiet_describe(tmp_path, on_bad_audio="skip")
    assert len(report["skipped"]) == 1 and "broken.wav" in report["skipped"][0]
    assert report["corpus"]["skipped_clips"] == 1
    kws = report["tasks"]["kws"]
    assert kws["clips"] == 2 and kws["label_counts"] == {"no": 1, "yes": 1}
    assert kws["clips_per_split"] == {"train": 2, "validation": 0, "test": 0}
    assert report["corpus"]["clips"] == 2


def test_bad_policy_rejected(corpus):
    with pytest.raises(ValueError):
        describe_corpus(corpus, on_bad_audio="ignore")


def test_render_table_one_row_per_task(report, capsys):
    render_table(report)
    out = capsys.readouterr().out
    lines = out.splitlines()
    for task in ("kws", "digit", "event"):
        assert sum(line.split()[0] == task for line in lines if line.split()) == 1
    assert "0.81" in out  # kws entropy


def test_cli_json(corpus):
    result = CliRunner().invoke(app, ["data", "describe", str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["tasks"]["kws"]["label_entropy_bits"] == 0.8113
    assert set(parsed["tasks"]) == {"kws", "digit", "event"}


def test_cli_table(corpus):
    result = CliRunner().invoke(app, ["data", "describe", str(corpus)])
    assert result.exit_code == 0, result.output
    assert "kws" in result.stdout and "digit" in result.stdout


def test_cli_missing_manifest(tmp_path):
    result = CliRunner().invoke(app, ["data", "describe", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert "no manifest" in " ".join(result.output.split())
    assert result.stdout == ""
