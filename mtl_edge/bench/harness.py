"""The benchmark harness: runs the runner on a device for every artefact, checks them, hands records to listeners.

``bench(EXPORT)`` measures every artefact of one runtime (onnxruntime: the ONNX artefacts, litert:
the TFLite ones, torch: the TorchScript ones of an export made with ``--format ...,torch``; any runtime
in ``mtl_edge.runtimes``' registry by its format) listed in the export's ``manifest.json``, on the real
test clips of its ``testset.npz`` (each artefact's own input: feature rows, or one clip's waveform per
call; ``bench.inputs``), each in its own runner process. ``compare="single"`` adds, per precision, the
N single-task models loaded together in one process (co-resident, run back to back on the same clip)
and a ``compare`` line: the Georgiev et al. ratios of the multi-task model against the sum of the
single-task models.

Results: one flat JSON line per measurement / comparison, unit-suffixed, in
``RESULTS/<device>-<runtime>.jsonl`` (``RESULTS`` = ``EXPORT/bench`` by default), appended and fsync'd
one at a time by the ``results.JsonLines`` listener (other listeners: the console table, a CSV file).
``resume=True`` skips measurements (and comparisons) already in the file for the same artefact sha256,
device and settings; a torn last line is redone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mtl_edge import runtimes
from mtl_edge.bench.compare import compare_record, measure_frontend, megabytes, rounded
from mtl_edge.bench.compare import now as _now
from mtl_edge.bench.devices import Device, load_device
from mtl_edge.bench.inputs import input_name, testset_inputs
from mtl_edge.bench.load import load_fields
from mtl_edge.bench.records import Compare, Measurement
from mtl_edge.bench.results import JsonLines, Listener, read_lines
from mtl_edge.bench.session import Session, check_artefact, label as _label
from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.manifest import entries, read_manifest

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")
SETTINGS = ("threads", "cpu_affinity", "warmup_runs", "min_runs", "min_secs", "max_secs")
DEFAULT_MIN_RUNS = 100
DEFAULT_MIN_SECS = 2.0
DEFAULT_MAX_SECS = 20.0
DEFAULT_WARMUP = 20
MAX_STORED_LATENCIES = 2000  # per line; the statistics use every run


@dataclass
class BenchResult:
    results: list[Path] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)  # written by this call
    compares: list[dict] = field(default_factory=list)  # written by this call
    skipped: int = 0  # lines already in the results file (resume)


@dataclass(frozen=True)
class BenchConfig:
    """What one bench call measures and how (checked by ``bench``)."""

    export: Path
    device: Device
    runtimes: tuple[str, ...]
    precisions: tuple[str, ...] | None
    results_dir: Path
    threads: int
    warmup: int = DEFAULT_WARMUP
    min_runs: int = DEFAULT_MIN_RUNS
    min_secs: float = DEFAULT_MIN_SECS
    max_secs: float = DEFAULT_MAX_SECS
    timeout: float | None = None
    compare: str | None = None
    resume: bool = False
    frontend: bool = True
    answer_rows: int | None = None  # test clips sent to the device (evenly spaced); None: all of them

    def settings(self, runtime: str) -> dict:
        """The fields that make two measurements comparable (resume matches on them)."""
        return {"device": self.device.name, "runtime": runtime, "threads": self.threads,
                "cpu_affinity": self.device.cpu_affinity, "warmup_runs": self.warmup, "min_runs": self.min_runs,
                "min_secs": float(self.min_secs), "max_secs": float(self.max_secs),
                **({"answer_rows": self.answer_rows} if self.answer_rows else {})}


def answer_subset(n_rows: int, wanted: int | None) -> np.ndarray | None:
    """``wanted`` evenly spaced test rows (sorted), or None for all of them: an emulated device runs a
    WaveNet clip a hundred times slower, so its answer check takes a sample of the test split."""
    if wanted is None or wanted >= n_rows:
        return None
    if wanted < 1:
        raise MtlEdgeError(f"answer rows must be at least 1, not {wanted}")
    return np.unique(np.linspace(0, n_rows - 1, wanted).round().astype(np.int64))


def _settings_match(line: dict, key: dict) -> bool:
    return all(line.get(k) == v for k, v in key.items())


def _check_tflite_runtime(entry: dict, allow: bool, log: Callable) -> None:
    """Refuse an artefact that the export's tflite-runtime cross-check found wrong (see export.crosscheck)."""
    check = entry.get("tflite_runtime")
    if not check:
        log(f"note: {entry['path']} was not cross-checked under tflite-runtime at export "
            "(mtl-edge export --tflite-runtime PYTHON); the device's answers are checked instead")
        return
    if check.get("status") != "ok" and not allow:
        raise MtlEdgeError(f"{_label(entry)}: refused for tflite-runtime: at export, tflite-runtime "
                           f"{check.get('version')} {check.get('status')} ({check.get('reason')}); "
                           "use runtime litert (ai-edge-litert) on the device instead")


def _runtime_list(runtime, device: Device) -> tuple[str, ...]:
    if runtime is None:
        runtime = device.runtime
    names = [r.strip() for r in runtime.split(",")] if isinstance(runtime, str) else list(runtime)
    return tuple(dict.fromkeys(runtimes.get_runtime(r).name for r in names))


def _precision_list(precisions) -> tuple[str, ...] | None:
    if precisions is None:
        return None
    values = [p.strip() for p in precisions.split(",")] if isinstance(precisions, str) else list(precisions)
    bad = [p for p in values if p not in PRECISIONS]
    if bad or not values:
        raise MtlEdgeError(f"unknown precision {', '.join(bad) or '(none)'}; choose from {', '.join(PRECISIONS)}")
    return tuple(values)


def bench(export_dir, device: str | Path = "desktop", runtime=None, threads: int | None = None, precisions=None,
          compare: str | None = None, results=None, resume: bool = False, min_runs: int = DEFAULT_MIN_RUNS,
          min_secs: float = DEFAULT_MIN_SECS, max_secs: float = DEFAULT_MAX_SECS, warmup: int = DEFAULT_WARMUP,
          timeout: float | None = None, frontend: bool = True, progress: bool = True, answers: bool = True,
          allow_disagreement: bool = False, listeners: list[Listener] | None = None,
          answer_rows: int | None = None) -> BenchResult:
    """Benchmark the artefacts of ``export_dir`` on ``device``; see the module docstring.

    ``runtime``: "onnxruntime", "litert", "torch" or several comma-separated (default: the device profile's);
    ``precisions``: a subset of fp32, fp16, int8-dynamic, int8 (default: all in the export);
    ``compare="single"``: the Georgiev comparison; ``timeout``: seconds per runner process (default
    from ``max_secs``); ``frontend``: with ``compare``, also measure the feature front-end once;
    ``answers``: also check the device's answers on the whole test split against this machine's
    (``mtl_edge.bench.answers``) and, unless ``allow_disagreement``, fail at the end when an artefact
    answers differently on the device (its timings are still written, marked ``disagrees``).
    ``listeners``: more receivers of every record besides the results files (console table, CSV).
    ``answer_rows``: send only this many test clips (evenly spaced over the test split) to the device,
    for its timed runs and its answer check (recorded in every line; default: the whole split).
    Raises MtlEdgeError naming the artefact and step for a missing or tampered artefact, a runtime
    that is not installed, a runner that crashes or hangs; lines already written are kept.
    """
    export = Path(export_dir)
    manifest = read_manifest(export)
    dev = load_device(device)
    if compare not in (None, "single"):
        raise MtlEdgeError(f"unknown comparison {compare!r}; the only one is 'single'")
    if min_runs < 1 or min_secs < 0 or max_secs <= 0 or warmup < 0:
        raise MtlEdgeError("min_runs must be >= 1, min_secs >= 0, max_secs > 0, warmup >= 0")
    if max_secs < min_secs:
        raise MtlEdgeError(f"max_secs {max_secs} is below min_secs {min_secs}")
    threads = int(threads or dev.threads)
    if threads < 1:
        raise MtlEdgeError("threads must be >= 1")
    cfg = BenchConfig(export=export, device=dev, runtimes=_runtime_list(runtime, dev),
                      precisions=_precision_list(precisions),
                      results_dir=Path(results) if results is not None else export / "bench", threads=threads,
                      warmup=warmup, min_runs=min_runs, min_secs=min_secs, max_secs=max_secs, timeout=timeout,
                      compare=compare, resume=resume, frontend=frontend, answer_rows=answer_rows)
    testset_path = export / manifest.get("testset", "testset.npz")
    if not testset_path.is_file():
        raise MtlEdgeError(f"{export}: no {testset_path.name}; benchmark inputs come from the export's test clips")
    with np.load(testset_path, allow_pickle=False) as ts:
        rows = answer_subset(len(ts["matrix_rows"]), answer_rows)

    def log(msg: str) -> None:
        if progress:
            from mtl_edge.progress import stderr

            stderr.print(msg, markup=False, highlight=False)

    checker = None
    if answers:
        from mtl_edge.bench.answers import DesktopAnswers

        checker = DesktopAnswers(export, manifest, rows)
    sinks = [JsonLines(), *(listeners or [])]
    session = Session(dev, export, timeout, log)
    try:
        out = _Bench(cfg, session, manifest, testset_path, checker, sinks, log, rows).run()
    finally:
        session.transport.close()
        for sink in sinks:
            sink.close()
    bad = [m for m in out.measurements if m.get("answers_status") == "disagrees"]
    if bad and not allow_disagreement:
        listing = "; ".join(f"{m['artefact']} ({m['runtime']} {m['runtime_version']}: agreement "
                            f"{m['answers_agreement_min']} < {m['answers_threshold']})" for m in bad)
        raise MtlEdgeError(f"device {dev.name}: {len(bad)} artefact(s) answer differently on the device than on "
                           f"this machine: {listing}. Their timings are written (marked answers_status=disagrees) "
                           f"in {', '.join(str(r) for r in out.results)}, but do not use these artefacts with this "
                           "runtime (--allow-disagreement to accept)")
    return out


class _Bench:
    """One bench call: every runtime, precision and artefact of ``cfg``, records to the listeners."""

    def __init__(self, cfg: BenchConfig, session: Session, manifest: dict, testset_path: Path, checker,
                 sinks: list[Listener], log: Callable, rows: np.ndarray | None = None):
        self.cfg, self.session, self.manifest, self.testset_path = cfg, session, manifest, testset_path
        self.rows = rows
        self.checker, self.sinks, self.log = checker, sinks, log
        env = session.transport.environment()
        self.env = {("device_missing" if k == "missing" else k): v for k, v in env.items() if k != "machine"}
        self.out = BenchResult()
        self._frontend: dict = {}
        self._sent_inputs: dict[str, str] = {}
        self.started = time.monotonic()  # the benchmark's own share of the device's load grows from here

    def _inputs(self, name: str) -> str:
        """The test clips as input ``name`` takes them, sent to the device once per bench call."""
        if name not in self._sent_inputs:
            inputs = testset_inputs(self.testset_path, name)
            self._sent_inputs[name] = self.session.inputs(inputs if self.rows is None else inputs[self.rows], name)
        return self._sent_inputs[name]

    def _emit(self, results_file: Path, record: Measurement | Compare) -> None:
        for sink in self.sinks:
            sink.record(results_file, record)

    def run(self) -> BenchResult:
        for rt in self.cfg.runtimes:
            self._runtime(runtimes.get_runtime(rt))
        return self.out

    def _runtime(self, rt: runtimes.Runtime) -> None:
        cfg, fmt = self.cfg, rt.format
        results_file = cfg.results_dir / f"{cfg.device.name}-{rt.name}.jsonl"
        self.out.results.append(results_file)
        self.sinks[0].open(results_file)  # the results file: a torn last line is cut before resume reads it
        available = entries(self.manifest, fmt=fmt)
        present = list(dict.fromkeys(a["precision"] for a in available))
        chosen = [p for p in (cfg.precisions or PRECISIONS) if p in present]
        if not chosen:
            hint = " (export with --format onnx,tflite,torch to get them)" if fmt == "torch" and not present else ""
            wanted = cfg.precisions
            raise MtlEdgeError(f"{cfg.export}: no {fmt} artefacts{' of precision ' + ','.join(wanted) if wanted else ''} "
                               f"for runtime {rt.name} in the manifest{hint}")
        existing = read_lines(results_file) if cfg.resume else []
        settings = cfg.settings(rt.name)
        for prec in chosen:
            group = [a for a in available if a["precision"] == prec]
            alone = {a["model"]: self._measure(rt, [a], "alone", results_file, existing, settings) for a in group}
            if cfg.compare == "single":
                self._compare(rt, prec, group, alone, results_file, existing, settings)

    def _measure(self, rt, arts: list[dict], mode: str, results_file: Path, existing: list[dict],
                 settings: dict) -> dict:
        cfg, session, fmt = self.cfg, self.session, rt.format
        sha = "+".join(a["sha256"] for a in arts)
        key = {"kind": "measurement", "mode": mode, "artefact_sha256": sha, **settings}
        if cfg.resume:
            found = [line for line in existing if _settings_match(line, key)]
            if found:
                self.out.skipped += 1
                self.log(f"skip (resume): {mode} {'+'.join(a['model'] for a in arts)} {fmt} {arts[0]['precision']}")
                return found[-1]
        paths = [check_artefact(cfg.export, a) for a in arts]
        if rt.name == "tflite-runtime":
            for a in arts:
                _check_tflite_runtime(a, allow=self.checker is None, log=self.log)
        names = "+".join(a["model"] for a in arts)
        label = (_label(arts[0]) if len(arts) == 1 else
                 f"co-resident artefacts {', '.join(a['path'] for a in arts)} ({fmt} {arts[0]['precision']})")
        kinds = {input_name(self.manifest, a) for a in arts}
        if len(kinds) != 1:
            raise MtlEdgeError(f"{label}: co-resident artefacts take different inputs ({', '.join(sorted(kinds))})")
        (inp,) = kinds
        self.log(f"measure: {mode} {names} {fmt} {arts[0]['precision']}")
        job = {"runtime": rt.name, "runtime_module": session.runtime_module(rt), "runtime_options": rt.options,
               "inputs": self._inputs(inp), "input_name": inp,
               "threads": cfg.threads, "warmup": cfg.warmup, "min_runs": cfg.min_runs, "min_secs": cfg.min_secs,
               "max_secs": cfg.max_secs, "windows": 10,
               "answers": self.checker.kinds(arts) if self.checker is not None else False,
               "artefacts": [{"name": a["model"], "path": session.transport.put(p, p.name)}
                             for a, p in zip(arts, paths)]}
        limit = (cfg.timeout if cfg.timeout is not None else
                 60 + 30 * len(arts) + 2 * cfg.max_secs + 0.5 * cfg.warmup)
        before = session.conditions(label, results_file)
        report = session.run(None, job, label, results_file, limit)
        after = session.conditions(label, results_file)
        load = load_fields(before["load"], after["load"], time.monotonic() - self.started, cfg.threads)
        if load["busy"]:
            self.log(f"WARNING: the device was busy during {mode} {names} {fmt} {arts[0]['precision']} (1-minute load "
                     f"{load['load_1m_before']} before, {load['load_1m_after']} after; this benchmark's own share is "
                     f"at most {load['load_own_estimate']}): the line is marked busy=true")
        answers = self.checker.compare(arts, report["predictions"]) if self.checker and "predictions" in report else {}
        if answers.get("answers_status") == "disagrees":
            self.log(f"WARNING: {'+'.join(a['path'] for a in arts)} answers differently on device {cfg.device.name} "
                     f"(agreement {answers['answers_agreement_min']} < {answers['answers_threshold']})")
        times = report["total"]["times_ms"]
        if len(times) > MAX_STORED_LATENCIES:  # evenly spaced samples keep the distribution, not the file size
            times = [times[int(i * len(times) / MAX_STORED_LATENCIES)] for i in range(MAX_STORED_LATENCIES)]
        rss_before, rss_after = report["rss_after_import_kb"], report["peak_rss_kb"]
        record = Measurement(
            time=_now(), **settings, mode=mode, transport=cfg.device.transport, machine=report["machine"],
            emulated=cfg.device.emulated, runtime_version=report["runtime_version"], model=names,
            tasks=[t for a in arts for t in a["tasks"]], artefact="+".join(a["path"] for a in arts),
            artefact_sha256=sha, format=fmt, precision=arts[0]["precision"],
            status="+".join(sorted({a["status"] for a in arts})), model_bytes=int(sum(a["bytes"] for a in arts)),
            import_ms=rounded(report["import_ms"]), init_ms=rounded(sum(m["init_ms"] for m in report["artefacts"])),
            first_ms=rounded(sum(m["first_ms"] for m in report["artefacts"])),
            stats={k: (rounded(v, 5) if k.endswith("_ms") else v) for k, v in report["total"].items()
                   if k != "times_ms"},
            wall_s=rounded(report["wall_s"], 3), capped=report["capped"], clips=report["clips"],
            rss_after_import_mb=megabytes(rss_before), peak_rss_mb=megabytes(rss_after),
            delta_rss_mb=(megabytes(rss_after - rss_before) if rss_after is not None and rss_before is not None
                          else None),
            hwm_reset=report["hwm_reset"], environment=self.env, temperature_before_c=before["temperature_c"],
            temperature_c=after["temperature_c"], load=load, python_version=report["python"], numpy_version=report["numpy_version"],
            export=str(cfg.export.resolve()), thread_pool=report.get("thread_pool"),
            members=[{"model": m["name"], "init_ms": rounded(m["init_ms"]), "first_ms": rounded(m["first_ms"]),
                      "p50_ms": rounded(m["p50_ms"], 5), "p90_ms": rounded(m["p90_ms"], 5)}
                     for m in report["artefacts"]] if len(arts) > 1 else None,
            answers=answers, latencies_ms=[round(v, 5) for v in times])
        self._emit(results_file, record)
        line = record.to_json()
        self.out.measurements.append(line)
        return line

    def _compare(self, rt, prec: str, group: list[dict], alone: dict, results_file: Path, existing: list[dict],
                 settings: dict) -> None:
        cfg, fmt = self.cfg, rt.format
        multi = [a for a in group if a["model"] == "multi"]
        singles = [a for a in group if a["model"].startswith("single:")]
        if not multi or not singles:
            raise MtlEdgeError(f"{cfg.export}: --compare single needs the multi-task model and single-task models in "
                               f"{fmt} {prec}; the manifest has {', '.join(a['model'] for a in group) or 'none'}")
        multi_tasks = set(multi[0]["tasks"])
        singles = [a for a in singles if a["tasks"][0] in multi_tasks]
        missing = sorted(multi_tasks - {a["tasks"][0] for a in singles})
        if missing:
            raise MtlEdgeError(f"{cfg.export}: no single-task {fmt} {prec} artefact for task(s) {', '.join(missing)}; "
                               "the comparison needs one per task of the multi-task model")
        coresident = self._measure(rt, singles, "coresident", results_file, existing, settings)
        ckey = {"kind": "compare", "multi_sha256": multi[0]["sha256"],
                "single_sha256": [a["sha256"] for a in singles], **settings}
        if cfg.resume and any(_settings_match(line, ckey) for line in existing):
            self.out.skipped += 1
            return
        if cfg.frontend and "fe" not in self._frontend:
            with np.load(self.testset_path, allow_pickle=False) as ts:
                clip_paths = [str(p) for p in ts["paths"]] if "paths" in ts else []
            self._frontend["fe"] = measure_frontend(self.session, self.manifest, clip_paths, cfg.min_runs, cfg.min_secs,
                                                     cfg.max_secs, self.log)
        record = compare_record(alone[multi[0]["model"]], [alone[a["model"]] for a in singles], coresident,
                                multi[0], singles, settings, self._frontend.get("fe"))
        self._emit(results_file, record)
        self.out.compares.append(record.to_json())
