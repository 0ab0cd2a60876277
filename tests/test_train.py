"""Training core: registry, per-task gradient routing, weightings, metrics, checkpoints, runs, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtl_edge.cli import app
from mtl_edge.data.manifest import read_manifest
from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.inputs import config_from_json
from mtl_edge.train.checkpoint import load_checkpoint, load_payload
from mtl_edge.train.metrics import classification_metrics, delta
from mtl_edge.train.data import load_task_data
from mtl_edge.train.models import MODELS, create_model
from mtl_edge.train.trainer import TrainConfig, batch_losses, fit, predict
from mtl_edge.train.weighting import WEIGHTINGS, create_weighting

TASKS = {"kws": 12, "speaker": 10, "scene": 5}


def build(name: str) -> torch.nn.Module:
    return create_model(name, input_dim=20, tasks=TASKS, hidden=[128, 128, 128])


@pytest.mark.parametrize("name", sorted(n for n, e in MODELS.items() if e.input_kind == "features"))
def test_every_summary_feature_model_runs_forward_and_backward(name):
    """Models on summary vectors with the DNN's build arguments (every family, with its own tiny arguments,
    is run in tests/test_models.py)."""
    torch.manual_seed(0)
    model = build(name)
    out = model(torch.randn(7, 20))
    assert list(out) == list(TASKS)
    assert {t: tuple(v.shape) for t, v in out.items()} == {t: (7, n) for t, n in TASKS.items()}
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_and_bad_widths_fail_clearly():
    with pytest.raises(MtlEdgeError, match="unknown model 'wavenet9'.*registered models: dnn"):
        create_model("wavenet9", input_dim=3, tasks={"a": 2})
    with pytest.raises(MtlEdgeError, match="3 hidden layers of equal width"):
        create_model("dnn", input_dim=3, tasks={"a": 2}, hidden=[256, 128, 256])


def test_a_sample_updates_the_trunk_and_only_its_own_head():
    torch.manual_seed(0)
    model = build("dnn")
    x = torch.randn(6, 20)
    tasks = torch.tensor([0, 0, 0, 2, 2, 2])  # no 'speaker' sample in this batch
    targets = torch.tensor([1, 2, 3, 0, 1, 4])
    losses = batch_losses(model, x, tasks, targets, list(TASKS))
    assert set(losses) == {"kws", "scene"}
    losses["kws"].backward()
    assert model.heads["kws"].weight.grad.abs().sum() > 0
    assert model.heads["scene"].weight.grad is None and model.heads["speaker"].weight.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trunk.parameters())
    # the uniform total is the mean per-sample cross-entropy of the batch
    model.zero_grad()
    model.eval()  # dropout off: the two computations must see the same network
    hidden = model.embed(x)
    per_sample = [torch.nn.functional.cross_entropy(model.heads[list(TASKS)[t]](hidden[i:i + 1]), targets[i:i + 1])
                  for i, t in enumerate(tasks.tolist())]
    total = create_weighting("uniform", list(TASKS)).combine(batch_losses(model, x, tasks, targets, list(TASKS)))
    assert torch.allclose(total, torch.stack(per_sample).mean(), atol=1e-6)


def test_optimizer_step_leaves_absent_heads_untouched():
    torch.manual_seed(0)
    model = build("dnn")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    before = model.heads["speaker"].weight.detach().clone()
    losses = batch_losses(model, torch.randn(4, 20), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 3]), list(TASKS))
    optimizer.zero_grad(set_to_none=True)
    create_weighting("uniform", list(TASKS)).backward(losses, model.shared_parameters())
    optimizer.step()
    assert torch.equal(model.heads["speaker"].weight, before)


def test_uncertainty_weighting_learns_a_log_variance_per_task():
    w = create_weighting("uncertainty", ["a", "b"])
    losses = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(0.5, requires_grad=True)}
    total = w.combine(losses)
    assert torch.isclose(total, torch.tensor(2.5))  # s = 0: plain sum
    total.backward()
    assert w.log_vars.grad.tolist() == pytest.approx([-2.0 + 0.5, -0.5 + 0.5])


def test_pcgrad_removes_the_conflicting_component_on_shared_layers():
    shared = torch.nn.Parameter(torch.zeros(2))
    w = create_weighting("pcgrad", ["a", "b"])
    # gradients (1, 0) and (-1, 1) conflict (dot = -1)
    losses = {"a": shared @ torch.tensor([1.0, 0.0]), "b": shared @ torch.tensor([-1.0, 1.0])}
    w.backward(losses, [shared])
    g_a = torch.tensor([1.0, 0.0]) - (-1.0 / 2.0) * torch.tensor([-1.0, 1.0])  # a projected off b
    g_b = torch.tensor([-1.0, 1.0]) - (-1.0 / 1.0) * torch.tensor([1.0, 0.0])  # b projected off a
    assert torch.allclose(shared.grad, g_a + g_b)
    assert torch.dot(g_a, torch.tensor([-1.0, 1.0])) >= -1e-6


def test_unknown_weighting_fails_clearly():
    with pytest.raises(MtlEdgeError, match="choose from pcgrad, sum, uncertainty, uniform"):
        create_weighting("gradvac", ["a"])
    assert set(WEIGHTINGS) == {"uniform", "sum", "uncertainty", "pcgrad"}


def test_metrics_match_hand_computation():
    y = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 5.0
    m = classification_metrics(y, logits)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["micro_f1"] == pytest.approx(m["accuracy"])  # single-label: micro-F1 is accuracy
    # per class F1: 0 -> p 1/2 r 1/2, 1 -> p 2/3 r 1, 2 -> p 1 r 1/2
    assert m["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    assert 0.5 < m["roc_auc"] <= 1.0
    assert m["map_at_3"] == pytest.approx((4 + 0.5 + 0.5) / 6)  # two misses guessed second
    ranked = np.array([[3.0, 2.0, 1.0, 0.0]] * 4)
    assert classification_metrics(np.array([0, 1, 2, 3]), ranked)["map_at_3"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    d = delta(m, {"accuracy": 0.5, "macro_f1": 0.5, "micro_f1": 0.5, "roc_auc": None})
    assert d["accuracy"] == pytest.approx(4 / 6 - 0.5) and d["roc_auc"] is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtl_edge", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_run(demo_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    result = CliRunner().invoke(app, ["train", "--corpus", str(demo_corpus), "--tasks", "kws,speaker,scene,instrument",
                                      "--single", "--out", str(out), "--epochs", "6", "--hidden", "128,128,128"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_the_run(trained_run):
    out, output = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["kws", "speaker", "scene", "instrument"]
    for task, entry in metrics["tasks"].items():
        assert set(entry) >= {"single", "multi", "delta"}
        for side in ("single", "multi"):
            assert set(entry[side]) == {"accuracy", "macro_f1", "micro_f1", "roc_auc", "map_at_3"}
            assert entry[side]["micro_f1"] == pytest.approx(entry[side]["accuracy"])
        assert entry["delta"]["accuracy"] == pytest.approx(entry["multi"]["accuracy"] - entry["single"]["accuracy"])
    assert metrics["tasks"]["scene"]["multi"]["accuracy"] > 0.5  # 5 classes: well above chance after 6 epochs
    for folder in [out / "multi", *(out / "single").iterdir()]:
        assert {"model.pt", "state.pt", "curves.csv", "history.json"} <= {p.name for p in folder.iterdir()}
    curves = (out / "multi" / "curves.csv").read_text().splitlines()
    assert curves[0] == "epoch,batch,task,loss,samples"
    assert {line.split(",")[2] for line in curves[1:]} == {"kws", "speaker", "scene", "instrument"}
    assert "single acc" in output and "multi acc" in output and "instrument" in output


def test_held_out_voices_are_scored_beside_the_test_split(trained_run, demo_corpus):
    """kws and scene have clips of the held-out voices; speaker (closed-set) and instrument have none.
    The figures are those `evaluate --split test_unseen_speakers` computes from the checkpoints."""
    out, output = trained_run
    metrics = json.loads((out / "metrics.json").read_text())
    n_unseen = sum(1 for r in read_manifest(demo_corpus).rows_for("kws") if r.split == "test_unseen_speakers")
    assert n_unseen > 0
    manifest = read_manifest(demo_corpus)
    for task in ("kws", "scene"):
        part = metrics["tasks"][task]["test_unseen_speakers"]
        assert part["samples"] == sum(1 for r in manifest.rows_for(task) if r.split == "test_unseen_speakers")
        labels = {split: {r.label for r in manifest.rows_for(task) if r.split == split} for split in ("test", "test_unseen_speakers")}
        lacking = sorted(labels["test"] - labels["test_unseen_speakers"])
        assert set(part) == {"multi", "single", "delta", "samples"} | ({"seen_same_labels"} if lacking else set())
        assert part["delta"]["accuracy"] == pytest.approx(part["multi"]["accuracy"] - part["single"]["accuracy"])
    # no voice speaks in a _silence_ clip: the held-out voices' split has none, and the test split over
    # the same labels is reported beside it (the same figure `evaluate` gives once silence is left out)
    like = metrics["tasks"]["kws"]["test_unseen_speakers"]["seen_same_labels"]
    assert like["labels_left_out"] == ["_silence_"]
    speech_test = [r for r in manifest.rows_for("kws") if r.split == "test" and r.label != "_silence_"]
    assert like["samples"] == len(speech_test)
    model, info = load_checkpoint(out / "multi" / "model.pt")
    data = load_task_data(demo_corpus, ["kws"], config_from_json(info["feature_config"]), labels={"kws": info["labels"]["kws"]})
    rows = data.tasks["kws"]
    keep = rows.targets["test"] != info["labels"]["kws"].index("_silence_")
    predicted = predict(model, data.inputs[rows.rows["test"][keep]])["kws"].argmax(1)
    assert like["multi"]["accuracy"] == pytest.approx(float((predicted == rows.targets["test"][keep]).mean()))
    assert like["delta"]["accuracy"] == pytest.approx(like["multi"]["accuracy"] - like["single"]["accuracy"])
    assert "kws (test, labels of test_unseen_speakers)" in output
    for task in ("speaker", "instrument"):
        assert "test_unseen_speakers" not in metrics["tasks"][task]
    assert "kws (test_unseen_speakers)" in output and "speaker (test_unseen_speakers)" not in output
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(demo_corpus), "--split", "test_unseen_speakers"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((out / "evaluations" / f"{demo_corpus.name}-test_unseen_speakers.json").read_text())
    assert evaluated["tasks_without_examples"] == ["speaker", "instrument"]
    assert "no test_unseen_speakers examples: speaker, instrument" in result.output
    for task in ("kws", "scene"):
        for side in ("multi", "single"):
            assert evaluated["tasks"][task][side]["accuracy"] == pytest.approx(
                metrics["tasks"][task]["test_unseen_speakers"][side]["accuracy"])
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(demo_corpus), "--split", "test_nosuch"])
    assert result.exit_code != 0 and "has no 'test_nosuch' split" in result.output


def test_baselines_use_the_identical_config(trained_run):
    out, _ = trained_run
    _, multi = load_checkpoint(out / "multi" / "model.pt")
    for task in ("kws", "speaker", "scene", "instrument"):
        _, single = load_checkpoint(out / "single" / task / "model.pt")
        assert single["train_config"] == multi["train_config"]
        assert single["feature_config"] == multi["feature_config"]
        assert single["build_args"]["hidden"] == multi["build_args"]["hidden"]
        assert single["labels"] == {task: multi["labels"][task]}


def test_checkpoint_rebuilds_with_no_other_file(trained_run, demo_corpus):
    out, _ = trained_run
    model, info = load_checkpoint(out / "multi" / "model.pt")
    payload = torch.load(out / "multi" / "model.pt", weights_only=True)  # plain data only
    assert payload["model"] == "dnn" and set(payload["labels"]) == {"kws", "speaker", "scene", "instrument"}
    rebuilt = create_model(payload["model"], **payload["build_args"])
    rebuilt.load_state_dict(payload["state_dict"])
    rebuilt.eval()
    x = torch.randn(5, payload["build_args"]["input_dim"])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), rebuilt(x).values()))


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path, trained_run):
    out, _ = trained_run
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((out / "multi" / "model.pt").read_bytes()[:2000])
    with pytest.raises(MtlEdgeError, match="not a readable checkpoint"):
        load_checkpoint(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(MtlEdgeError, match="foreign checkpoint"):
        load_payload(foreign)


def test_evaluate_on_a_held_out_corpus_reports_unseen_labels(trained_run, tmp_path):
    from mtl_edge.data.demo.builder import DemoConfig, build_demo

    out, _ = trained_run
    held_out = build_demo(DemoConfig(scale=0.04, seed=11), tmp_path / "heldout", workers=2).folder
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(held_out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluations" / "heldout-test.json").read_text())
    assert report["tasks"]["scene"]["unseen_samples"] == 0 and "single" in report["tasks"]["scene"]
    # rename one keyword in a copy of the manifest: the model never saw it
    manifest = (held_out / "manifest.csv").read_text().replace(",kws,stop,", ",kws,halt,")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "manifest.csv").write_text(manifest)
    (renamed / "audio").symlink_to(held_out / "audio")
    (renamed / "tasks.json").symlink_to(held_out / "tasks.json")
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(renamed)])
    assert result.exit_code == 0, result.output
    kws = json.loads((out / "evaluations" / "renamed-test.json").read_text())["tasks"]["kws"]
    assert kws["unseen_labels"] == {"halt": kws["unseen_samples"]} and kws["unseen_samples"] > 0
    assert "never saw" in result.output
    assert kws["multi"]["accuracy_all"] <= kws["multi"]["accuracy"]


def _corpus_with_tasks(demo_corpus: Path, folder: Path, keep) -> Path:
    """A corpus sharing ``demo_corpus``'s audio whose manifest keeps only the rows of tasks in ``keep``."""
    folder.mkdir()
    (folder / "audio").symlink_to(demo_corpus / "audio")
    lines = (demo_corpus / "manifest.csv").read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    task_col = header.index("task")
    (folder / "manifest.csv").write_text(lines[0] + "".join(l for l in lines[1:] if l.split(",")[task_col] in keep))
    return folder


def test_evaluate_on_a_corpus_with_some_of_the_tasks_lists_the_others_as_absent(trained_run, demo_corpus, tmp_path):
    out, _ = trained_run
    partial = _corpus_with_tasks(demo_corpus, tmp_path / "partial", {"kws", "scene", "gender"})
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(partial)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluations" / "partial-test.json").read_text())
    assert list(report["tasks"]) == ["kws", "scene"]
    assert report["absent_tasks"] == ["speaker", "instrument"]
    for task in ("kws", "scene"):  # evaluated on both sides, as on the full corpus
        assert {"multi", "single", "delta"} <= set(report["tasks"][task])
        assert 0.0 <= report["tasks"][task]["multi"]["accuracy"] <= 1.0
    assert "absent from" in result.output and "speaker, instrument" in result.output
    full = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(demo_corpus)])
    assert full.exit_code == 0, full.output
    whole = json.loads((out / "evaluations" / f"{demo_corpus.resolve().name}-test.json").read_text())
    assert whole["absent_tasks"] == [] and whole["tasks"]["kws"]["multi"] == report["tasks"]["kws"]["multi"]
    none = _corpus_with_tasks(demo_corpus, tmp_path / "none", {"gender", "vad"})
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(none)])
    assert result.exit_code == 1 and "carries none of the run's tasks" in result.output
    assert not (out / "evaluations" / "none-test.json").exists()


def test_bad_inputs_exit_1_with_a_message(demo_corpus, tmp_path, trained_run):
    runner = CliRunner()
    base = ["train", "--corpus", str(demo_corpus), "--epochs", "1"]
    r = runner.invoke(app, [*base, "--tasks", "kws,emotion", "--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "unknown task(s) emotion" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(app, [*base, "--tasks", "kws", "--out", str(blocker / "run")])
    assert r.exit_code == 1 and "cannot write to the output folder" in r.output
    out, _ = trained_run
    before = (out / "metrics.json").read_bytes()
    r = runner.invoke(app, [*base, "--tasks", "kws", "--out", str(out)])
    assert r.exit_code == 1 and "already holds a run" in r.output
    assert (out / "metrics.json").read_bytes() == before  # nothing already written is damaged
    r = runner.invoke(app, [*base, "--tasks", "kws", "--out", str(tmp_path / "b"), "--hidden", "100,100,100"])
    assert r.exit_code == 1 and "equal width 128, 256 or 512" in r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path), "--corpus", str(demo_corpus)])
    assert r.exit_code == 1 and "no checkpoints" in r.output


class _PoisonAfterEpoch:
    """The progress bar ``fit`` reports to; after epoch ``after`` it makes one training row infinite (the
    trainer reads ``data.inputs`` in place), so the next epoch's loss becomes nan through the real forward pass."""

    def __init__(self, data, row: int, after: int = 1):
        self.data, self.row, self.after, self.saved = data, row, after, None

    def add_task(self, description, total=None, completed=0):
        return 0

    def update(self, task_id, completed=None, description=None):
        if completed == self.after and self.saved is None:
            self.saved = self.data.inputs[self.row].copy()
            self.data.inputs[self.row] = np.inf

    def heal(self):
        self.data.inputs[self.row] = self.saved


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_state(demo_corpus, tmp_path):
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import STATE_FORMAT

    data = load_task_data(demo_corpus, ["scene"], workers=1)
    cfg = TrainConfig(hidden=(128, 128, 128), epochs=3)
    row = int(data.tasks["scene"].rows["train"][5])
    poison = _PoisonAfterEpoch(data, row)
    with pytest.raises(MtlEdgeError, match=r"loss became nan at epoch 2, batch \d+ .*lower --lr\. The last good "
                                           r"state is kept in .*nan/state\.pt"):
        fit(data, cfg, tmp_path / "nan", progress=poison)
    assert not (tmp_path / "nan" / "model.pt").exists()
    state = load_payload(tmp_path / "nan" / "state.pt", STATE_FORMAT)
    assert state["epoch"] == 0 and len(state["history"]) == 1 and state["best_epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # the kept state is epoch 1 of the same run: the weights a clean one-epoch run ends with
    poison.heal()
    fit(data, TrainConfig(hidden=(128, 128, 128), epochs=1), tmp_path / "one")
    one = load_payload(tmp_path / "one" / "state.pt", STATE_FORMAT)
    assert state["model"].keys() == one["model"].keys()
    assert all(torch.equal(state["model"][k], one["model"][k]) for k in one["model"])
    assert state["history"] == one["history"]
    # and it resumes: with the data healed, the run finishes its three epochs from there
    resumed = fit(data, cfg, tmp_path / "nan", resume=True)
    assert resumed.epochs_run == 3 and resumed.history[0] == state["history"][0]
    assert (tmp_path / "nan" / "model.pt").is_file()


class _InterruptAfterEpoch:
    """The progress bar ``fit`` reports to; raises KeyboardInterrupt (as Ctrl-C would) once epoch ``after``
    is saved."""

    def __init__(self, after: int):
        self.after = after

    def add_task(self, description, total=None, completed=0):
        return 0

    def update(self, task_id, completed=None, description=None):
        if completed == self.after:
            raise KeyboardInterrupt


def test_uncertainty_and_pcgrad_weightings_train_through_fit(demo_corpus, tmp_path):
    """The weightings inside the real training loop: uncertainty's log-variances are optimised with the
    model and survive a resume; PCGrad changes the shared update only when there are two tasks to conflict."""
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import STATE_FORMAT

    data = load_task_data(demo_corpus, ["scene", "kws"], workers=1)
    cfg = dict(hidden=(128, 128, 128), epochs=2)
    runs = {}
    for name in ("uniform", "uncertainty", "pcgrad"):
        result = fit(data, TrainConfig(weighting=name, **cfg), tmp_path / name)
        runs[name] = (result, load_payload(tmp_path / name / "state.pt", STATE_FORMAT))
    chance = 1 / min(len(r.labels) for r in data.tasks.values())
    for name, (result, state) in runs.items():
        assert result.best_score > chance, name  # it learned something
        assert all(torch.isfinite(v).all() for v in state["model"].values()), name
    log_vars = runs["uncertainty"][1]["weighting"]["log_vars"]
    assert log_vars.shape == (2,) and not torch.equal(log_vars, torch.zeros(2))  # learned, one per task
    assert log_vars[0] != log_vars[1]
    weights = {n: st["model"] for n, (_, st) in runs.items()}
    for other in ("uncertainty", "pcgrad"):
        assert any(not torch.equal(weights["uniform"][k], weights[other][k]) for k in weights["uniform"]), other
    # interrupted after its first epoch's state was saved, then resumed: the same log-variances
    with pytest.raises(KeyboardInterrupt):
        fit(data, TrainConfig(weighting="uncertainty", **cfg), tmp_path / "cut", progress=_InterruptAfterEpoch(1))
    assert load_payload(tmp_path / "cut" / "state.pt", STATE_FORMAT)["epoch"] == 0
    fit(data, TrainConfig(weighting="uncertainty", **cfg), tmp_path / "cut", resume=True)
    cut = load_payload(tmp_path / "cut" / "state.pt", STATE_FORMAT)
    assert torch.equal(cut["weighting"]["log_vars"], log_vars)
    # a single task has nothing to conflict with: PCGrad trains exactly the uniform model
    scene = data.subset(["scene"])
    fit(scene, TrainConfig(weighting="uniform", hidden=(128, 128, 128), epochs=1), tmp_path / "s-uniform")
    fit(scene, TrainConfig(weighting="pcgrad", hidden=(128, 128, 128), epochs=1), tmp_path / "s-pcgrad")
    a = load_payload(tmp_path / "s-uniform" / "state.pt", STATE_FORMAT)["model"]
    b = load_payload(tmp_path / "s-pcgrad" / "state.pt", STATE_FORMAT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_changed_config_is_refused_naming_the_difference(demo_corpus, tmp_path):
    from mtl_edge.train.data import load_task_data

    data = load_task_data(demo_corpus, ["scene", "kws"], workers=1)
    fit(data.subset(["scene"]), TrainConfig(hidden=(128, 128, 128), epochs=1), tmp_path / "r")
    before = (tmp_path / "r" / "state.pt").read_bytes()
    with pytest.raises(MtlEdgeError, match=r"state\.pt: saved with another configuration or task set \(lr: saved "
                                           r"0\.001, now 0\.01\); cannot resume it"):
        fit(data.subset(["scene"]), TrainConfig(hidden=(128, 128, 128), epochs=1, lr=0.01), tmp_path / "r", resume=True)
    with pytest.raises(MtlEdgeError, match=r"\(tasks: saved \['scene'\], now \['scene', 'kws'\]\)"):
        fit(data, TrainConfig(hidden=(128, 128, 128), epochs=1), tmp_path / "r", resume=True)
    assert (tmp_path / "r" / "state.pt").read_bytes() == before  # the saved state is left as it was


def test_resume_on_a_rebuilt_corpus_is_refused(tiny_corpus, tmp_path):
    """A corpus rebuilt at the same path (another recipe: other clips, other labels) is another corpus:
    resuming would score old models on new data."""
    import shutil

    from mtl_edge.train.run import train_run

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus, ignore=shutil.ignore_patterns(".features"))
    cfg = TrainConfig(hidden=(128, 128, 128), steps=2)
    train_run(corpus, ["kws"], tmp_path / "run", cfg, workers=1, processes=1)
    train_run(corpus, ["kws"], tmp_path / "run", cfg, workers=1, processes=1, resume=True)  # unchanged: resumes
    manifest = corpus / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
    with pytest.raises(MtlEdgeError, match="trained on another version of"):
        train_run(corpus, ["kws"], tmp_path / "run", cfg, workers=1, processes=1, resume=True)


def test_task_without_training_examples_is_refused(demo_corpus, tmp_path):
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.train.data import load_task_data

    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "audio").symlink_to(demo_corpus / "audio")
    (corpus / "tasks.json").symlink_to(demo_corpus / "tasks.json")
    lines = (demo_corpus / "manifest.csv").read_text().splitlines()
    kept = [lines[0]] + [l for l in lines[1:] if not (l.split(",")[1] == "instrument" and ",train," in l)]
    (corpus / "manifest.csv").write_text("\n".join(kept) + "\n")
    assert "instrument" in read_manifest(corpus).tasks
    with pytest.raises(MtlEdgeError, match="'instrument' has no training examples"):
        load_task_data(corpus, ["instrument"], workers=1)


def test_interrupted_training_resumes_to_the_same_metrics(demo_corpus, tmp_path):
    """Kill a real training process mid-run, resume it, and compare with an uninterrupted run.

    The cut is made at a known point, whatever the machine's load: the process group is frozen with
    SIGSTOP before its state is read, so the state seen is the state killed (epoch 3 to 9 of the
    multi-task model, before its model.pt)."""
    args = ["train", "--corpus", str(demo_corpus), "--tasks", "kws,scene", "--single", "--epochs", "10",
            "--hidden", "128,128,128", "--seed", "3"]
    whole = run_cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "mtl_edge", *args, "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state, killed_at = cut / "multi" / "state.pt", None
    try:
        while killed_at is None:
            os.killpg(proc.pid, signal.SIGSTOP)  # frozen: nothing changes between the check and the kill
            assert proc.poll() is None, "training ended before it could be interrupted"
            assert not (cut / "multi" / "model.pt").exists(), "the multi-task model finished before epoch 3 was seen"
            epoch = load_payload(state, "mtl-edge-train-state")["epoch"] if state.exists() else -1
            if epoch >= 2:  # epoch 3 (0-based 2) is saved
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = epoch
            else:
                os.killpg(proc.pid, signal.SIGCONT)
                time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 2 <= killed_at < 9
    assert not (cut / "metrics.json").exists() and not (cut / "multi" / "model.pt").exists()
    resumed = run_cli(*args, "--out", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert a["tasks"] == b["tasks"]
    assert (tmp_path / "whole" / "multi" / "curves.csv").read_text() == (cut / "multi" / "curves.csv").read_text()


def test_evaluate_refuses_a_corpus_with_another_label_space(trained_run, demo_corpus, tmp_path):
    out, _ = trained_run
    other = tmp_path / "other"
    other.mkdir()
    (other / "audio").symlink_to(demo_corpus / "audio")
    (other / "tasks.json").symlink_to(demo_corpus / "tasks.json")
    text = (demo_corpus / "manifest.csv").read_text()
    for scene in ("office", "crowded_hall", "windy_outdoors", "riverside", "fireside"):
        text = text.replace(f",scene,{scene},", f",scene,planet_{scene},")
    (other / "manifest.csv").write_text(text)
    result = CliRunner().invoke(app, ["evaluate", str(out), "--corpus", str(other)])
    assert result.exit_code == 1
    assert "task 'scene'" in result.output and "shares no label" in result.output


def test_balanced_batches_hold_every_task_equally_and_shuffled_ones_every_sample_once():
    from mtl_edge.train.trainer import epoch_batches

    sample_tasks = torch.tensor([0] * 5 + [1] * 40 + [2] * 15)  # scarce labels beside large pools
    cfg = TrainConfig(batch_size=7, sampling="balanced")
    batches = epoch_batches(sample_tasks, 3, cfg, 9, torch.Generator().manual_seed(0))
    assert len(batches) == 9
    for batch in batches:
        assert torch.bincount(sample_tasks[batch], minlength=3).tolist() == [3, 2, 2]
    task0 = torch.cat([b[:3] for b in batches])
    seen = torch.bincount(task0, minlength=5)  # 27 draws from whole permutations: each sample 5 or 6 times
    assert seen.sum() == 27 and int(seen.max() - seen.min()) <= 1
    again = epoch_batches(sample_tasks, 3, cfg, 9, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    shuffled = epoch_batches(sample_tasks, 3, TrainConfig(batch_size=7), 9, torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat(shuffled), torch.randperm(60, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(MtlEdgeError, match="at least one sample per task"):
        epoch_batches(sample_tasks, 3, TrainConfig(batch_size=2, sampling="balanced"), 9, torch.Generator())
    with pytest.raises(MtlEdgeError, match="unknown sampling 'random'"):
        epoch_batches(sample_tasks, 3, TrainConfig(sampling="random"), 9, torch.Generator())
    fixed = epoch_batches(sample_tasks, 3, TrainConfig(batch_size=7, batches_per_epoch=20), 20, torch.Generator().manual_seed(0))
    assert [len(b) for b in fixed] == [7] * 20  # 140 draws from successive permutations: each sample 2 or 3 times
    assert set(torch.bincount(torch.cat(fixed), minlength=60).tolist()) == {2, 3}


def test_an_epoch_of_a_fixed_number_of_batches(tiny_corpus, tmp_path):
    """--batches-per-epoch: the step budget is cut into epochs of that many batches (validation, checkpoint,
    lr decay), whatever the number of training samples."""
    from mtl_edge.train.run import train_run

    cfg = TrainConfig(hidden=(128, 128, 128), steps=7, batches_per_epoch=3, batch_size=4)
    train_run(tiny_corpus, ["kws"], tmp_path / "run", cfg, workers=1, processes=1)
    history = json.loads((tmp_path / "run" / "multi" / "history.json").read_text())
    assert history["epochs_run"] == len(history["epochs"]) == 3  # 3 + 3 + 1 batches
    rows = [l.split(",")[:2] for l in (tmp_path / "run" / "multi" / "curves.csv").read_text().splitlines()[1:]]
    assert sorted({(int(e), int(b)) for e, b in rows}) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1)]  # 1-based
