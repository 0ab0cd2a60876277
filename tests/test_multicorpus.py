"""Tasks from several corpora in one model (``--tasks kws@A,gender@B``) and the ``other`` corpus variant."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data.audio import load_audio, write_wav
from mtl_edge.data.demo import sources
from mtl_edge.data.demo.builder import DemoConfig, build_demo, plan_corpus, source_files
from mtl_edge.data.manifest import Row, make_manifest, read_manifest
from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.cache import fingerprint_of, prepare_features
from mtl_edge.features.logmel import FeatureConfig
from mtl_edge.train.corpora import TaskSources, common_input_config, load_sources, parse_task_sources
from mtl_edge.train.data import load_task_data, parse_tasks
from mtl_edge.train.trainer import TrainConfig

OTHER_SCALE = 0.05  # 281 clips, built in ~12 s
SHARED_LABELS = ("gender", "vad", "music_speech")  # the auxiliaries of Experiment 4: the same label names in both corpora
CFG = TrainConfig(hidden=(128, 128, 128), steps=30)


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory):
    """A small corpus of the ``other`` variant rendered from the real sources (read only)."""
    config = DemoConfig(scale=OTHER_SCALE, seed=0, variant="other", voices="espeak")
    return build_demo(config, tmp_path_factory.mktemp("other") / "corpus", workers=2).folder


def _split_counts(corpus: Path, task: str) -> dict[str, int]:
    return dict(Counter(r.split for r in read_manifest(corpus, check_files=False).rows_for(task)))


# -- the other variant -----------------------------------------------------------------------------

def test_other_variant_sources_are_disjoint_from_the_default():
    default, other = set(source_files("default")), set(source_files("other"))
    shared = default & other
    assert shared == {str(sources.SOUNDFONT.patterns[0])}  # one soundfont file, played with other instruments
    plans = {v: plan_corpus(DemoConfig(scale=0.05, variant=v, voices="espeak" if v == "other" else "mbrola"),
                            sources.ESPEAK_SPEAKERS if v == "other" else sources.MBROLA_SPEAKERS) for v in ("default", "other")}
    programs = {v: {s["program"] for s in p if s["kind"] == "instrument"} for v, p in plans.items()}
    assert programs["default"] and programs["other"] and not programs["default"] & programs["other"]
    voices = {v: {s["source"].split(":")[0] for s in p if s["kind"] == "speech"} for v, p in plans.items()}
    assert voices["default"] == {v[0] for v in sources.MBROLA_SPEAKERS.values()}
    assert voices["other"] and not voices["other"] & voices["default"]
    assert not any(v.startswith("mb-") for v in voices["other"])  # no mbrola voice, held out or not


def test_other_variant_refuses_mbrola_voices(tmp_path):
    with pytest.raises(MtlEdgeError, match="espeak-ng's own voices only"):
        build_demo(DemoConfig(scale=0.05, variant="other", voices="mbrola"), tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_other_corpus_shares_no_voice_or_recording_with_the_default(tiny_corpus, other_corpus):
    info = {name: json.loads((c / "demo.json").read_text()) for name, c in (("default", tiny_corpus), ("other", other_corpus))}
    assert info["other"]["config"]["variant"] == "other"
    files = {k: set(v["sources"]["files"]) for k, v in info.items()}
    assert files["default"] & files["other"] == {sources.SOUNDFONT.patterns[0]}
    assert not set(info["default"]["sources"]["voices"]) & set(info["other"]["sources"]["voices"])
    assert not set(info["default"]["sources"]["instruments"].values()) & set(info["other"]["sources"]["instruments"].values())
    rows = {k: read_manifest(c, check_files=False).rows for k, c in (("default", tiny_corpus), ("other", other_corpus))}
    spoken = {k: {r.extra["source"].split(":")[0] for r in v if r.extra["kind"] == "speech"} for k, v in rows.items()}
    assert spoken["other"] <= set(info["other"]["sources"]["voices"]) and not spoken["other"] & spoken["default"]
    assert not {r.extra["sha256"] for r in rows["default"]} & {r.extra["sha256"] for r in rows["other"]}
    manifests = {k: read_manifest(c, check_files=False) for k, c in (("default", tiny_corpus), ("other", other_corpus))}
    for task in SHARED_LABELS:
        assert manifests["other"].labels(task) == manifests["default"].labels(task)
    assert set(manifests["other"].labels("event")).isdisjoint(manifests["default"].labels("event"))


# -- parsing and refusals --------------------------------------------------------------------------

def test_task_sources_parse(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    parsed = parse_task_sources(f"kws@{a},gender@{b},vad", a)
    assert parsed.tasks == ["kws", "gender", "vad"]
    assert parsed.corpora == {"kws": a.resolve(), "gender": b.resolve(), "vad": a.resolve()}
    assert parsed.multi and parsed.distinct == [a.resolve(), b.resolve()]
    same = parse_task_sources(f"kws@{a},gender", a)
    assert not same.multi and same.first_corpus(a) == a


@pytest.mark.parametrize("text, corpus, message", [
    ("kws@A,kws@B", "A", "named twice, with two corpora"),
    ("kws@A,kws", "A", "listed twice"),
    ("kws,gender@B", None, "names no corpus"),
    ("kws@", "A", "TASK or TASK@CORPUS"),
    ("@A", "A", "TASK or TASK@CORPUS"),
])
def test_task_sources_refused(tmp_path, text, corpus, message):
    text = text.replace("A", str(tmp_path / "a")).replace("B", str(tmp_path / "b"))
    with pytest.raises(MtlEdgeError, match=message):
        parse_task_sources(text, None if corpus is None else tmp_path / "a")


def test_one_corpus_commands_refuse_task_at_corpus():
    with pytest.raises(MtlEdgeError, match="for train and sweep"):
        parse_tasks("kws@data/demo,gender")


def test_cli_refuses_a_task_named_twice(tmp_path):
    for command in ("train", "sweep"):
        result = CliRunner().invoke(app, [command, "--tasks", f"kws@{tmp_path}/a,kws@{tmp_path}/b", "--out", str(tmp_path / "o")])
        assert result.exit_code == 1, result.output
        assert "named twice, with two corpora" in result.output
    assert not (tmp_path / "o").exists()


def _small_corpus(folder: Path, recordings: list[Path], rate: int) -> Path:
    """Six real recordings (freedesktop sounds) as a corpus with task ``sound`` at ``rate`` Hz."""
    rows = []
    for i, path in enumerate(recordings[:6]):
        rel = f"audio/{i}.wav"
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        write_wav(folder / rel, load_audio(path, target_rate=rate).samples[:rate], rate)
        rows.append(Row(rel, "sound", f"s{i % 2}", ("train", "train", "validation", "validation", "test", "test")[i]))
    make_manifest(folder, rows).write(folder)
    return folder


def test_feature_configs_must_match_across_corpora(tmp_path, recordings):
    a = _small_corpus(tmp_path / "a", recordings, 16_000)
    b = _small_corpus(tmp_path / "b", recordings[6:], 16_000)
    prepare_features(b, FeatureConfig(n_mels=32, win_ms=25.0), mark_current=True, progress=False)
    both = TaskSources(["sound", "other"], {"sound": a.resolve(), "other": b.resolve()})
    with pytest.raises(MtlEdgeError, match=r"different feature configs: n_mels \(40 against 32\); win_ms \(40.0 against 25.0\)") as err:
        common_input_config(both, "features")
    assert str(a.resolve()) in str(err.value) and str(b.resolve()) in str(err.value)
    # the options given to the command apply to both corpora: then they agree
    assert common_input_config(both, "features", {"n_mels": 32, "win_ms": 25.0}).n_mels == 32


def test_sample_rates_must_match_across_corpora(tmp_path, recordings):
    a = _small_corpus(tmp_path / "a", recordings, 16_000)
    b = _small_corpus(tmp_path / "b", recordings[6:], 8_000)
    both = TaskSources(["sound", "other"], {"sound": a.resolve(), "other": b.resolve()})
    with pytest.raises(MtlEdgeError, match="different sample rates") as err:
        common_input_config(both, "features")
    assert f"{a.resolve()}: 16000 Hz" in str(err.value) and f"{b.resolve()}: 8000 Hz" in str(err.value)


# -- training on two corpora -----------------------------------------------------------------------

@pytest.mark.slow
def test_each_task_reads_its_own_corpus_and_splits(tiny_corpus, other_corpus):
    both = parse_task_sources(f"kws@{tiny_corpus},gender@{other_corpus}", None)
    data = load_sources(both, both.tasks, lambda c, group: load_task_data(c, group, progress=False))
    for task, corpus in (("kws", tiny_corpus), ("gender", other_corpus)):
        counts = {s: len(r) for s, r in data.tasks[task].rows.items() if len(r)}
        assert counts == _split_counts(corpus, task)
    assert _split_counts(tiny_corpus, "gender") != _split_counts(other_corpus, "gender")  # so the counts tell them apart
    # the rows of each task point into its own corpus's part of the stacked input matrix
    sizes = [len(prepare_features(c, progress=False)) for c in (tiny_corpus, other_corpus)]
    assert data.inputs.shape[0] == sum(sizes)
    assert all(r.max() < sizes[0] for r in data.tasks["kws"].rows.values() if len(r))
    assert all(r.min() >= sizes[0] for r in data.tasks["gender"].rows.values() if len(r))
    assert all(Path(data.paths[i]).is_relative_to(other_corpus.resolve()) for i in data.tasks["gender"].rows["test"])


@pytest.mark.slow
def test_a_two_corpus_run_trains_records_both_corpora_and_refuses_a_changed_one(tiny_corpus, other_corpus, tmp_path):
    from mtl_edge.train.run import train_run

    both = parse_task_sources(f"kws@{tiny_corpus},gender@{other_corpus}", None)
    out = tmp_path / "run"
    result = train_run(tiny_corpus, both.tasks, out, CFG, single=True, sources=both)
    config = json.loads((out / "config.json").read_text())
    assert config["task_corpora"] == {
        "kws": {"corpus": str(tiny_corpus.resolve()), "fingerprint": fingerprint_of(tiny_corpus)},
        "gender": {"corpus": str(other_corpus.resolve()), "fingerprint": fingerprint_of(other_corpus)}}
    metrics = result.metrics
    assert metrics["task_corpora"] == config["task_corpora"]
    assert metrics["tasks"]["kws"]["test_samples"] == _split_counts(tiny_corpus, "kws")["test"]
    assert metrics["tasks"]["gender"]["test_samples"] == _split_counts(other_corpus, "gender")["test"]
    unseen = "test_unseen_speakers"
    assert metrics["tasks"]["gender"][unseen]["samples"] == _split_counts(other_corpus, "gender")[unseen]
    assert set(metrics["tasks"]["gender"]) >= {"single", "multi", "delta"}

    # resume: the same sources continue; gender from another corpus is refused before any training
    train_run(tiny_corpus, both.tasks, out, CFG, single=True, resume=True, sources=both)
    moved = parse_task_sources(f"kws@{tiny_corpus},gender@{tiny_corpus}", None)
    with pytest.raises(MtlEdgeError, match="trained on several corpora, this command names one"):
        train_run(tiny_corpus, moved.tasks, out, CFG, single=True, resume=True, sources=moved)
    copy = tmp_path / "other-copy"
    # a rebuilt corpus: the same files with new times (a copy that kept them would be the same corpus, moved)
    shutil.copytree(other_corpus, copy, ignore=shutil.ignore_patterns(".features"), copy_function=shutil.copy)
    swapped = parse_task_sources(f"kws@{tiny_corpus},gender@{copy}", None)
    with pytest.raises(MtlEdgeError, match=r"other corpora for task\(s\) gender"):
        train_run(tiny_corpus, swapped.tasks, out, CFG, single=True, resume=True, sources=swapped)
    assert json.loads((out / "config.json").read_text()) == config

    # export: every task's test split from its own corpus
    from mtl_edge.export import export_run

    export = export_run(out, None, "onnx", "fp32", models="multi", progress=False)
    testset = np.load(export.folder / "testset.npz")
    assert len(testset["rows__kws"]) == _split_counts(tiny_corpus, "kws")["test"]
    assert len(testset["rows__gender"]) == _split_counts(other_corpus, "gender")["test"]
    gender_paths = {str(testset["paths"][i]) for i in testset["rows__gender"]}
    assert all(Path(p).is_relative_to(other_corpus.resolve()) for p in gender_paths)
    assert export.manifest["task_corpora"] == config["task_corpora"]


@pytest.mark.slow
def test_a_two_corpus_sweep_trains_each_baseline_on_its_own_corpus(tiny_corpus, other_corpus, tmp_path):
    from mtl_edge.research.sweep import run_sweep

    both = parse_task_sources(f"kws@{tiny_corpus},gender@{other_corpus}", None)
    cfg = TrainConfig(hidden=(128, 128, 128), steps=10)
    out = tmp_path / "sweep"
    result = run_sweep(tiny_corpus, both.tasks, out, cfg, combos=["singles", "pairs"], seeds=1, workers=1, sources=both)
    assert not result.failed and len(result.trained) == 3
    config = json.loads((out / "sweep.json").read_text())
    assert {t: v["corpus"] for t, v in config["task_corpora"].items()} == {
        "kws": str(tiny_corpus.resolve()), "gender": str(other_corpus.resolve())}
    single = json.loads((out / "runs" / "gender" / "seed0" / "metrics.json").read_text())
    assert single["corpus"] == str(other_corpus.resolve())
    assert single["tasks"]["gender"]["test_samples"] == _split_counts(other_corpus, "gender")["test"]
    pair = json.loads((out / "runs" / "kws+gender" / "seed0" / "metrics.json").read_text())
    assert pair["tasks"]["kws"]["test_samples"] == _split_counts(tiny_corpus, "kws")["test"]
    assert pair["tasks"]["gender"]["test_samples"] == _split_counts(other_corpus, "gender")["test"]
    # continuing with gender from the default corpus is refused, naming the change
    same = parse_task_sources(f"kws@{tiny_corpus},gender@{tiny_corpus}", None)
    with pytest.raises(MtlEdgeError, match="task_corpora.*a task reads another corpus"):
        run_sweep(tiny_corpus, same.tasks, out, cfg, combos=["singles", "pairs"], seeds=1, workers=1, sources=same)
