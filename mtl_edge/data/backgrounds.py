"""Background recordings of a corpus: real noise to mix into clips (augmentation, denoising).

A corpus marks its background-only clips with ``kind=silence`` in the manifest's ``kind`` column
(the demo corpus's ``_silence_`` clips: stretches of its scenes' real background recordings). Only
the training split's are used, so no test audio leaks into training through the noise.
"""

from __future__ import annotations

from pathlib import Path

from mtl_edge.data.manifest import Manifest, read_manifest
from mtl_edge.errors import MtlEdgeError

BACKGROUND_KIND = "silence"


def background_rels(manifest: Manifest, split: str = "train") -> list[str]:
    """The background recordings of ``split``, as corpus-relative paths (sorted; empty when there are none)."""
    return sorted({r.path for r in manifest.rows if r.split == split and r.extra.get("kind") == BACKGROUND_KIND})


def background_paths(corpus: str | Path | Manifest, split: str = "train") -> list[Path]:
    """The background recordings of ``split`` (absolute paths, sorted); a clear error when there are none."""
    manifest = corpus if isinstance(corpus, Manifest) else read_manifest(corpus, check_files=False)
    rels = background_rels(manifest, split)
    if not rels:
        raise MtlEdgeError(
            f"{manifest.root}: no background recordings in the {split} split (clips with kind={BACKGROUND_KIND} in the "
            "manifest's kind column, as the demo corpus's _silence_ clips): background noise needs them"
        )
    return [manifest.root / rel for rel in rels]
