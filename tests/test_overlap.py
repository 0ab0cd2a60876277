"""Class overlap (issue 15, part 3): the demo corpus's overlap variant, `data overlap`, `--exclude`."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict

import pytest
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data.demo import sources
from mtl_edge.data.demo.builder import EVENTS, DemoConfig, build_demo, plan_corpus
from mtl_edge.data.demo.variants import EVENT_SCENES
from mtl_edge.data.manifest import read_manifest
from mtl_edge.errors import MtlEdgeError
from mtl_edge.train.data import load_task_data, load_training_data, parse_exclude
from mtl_edge.train.trainer import TrainConfig

OVERLAP_SCALE = 0.05  # 281 clips, 5 per event (3 train, 1 validation, 1 test), built in ~10 s
SHARED = ["alarm_bell", "door", "explosion", "footsteps"]
EXCLUSIVE = {"dog_bark": "windy_outdoors", "glass_break": "office", "metal_clank": "fireside"}
# sha256 of the default variant's plan (scale 0.05, seed 0) as the code before variants drew it: the
# default corpus must stay the same clips, labels and render settings (a deliberate change bumps RECIPE_VERSION)
DEFAULT_PLAN_SHA256 = "54eda4ebf6170ab90997f00da43b0464ef0c152c9d9f6a58803026cd84d0f50e"


@pytest.fixture(scope="module")
def overlap_corpus(tmp_path_factory):
    """A small overlap-variant corpus rendered from the real sources (read only)."""
    config = DemoConfig(scale=OVERLAP_SCALE, seed=0, variant="overlap")
    return build_demo(config, tmp_path_factory.mktemp("overlap") / "corpus", workers=2).folder


def _plan_hash(specs: list[dict]) -> str:
    return hashlib.sha256(json.dumps(specs, sort_keys=True).encode()).hexdigest()


def test_default_variant_plans_the_corpus_it_planned_before_variants():
    config = DemoConfig(scale=0.05, seed=0)
    assert _plan_hash(plan_corpus(config, sources.MBROLA_SPEAKERS)) == DEFAULT_PLAN_SHA256
    assert "variant" not in config.to_json()  # its demo.json is unchanged too, so built corpora stay reused
    assert DemoConfig(variant="overlap").to_json()["variant"] == "overlap"


def test_overlap_variant_places_each_event_in_its_scenes_only():
    """Some events in one scene, others in several; everything but the event clips' scenes is the default's."""
    default = plan_corpus(DemoConfig(scale=0.3, seed=0), sources.MBROLA_SPEAKERS)
    overlap = plan_corpus(DemoConfig(scale=0.3, seed=0, variant="overlap"), sources.MBROLA_SPEAKERS)
    scenes = defaultdict(set)
    for spec in overlap:
        if spec["kind"] == "event":
            assert spec["labels"]["scene"] == spec["scene"]
            scenes[(spec["split"], spec["label"])].add(spec["scene"])
    for event in EVENTS:  # 24 training clips per event at this scale: every scene of the map is reached
        assert scenes[("train", event)] == set(EVENT_SCENES[event]), event
        assert all(scenes[(s, event)] <= set(EVENT_SCENES[event]) for s in ("validation", "test"))
    assert sorted(e for e, s in EVENT_SCENES.items() if len(s) == 1) == sorted(EXCLUSIVE)
    assert sorted(e for e, s in EVENT_SCENES.items() if len(s) >= 2) == SHARED
    assert len(default) == len(overlap)
    moved = 0
    for a, b in zip(default, overlap):
        if a["kind"] == "event":
            moved += a["scene"] != b["scene"]
            a, b = ({**x, "scene": None, "labels": {**x["labels"], "scene": None}} for x in (a, b))
        assert a == b
    assert moved > 0


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(MtlEdgeError, match="unknown corpus variant 'x'; variants: default, overlap"):
        plan_corpus(DemoConfig(scale=0.05, variant="x"), sources.MBROLA_SPEAKERS)
    result = CliRunner().invoke(app, ["data", "demo", "--out", str(tmp_path / "c"), "--variant", "x"])
    assert result.exit_code == 1 and "unknown corpus variant 'x'" in result.output
    assert not (tmp_path / "c").exists()


def test_exclude_spec_parsing():
    assert parse_exclude("event:footsteps, event:door,scene:office,event:door") == {
        "event": ["door", "footsteps"], "scene": ["office"]}
    for bad in ("event", "event:", ":door", "event:door,,", ""):
        with pytest.raises(MtlEdgeError, match="--exclude takes TASK:LABEL"):
            parse_exclude(bad)
    assert "exclude" not in TrainConfig().to_json()  # configs written before exclusions stay equal
    cfg = TrainConfig(exclude={"event": ["door"]})
    assert TrainConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.slow
def test_built_overlap_corpus_records_its_variant_and_is_another_corpus(overlap_corpus, tmp_path):
    info = json.loads((overlap_corpus / "demo.json").read_text())
    assert info["config"]["variant"] == "overlap"
    assert info["event_scenes"] == {e: list(s) for e, s in EVENT_SCENES.items()}
    manifest = read_manifest(overlap_corpus)
    scene_of = {r.path: r.label for r in manifest.rows_for("scene")}
    for row in manifest.rows_for("event"):
        assert scene_of[row.path] in EVENT_SCENES[row.label]
    # one folder, the other variant: rebuilt, not reused; another fingerprint (runs and sweeps refuse to resume)
    from mtl_edge.features.cache import fingerprint_of

    folder = tmp_path / "c"
    first = build_demo(DemoConfig(scale=0.01, seed=3), folder, workers=1)
    before = fingerprint_of(folder)
    second = build_demo(DemoConfig(scale=0.01, seed=3, variant="overlap"), folder, workers=1)
    assert not first.reused and not second.reused
    assert fingerprint_of(folder) != before
    assert build_demo(DemoConfig(scale=0.01, seed=3, variant="overlap"), folder, workers=1).reused


def _direct_counts(corpus, split=None) -> Counter:
    """(event, scene) -> clips, straight from manifest.csv."""
    with open(corpus / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if split is None or r["split"] == split]
    event = {r["path"]: r["label"] for r in rows if r["task"] == "event"}
    scene = {r["path"]: r["label"] for r in rows if r["task"] == "scene"}
    return Counter((event[p], scene[p]) for p in event if p in scene)


@pytest.mark.slow
@pytest.mark.parametrize("split", [None, "train"])
def test_data_overlap_counts_what_the_manifest_holds(overlap_corpus, tmp_path, split):
    out = tmp_path / "o"
    args = ["data", "overlap", str(overlap_corpus), "--tasks", "event,scene", "--out", str(out)]
    result = CliRunner().invoke(app, args + (["--split", split] if split else []))
    assert result.exit_code == 0, result.output
    with open(out / "overlap.csv", newline="") as f:
        table = list(csv.reader(f))
    scenes = table[0][1:]
    assert table[0][0] == "event" and scenes == sorted(sources.SCENE_BACKGROUNDS)
    counted = Counter({(row[0], s): int(n) for row in table[1:] for s, n in zip(scenes, row[1:]) if int(n)})
    assert counted == _direct_counts(overlap_corpus, split)
    assert [row[0] for row in table[1:]] == sorted(EVENTS)
    record = json.loads((out / "overlap.json").read_text())
    assert record["shared"] == SHARED and record["exclusive"] == EXCLUSIVE and record["unpaired"] == []
    assert record["split"] == (split or "all") and record["clips"] == sum(counted.values())
    assert (out / "overlap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "shared (event labels with 2+ scene labels): alarm_bell, door, explosion, footsteps" in result.output
    assert "exclusive (one scene label only): dog_bark (windy_outdoors), glass_break (office), metal_clank (fireside)" \
        in result.output
    printed = CliRunner().invoke(app, ["data", "overlap", str(overlap_corpus), "--tasks", "event,scene", "--print-exclude"])
    assert printed.exit_code == 0 and printed.output == "event:alarm_bell,event:door,event:explosion,event:footsteps\n"


@pytest.mark.slow
def test_data_overlap_bad_input(overlap_corpus, tmp_path):
    def run(*args):
        return CliRunner().invoke(app, ["data", "overlap", str(overlap_corpus), *args])

    r = run("--tasks", "event,birds")
    assert r.exit_code == 1 and "unknown task(s) birds" in r.output and "this corpus has: event, event_activity, gender" in r.output
    r = run("--tasks", "event,kws")  # speech clips carry no event
    assert r.exit_code == 1 and "tasks 'event' and 'kws' share no clip" in r.output
    r = run("--tasks", "event")
    assert r.exit_code == 1 and "--tasks takes two different tasks" in r.output
    r = run("--tasks", "event,scene", "--split", "nosuch")
    assert r.exit_code == 1 and "has no 'nosuch' split" in r.output
    # a label of a that occurs with one label of b only everywhere: nothing shared to exclude
    r = run("--tasks", "instrument,music_speech", "--print-exclude")
    assert r.exit_code == 1 and "nothing shared to exclude" in r.output


def _train_counts(data, task: str, split: str = "train") -> Counter:
    rows = data.tasks[task]
    return Counter(rows.labels[i] for i in rows.targets[split])


@pytest.mark.slow
def test_exclude_leaves_out_exactly_those_training_instances(overlap_corpus):
    manifest = read_manifest(overlap_corpus)
    full = load_task_data(overlap_corpus, ["scene", "event"], workers=1)
    cfg = TrainConfig(exclude={"event": ["door", "footsteps"]})
    kept = load_training_data(overlap_corpus, ["scene", "event"], cfg, None, workers=1)
    expected = Counter(r.label for r in manifest.rows_for("event") if r.split == "train")
    assert _train_counts(full, "event") == expected
    assert _train_counts(kept, "event") == {k: n for k, n in expected.items() if k not in ("door", "footsteps")}
    assert sum(expected[k] for k in ("door", "footsteps")) == len(full.tasks["event"].rows["train"]) - \
        len(kept.tasks["event"].rows["train"]) == 6
    assert kept.tasks["event"].labels == full.tasks["event"].labels  # the head keeps every label
    for split in ("validation", "test"):  # scored on the same clips as a run without the exclusion
        assert (kept.tasks["event"].rows[split] == full.tasks["event"].rows[split]).all()
    for split in full.tasks["scene"].rows:  # the other task is untouched, even on the excluded clips
        assert (kept.tasks["scene"].rows[split] == full.tasks["scene"].rows[split]).all()
    with pytest.raises(MtlEdgeError, match="--exclude leaves task 'event' without training examples"):
        load_training_data(overlap_corpus, ["event"], TrainConfig(exclude={"event": sorted(EVENTS)}), None, workers=1)


@pytest.mark.slow
def test_train_records_the_exclusion_and_refuses_bad_ones(overlap_corpus, tmp_path):
    runner = CliRunner()
    base = ["train", "--corpus", str(overlap_corpus), "--tasks", "scene,event", "--steps", "4", "--hidden", "128,128,128"]
    out = tmp_path / "run"
    r = runner.invoke(app, [*base, "--exclude", "event:footsteps,event:door", "--out", str(out)])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["exclude"] == {"event": ["door", "footsteps"]}
    before = (out / "metrics.json").read_bytes()
    r = runner.invoke(app, [*base, "--exclude", "event:door", "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "holds a run with other settings" in r.output
    r = runner.invoke(app, [*base, "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "holds a run with other settings" in r.output
    assert (out / "metrics.json").read_bytes() == before
    r = runner.invoke(app, [*base, "--exclude", "event:footsteps,event:door", "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output  # the same exclusion resumes
    for spec, message in [
        ("event:cat", "task 'event' has no label 'cat'; its labels: alarm_bell, dog_bark, door"),
        ("scene:dog_bark", "task 'scene' has no label 'dog_bark'; its labels: crowded_hall, fireside"),
        ("kws:yes", "--exclude names task 'kws', which is not trained here (tasks: scene, event)"),
        ("event=door", "--exclude takes TASK:LABEL[,TASK:LABEL...]"),
    ]:
        bad = tmp_path / spec.replace(":", "_")
        r = runner.invoke(app, [*base, "--exclude", spec, "--out", str(bad)])
        assert r.exit_code == 1 and message in r.output, (spec, r.output)
        assert not (bad / "config.json").exists()


@pytest.mark.slow
def test_sweep_records_the_exclusion_and_refuses_another(overlap_corpus, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sweep"
    base = ["sweep", "--corpus", str(overlap_corpus), "--tasks", "scene,event", "--combos", "singles", "--seeds", "1",
            "--steps", "3", "--hidden", "128,128,128", "--workers", "1", "--out", str(out)]
    r = runner.invoke(app, [*base, "--exclude", "event:glass_break"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "sweep.json").read_text())["train"]["exclude"] == {"event": ["glass_break"]}
    assert json.loads((out / "runs" / "event" / "seed0" / "status.json").read_text())["status"] == "done"
    r = runner.invoke(app, [*base, "--exclude", "event:door"])
    assert r.exit_code == 1 and "train.exclude.event (['glass_break'] -> ['door'])" in r.output
    r = runner.invoke(app, [*base[:-1], str(tmp_path / "other"), "--exclude", "event:nosuch"])
    assert r.exit_code == 1 and "task 'event' has no label 'nosuch'" in r.output
    r = runner.invoke(app, [*base[:-1], str(tmp_path / "other"), "--exclude", "kws:yes"])
    assert r.exit_code == 1 and "--exclude names task 'kws', which is not trained here" in r.output
