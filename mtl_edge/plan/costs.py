"""What a network costs on a device, read from measured benchmark lines (``mtl-edge bench``).

A *choice* is how a network is built and run: runtime, format, precision and trunk width. The
trunk costs about the same whatever its heads, so a network of any task set is costed by the
measured lines of its choice: the line of the same head count when one was measured, else linear
interpolation in the head count between the nearest measured networks (an export gives the
multi-task network with all its heads and the one-head single-task networks), else the nearest.
Every network's cost says which of these it is.

A plan runs its networks back to back in one process on each clip, so its cost is::

    latency = front-end p50 + sum of the networks' p50
    memory  = the runtime's process after import + front-end delta + sum of the networks' deltas

with the feature front-end counted once (every network takes the same clip-level features), as
a user deploying them would. ``quality`` of a choice for a task is the task's accuracy in that
choice's measured lines on the export's test split (the bench's answer check), so the plan can
prefer a precision that keeps accuracy when two choices both fit the budget.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError


@dataclass(frozen=True, order=True)
class Choice:
    runtime: str
    format: str
    precision: str
    width: int

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision} {self.width}x3"

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "format": self.format, "precision": self.precision, "width": self.width}


@dataclass(frozen=True)
class Cost:
    latency_ms: float
    memory_mb: float
    basis: str  # which measured lines give it


@dataclass
class Measured:
    """The lines of one choice: median p50 and memory delta per head count, accuracy per task."""

    by_heads: dict[int, tuple[float, float]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    artefacts: list[str] = field(default_factory=list)


@dataclass
class CostTable:
    device: str
    emulated: bool
    choices: dict[Choice, Measured]
    base_mb: dict[str, float]  # runtime -> process RSS after importing it
    frontend: dict | None  # {"p50_ms", "delta_rss_mb"} or None when no compare line measured it
    corpus_fingerprint: str | None
    exports: list[str]
    notes: list[str] = field(default_factory=list)

    def runtimes(self) -> list[str]:
        return sorted({c.runtime for c in self.choices})

    def network(self, choice: Choice, heads: int) -> Cost:
        by = self.choices[choice].by_heads
        if heads in by:
            lat, mem = by[heads]
            return Cost(lat, mem, f"measured {heads}-head network")
        below = max((h for h in by if h < heads), default=None)
        above = min((h for h in by if h > heads), default=None)
        if below is not None and above is not None:
            w = (heads - below) / (above - below)
            (l0, m0), (l1, m1) = by[below], by[above]
            return Cost(l0 + w * (l1 - l0), m0 + w * (m1 - m0),
                        f"interpolated between the measured {below}- and {above}-head networks")
        nearest = below if below is not None else above
        lat, mem = by[nearest]
        return Cost(lat, mem, f"the measured {nearest}-head network's (none with {'more' if below is not None else 'fewer'} heads)")

    def frontend_ms(self) -> float:
        return self.frontend["p50_ms"] if self.frontend else 0.0

    def frontend_mb(self) -> float:
        return self.frontend["delta_rss_mb"] if self.frontend else 0.0


def _bench_and_export(path: Path) -> tuple[Path, Path]:
    """The results folder and the export it measured: the export holding it (EXPORT/bench, the
    default), or the one the lines name (``bench --results`` elsewhere)."""
    from mtl_edge.bench.results import read_lines

    path = Path(path)
    if (path / "manifest.json").is_file():
        return path / "bench", path
    if (path.parent / "manifest.json").is_file():
        return path, path.parent
    named = {line.get("export") for p in sorted(path.glob("*.jsonl")) for line in read_lines(p) if line.get("export")}
    if len(named) == 1 and (Path(next(iter(named))) / "manifest.json").is_file():
        return path, Path(next(iter(named)))
    if len(named) > 1:
        raise MtlEdgeError(f"{path} holds lines of {len(named)} exports; pass one results folder per export")
    raise MtlEdgeError(f"{path} is not a bench folder of an export (no manifest.json in it or beside it, and no export "
                       f"its lines name is there); pass EXPORT/bench as written by mtl-edge bench")


def _width(manifest: dict, export: Path) -> int:
    train = manifest.get("train")
    if train is None:
        run_config = Path(manifest.get("run", "")) / "config.json"
        if run_config.is_file():
            train = atomic.read_json(run_config, "").get("train")
    if not train or not train.get("hidden"):
        raise MtlEdgeError(f"{export}: the export does not record its network's width (exported before plan existed "
                           f"and its run folder is gone); export the run again")
    hidden = list(train["hidden"])
    if len(set(hidden)) != 1:
        raise MtlEdgeError(f"{export}: hidden layers {hidden} are not of equal width; plan chooses among 3 equal layers")
    return int(hidden[0])


def _fingerprint(manifest: dict) -> str | None:
    if manifest.get("corpus_fingerprint"):
        return manifest["corpus_fingerprint"]
    corpus = Path(manifest.get("corpus", ""))
    if (corpus / "manifest.csv").is_file():
        from mtl_edge.features.cache import fingerprint_of

        return fingerprint_of(corpus)
    return None


def load_costs(bench_dirs: list[Path], device: str, runtimes: list[str] | None = None,
               precisions: list[str] | None = None) -> CostTable:
    """Every usable measurement of ``device`` in the bench folders, grouped by choice (module docstring).

    Refuses a folder whose lines were measured on another export (an artefact's hash differs from its
    manifest's), folders with no line of ``device``, and exports of different corpora."""
    from mtl_edge.bench.results import read_lines

    if not bench_dirs:
        raise MtlEdgeError("--bench: give at least one bench folder (EXPORT/bench)")
    samples: dict[Choice, dict] = {}
    base: dict[str, list[float]] = {}
    frontends: list[tuple[float, float]] = []
    fingerprints: dict[str, str] = {}
    emulated, exports, notes = False, [], []
    for given in bench_dirs:
        bench_dir, export = _bench_and_export(Path(given))
        manifest = atomic.read_json(export / "manifest.json", f"{export} has no manifest.json")
        paths = sorted(bench_dir.glob("*.jsonl"))
        if not paths:
            raise MtlEdgeError(f"{bench_dir} holds no benchmark results (*.jsonl); run mtl-edge bench {export} first")
        lines = [line for p in paths for line in read_lines(p)]
        devices = sorted({line.get("device") for line in lines if line.get("device")})
        mine = [line for line in lines if line.get("device") == device]
        if not mine:
            raise MtlEdgeError(f"{bench_dir} has measurements of {', '.join(devices) or 'no device'}, not {device!r}; "
                               f"bench the export with --device {device} or pass that device's bench folder")
        shas = {a["path"]: a.get("sha256") for a in manifest.get("artefacts", [])}
        verified = {a["path"]: a.get("status") for a in manifest.get("artefacts", [])}
        width = _width(manifest, export)
        fp = _fingerprint(manifest)
        if fp is not None:
            fingerprints[str(export)] = fp
        exports.append(str(export))
        used = 0
        for line in mine:
            if line.get("kind") == "compare":
                if line.get("frontend_p50_ms") is not None:
                    frontends.append((line["frontend_p50_ms"], line.get("frontend_delta_rss_mb") or 0.0))
                continue
            if line.get("kind") != "measurement" or line.get("mode") != "alone":
                continue
            artefact = line.get("artefact", "")
            if artefact in shas and line.get("artefact_sha256") != shas[artefact]:
                raise MtlEdgeError(f"{bench_dir} was measured on another export: {artefact} has hash "
                                   f"{str(line.get('artefact_sha256'))[:12]} in the bench lines but {str(shas[artefact])[:12]} "
                                   f"in {export / 'manifest.json'}; bench this export again")
            if artefact not in shas:
                raise MtlEdgeError(f"{bench_dir}: {artefact} is not an artefact of {export}; the bench folder belongs to "
                                   f"another export")
            if str(line.get("model", "")).startswith("e2e:"):
                continue  # waveform-in graphs include the front-end: not a network of a plan
            if verified.get(artefact) != "ok":
                notes.append(f"{artefact} ({line.get('runtime')}): left out, the export marked it {verified.get(artefact)} "
                             f"(it failed verification against the PyTorch model)")
                continue
            if line.get("status") != "ok" or line.get("answers_status", "ok") != "ok":
                notes.append(f"{artefact} ({line.get('runtime')}): left out, status {line.get('status')}, answers "
                             f"{line.get('answers_status')}")
                continue
            if runtimes and line["runtime"] not in runtimes or precisions and line["precision"] not in precisions:
                continue
            if line.get("p50_ms") is None or line.get("delta_rss_mb") is None:
                continue
            emulated = emulated or bool(line.get("emulated"))
            choice = Choice(line["runtime"], line["format"], line["precision"], width)
            entry = samples.setdefault(choice, {"heads": {}, "accuracy": {}, "artefacts": []})
            entry["heads"].setdefault(len(line["tasks"]), []).append((line["p50_ms"], line["delta_rss_mb"]))
            for task in line["tasks"]:
                if line.get(f"answers_accuracy_{task}") is not None:
                    entry["accuracy"].setdefault(task, []).append(line[f"answers_accuracy_{task}"])
            entry["artefacts"].append(f"{export.name}/{artefact}")
            if line.get("rss_after_import_mb") is not None:
                base.setdefault(line["runtime"], []).append(line["rss_after_import_mb"])
            used += 1
        if not used:
            raise MtlEdgeError(f"{bench_dir}: no usable measurement of {device!r} (every line failed, disagreed, or was "
                               f"left out by --runtime/--precision)")
    if len(set(fingerprints.values())) > 1:
        raise MtlEdgeError("the bench folders come from exports of different corpora: " +
                           "; ".join(f"{e}: {fp[:12]}" for e, fp in fingerprints.items()))
    choices = {}
    for choice, entry in sorted(samples.items()):
        choices[choice] = Measured(
            {h: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for h, vs in entry["heads"].items()},
            {t: statistics.fmean(vs) for t, vs in entry["accuracy"].items()}, entry["artefacts"])
    frontend = None
    if frontends:
        frontend = {"p50_ms": statistics.median(f[0] for f in frontends),
                    "delta_rss_mb": statistics.median(f[1] for f in frontends)}
    else:
        notes.append("no compare line measured the feature front-end (bench with --compare single): plan costs leave it out")
    return CostTable(device, emulated, choices, {r: statistics.median(v) for r, v in base.items()}, frontend,
                     next(iter(fingerprints.values()), None), exports, list(dict.fromkeys(notes)))
