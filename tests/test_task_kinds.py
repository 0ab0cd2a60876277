"""Multilabel and frame tasks: tasks.json, multi-row manifests, targets, metrics, training, export (issue 15 part 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_adapters import ravdess_src  # noqa: F401  (the RAVDESS adapter's fixture: six real-speech clips)

from mtl_edge.data.activity import activity_frames, frames_to_segments, parse_activity
from mtl_edge.data.manifest import Row, make_manifest, parse_manifest
from mtl_edge.data.task_kinds import TASKS_NAME, TaskKind, parse_task_kinds, read_task_kinds
from mtl_edge.errors import ManifestError, MtlEdgeError
from mtl_edge.tasks import TaskSpec
from mtl_edge.train.metrics import multilabel_metrics, task_metrics
from mtl_edge.train.targets import multi_row_targets

KINDS = {"tags": TaskKind("multilabel"), "act": TaskKind("frame", hop_ms=10.0, frames=100, segment_ms=100.0)}
HEADER = "path,task,label,split,activity\n"


def _tagged(extra: str = "") -> str:
    """Two clips per split, each with one or two tags; a frame task on the same clips."""
    lines = []
    for split in ("train", "validation", "test"):
        for i, tags in enumerate((("dog", "wind"), ("speech",))):
            path = f"{split}/{i}.wav"
            lines += [f"{path},tags,{t},{split}," for t in tags]
            lines.append(f"{path},act,foreground,{split},0.106-0.300;0.5-0.62")
    return HEADER + "\n".join(lines) + "\n" + extra


def _parse(text: str, kinds=KINDS):
    return parse_manifest(text, root="/corpus", kinds=kinds)


# ---------------------------------------------------------------- tasks.json and the manifest

def test_multilabel_rows_parse_one_row_per_tag():
    m = _parse(_tagged())
    assert m.kind("tags").kind == "multilabel" and m.kind("kws").kind == "classification"
    assert m.labels("tags") == ["dog", "speech", "wind"]
    assert [r.label for r in m.rows_for("tags") if r.path == "train/0.wav"] == ["dog", "wind"]


def test_two_rows_of_one_clip_and_task_are_refused_unless_declared():
    text = HEADER + "a.wav,tags,dog,train,\na.wav,tags,wind,train,\n"
    with pytest.raises(ManifestError, match=r"line 3: duplicated path a.wav for task 'tags' \(first on line 2\) "
                                            r"\(a clip with several labels of one task needs the task declared multilabel"):
        _parse(text, kinds={})
    with pytest.raises(ManifestError, match=r"line 3: duplicated path a.wav for label 'dog' of task 'tags' \(first on line 2\)"):
        _parse(HEADER + "a.wav,tags,dog,train,\na.wav,tags,dog,train,\n", kinds={"tags": TaskKind("multilabel")})


def test_a_multilabel_label_set_that_differs_between_splits_is_refused():
    text = _tagged().replace("test/1.wav,tags,speech", "test/1.wav,tags,cat")
    with pytest.raises(ManifestError, match=r"label set of multilabel task 'tags' differs between splits: "
                                            r"test lacks speech; test has cat, which train lacks"):
        _parse(text)
    # a further held-out test split may hold fewer tags than train, never others
    ok = _tagged() + "test_x/0.wav,tags,dog,test_x,\ntest_x/0.wav,act,foreground,test_x,\n"
    assert "test_x" in _parse(ok).splits
    with pytest.raises(ManifestError, match="test_x has cat, which train lacks"):
        _parse(_tagged() + "test_x/0.wav,tags,cat,test_x,\n")


def test_frame_rows_need_a_well_formed_activity_column():
    no_column = "path,task,label,split\na.wav,act,foreground,train\n"
    with pytest.raises(ManifestError, match=r"line 2: task 'act' is a frame task but the manifest has no 'activity' column"):
        _parse(no_column, kinds={"act": KINDS["act"]})
    bad = _tagged().replace("test/1.wav,act,foreground,test,0.106-0.300;0.5-0.62", "test/1.wav,act,foreground,test,0.3-x")
    with pytest.raises(ManifestError, match=r"line 16: activity of test/1.wav for task 'act': bad activity segment '0.3-x'"):
        _parse(bad)
    backwards = _tagged().replace("0.106-0.300;0.5-0.62\n", "0.6-0.5\n", 1)
    with pytest.raises(ManifestError, match=r"line 4: activity of train/0.wav .*ends before it starts"):
        _parse(backwards)
    late = _tagged().replace("0.106-0.300;0.5-0.62\n", "0.9-1.2\n", 1)
    with pytest.raises(ManifestError, match=r"line 4: activity segment 0.9-1.2 of train/0.wav ends after the 100 frames of 10 ms"):
        _parse(late)


def test_tasks_json_round_trips_and_malformed_declarations_are_refused(tmp_path):
    rows = [Row(f"{s}/{i}.wav", "tags", t, s) for s in ("train", "validation", "test") for i in range(2) for t in ("a", "b")]
    manifest = make_manifest(tmp_path, rows, {"tags": TaskKind("multilabel")})
    manifest.write(tmp_path)
    assert json.loads((tmp_path / TASKS_NAME).read_text()) == {"tasks": {"tags": {"kind": "multilabel"}}}
    assert read_task_kinds(tmp_path) == {"tags": TaskKind("multilabel")}
    assert read_task_kinds(tmp_path / "elsewhere") == {}  # no tasks.json: every task classification
    for decl, message in (({"kind": "tags"}, "kind must be one of classification, multilabel, frame"),
                          ({"kind": "frame", "hop_ms": 10}, "a frame task needs frames >= 1"),
                          ({"kind": "frame", "hop_ms": 0, "frames": 3}, "a frame task needs hop_ms > 0"),
                          ({"kind": "multilabel", "frames": 3}, "unknown field.* frames for a multilabel task")):
        with pytest.raises(ManifestError, match=f"tasks.json: task 'x': {message}"):
            parse_task_kinds({"tasks": {"x": decl}}, "tasks.json")
    with pytest.raises(ManifestError, match="declares task 'gone', which has no manifest rows"):
        make_manifest(tmp_path, rows, {"tags": TaskKind("multilabel"), "gone": TaskKind("multilabel")})


# ---------------------------------------------------------------- targets

def test_frame_and_tag_targets_follow_the_manifest():
    m = _parse(_tagged())
    index = {p: i for i, p in enumerate(sorted(m.clips()))}
    rows, targets, table = multi_row_targets(m, "act", m.rows_for("act"), index, ["foreground"])
    assert table.shape == (6, 100, 1)
    expected = np.zeros(100, bool)
    expected[11:30] = expected[50:62] = True  # frame k is active when (k + 0.5) * 10 ms lies in [start, end)
    for split in ("train", "validation", "test"):
        assert len(rows[split]) == 2
        for t in table[targets[split]]:
            np.testing.assert_array_equal(t[:, 0] > 0.5, expected)
    assert frames_to_segments(expected, 0.01) == [(0.11, 0.3), (0.5, 0.62)]
    rows, targets, table = multi_row_targets(m, "tags", m.rows_for("tags"), index, ["dog", "speech", "wind"])
    assert [index_of for index_of in rows["train"]] == [index["train/0.wav"], index["train/1.wav"]]
    np.testing.assert_array_equal(table[targets["train"]], [[1, 0, 1], [0, 1, 0]])


# ---------------------------------------------------------------- metrics

def test_multilabel_metrics_by_hand():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    logits = np.array([[2.0, -1.0, 1.0],    # both tags ranked 1, 2: AP@3 = (1 + 1) / 2 = 1
                       [3.0, -2.0, 0.5],    # its tag is third: 1/3
                       [-1.0, 1.0, 0.0]])   # tags at ranks 1 and 3: (1 + 2/3) / 2 = 5/6
    m = multilabel_metrics(y, logits)
    assert m["map_at_3"] == pytest.approx((1 + 1 / 3 + 5 / 6) / 3)
    # per-label average precision: label 0 ranks (1, 3, 2) for scores (2, 3, -1): AP = (1/2 + 2/3) / 2; label 1:
    # positives score -2 and 1 against -1: AP = (1 + 2/3) / 2; label 2: its positive is the top score: AP = 1
    assert m["map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + (1 + 2 / 3) / 2 + 1) / 3)
    # decisions logit > 0: tp 4 (0,0 0,2 2,1 and no other), fp 2 (1,0 1,2), fn 1 (1,1)... counted: tp=3
    pred = logits > 0
    tp, fp, fn = (pred & (y > 0)).sum(), (pred & (y == 0)).sum(), (~pred & (y > 0)).sum()
    assert m["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_frame_metrics_are_sed_evals_segment_based_metrics_by_hand():
    """Two clips of 10 frames (100 ms each) scored in 200 ms segments, worked out by hand as DCASE defines them."""
    spec = TaskSpec("act", kind="frame", labels=("foreground",), options={"hop_ms": 100.0, "frames": 10, "segment_ms": 200.0})
    ref = np.zeros((2, 10, 1), np.float32)
    est = np.full((2, 10, 1), -5.0, np.float32)
    ref[0, 0:4] = 1      # clip 0 reference 0.0-0.4 s: segments 0, 1
    est[0, 2:6] = 5      # estimate 0.2-0.6 s: segments 1, 2 -> tp 1 (seg 1), fn 1 (seg 0), fp 1 (seg 2)
    ref[1, 5:7] = 1      # clip 1 reference 0.5-0.7 s: segments 2, 3
    est[1, 8:10] = 5     # estimate 0.8-1.0 s: segment 4 -> fn 2, fp 1
    m = task_metrics(spec, est, ref)
    # segment-based (per segment and label): N = 4 reference segments; per segment S = min(FN, FP), D = FN - S,
    # I = FP - S; clip 0: seg 0 D, seg 2 I; clip 1: segs 2, 3 D, seg 4 I -> S 0, D 3, I 2; ER = 5 / 4
    assert m["error_rate"] == pytest.approx(5 / 4)
    assert m["segment_f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 3))  # tp 1, fp 2, fn 3
    # frames: tp 2 (0.2-0.4 s), fp 2 + 2, fn 2 + 2
    assert m["frame_f1"] == pytest.approx(2 * 2 / (2 * 2 + 4 + 4))
    import sed_eval  # the library itself agrees with the hand count (its own event lists)

    assert sed_eval.__version__ == "0.2.1"


def test_frame_metrics_refuse_mismatched_shapes():
    spec = TaskSpec("act", kind="frame", labels=("fg",), options={"hop_ms": 10.0, "frames": 4})
    with pytest.raises(MtlEdgeError, match=r"task 'act': outputs \[2, 3, 1\] and targets \[2, 4, 1\] differ"):
        task_metrics(spec, np.zeros((2, 3, 1)), np.zeros((2, 4, 1)))


def test_the_dnn_frame_head_keeps_one_trunk_and_its_losses_need_the_target_table():
    from mtl_edge.train.models import create_model, model_entry
    from mtl_edge.train.trainer import batch_losses

    specs = {"kws": TaskSpec("kws", labels=("a", "b")), "tags": TaskSpec("tags", kind="multilabel", labels=("x", "y", "z")),
             "act": TaskSpec("act", kind="frame", labels=("fg",), options={"hop_ms": 10.0, "frames": 7})}
    args = model_entry("dnn").build_args(5, specs, None)
    assert args["frames"] == {"act": 7} and args["tasks"] == {"kws": 2, "tags": 3, "act": 1}
    model = create_model("dnn", **args)
    out = model(torch.randn(4, 5))
    assert [tuple(o.shape) for o in out.values()] == [(4, 2), (4, 3), (4, 7, 1)]
    x, tasks = torch.randn(3, 5), torch.tensor([0, 1, 2])
    dense = {"tags": torch.tensor([[1.0, 0.0, 1.0]]), "act": torch.zeros(1, 7, 1)}
    losses = batch_losses(model, x, tasks, torch.tensor([1, 0, 0]), list(specs), specs=specs, dense=dense)
    assert set(losses) == {"kws", "tags", "act"} and all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(MtlEdgeError, match="task 'tags': a multilabel task's losses need its target table"):
        batch_losses(model, x, tasks, torch.tensor([1, 0, 0]), list(specs), specs=specs)
    assert "frames" not in model_entry("dnn").build_args(5, {"kws": specs["kws"]}, None)  # old build args unchanged


# ---------------------------------------------------------------- the demo corpus, training, export (real data)

@pytest.mark.slow
def test_demo_corpus_declares_both_kinds_and_keeps_the_other_tasks(tiny_corpus):
    from mtl_edge.data.demo.builder import clip_tags
    from mtl_edge.data.describe import count_labelled_frames, describe_corpus
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.train.data import load_task_data

    m = read_manifest(tiny_corpus)
    assert m.kind("tagging").kind == "multilabel" and m.kind("event_activity") == TaskKind("frame", 10.0, 100, 100.0)
    assert m.kind("scene").kind == "classification"
    tags = {}
    for r in m.rows_for("tagging"):
        tags.setdefault(r.path, set()).add(r.label)
    scene = {r.path: r.label for r in m.rows_for("scene")}
    background = {"office": "keyboard", "crowded_hall": "crowd", "windy_outdoors": "wind", "riverside": "water",
                  "fireside": "fire"}
    for path, labels in tags.items():  # every clip's background tag names its scene
        assert background[scene[path]] in labels
    assert {"speech", "piano", "dog_bark", "crowd", "wind"} <= set(m.labels("tagging"))
    kinds = {r.path: r.extra["kind"] for r in m.rows}
    assert all(len(v) == (1 if kinds[p] == "silence" else 2) for p, v in tags.items())
    assert clip_tags({"kind": "event", "label": "door", "scene": "fireside", "labels": {}}) == ["door", "fire"]
    described = describe_corpus(tiny_corpus)["tasks"]  # clips, not rows; a clip's activity counted once
    assert described["tagging"]["clips"] == len(m.clips()) == described["vad"]["clips"]
    assert described["tagging"]["labelled_frames"] == described["vad"]["labelled_frames"]
    assert sum(described["tagging"]["label_counts"].values()) == len(m.rows_for("tagging"))

    data = load_task_data(tiny_corpus, ["event_activity", "tagging"], progress=False)
    act = data.tasks["event_activity"]
    activity = {r.path: r.extra["activity"] for r in m.rows_for("event_activity")}
    assert set(activity) == set(m.clips())  # every clip, background-only ones all inactive
    for split in ("train", "test"):
        for row, target in zip(act.rows[split], act.dense_targets(split)):
            text = activity[data.paths[row]]
            assert int(target.sum()) == count_labelled_frames(parse_activity(text), 1.0)
            np.testing.assert_array_equal(target[:, 0] > 0.5, activity_frames(parse_activity(text), 100, 0.01))


@pytest.mark.slow
def test_kws_tagging_event_activity_train_write_metrics_and_export_verifies(tiny_corpus, tmp_path):
    from mtl_edge.export import export_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    cfg = TrainConfig(hidden=(128, 128, 128), epochs=4, patience=4)
    run = train_run(tiny_corpus, ["kws", "tagging", "event_activity"], tmp_path / "run", cfg, single=True, workers=1,
                    processes=1)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    tagging, act = metrics["tasks"]["tagging"], metrics["tasks"]["event_activity"]
    assert tagging["kind"] == "multilabel" and set(tagging["multi"]) == {"map", "map_at_3", "micro_f1", "macro_f1"}
    assert act["kind"] == "frame" and set(act["multi"]) == {"frame_f1", "error_rate", "segment_f1"}
    assert set(act["delta"]) == {"frame_f1", "error_rate", "segment_f1"} and "single" in tagging
    assert 0 <= act["multi"]["frame_f1"] <= 1 and 0 < tagging["multi"]["map"] <= 1
    assert "test_unseen_speakers" in tagging  # the held-out voices are scored on every task
    assert run.metrics == metrics

    result = export_run(tmp_path / "run", formats=["onnx"], precisions=["fp32"], models=["multi"], progress=False,
                        workers=1, latency_runs=5)
    entry = next(a for a in result.artefacts if a["model"] == "multi")
    assert entry["status"] == "ok" and entry["outputs"][2]["shape"][1:] == [100, 1]
    checked = entry["verification"]["tasks"]
    assert checked["event_activity"]["agreement"] == 1.0 and checked["tagging"]["agreement"] == 1.0


@pytest.mark.slow
def test_every_task_trains_with_every_other(tiny_corpus, tmp_path):
    """The auxiliaries, the main tasks and both new kinds in one shared network."""
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    tasks = read_manifest(tiny_corpus).tasks
    assert len(tasks) == 10
    run = train_run(tiny_corpus, tasks, tmp_path / "all", TrainConfig(hidden=(128, 128, 128), steps=3), workers=1,
                    processes=1)
    assert list(run.metrics["tasks"]) == tasks


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mtl_edge.data.manifest.SingleExampleLabelWarning")  # six clips, six emotions
def test_ravdess_runs_the_same_recipe(ravdess_src, tmp_path):
    """A user with RAVDESS on disk: import, train emotion with its auxiliaries (and the baselines), evaluate."""
    from mtl_edge.data.adapters import import_corpus
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.train.evaluate import evaluate_run
    from mtl_edge.train.run import train_run
    from mtl_edge.train.trainer import TrainConfig

    corpus = tmp_path / "rav"
    import_corpus("ravdess", ravdess_src, corpus)
    assert read_task_kinds(corpus) == {t: TaskKind() for t in ("emotion", "gender", "intensity", "speaker")}
    assert read_manifest(corpus).tasks == ["emotion", "gender", "intensity", "speaker"]
    run = train_run(corpus, ["emotion", "gender"], tmp_path / "run", TrainConfig(hidden=(128, 128, 128), steps=3),
                    single=True, workers=1, processes=1)
    assert run.metrics["tasks"]["emotion"]["kind"] == "classification"
    assert {"multi", "single", "delta"} <= set(run.metrics["tasks"]["emotion"])
    report = evaluate_run(tmp_path / "run", corpus)
    assert report["tasks"]["emotion"]["kind"] == "classification"



def test_the_affinity_probe_measures_multilabel_and_frame_tasks():
    from mtl_edge.research.affinity import AffinityProbe
    from mtl_edge.train.models import create_model, model_entry

    specs = {"kws": TaskSpec("kws", labels=("a", "b")), "tags": TaskSpec("tags", kind="multilabel", labels=("x", "y")),
             "act": TaskSpec("act", kind="frame", labels=("fg",), options={"hop_ms": 10.0, "frames": 5})}
    torch.manual_seed(0)
    model = create_model("dnn", **model_entry("dnn").build_args(6, specs, None))
    dense = {"tags": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "act": torch.ones(2, 5, 1)}
    probe = AffinityProbe(list(specs), specs, lr=0.1, every=1, dense=dense)
    probe(0, model, torch.randn(6, 6), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert probe.measurements == 1 and all(c == 1 for row in probe.counts for c in row)
