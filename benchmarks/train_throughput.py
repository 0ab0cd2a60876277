"""Training throughput (samples/s) of mtl-edge's trainer against a plain PyTorch loop doing the same work.

Both train the same shared DNN on the same features and samples (all tasks shuffled together,
one trunk pass per batch, each head on its own samples, AdamW) for the same number of epochs in
one process. The trainer additionally validates and saves its resumable state every epoch and
records per-batch learning curves: the gap between the two is that overhead.

Run: .venv/bin/python benchmarks/train_throughput.py [--corpus data/demo] [--epochs 5]
(the corpus is built at --scale if absent). Result: benchmarks/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from mtl_edge.bench.load import gate, local_load, script_argv
from mtl_edge import atomic
from mtl_edge.bench.environment import local_environment
from mtl_edge.data.demo.builder import DemoConfig, build_demo
from mtl_edge.train.data import load_task_data
from mtl_edge.train.models import create_model
from mtl_edge.train.trainer import TrainConfig, fit


def plain_loop(data, cfg: TrainConfig) -> int:
    """The same training work written directly in PyTorch, with no bookkeeping."""
    torch.manual_seed(cfg.seed)
    tasks = list(data.tasks)
    model = create_model(cfg.model, input_dim=data.input_dim, tasks={t: len(r.labels) for t, r in data.tasks.items()},
                         hidden=list(cfg.hidden), dropout=cfg.dropout)
    rows, task_ids, targets = (torch.from_numpy(a) for a in data.samples("train"))
    x_all = torch.from_numpy(data.features)
    model.normalize.fit(x_all[torch.unique(rows)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(rows), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            hidden = model.embed(x_all[rows[idx]])
            loss = 0.0
            for i, task in enumerate(tasks):
                mask = task_ids[idx] == i
                if mask.any():
                    loss = loss + torch.nn.functional.cross_entropy(model.heads[task](hidden[mask]), targets[idx][mask], reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss / len(idx)).backward()
            optimizer.step()
    return len(rows) * cfg.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/demo"))
    parser.add_argument("--scale", type=float, default=1.0, help="scale to build the corpus at when it is absent")
    parser.add_argument("--tasks", default="kws,speaker,scene,instrument")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    parser.add_argument("--allow-busy", action="store_true",
                        help="write a committed result even when the 1-minute load is above 0.5 (recorded)")
    args = parser.parse_args()
    started_load = gate(args.allow_busy, "train_throughput.py", args.out)

    torch.set_num_threads(args.threads)
    build_demo(DemoConfig(scale=args.scale), args.corpus)
    tasks = args.tasks.split(",")
    data = load_task_data(args.corpus, tasks)
    # patience above the epoch count: both sides run every epoch; no mixup, which the plain loop lacks
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, mixup=0.0)
    n_samples = len(data.samples("train")[0])

    plain_loop(data, TrainConfig(epochs=1))  # warm-up: allocator, caches, lazy torch initialisation
    plain_s, trainer_s = float("inf"), float("inf")
    for _ in range(args.repeats):  # alternate the two and keep the best of each
        started = time.perf_counter()
        plain_samples = plain_loop(data, cfg)
        plain_s = min(plain_s, time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = fit(data, cfg, Path(tmp) / "run")
            trainer_s = min(trainer_s, time.perf_counter() - started)
    trainer_samples = n_samples * result.epochs_run
    record = {
        "benchmark": "train_throughput",
        "argv": script_argv(),
        **started_load, "load_1m_at_end": local_load()[0],
        "corpus_clips": int(len(data.features)),
        "tasks": tasks,
        "train_samples_per_epoch": n_samples,
        "epochs": args.epochs,
        "threads": args.threads,
        "repeats_best_of": args.repeats,
        "batch_size": cfg.batch_size,
        "hidden": list(cfg.hidden),
        "mixup": cfg.mixup,
        "plain_loop": {"wall_s": round(plain_s, 3), "samples_per_s": round(plain_samples / plain_s, 1)},
        "trainer": {"wall_s": round(trainer_s, 3), "samples_per_s": round(trainer_samples / trainer_s, 1),
                    "includes": "per-epoch validation, resumable state save, per-batch learning curves"},
        "trainer_overhead_pct": round(100 * (trainer_s / trainer_samples) / (plain_s / plain_samples) - 100, 1),
        "machine": {**local_environment(), "load_average_1m_at_end": round(os.getloadavg()[0], 2), "arch": platform.machine(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"python benchmarks/train_throughput.py --corpus {args.corpus} --epochs {args.epochs} --threads {args.threads}",
    }
    atomic.write_json(args.out, record, sort_keys=False)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
