"""Inter-task affinity from one multi-task training run (TAG, Fifty et al. 2021), instead of a sweep.

Every ``every`` optimizer steps, on the batch about to be trained, for each task ``i`` in it: a
lookahead step of the shared trunk with task ``i``'s gradient alone (a plain gradient step with the
training learning rate, ``theta - lr * grad L_i``, TAG's equation; heads unchanged), then for each
task ``j`` in the batch ``Z[i->j] = 1 - L_j(after) / L_j(before)`` on ``j``'s own samples of that batch.
Positive: a step for ``i`` lowers ``j``'s loss. Averaged over the training run. Beside it the cheaper
cosine similarity of the tasks' trunk gradients on the same batches.

The lookahead runs in eval mode (no dropout: no random numbers drawn) and restores the trunk's
weights exactly, so the probed run trains the same model as an unprobed one.

Layout of ``affinity/NAME/``: ``affinity.json`` (settings, both matrices, measurement counts, wall
time), ``tag.csv``, ``cosine.csv`` (rows: the task whose step is taken, columns: the task measured),
``affinity.png`` and ``run/`` (what ``fit`` writes; ``state.pt`` holds the running sums, so an
interrupted run resumes from its last epoch). A folder refuses other settings, naming them.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.train.trainer import TrainConfig

AFFINITY_FORMAT = "mtl-edge-affinity"
DEFAULT_EVERY = 10  # steps between measurements: ~ the cost of (tasks + 1) forward passes every 10 steps


class AffinityProbe:
    """A ``fit`` probe accumulating TAG lookahead affinities and gradient cosines (see the module docstring)."""

    def __init__(self, tasks: list[str], specs: dict, lr: float, every: int = DEFAULT_EVERY, dense: dict | None = None):
        """``dense``: the target tables of multilabel and frame tasks (task -> tensor; ``TaskRows.dense``)."""
        if every < 1:
            raise MtlEdgeError("--every must be at least 1")
        self.tasks, self.specs, self.lr, self.every, self.dense = list(tasks), specs, lr, every, dense
        n = len(tasks)
        self.sums = {"tag": [[0.0] * n for _ in range(n)], "cosine": [[0.0] * n for _ in range(n)]}
        self.counts = [[0] * n for _ in range(n)]
        self.measurements = 0

    def __call__(self, step: int, model, x, batch_tasks, targets) -> None:
        import torch

        from mtl_edge.train.trainer import batch_losses

        if step % self.every:
            return
        was_training = model.training
        model.eval()
        shared = model.shared_parameters()
        try:
            losses = batch_losses(model, x, batch_tasks, targets, self.tasks, None, self.specs, self.dense)
            present = [t for t in self.tasks if t in losses]
            grads = {t: torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True) for t in present}
            grads = {t: [torch.zeros_like(p) if g is None else g for p, g in zip(shared, gs)] for t, gs in grads.items()}
            before = {t: float(losses[t].detach()) for t in present}
            saved = [p.detach().clone() for p in shared]
            flat = {t: torch.cat([g.reshape(-1) for g in gs]).double() for t, gs in grads.items()}  # cosines in float64
            with torch.no_grad():
                for i in present:
                    for p, g in zip(shared, grads[i]):
                        p.sub_(self.lr * g)
                    after = batch_losses(model, x, batch_tasks, targets, self.tasks, None, self.specs, self.dense)
                    for p, original in zip(shared, saved):
                        p.copy_(original)
                    a = self.tasks.index(i)
                    for j in present:
                        b = self.tasks.index(j)
                        if before[j] > 0:
                            self.sums["tag"][a][b] += 1.0 - float(after[j]) / before[j]
                            norm = float(flat[i].norm() * flat[j].norm())
                            self.sums["cosine"][a][b] += float(flat[i] @ flat[j]) / norm if norm > 0 else 0.0
                            self.counts[a][b] += 1
            self.measurements += 1
        finally:
            model.train(was_training)

    def matrices(self) -> dict[str, list[list[float | None]]]:
        """Mean over the measurements of each (i, j); None where the two tasks never shared a batch."""
        return {name: [[(s / c if c else None) for s, c in zip(row, counts)] for row, counts in zip(sums, self.counts)]
                for name, sums in self.sums.items()}

    def state_dict(self) -> dict:
        return {"tasks": self.tasks, "every": self.every, "lr": self.lr, "sums": self.sums, "counts": self.counts,
                "measurements": self.measurements}

    def load_state_dict(self, state: dict) -> None:
        if state["tasks"] != self.tasks or state["every"] != self.every or state["lr"] != self.lr:
            raise MtlEdgeError("the saved affinity sums were measured with other settings; cannot resume them")
        self.sums, self.counts, self.measurements = state["sums"], state["counts"], state["measurements"]


@dataclass
class AffinityResult:
    folder: Path
    record: dict
    reused: bool  # the folder already held this result; nothing was trained


def affinity_settings(corpus: Path, fingerprint: str, tasks: list[str], cfg: TrainConfig, every: int,
                      input_config) -> dict:
    return {"format": AFFINITY_FORMAT, "version": 1, "corpus": str(corpus), "corpus_fingerprint": fingerprint,
            "tasks": tasks, "every": every, "lookahead_lr": cfg.lr, "train": cfg.to_json(),
            "features": input_config.to_json()}


def measure_affinity(corpus: str | Path, tasks: list[str], out: str | Path, cfg: TrainConfig, *,
                     every: int = DEFAULT_EVERY, cache_dir=None, feature_workers: int = 2) -> AffinityResult:
    """Train one model on ``tasks`` with the affinity probe and write the matrices (module docstring)."""
    import torch

    from mtl_edge.features.inputs import config_from_json
    from mtl_edge.research.sweep import config_differences, resolve
    from mtl_edge.train.data import load_task_data
    from mtl_edge.train.trainer import fit

    if len(tasks) < 2:
        raise MtlEdgeError("affinity needs at least two tasks")
    if every < 1:
        raise MtlEdgeError("--every must be at least 1")
    out = Path(out)
    sweep_config, _, _ = resolve(corpus, tasks, ["all"], 1, cfg, cache_dir=cache_dir)
    settings = affinity_settings(Path(sweep_config["corpus"]), sweep_config["corpus_fingerprint"], tasks, cfg, every,
                                 config_from_json(sweep_config["features"]))
    path = out / "affinity.json"
    if path.exists():
        previous = atomic.read_json(path, "", "; choose another --out")
        if previous.get("format") != AFFINITY_FORMAT:
            raise MtlEdgeError(f"{path} is not an affinity result; choose another --out")
        diffs = config_differences({k: v for k, v in previous.get("settings", {}).items() if k != "corpus"},
                                   {k: v for k, v in settings.items() if k != "corpus"})
        if diffs:
            raise MtlEdgeError(f"{out} holds an affinity run with other settings: {'; '.join(diffs)}. "
                               f"Rerun with the same settings, or choose another --out")
        return AffinityResult(out, previous, reused=True)
    if out.exists() and any(p.name != "run" for p in out.iterdir()):
        raise MtlEdgeError(f"{out} exists and is not an affinity folder; choose another --out")

    started = time.perf_counter()
    data = load_task_data(settings["corpus"], tasks, config_from_json(settings["features"]), cache_dir=cache_dir,
                          workers=feature_workers)
    torch.set_num_threads(1)  # small DNN: one thread is the fastest and keeps the run repeatable
    probe = AffinityProbe(tasks, data.specs, cfg.lr, every,
                          {t: torch.from_numpy(r.dense) for t, r in data.tasks.items() if r.dense is not None})
    from mtl_edge.progress import progress_bar

    with progress_bar() as progress:
        result = fit(data, cfg, out / "run", resume=True, progress=progress, label="affinity", probe=probe)
    wall = time.perf_counter() - started
    matrices = probe.matrices()
    record = {"format": AFFINITY_FORMAT, "version": 1, "settings": settings, "tasks": tasks,
              "rows_are": "the task whose lookahead step is taken (i)", "columns_are": "the task whose loss is measured (j)",
              "tag": matrices["tag"], "cosine": matrices["cosine"], "pair_measurements": probe.counts,
              "measurements": probe.measurements, "steps": cfg.steps, "best_epoch": result.best_epoch,
              "wall_s": round(wall, 2)}
    for name in ("tag", "cosine"):
        _write_matrix(out / f"{name}.csv", tasks, matrices[name])
    _plot(out / "affinity.png", tasks, matrices)
    atomic.write_json(path, record, sort_keys=False)  # last: its presence marks a finished run
    return AffinityResult(out, record, reused=False)


def _write_matrix(path: Path, tasks: list[str], grid: list[list[float | None]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step_on", *tasks])
    for task, row in zip(tasks, grid):
        writer.writerow([task, *("" if v is None else f"{v:.6g}" for v in row)])
    atomic.write_text(path, buf.getvalue())


def _plot(path: Path, tasks: list[str], matrices: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.6 * len(tasks), 1.0 + 0.7 * len(tasks)))
    for ax, (name, title) in zip(axes, (("tag", "TAG lookahead affinity Z[i->j]"), ("cosine", "gradient cosine"))):
        grid = np.array([[np.nan if v is None else v for v in row] for row in matrices[name]], dtype=float)
        limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_xlabel("task measured (j)")
        ax.set_ylabel("step on task (i)")
        ax.set_title(title)
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
