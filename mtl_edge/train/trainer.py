"""The trainer: mini-batch training of one model on one set of tasks, resumable at every epoch.

All tasks' samples are shuffled together before batching. A batch goes through the trunk once;
each task's head sees only that task's samples, so a sample updates the trunk and its own head
and no other. Each task's loss, target and validation metric come from its ``TaskSpec``. Model
selection uses the validation split (the mean over the selecting tasks of their selection
metric, accuracy for classification), with early stopping, or, with a step budget
(``TrainConfig.steps``), exactly that many optimizer steps and no early stopping, so that runs on
different task sets train equally long (model selection stays). Everything that decides the outcome (weights, optimizer, weighting, both random
generators, early-stopping state, learning curves) is saved after every epoch, so ``resume``
reaches the same final model as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.train.checkpoint import load_payload, save_atomic, save_checkpoint
from mtl_edge.train.data import TaskData
from mtl_edge.train.metrics import task_metrics
from mtl_edge.train.models import check_tasks, create_model, model_entry
from mtl_edge.train.weighting import create_weighting

STATE_FORMAT = "mtl-edge-train-state"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters: the same whatever the set of tasks, so task sets are comparable."""

    model: str = "dnn"
    hidden: tuple[int, ...] = (512, 512, 512)  # measured: 512 keeps the 4-task model within 1-2 points of single-task
    dropout: float = 0.2
    optimizer: str = "adam"  # adam | sgd (momentum)
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 200
    patience: int = 30  # epochs without a better validation score before stopping
    mixup: float = 0.4  # within-task mixup, Beta(a, a); 0 turns it off
    sampling: str = "shuffle"  # shuffle: all tasks' samples shuffled together; balanced: every batch holds each task equally
    batches_per_epoch: int = 0  # an epoch (validation, checkpoint, lr decay) every this many batches; 0: one pass over the samples
    select: str = "mean"  # model selection on the validation split: mean or worst per-task accuracy
    weighting: str = "uniform"
    seed: int = 0
    steps: int = 0  # > 0: exactly this many optimizer steps, no early stopping (epochs, patience unused)
    model_args: dict = field(default_factory=dict)  # the model family's own size options (e.g. wavenet channels)
    augment: dict = field(default_factory=dict)  # AugmentConfig JSON: augmented copies of training clips (none when empty)
    label_fraction: float = 1.0  # of each labelled task's training samples kept (stratified; a scarce-label regime)
    unlabeled_seconds: float = 0.0  # audio in the self-supervised tasks' training pool (0: every training clip)
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    head_lr: dict = field(default_factory=dict)  # learning rate per head group ("tagging", "auxiliary"); lr = the trunk's
    lr_decay: float = 1.0  # every lr times this ...
    lr_decay_every: int = 0  # ... every this many epochs (0: constant)
    lr_schedule: str = "step"  # step (the decay above) or onecycle (warm up to lr, then anneal; needs a step budget)
    exclude: dict = field(default_factory=dict)  # task -> labels whose training samples are left out (validation, test keep them)

    def to_json(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        if not self.steps:  # configs (and resumable states) written before step budgets stay equal
            del d["steps"]
        if not self.model_args:  # likewise before model options
            del d["model_args"]
        if not self.augment:  # and before augmentation
            del d["augment"]
        if not self.exclude:  # and before exclusions
            del d["exclude"]
        d["betas"] = list(self.betas)
        for key, default in (("betas", [0.9, 0.999]), ("head_lr", {}), ("lr_decay", 1.0), ("lr_decay_every", 0),
                             ("label_fraction", 1.0), ("unlabeled_seconds", 0.0), ("sampling", "shuffle"),
                             ("batches_per_epoch", 0), ("lr_schedule", "step")):
            if d[key] == default:  # and before training recipes
                del d[key]
        return d

    def augment_config(self):
        """The ``AugmentConfig`` of ``augment`` (inactive when empty)."""
        from mtl_edge.features.augment import AugmentConfig

        return AugmentConfig.from_json(self.augment)

    def epochs_for(self, batches_per_epoch: int) -> int:
        """Epochs to run: ``epochs``, or as many as the step budget needs (the last one may be cut short)."""
        return -(-self.steps // batches_per_epoch) if self.steps else self.epochs

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["hidden"] = tuple(d["hidden"])
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def lr_at(self, base: float, epoch: int) -> float:
        """A group's learning rate in ``epoch`` (0-based) under the step decay."""
        return base * self.lr_decay ** (epoch // self.lr_decay_every) if self.lr_decay_every else base

    def lr_at_step(self, base: float, step: int) -> float:
        """A group's learning rate at optimizer ``step`` (0-based) of the ``onecycle`` schedule: torch's
        ``OneCycleLR`` with its defaults (cosine from base/25 up to base over the first 30 % of the step
        budget, then cosine down to base/25e4), as a function of the step so that a resumed run continues it."""
        if not self.steps:
            raise MtlEdgeError("the onecycle learning-rate schedule needs a step budget (--steps)")
        start, end, warm = base / ONECYCLE_DIV, base / ONECYCLE_DIV / ONECYCLE_FINAL_DIV, ONECYCLE_WARMUP * self.steps - 1

        def cosine(a: float, b: float, fraction: float) -> float:
            return b + (a - b) * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction)))) / 2

        if step <= warm:
            return cosine(start, base, step / warm if warm > 0 else 1.0)
        return cosine(base, end, (step - warm) / (self.steps - 1 - warm))


LR_SCHEDULES = ("step", "onecycle")
ONECYCLE_DIV, ONECYCLE_FINAL_DIV, ONECYCLE_WARMUP = 25.0, 1e4, 0.3  # torch.optim.lr_scheduler.OneCycleLR's defaults

# Training recipes: TrainConfig fields of a paper's setup (``train --recipe NAME``; options given beside it win).
RECIPES: dict[str, dict] = {
    # Lee et al. 2019 (WaveNet + self-supervised auxiliaries): the summed task losses, Adam
    # (0.9, 0.99) without weight decay, trunk 3e-4 / tagging head 5.37e-5 / auxiliary heads 5e-3,
    # x0.95 every 5 epochs, batch 48, no mixup; every batch holds labelled and unlabelled samples alike
    "lee2019": {"weighting": "sum", "optimizer": "adam", "lr": 3e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,
                "head_lr": {"tagging": 5.37e-5, "auxiliary": 5e-3}, "lr_decay": 0.95, "lr_decay_every": 5,
                "batch_size": 48, "mixup": 0.0, "sampling": "balanced"},
    # Small keyword CNNs as the field trains them: no mixup (a mix of two words is no word; SpecAugment is
    # the model's own augmentation), Adam with a one-cycle schedule peaking at 3e-3 over a budget of
    # 1,500 steps of 64 (about 40 epochs of the demo's kws). Measured on the demo corpus's kws, sixteen
    # voices, seed 0 (experiments/README.md): the DNN's defaults (mixup 0.4, a constant 1e-3) gave the CNN
    # 0.62 on the test split, a step decay (2e-3 x0.9 every 2 epochs, no mixup) 0.67, this recipe 0.74.
    "kws_cnn": {"optimizer": "adam", "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 64, "mixup": 0.0,
                "lr_schedule": "onecycle", "steps": 1500},
}
# The recipe a model family trains with unless told otherwise (``train --recipe none``: the plain defaults).
MODEL_RECIPES = {"wavenet": "lee2019", "logmel_cnn": "kws_cnn"}
HEAD_GROUPS = ("tagging", "auxiliary")  # labelled tasks' heads, reconstruction heads


def recipe_config(name: str, **given) -> "TrainConfig":
    """``TrainConfig`` of recipe ``name`` with ``given`` fields on top."""
    if name not in RECIPES:
        raise MtlEdgeError(f"unknown training recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], **given})


@dataclass
class FitResult:
    model: nn.Module
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def predict(model: nn.Module, features: np.ndarray, batch: int | None = None, tasks: list[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs of every task (or of ``tasks``) for every row of ``features`` (the model inputs; eval mode, no gradients)."""
    model.eval()
    if batch is None:  # the model's own (a conv trunk's activations are many times its input), else ~16 MB of input
        batch = getattr(model, "predict_batch", None) or \
            max(16, min(4096, 4_000_000 // max(1, features.shape[1] if features.ndim > 1 else 1)))
    outs: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for i in range(0, len(features), batch):
            x = torch.from_numpy(np.ascontiguousarray(features[i:i + batch]))
            for task, logits in (model(x) if tasks is None else model.forward_tasks(x, tasks)).items():
                outs.setdefault(task, []).append(logits.numpy())
    return {t: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for t, v in outs.items()}


def batch_losses(model: nn.Module, x: torch.Tensor, batch_tasks: torch.Tensor, targets: torch.Tensor,
                 tasks: list[str], mix: tuple[float, torch.Tensor] | None = None, specs: dict | None = None,
                 dense: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per-task losses of a mixed batch: the trunk runs once, each head sees only its own samples.

    A task's loss is the sum of its samples' losses (the spec's loss; cross-entropy for
    classification) divided by the batch size, so the uniform sum over tasks is the mean over the
    batch's samples. ``mix = (lam, partner)`` applies mixup: sample i is blended with sample
    ``partner[i]`` (of the same task) and its loss is ``lam * L(y_i) + (1 - lam) * L(y_partner)``; a
    task whose target is the input rebuilds the blended input. The model's ``training_view`` of ``x``
    (e.g. a random crop) comes first. ``dense``: task -> target table of the multilabel and frame tasks,
    whose ``targets`` are row ids of it (``TaskRows.dense``).
    """
    x = _training_view(model, x)
    if mix is not None:
        lam, partner = mix
        x = lam * x + (1 - lam) * x[partner]
        mix = (lam, targets[partner])
    return _mixed_losses(model, x, batch_tasks, targets, tasks, mix, specs, len(x), dense)


def _mixed_losses(model, x, batch_tasks, targets, tasks, mix, specs, denominator: int, dense=None) -> dict[str, torch.Tensor]:
    """``batch_losses`` on an already blended ``x``; ``mix = (lam, partner targets)``; each task's
    summed loss divided by ``denominator`` (the whole batch's size when ``x`` is a chunk of it)."""
    from mtl_edge.tasks import corpus_task_spec

    specs = specs or {t: corpus_task_spec(t, []) for t in tasks}
    masks = {task: batch_tasks == i for i, task in enumerate(tasks)}
    masks = {task: mask for task, mask in masks.items() if mask.any()}
    outputs = model.task_outputs(x, masks)
    losses = {}
    for task, mask in masks.items():
        spec, out = specs[task], outputs[task]
        loss_fn = spec.loss_fn()
        if spec.kind in ("multilabel", "frame") and (dense is None or task not in dense):
            raise MtlEdgeError(f"task {task!r}: a {spec.kind} task's losses need its target table (dense=)")
        lookup = (lambda ids: dense[task][ids]) if spec.kind in ("multilabel", "frame") else (lambda ids: ids)
        if spec.target == "input":
            loss = loss_fn(out, x[mask])
        else:
            loss = loss_fn(out, lookup(targets[mask]))
            if mix is not None:
                lam, partner_targets = mix
                loss = lam * loss + (1 - lam) * loss_fn(out, lookup(partner_targets[mask]))
        losses[task] = loss / denominator
    return losses


def _training_view(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    view = getattr(model, "training_view", None)
    return x if view is None else view(x)


SAMPLINGS = ("shuffle", "balanced")


def epoch_batches(sample_tasks: torch.Tensor, n_tasks: int, cfg: TrainConfig, batches: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of sample positions.

    ``shuffle``: every sample once, all tasks shuffled together (a task's share of a batch is its
    share of the samples). ``balanced``: ``batches`` batches, each with ``batch_size / tasks`` samples
    of every task (the remainder to the first tasks), drawn from a fresh permutation of the task's
    samples and another when it runs out: a task with few samples (scarce labels beside a large
    unlabelled pool) is seen as often as the others, as in Lee et al. 2019's batches. Both draw only
    from ``generator``, so a resumed epoch is the same epoch. With ``cfg.batches_per_epoch`` set, a
    shuffled epoch is ``batches`` batches of successive permutations (the last batch full)."""
    if cfg.sampling not in SAMPLINGS:
        raise MtlEdgeError(f"unknown sampling {cfg.sampling!r}; samplings: {', '.join(SAMPLINGS)}")
    if cfg.sampling == "shuffle":
        order = torch.randperm(len(sample_tasks), generator=generator)
        if cfg.batches_per_epoch:
            need = batches * cfg.batch_size
            order = torch.cat([order] + [torch.randperm(len(sample_tasks), generator=generator)
                                         for _ in range(-(-need // len(order)) - 1)])[:need]
        return [order[start:start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
    if cfg.batch_size < n_tasks:
        raise MtlEdgeError(f"balanced sampling needs a batch of at least one sample per task ({n_tasks}), "
                           f"not {cfg.batch_size}")
    streams = []
    for i in range(n_tasks):
        positions = torch.nonzero(sample_tasks == i).flatten()
        share = cfg.batch_size // n_tasks + (1 if i < cfg.batch_size % n_tasks else 0)
        need = batches * share
        draws = [positions[torch.randperm(len(positions), generator=generator)] for _ in range(-(-need // len(positions)))]
        streams.append(torch.cat(draws)[:need].view(batches, share))
    return list(torch.cat(streams, dim=1))


def chunked_backward(model: nn.Module, weighting, x: torch.Tensor, batch_tasks: torch.Tensor, targets: torch.Tensor,
                     tasks: list[str], mix, specs, chunk: int, dense=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The gradient of one batch, accumulated over chunks of ``chunk`` samples (for a weighting that is
    a fixed sum of the task losses, the same gradient as the whole batch at once).

    Why: a convolutional trunk on raw audio keeps several activations of [batch, channels, samples]
    for the backward pass; past ~32 MB each is a fresh memory map whose pages the kernel zeroes on
    every step (measured, WaveNet 2x5x16 on 1 s clips, batch 48: 9.3 s a step, 6.6 s of it system
    time; in chunks of 8: 2.6 s)."""
    x = _training_view(model, x)
    if mix is not None:
        lam, partner = mix
        x = lam * x + (1 - lam) * x[partner]
        mix = (lam, targets[partner])
    totals: dict[str, torch.Tensor] = {}
    counts = {task: int((batch_tasks == i).sum()) for i, task in enumerate(tasks)}
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        losses = _mixed_losses(model, x[part], batch_tasks[part], targets[part], tasks,
                               None if mix is None else (mix[0], mix[1][part]), specs, len(x), dense)
        weighting.combine(losses, counts).backward()
        for task, value in losses.items():
            totals[task] = totals.get(task, 0.0) + value.detach()
    return weighting.combine(totals, counts).detach(), totals


def mixup_partners(batch_tasks: torch.Tensor, alpha: float, generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """Mixup within tasks: one lambda per batch (>= 0.5, so the sample's own label dominates) and,
    for every sample, a partner of the same task."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item()) if alpha > 0 else 1.0
    lam = max(lam, 1 - lam)
    partner = torch.arange(len(batch_tasks))
    for value in torch.unique(batch_tasks):
        members = torch.nonzero(batch_tasks == value).flatten()
        partner[members] = members[torch.randperm(len(members), generator=generator)]
    return lam, partner


def _param_groups(cfg: TrainConfig, model: nn.Module, specs: dict, extra: list) -> list[dict]:
    """One group at ``cfg.lr`` (trunk, weighting), plus one per head group of ``cfg.head_lr``."""
    unknown = sorted(set(cfg.head_lr) - set(HEAD_GROUPS))
    if unknown:
        raise MtlEdgeError(f"head_lr: unknown head group(s) {', '.join(unknown)}; groups: {', '.join(HEAD_GROUPS)}")
    if not cfg.head_lr:
        return [{"params": [*model.parameters(), *extra], "lr": cfg.lr}]
    grouped: dict[str, list] = {g: [] for g in cfg.head_lr}
    taken = set()
    for task, head in model.heads.items():
        group = "tagging" if specs[task].needs_labels else "auxiliary"
        if group in grouped:
            grouped[group] += list(head.parameters())
            taken |= {id(p) for p in head.parameters()}
    rest = [p for p in model.parameters() if id(p) not in taken] + list(extra)
    return [{"params": rest, "lr": cfg.lr}] + [{"params": ps, "lr": cfg.head_lr[g]} for g, ps in grouped.items() if ps]


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """``params``: parameters, or param groups (each with its own "lr")."""
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise MtlEdgeError(f"unknown optimizer {cfg.optimizer!r} (adam or sgd)")


def split_metrics(model: nn.Module, data: TaskData, split: str, metrics=None, tasks: list[str] | None = None) -> dict[str, dict]:
    """Per task (of ``tasks``, default all): its spec's metrics on ``split`` (tasks without samples there are left out).

    ``metrics(spec, outputs, targets, inputs)`` defaults to ``task_metrics``; validation passes a
    cheaper one that computes only the selection metric."""
    metrics = metrics or task_metrics
    model.attach_data(data)
    chosen = {t: rows for t, rows in data.tasks.items() if tasks is None or t in tasks}
    # only the split's clips go through the model (a conv trunk costs per clip; the training rows are most of them)
    needed = np.unique(np.concatenate([rows.rows[split] for rows in chosen.values()]))
    if len(needed) == 0:
        return {}
    outputs = predict(model, data.inputs[needed], tasks=None if tasks is None else list(chosen))
    out = {}
    for task, rows in chosen.items():
        idx = rows.rows[split]
        if len(idx) == 0:
            continue
        at = np.searchsorted(needed, idx)
        out[task] = metrics(rows.spec, outputs[task][at], rows.dense_targets(split), data.inputs[idx])
    return out


def _selection_metric(spec, outputs, targets, inputs) -> dict[str, float]:
    if spec.kind == "classification" and spec.select_metric == "accuracy":
        return {"accuracy": float((outputs.argmax(axis=1) == targets).mean())}
    return {spec.select_metric: task_metrics(spec, outputs, targets, inputs)[spec.select_metric]}


def validation_score(model: nn.Module, data: TaskData, split: str = "validation") -> dict[str, float]:
    """The selection metric on ``split`` (accuracy for classification) of each task that selects models
    (of every task when none does). Only those tasks run: a self-supervised task's own trunk pass on its
    corrupted input would triple a WaveNet's validation time for a number no choice depends on."""
    selecting = [t for t, rows in data.tasks.items() if rows.spec.selects] or None
    return {t: m[data.tasks[t].spec.select_metric]
            for t, m in split_metrics(model, data, split, _selection_metric, tasks=selecting).items()}


def selection_score(scores: dict[str, float], specs: dict, select: str = "mean") -> float:
    """One number to maximise: the mean (or worst) over the selecting tasks of their selection metric,
    each turned so that higher is better; every task counts when none selects."""
    chosen = [t for t in scores if specs[t].selects] or list(scores)
    values = [specs[t].selection_score(scores[t]) for t in chosen]
    return float(np.mean(values) if select == "mean" else min(values))


def fit(data: TaskData, cfg: TrainConfig, folder: str | Path, *, resume: bool = False, progress=None, label: str = "",
        probe=None) -> FitResult:
    """Train on ``data`` into ``folder`` (``state.pt`` each epoch; ``model.pt`` = best, at the end).

    ``probe``: an observer called before every optimizer step as ``probe(step, model, x, batch_tasks,
    targets)`` (the batch before mixup); it must leave the model and the random generators as it found
    them, so a probed run trains the same model. Its ``state_dict()`` is saved with each epoch's state
    and given back to ``load_state_dict`` on resume (e.g. ``research.affinity.AffinityProbe``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.pt"
    tasks = list(data.tasks)
    specs = data.specs
    entry = model_entry(cfg.model)
    check_tasks(cfg.model, specs)
    if entry.input_kind != data.input_kind:
        raise MtlEdgeError(f"model {cfg.model!r} takes {entry.input_kind} input; the data holds {data.input_kind}")
    build_args = entry.build_args(data.input_dim, specs, cfg)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **build_args)
    train_rows, train_tasks, train_targets = data.samples("train")
    model.fit_input_statistics(torch.from_numpy(data.inputs[np.unique(train_rows)]))
    model.attach_data(data)
    weighting = create_weighting(cfg.weighting, tasks)
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise MtlEdgeError(f"unknown learning-rate schedule {cfg.lr_schedule!r}; schedules: {', '.join(LR_SCHEDULES)}")
    if cfg.lr_schedule == "onecycle" and not cfg.steps:
        raise MtlEdgeError("the onecycle learning-rate schedule needs a step budget (--steps): it anneals to the last step")
    groups = _param_groups(cfg, model, specs, list(weighting.parameters()))
    base_lrs = [g["lr"] for g in groups]
    optimizer = _optimizer(cfg, groups)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    start_epoch, best_score, best_epoch, best_state, history, curves = 0, float("-inf"), -1, None, [], []

    if resume and state_path.exists():
        state = load_payload(state_path, STATE_FORMAT)
        saved, now = {**state["train_config"], "tasks": state["tasks"]}, {**cfg.to_json(), "tasks": tasks}
        if saved != now:
            diff = ", ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}"
                             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
            raise MtlEdgeError(f"{state_path}: saved with another configuration or task set ({diff}); cannot resume it")
        model.load_state_dict(state["model"])
        weighting.load_state_dict(state["weighting"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        best_state, history, curves = state["best_state"], state["history"], state["curves"]
        if probe is not None:
            if "probe" not in state:
                raise MtlEdgeError(f"{state_path}: saved without the probe this run measures with; cannot resume it")
            probe.load_state_dict(state["probe"])

    x_all = torch.from_numpy(data.inputs)
    rows_t, tasks_t, targets_t = (torch.from_numpy(a) for a in (train_rows, train_tasks, train_targets))
    dense = {t: torch.from_numpy(r.dense) for t, r in data.tasks.items() if r.dense is not None}
    n = len(rows_t)
    shared = model.shared_parameters()
    # clips per forward/backward pass: the model's own (a conv trunk's activations are large), when
    # the weighting's gradient is a fixed sum of the task losses (pcgrad and uncertainty need the batch)
    chunk = getattr(model, "train_chunk", None) if weighting.chunkable else None
    batches_per_epoch = cfg.batches_per_epoch or max(1, -(-n // cfg.batch_size))
    epochs = cfg.epochs_for(batches_per_epoch)
    bar_task = progress.add_task(f"{label} epochs", total=epochs, completed=start_epoch) if progress else None

    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        if not cfg.steps and epoch - best_epoch > cfg.patience and best_epoch >= 0:
            break
        model.train()
        for group, base in zip(optimizer.param_groups, base_lrs):  # the step decay (a function of the epoch: resumable)
            group["lr"] = cfg.lr_at(base, epoch)
        for b, idx in enumerate(epoch_batches(tasks_t, len(tasks), cfg, batches_per_epoch, shuffle)):
            if cfg.steps and epoch * batches_per_epoch + b >= cfg.steps:
                break  # the budget ends inside this epoch: validate and select on what was trained
            if cfg.lr_schedule == "onecycle":
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = cfg.lr_at_step(base, epoch * batches_per_epoch + b)
            batch_tasks = tasks_t[idx]
            if probe is not None:
                probe(epoch * batches_per_epoch + b, model, x_all[rows_t[idx]], batch_tasks, targets_t[idx])
            mix = mixup_partners(batch_tasks, cfg.mixup, shuffle) if cfg.mixup > 0 else None
            optimizer.zero_grad(set_to_none=True)
            if chunk and len(idx) > chunk:
                total, losses = chunked_backward(model, weighting, x_all[rows_t[idx]], batch_tasks, targets_t[idx], tasks,
                                                 mix, specs, chunk, dense)
            else:
                losses = batch_losses(model, x_all[rows_t[idx]], batch_tasks, targets_t[idx], tasks, mix, specs, dense)
                counts = {task: int((batch_tasks == i).sum()) for i, task in enumerate(tasks)}
                total = weighting.backward(losses, shared, counts)
            if not torch.isfinite(total):
                raise MtlEdgeError(
                    f"{label or 'training'}: loss became {total.item()} at epoch {epoch + 1}, batch {b + 1} "
                    f"({', '.join(f'{t} {v.item():.4g}' for t, v in losses.items())}); lower --lr. "
                    f"The last good state is kept in {state_path}"
                )
            optimizer.step()
            for task, value in losses.items():
                count = int((batch_tasks == tasks.index(task)).sum())
                curves.append([epoch, b, task, float(value.item()) * len(idx) / count, count])
        scores = validation_score(model, data)
        score = selection_score(scores, specs, cfg.select)
        record = {"epoch": epoch + 1, "validation_accuracy": {t: v for t, v in scores.items() if specs[t].kind == "classification"},
                  "validation_mean": score}
        if any(specs[t].kind != "classification" for t in scores):
            record["validation_metric"] = {t: {specs[t].select_metric: v} for t, v in scores.items()}
        history.append(record)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_atomic(state_path, {
            "format": STATE_FORMAT, "version": 1, "epoch": epoch, "tasks": tasks, "train_config": cfg.to_json(),
            "model": model.state_dict(), "weighting": weighting.state_dict(), "optimizer": optimizer.state_dict(),
            "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
            "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state,
            "history": history, "curves": curves, **({"probe": probe.state_dict()} if probe is not None else {}),
        })
        if progress:
            progress.update(bar_task, completed=epoch + 1,
                            description=f"{label} epochs (val {score:.3f}, best {best_score:.3f} @ {best_epoch + 1})")
    if progress:
        progress.update(bar_task, completed=epochs)

    if best_state is None:
        raise MtlEdgeError(f"{label or 'training'}: no epoch was completed (epochs={epochs})")
    model.load_state_dict(best_state)
    model.eval()
    _write_curves(folder / "curves.csv", curves)
    atomic.write_json(folder / "history.json", {"best_epoch": best_epoch + 1, "best_validation_mean": best_score,
                                                "epochs_run": len(history), "epochs": history})
    save_checkpoint(folder / "model.pt", model, model_name=cfg.model, build_args=build_args,
                    labels={t: r.labels for t, r in data.tasks.items()}, feature_config=data.feature_config,
                    train_config=cfg.to_json(), extra={"best_epoch": best_epoch + 1, "tasks": tasks,
                                                       "task_specs": {t: s.to_json() for t, s in specs.items()},
                                                       "input_kind": data.input_kind})
    return FitResult(model, best_epoch + 1, best_score, len(history), history)


def _write_curves(path: Path, curves: list) -> None:
    """Per-batch training loss of every task (mean over that task's samples in the batch)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", "batch", "task", "loss", "samples"])
    for epoch, batch, task, loss, count in curves:
        writer.writerow([epoch + 1, batch + 1, task, f"{loss:.6f}", count])
    atomic.write_text(path, buf.getvalue())
