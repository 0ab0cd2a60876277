"""Every registered model, with its own tiny build arguments: forward, backward, checkpoint round trip,
export to every format and the real runtimes' answers. A model added to the registry gets these for free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_edge.errors import MtlEdgeError
from mtl_edge.tasks import TaskSpec
from mtl_edge.train.models import MODELS, check_tasks, create_model, model_entry


def _specs(entry) -> dict[str, TaskSpec]:
    """Two classification tasks, plus a reconstruction task where the model has heads for one."""
    specs = {"alpha": TaskSpec("alpha", labels=("a", "b", "c")), "beta": TaskSpec("beta", labels=("x", "y"))}
    if "reconstruction" in entry.task_kinds:
        specs["rebuild"] = TaskSpec("rebuild", kind="reconstruction")
    return specs


def _tiny(name: str):
    entry = model_entry(name)
    specs = _specs(entry)
    torch.manual_seed(0)
    model = create_model(name, **entry.tiny_args(entry.tiny_input_dim, specs)).eval()
    return entry, specs, model


def registered():
    return sorted(MODELS)


@pytest.mark.parametrize("name", registered())
def test_forward_backward_and_outputs_per_task(name):
    entry, specs, model = _tiny(name)
    x = model.example_input(3)
    assert x.shape == (3, entry.tiny_input_dim)
    model.fit_input_statistics(torch.randn(8, entry.tiny_input_dim))
    model.train()
    out = model(x)
    assert list(out) == list(specs)
    for task, spec in specs.items():
        expected = (3, spec.outputs) if spec.kind == "classification" else tuple(x.shape)
        assert tuple(out[task].shape) == expected, task
    sum(o.square().mean() for o in out.values()).backward()
    shared = model.shared_parameters()
    assert shared and all(p.grad is not None and torch.isfinite(p.grad).all() for p in shared)
    # task_outputs runs each head on its own rows only
    masks = {t: torch.tensor([i % len(specs) == k for i in range(3)]) for k, t in enumerate(specs)}
    parts = model.eval().task_outputs(x, masks)
    full = model(x)
    for task, mask in masks.items():
        torch.testing.assert_close(parts[task], full[task][mask])


@pytest.mark.parametrize("name", registered())
def test_checkpoint_round_trip_rebuilds_the_same_model(name, tmp_path):
    from mtl_edge.train.checkpoint import load_checkpoint, save_checkpoint

    entry, specs, model = _tiny(name)
    build = entry.tiny_args(entry.tiny_input_dim, specs)
    save_checkpoint(tmp_path / "model.pt", model, model_name=name, build_args=build,
                    labels={t: list(s.labels) for t, s in specs.items()}, feature_config={}, train_config={},
                    extra={"task_specs": {t: s.to_json() for t, s in specs.items()}})
    again, info = load_checkpoint(tmp_path / "model.pt")
    x = model.example_input(2) + torch.linspace(0, 1, entry.tiny_input_dim)
    with torch.no_grad():
        a, b = model(x), again(x)
    for task in specs:
        torch.testing.assert_close(a[task], b[task], rtol=0, atol=0)
    assert TaskSpec.from_json(info["task_specs"]["alpha"]) == specs["alpha"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "torch"])
@pytest.mark.parametrize("name", registered())
def test_exports_to_every_format_and_the_runtime_agrees(name, fmt, tmp_path):
    from mtl_edge.export import onnx as onnx_export, tflite as tflite_export, torchscript as torch_export
    from mtl_edge.export.graph import export_graph
    from mtl_edge.export.runtime import runners

    entry, specs, model = _tiny(name)
    builder = {"onnx": onnx_export, "tflite": tflite_export, "torch": torch_export}[fmt]
    graph = export_graph(model, list(specs), entry.tiny_input_dim, name, entry.input_kind)
    path = tmp_path / f"m{builder.EXTENSION}"
    details = builder.build(graph, entry.tiny_input_dim, "fp32", path, tmp_path, name)
    assert [i["name"] for i in details["inputs"]] == [graph.input_name]
    assert [o["name"] for o in details["outputs"]] == list(specs)
    x = np.random.default_rng(0).standard_normal((4, entry.tiny_input_dim)).astype(np.float32)
    got = runners(fmt, path)[0](x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    for task in specs:
        np.testing.assert_allclose(got[task], ref[task].numpy(), rtol=1e-4, atol=1e-5)


def test_unknown_model_and_a_task_kind_the_model_lacks_are_clear_errors():
    with pytest.raises(MtlEdgeError, match="unknown model 'nope'; registered models: .*dnn"):
        create_model("nope")
    with pytest.raises(MtlEdgeError, match=r"model 'dnn' \(features input\) has no head for rebuild \(reconstruction\)"):
        check_tasks("dnn", {"rebuild": TaskSpec("rebuild", kind="reconstruction")})


def test_task_specs_fill_their_kind_defaults_and_round_trip():
    c = TaskSpec("kws", labels=["no", "yes"])
    assert (c.loss, c.select_metric, c.higher_is_better, c.needs_labels, c.selects) == \
        ("cross_entropy", "accuracy", True, True, True)
    r = TaskSpec("next_step", kind="reconstruction")
    assert (r.loss, r.select_metric, r.higher_is_better, r.needs_labels, r.selects, r.target) == \
        ("smooth_l1", "loss", False, False, False, "input")
    assert r.selection_score(0.25) == -0.25
    assert TaskSpec.from_json(c.to_json()) == c and TaskSpec.from_json(r.to_json()) == r
    with pytest.raises(MtlEdgeError, match="unknown kind 'tagz'"):
        TaskSpec("t", kind="tagz")
    with pytest.raises(MtlEdgeError, match="unknown loss 'hinge'"):
        TaskSpec("t", loss="hinge")
