"""What the WaveNet family costs on this machine: a training step and inference, at the paper's size and scaled down.

For each trunk size: seconds per optimizer step of the trainer's own code (lee2019 recipe, batch
48 of 1 s demo clips, tasks scene + next_step + denoise + upsample mixed as the trainer mixes
them), with the gradient accumulated in the model's chunks (the trainer's way) and, for the small
trunk, over the whole batch at once (the difference is the kernel zeroing fresh pages); the
epoch time that implies on the demo corpus; and the inference time per 1 s clip of the
classification head alone (torch eager, one thread: the issue's budget is about 0.1 s a clip at
the paper's size), and the same graph exported to ONNX and run by onnxruntime (one thread) at fp32 and
dynamic int8 with signed and with unsigned weights: the measurement behind the export's choice of
unsigned weights for convolutional graphs (``mtl_edge.export.onnx.dynamic_weight_type``).

Run: .venv/bin/python benchmarks/wavenet_cost.py [--corpus data/demo] [--steps 3]
Result: benchmarks/results/wavenet_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mtl_edge import atomic
from mtl_edge.bench.environment import local_environment
from mtl_edge.bench.load import gate, local_load, script_argv
from mtl_edge.data.demo.builder import DemoConfig, build_demo
from mtl_edge.features.waveform import WaveformConfig
from mtl_edge.train.data import load_task_data
from mtl_edge.train.models import create_model, model_entry
from mtl_edge.train.trainer import _optimizer, _param_groups, batch_losses, chunked_backward, recipe_config
from mtl_edge.train.weighting import create_weighting

TASKS = ["scene", "next_step", "denoise", "upsample"]
SIZES = {"paper 3x6x64": {"channels": 64, "blocks": 3, "layers": 6},
         "scaled 2x5x16": {"channels": 16, "blocks": 2, "layers": 5, "tag_hidden": 128, "aux_hidden": 32}}


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def step_cost(data, size: dict, steps: int, chunked: bool) -> dict:
    """Mean wall, user and system seconds of ``steps`` optimizer steps (after one warm-up step)."""
    cfg = recipe_config("lee2019", model="wavenet", model_args=size)
    torch.manual_seed(0)
    model = create_model("wavenet", **model_entry("wavenet").build_args(data.input_dim, data.specs, cfg))
    model.attach_data(data)
    model.train()
    tasks = list(data.tasks)
    weighting = create_weighting(cfg.weighting, tasks)
    optimizer = _optimizer(cfg, _param_groups(cfg, model, data.specs, []))
    rows, task_ids, targets = (torch.from_numpy(a) for a in data.samples("train"))
    x_all = torch.from_numpy(data.inputs)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    timings = []
    for step in range(steps + 1):
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        x, bt, y = x_all[rows[idx]], task_ids[idx], targets[idx]
        t0, (u0, s0) = time.perf_counter(), _usage()
        optimizer.zero_grad(set_to_none=True)
        if chunked:
            chunked_backward(model, weighting, x, bt, y, tasks, None, data.specs, model.train_chunk)
        else:
            losses = batch_losses(model, x, bt, y, tasks, None, data.specs)
            weighting.backward(losses, model.shared_parameters(), {t: int((bt == i).sum()) for i, t in enumerate(tasks)})
        optimizer.step()
        (u1, s1) = _usage()
        if step:  # the first step warms up allocator and kernels
            timings.append((time.perf_counter() - t0, u1 - u0, s1 - s0))
    wall, user, system = (float(np.mean(v)) for v in zip(*timings))
    steps_per_epoch = -(-len(rows) // cfg.batch_size)
    return {"chunk": model.train_chunk if chunked else cfg.batch_size, "step_wall_s": round(wall, 3),
            "step_user_s": round(user, 3), "step_system_s": round(system, 3), "steps_per_epoch": steps_per_epoch,
            "epoch_estimate_min": round(wall * steps_per_epoch / 60, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def inference_cost(data, size: dict, clips: int) -> dict:
    """Milliseconds per 1 s clip through the trunk and the scene head (eval, no gradients)."""
    cfg = recipe_config("lee2019", model="wavenet", model_args=size)
    model = create_model("wavenet", **model_entry("wavenet").build_args(data.input_dim, {"scene": data.specs["scene"]}, cfg))
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(data.inputs[:clips]))
    with torch.no_grad():
        model.forward_tasks(x[:1], ["scene"])
        t0 = time.perf_counter()
        for i in range(clips):
            model.forward_tasks(x[i:i + 1], ["scene"])
        wall = time.perf_counter() - t0
    return {"ms_per_clip": round(1000 * wall / clips, 2), "clips": clips}


def onnx_cost(data, size: dict, clips: int, workdir: Path) -> dict:
    """Milliseconds per 1 s clip of the trunk + scene head in onnxruntime: fp32 and dynamic int8 with each weight type."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mtl_edge.export.graph import export_graph
    from mtl_edge.export.onnx import export_fp32

    cfg = recipe_config("lee2019", model="wavenet", model_args=size)
    torch.manual_seed(0)
    model = create_model("wavenet", **model_entry("wavenet").build_args(data.input_dim, {"scene": data.specs["scene"]}, cfg))
    paths = {"fp32": workdir / "fp32.onnx"}
    export_fp32(export_graph(model, ["scene"], data.input_dim, "wavenet", "waveform"), data.input_dim, paths["fp32"], "wavenet")
    quant_pre_process(str(paths["fp32"]), str(workdir / "pre.onnx"))
    for weights in ("QInt8", "QUInt8"):
        paths[f"int8_dynamic_{weights}"] = workdir / f"{weights}.onnx"
        quantize_dynamic(str(workdir / "pre.onnx"), str(paths[f"int8_dynamic_{weights}"]), per_channel=True,
                         weight_type=getattr(QuantType, weights))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    x = np.ascontiguousarray(data.inputs[:clips], dtype=np.float32)
    out = {}
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {"waveform": x[:1]})
        times = []
        for i in range(clips):
            t0 = time.perf_counter()
            session.run(None, {"waveform": x[i:i + 1]})
            times.append(time.perf_counter() - t0)
        out[f"{name}_p50_ms"] = round(1000 * float(np.median(times)), 2)
    return {**out, "clips": clips, "threads": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/demo"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--clips", type=int, default=20, help="clips timed for inference")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "wavenet_cost.json")
    parser.add_argument("--allow-busy", action="store_true",
                        help="write a committed result even when the 1-minute load is above 0.5 (recorded)")
    args = parser.parse_args()
    started_load = gate(args.allow_busy, "wavenet_cost.py", args.out)
    torch.set_num_threads(1)  # as `train` runs each model (one thread; two models side by side)
    build_demo(DemoConfig(), args.corpus)
    data = load_task_data(args.corpus, TASKS, WaveformConfig(), progress=False)
    results = {}
    for name, size in SIZES.items():
        with tempfile.TemporaryDirectory() as workdir:
            entry = {"model_args": size, "train_chunked": step_cost(data, size, args.steps, chunked=True),
                     "inference": inference_cost(data, size, args.clips),
                     "onnxruntime": onnx_cost(data, size, args.clips, Path(workdir))}
        if name.startswith("scaled"):  # at the paper's size a whole batch's activations need tens of GB
            entry["train_whole_batch"] = step_cost(data, size, args.steps, chunked=False)
        results[name] = entry
        print(name, json.dumps(entry))
    record = {
        "benchmark": "wavenet_cost", "argv": script_argv(), **started_load, "load_1m_at_end": local_load()[0],
        "tasks": TASKS, "batch_size": 48, "clip_samples": data.input_dim, "threads": 1,
        "train_samples": int(len(data.samples("train")[0])), "results": results,
        "machine": {**local_environment(), "arch": platform.machine(), "torch": torch.__version__},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_json(args.out, record, sort_keys=False)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
