"""Options and their resolution shared by several commands (one definition, one default each).

Feature options are shared by `data prepare`, `train` and `sweep`: unset means "as `data prepare`
last wrote for the corpus, else FeatureConfig's default", so a prepared corpus trains on exactly
the features it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.logmel import FeatureConfig

Corpus = Annotated[Path, typer.Option("--corpus", help="Corpus folder (with manifest.csv).")]
TaskCorpus = Annotated[Optional[Path], typer.Option("--corpus", help="Corpus folder (with manifest.csv) of every task not written TASK@CORPUS.")]
Model = Annotated[str, typer.Option("--model", help="Registered model name.")]
Hidden = Annotated[str, typer.Option("--hidden", help="Hidden layer widths (3 equal: 128, 256 or 512).")]
ModelArgs = Annotated[Optional[str], typer.Option("--model-args", help="The model family's size options as k=v,... (wavenet: channels, blocks, layers, tag_hidden, aux_hidden; default the paper's 64, 3, 6, 512, 128; logmel_cnn: channels, n_mels, spec_augment, vtlp (percent); default 16, 40, 1, 0).")]
Augment = Annotated[Optional[str], typer.Option("--augment", help="Augment the training clips with these audiomentations transforms: pitch_shift, time_stretch, gain, background_noise (the corpus's training backgrounds), gaussian_noise (white noise), comma-separated, or all (the first four).")]
AugmentCopies = Annotated[int, typer.Option("--augment-copies", min=1, help="Augmented copies per training clip (with --augment).")]
AugmentTasks = Annotated[Optional[str], typer.Option("--augment-tasks", help="Tasks whose training samples get the copies (default: every labelled task; background noise changes a scene's label).")]
Exclude = Annotated[Optional[str], typer.Option("--exclude", help="Leave these labelled instances out of their task's training data (validation and test keep them): TASK:LABEL[,TASK:LABEL...], e.g. the shared labels `data overlap --print-exclude` prints.")]

OnBadAudio = Annotated[
    str,
    typer.Option(
        "--on-bad-audio",
        help="What to do with an unreadable, empty, truncated or non-finite audio file: fail or skip (and count).",
        case_sensitive=False,
    ),
]


def check_policy(value: str) -> str:
    from mtl_edge.data.audio import BAD_AUDIO_POLICIES

    if value not in BAD_AUDIO_POLICIES:
        raise MtlEdgeError(f"--on-bad-audio must be one of {', '.join(BAD_AUDIO_POLICIES)}, not {value!r}")
    return value


_AS_PREPARED = "default: as `data prepare` last wrote, else"
NMels = Annotated[Optional[int], typer.Option("--n-mels", min=8, help=f"Mel bands ({_AS_PREPARED} {FeatureConfig.n_mels}).")]
WinMs = Annotated[Optional[float], typer.Option("--win-ms", help=f"Analysis window in ms ({_AS_PREPARED} {FeatureConfig.win_ms:g}).")]
HopMs = Annotated[Optional[float], typer.Option("--hop-ms", help=f"Hop in ms ({_AS_PREPARED} {FeatureConfig.hop_ms:g}).")]
Cache = Annotated[Optional[Path], typer.Option("--cache", help="Feature cache folder (default: CORPUS/.features).")]


def feature_config(corpus: Path, cache: Path | None, n_mels, win_ms, hop_ms, sources=None) -> FeatureConfig:
    """The features a command uses; with ``sources`` of several corpora, the one config they must share."""
    from mtl_edge.features.cache import resolve_config

    overrides = {"n_mels": n_mels, "win_ms": win_ms, "hop_ms": hop_ms}
    if sources is not None and sources.multi:
        from mtl_edge.train.corpora import common_input_config

        return common_input_config(sources, "features", overrides, cache)
    return resolve_config(corpus, "features", overrides, cache)


Recipe = Annotated[Optional[str], typer.Option("--recipe", help="A training setup: lee2019 (the paper's: summed task losses, Adam 0.9/0.99, trunk/tagging/auxiliary lr 3e-4/5.37e-5/5e-3, x0.95 every 5 epochs, batch 48; the default for wavenet), kws_cnn (no mixup, Adam with a one-cycle schedule peaking at 3e-3 over 1,500 steps; the default for logmel_cnn), or none (the plain defaults).")]
LabelFraction = Annotated[float, typer.Option("--label-fraction", min=0.0, max=1.0, help="Keep this fraction of each labelled task's training samples (per class, seeded): a scarce-label regime.")]
UnlabeledSeconds = Annotated[float, typer.Option("--unlabeled-seconds", min=0.0, help="Seconds of training audio in the self-supervised tasks' pool (0: every training clip).")]
HeadLr = Annotated[Optional[str], typer.Option("--head-lr", help="Learning rate per head group as GROUP=LR,...: tagging (labelled tasks' heads), auxiliary (reconstruction heads); default: the recipe's, else --lr.")]


def recipe_for(model: str, recipe: str | None) -> str | None:
    """The recipe a model trains with unless told (``trainer.MODEL_RECIPES``: the paper's for wavenet,
    kws_cnn for logmel_cnn), none for the DNN."""
    from mtl_edge.train.trainer import MODEL_RECIPES

    if recipe is None:
        return MODEL_RECIPES.get(model)
    return None if recipe == "none" else recipe


def train_config(model: str, hidden: str, seed: int, weighting: str | None, epochs: int | None, model_args: str | None = None,
                 recipe: str | None = None, **given):
    """The run's TrainConfig: the recipe's fields (if any), then every option the user gave."""
    from mtl_edge.train.trainer import TrainConfig, recipe_config

    try:
        widths = tuple(int(h) for h in hidden.split(","))
    except ValueError:
        raise MtlEdgeError(f"--hidden takes comma-separated widths such as 256,256,256, not {hidden!r}") from None
    extra = {"epochs": epochs} if epochs else {}
    if model_args:
        extra["model_args"] = parse_model_args(model_args)
    if weighting:
        extra["weighting"] = weighting
    extra.update({k: v for k, v in given.items() if v is not None})
    if recipe and extra.get("head_lr"):  # a group given beside a recipe keeps the recipe's other groups
        from mtl_edge.train.trainer import RECIPES

        extra["head_lr"] = {**RECIPES.get(recipe, {}).get("head_lr", {}), **extra["head_lr"]}
    if recipe:
        return recipe_config(recipe, model=model, hidden=widths, seed=seed, **extra)
    return TrainConfig(model=model, hidden=widths, seed=seed, **extra)


def exclude_of(text: str | None) -> dict | None:
    """The ``TrainConfig.exclude`` of an --exclude value (None when not given)."""
    from mtl_edge.train.data import parse_exclude

    return parse_exclude(text) if text is not None else None


def parse_head_lr(text: str | None) -> dict[str, float] | None:
    """``tagging=1e-3,auxiliary=5e-3`` -> {"tagging": 0.001, "auxiliary": 0.005} (None when not given)."""
    from mtl_edge.train.trainer import HEAD_GROUPS

    if text is None:
        return None
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        group, sep, value = part.partition("=")
        try:
            lr = float(value) if sep else -1.0
        except ValueError:
            lr = -1.0
        if group.strip() not in HEAD_GROUPS or not lr > 0:
            raise MtlEdgeError(f"--head-lr takes GROUP=LR pairs with GROUP one of {', '.join(HEAD_GROUPS)} and LR > 0, "
                               f"such as tagging=1e-3, not {part!r}")
        out[group.strip()] = lr
    return out


def parse_model_args(text: str) -> dict[str, int]:
    """``channels=16,blocks=2`` -> {"channels": 16, "blocks": 2} (the model checks the names)."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip().lstrip("-").isdigit():
            raise MtlEdgeError(f"--model-args takes k=v pairs of integers such as channels=16,blocks=2, not {part!r}")
        out[key.strip()] = int(value)
    return out


def augment_json(augment: str | None, copies: int, tasks: str | None, seed: int) -> dict:
    """The ``TrainConfig.augment`` of the --augment options (empty: no augmentation)."""
    from mtl_edge.features.augment import DEFAULT_TRANSFORMS, AugmentConfig

    if not augment:
        if tasks:
            raise MtlEdgeError("--augment-tasks needs --augment (which transforms)")
        return {}
    names = DEFAULT_TRANSFORMS if augment.strip() == "all" else tuple(t.strip() for t in augment.split(",") if t.strip())
    chosen = tuple(t.strip() for t in (tasks or "").split(",") if t.strip())
    return AugmentConfig(copies=copies, transforms=names, tasks=chosen, seed=seed).to_json()
