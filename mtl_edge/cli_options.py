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
Model = Annotated[str, typer.Option("--model", help="Registered model name.")]
Hidden = Annotated[str, typer.Option("--hidden", help="Hidden layer widths (3 equal: 128, 256 or 512).")]
Weighting = Annotated[str, typer.Option("--weighting", help="Loss weighting: uniform, uncertainty or pcgrad.")]

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


def feature_config(corpus: Path, cache: Path | None, n_mels, win_ms, hop_ms) -> FeatureConfig:
    from mtl_edge.features.cache import resolve_config

    return resolve_config(corpus, "features", {"n_mels": n_mels, "win_ms": win_ms, "hop_ms": hop_ms}, cache)


def train_config(model: str, hidden: str, seed: int, weighting: str, epochs: int | None):
    from mtl_edge.train.trainer import TrainConfig

    try:
        widths = tuple(int(h) for h in hidden.split(","))
    except ValueError:
        raise MtlEdgeError(f"--hidden takes comma-separated widths such as 256,256,256, not {hidden!r}") from None
    extra = {"epochs": epochs} if epochs else {}
    return TrainConfig(model=model, hidden=widths, seed=seed, weighting=weighting, **extra)
