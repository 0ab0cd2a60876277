"""Micro-benchmarks (pytest-benchmark, calibrated rounds): feature extraction, the harness's runner, a training step.

    make bench         # rewrites benchmarks/results/micro.json (refused above a 1-minute load of 0.5)
    make bench-check   # fails when a median is 15 % slower than the committed one

Everything runs in this process with the math libraries pinned to one thread (``conftest.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
TASKS = {"kws": 12, "speaker": 10, "scene": 10, "instrument": 8}


def _features_script():
    spec = importlib.util.spec_from_file_location("bench_features", HERE.parent / "features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """32 real 1 s clips (espeak-ng words and freedesktop recordings, as benchmarks/features.py builds them)."""
    from mtl_edge.data.audio import load_audio

    corpus = _features_script().build_corpus(tmp_path_factory.mktemp("micro") / "corpus", 32)
    return np.stack([load_audio(p).samples for p in sorted((corpus / "audio").glob("*.wav"))])


@pytest.fixture(scope="module")
def multi_onnx(tmp_path_factory):
    """The demo's multi-task model shape (820 features, 512-512-512 trunk, four heads) as ONNX fp32."""
    import torch

    from mtl_edge.train.models import create_model

    torch.manual_seed(0)
    model = create_model("dnn", input_dim=820, tasks=TASKS, hidden=(512, 512, 512)).eval()
    path = tmp_path_factory.mktemp("onnx") / "multi.fp32.onnx"
    torch.onnx.export(model, (torch.zeros(1, 820),), str(path), dynamo=True, input_names=["features"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    rows = np.random.default_rng(0).normal(size=(64, 820)).astype(np.float32)
    np.save(path.with_suffix(".npy"), rows)
    return path


def test_extract_batch_32_clips(benchmark, clips):
    from mtl_edge.features.logmel import FeatureConfig, extract_batch

    cfg = FeatureConfig()
    out = benchmark(extract_batch, clips, cfg)
    assert out.shape == (len(clips), cfg.n_features)


def test_frontend_one_clip(benchmark, clips):
    from mtl_edge.features.logmel import FeatureConfig, extract

    cfg = FeatureConfig()
    assert benchmark(extract, clips[0], cfg).shape == (cfg.n_features,)


def test_bare_session_run_100_rows(benchmark, multi_onnx):
    """The baseline of the harness: 100 ``session.run`` calls over the rows, as the runner cycles them."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    session = ort.InferenceSession(str(multi_onnx), sess_options=opts, providers=["CPUExecutionProvider"])
    rows = np.load(multi_onnx.with_suffix(".npy"))
    feeds = [{"features": rows[i:i + 1]} for i in range(len(rows))]

    def hundred():
        for i in range(100):
            session.run(None, feeds[i % len(feeds)])

    benchmark(hundred)


def test_runner_job_100_runs(benchmark, multi_onnx):
    """The harness's runner on the same model and rows: import, session load, first call, 100 timed runs, report.
    Against ``test_bare_session_run_100_rows`` this is the runner's whole overhead."""
    from mtl_edge import runtimes
    from mtl_edge.runtimes.runner import run_job

    job = {"runtime": "onnxruntime", "runtime_module": str(runtimes.get_runtime("onnxruntime").file),
           "artefacts": [{"name": "multi", "path": str(multi_onnx)}], "inputs": str(multi_onnx.with_suffix(".npy")),
           "input_name": "features", "threads": 1, "warmup": 0, "min_runs": 100, "min_secs": 0.0, "max_secs": 10.0}
    report = benchmark(run_job, job)
    assert report["total"]["runs"] == 100


def test_training_step_batch_64(benchmark):
    """One optimizer step of the demo's multi-task model (AdamW, batch 64, the trainer's per-task losses)."""
    import torch

    from mtl_edge.train.models import create_model
    from mtl_edge.train.trainer import batch_losses

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("dnn", input_dim=820, tasks=TASKS, hidden=(512, 512, 512)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(64, 820)
    tasks = list(TASKS)
    batch_tasks = torch.arange(64) % len(tasks)
    targets = torch.tensor([i % TASKS[tasks[t]] for i, t in enumerate(batch_tasks.tolist())])

    def step():
        opt.zero_grad()
        loss = sum(batch_losses(model, x, batch_tasks, targets, tasks).values())
        loss.backward()
        opt.step()
        return float(loss)

    assert np.isfinite(benchmark(step))
