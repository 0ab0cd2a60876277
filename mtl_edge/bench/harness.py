"""The benchmark harness: runs the runner (``runner.py``) on a device, checks artefacts, writes result lines.

``bench(EXPORT)`` measures every artefact of one runtime (onnxruntime: the ONNX artefacts, litert:
the TFLite ones, torch: the TorchScript ones of an export made with ``--format ...,torch``) listed in the export's ``manifest.json``, on the real test clips of its
``testset.npz``, each in its own runner process. ``compare="single"`` adds, per precision, the N
single-task models loaded together in one process (co-resident, run back to back on the same clip)
and a ``compare`` line: the Georgiev et al. ratios of the multi-task model against the sum of the
single-task models.

Results: one flat JSON line per measurement / comparison, unit-suffixed, in
``RESULTS/<device>-<runtime>.jsonl`` (``RESULTS`` = ``EXPORT/bench`` by default), written by
rewriting the whole file atomically after every line, so an interrupted benchmark keeps every
finished line and never a half one. ``resume=True`` skips measurements (and comparisons) already in
the file for the same artefact sha256, device and settings.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mtl_edge import atomic
from mtl_edge.bench import runner as runner_module
from mtl_edge.bench.devices import Device, load_device
from mtl_edge.bench.transports import RunnerTimeout, transport_for
from mtl_edge.errors import MtlEdgeError
from mtl_edge.export.manifest import entries, read_manifest, sha256_file

SCHEMA = 1
RUNTIMES = {"onnxruntime": "onnx", "litert": "tflite", "tflite-runtime": "tflite", "torch": "torch"}
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime",
                   "torch": "torch"}
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


# ---------------------------------------------------------------------------------------------- results file

def read_lines(path: str | Path) -> list[dict]:
    """The complete JSON lines of a results file (a damaged or foreign line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("kind") in ("measurement", "compare"):
            out.append(obj)
    return out


def append_line(path: str | Path, record: dict) -> None:
    """Append one JSON line: the whole file is rewritten under a temporary name and renamed (fsync'd)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old = old[:old.rfind("\n") + 1]  # an incomplete last line (not written by us) is dropped
    atomic.write_text(path, old + json.dumps(record, sort_keys=False) + "\n")


def _settings_match(line: dict, key: dict) -> bool:
    return all(line.get(k) == v for k, v in key.items())


# ---------------------------------------------------------------------------------------------- statistics

def latency_stats(times_ms, windows: int = 10) -> dict:
    """mean, std (sample), min, max, p50/p90/p99 (linear interpolation) and the median of per-window medians."""
    x = np.asarray(times_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latencies")
    n_win = max(1, min(windows, x.size // 5 or 1))
    medians = [float(np.median(c)) for c in np.array_split(x, n_win) if c.size]
    return {"runs": int(x.size), "mean_ms": float(x.mean()), "std_ms": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min_ms": float(x.min()), "max_ms": float(x.max()), "p50_ms": float(np.percentile(x, 50)),
            "p90_ms": float(np.percentile(x, 90)), "p99_ms": float(np.percentile(x, 99)),
            "window_p50_ms": float(np.median(medians)), "window_min_p50_ms": min(medians),
            "window_max_p50_ms": max(medians), "windows": len(medians)}


def _r(v, digits: int = 4):
    return None if v is None else round(float(v), digits)


# ---------------------------------------------------------------------------------------------- running

class _Session:
    """One bench call on one device: transport, work folder, runner script, shared features."""

    def __init__(self, device: Device, export: Path, features: np.ndarray, timeout: float | None, log: Callable):
        self.device = device
        self.transport = transport_for(device)
        self.export = export
        self.timeout = timeout
        self.log = log
        work = self.transport.workdir()
        digest = hashlib.sha256(features.tobytes() + str(features.shape).encode()).hexdigest()[:16]
        local_features = work / f"features-{digest}.npy"
        if not local_features.is_file():
            with atomic.atomic_path(local_features) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, features)
        self.features = self.transport.put(local_features, local_features.name)
        script = work / "mtl_edge_runner.py"
        src = Path(runner_module.__file__)
        if not script.is_file() or script.read_bytes() != src.read_bytes():
            with atomic.atomic_path(script) as tmp:
                shutil.copyfile(src, tmp)
        self.script = self.transport.put(script, script.name)
        self.work = work

    def temperature(self, label: str, results: Path) -> float | None:
        try:
            return self.transport.temperature()
        except MtlEdgeError as exc:
            raise MtlEdgeError(f"{label}: {exc}; measurements already written are kept in {results}") from None

    def run(self, argv_prefix: list[str] | None, job: dict, label: str, results: Path, timeout: float) -> dict:
        """Run the runner (or ``argv_prefix`` + the job file) on ``job``; its parsed report."""
        job_hash = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
        job_file = self.work / f"job-{job_hash}.json"
        atomic.write_json(job_file, job)
        remote_job = self.transport.put(job_file, job_file.name)
        argv = self.transport.argv(self.script, remote_job) if argv_prefix is None else [*argv_prefix, remote_job]
        try:
            proc = self.transport.run(argv, timeout=timeout)
        except MtlEdgeError as exc:
            raise MtlEdgeError(f"{label}: {exc}; measurements already written are kept in {results}") from None
        except RunnerTimeout as exc:
            step = _last_step(exc.stderr)
            raise MtlEdgeError(f"{label}: the runner timed out after {timeout:.0f} s at step '{step}' on device "
                               f"{self.device.name}; measurements already written are kept in {results}") from None
        finally:
            job_file.unlink(missing_ok=True)
        out = proc.stdout or ""
        if proc.returncode != 0 or runner_module.END_MARKER not in out:
            step = _last_step(proc.stderr or "")
            tail = "\n".join(line for line in (proc.stderr or "").strip().splitlines()[-6:] if not line.startswith("STEP "))
            hint = ""
            if "ModuleNotFoundError" in (proc.stderr or "") or "No module named" in (proc.stderr or ""):
                hint = f" (the runtime {job.get('runtime', '')!r} is not installed for {self.transport.python})"
            raise MtlEdgeError(f"{label}: the runner failed at step '{step}' (exit code {proc.returncode}){hint}: "
                               f"{tail[-800:] or '(no error output)'}; measurements already written are kept in {results}")
        body = out[:out.rindex(runner_module.END_MARKER)].strip().splitlines()
        try:
            return json.loads(body[-1])
        except (ValueError, IndexError):
            raise MtlEdgeError(f"{label}: the runner's report is not JSON: {out[-300:]!r}") from None


def _last_step(stderr: str) -> str:
    steps = [line[5:].strip() for line in stderr.splitlines() if line.startswith("STEP ")]
    return steps[-1] if steps else "start"


def _check_artefact(export: Path, entry: dict) -> Path:
    label = _label(entry)
    if not entry.get("path") or entry.get("status") == "unsupported":
        raise MtlEdgeError(f"{label}: unsupported in this export, no artefact ({entry.get('reason')})")
    path = export / entry["path"]
    if not path.is_file():
        raise MtlEdgeError(f"{label}: artefact file {path} is missing (step: verify sha256 before running)")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise MtlEdgeError(f"{label}: artefact {path} does not match the manifest (sha256 {digest[:12]}... != "
                           f"{str(entry.get('sha256'))[:12]}...; tampered or replaced) (step: verify sha256 before running)")
    return path


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


def _label(entry: dict) -> str:
    return f"artefact {entry.get('path')} ({entry.get('model')}, {entry.get('format')} {entry.get('precision')})"


def _runtime_list(runtime, device: Device) -> list[str]:
    if runtime is None:
        runtime = device.runtime
    names = [r.strip() for r in runtime.split(",")] if isinstance(runtime, str) else list(runtime)
    out = []
    for r in names:
        r = {"tflite": "litert", "ai-edge-litert": "litert", "ort": "onnxruntime", "pytorch": "torch",
             "torchscript": "torch", "tflite_runtime": "tflite-runtime"}.get(r, r)
        if r not in RUNTIMES:
            raise MtlEdgeError(f"unknown runtime {r!r}; choose from {', '.join(RUNTIMES)}")
        out.append(r)
    return list(dict.fromkeys(out))


def _precision_list(precisions) -> list[str] | None:
    if precisions is None:
        return None
    values = [p.strip() for p in precisions.split(",")] if isinstance(precisions, str) else list(precisions)
    bad = [p for p in values if p not in PRECISIONS]
    if bad or not values:
        raise MtlEdgeError(f"unknown precision {', '.join(bad) or '(none)'}; choose from {', '.join(PRECISIONS)}")
    return values


def _mb(kb) -> float | None:
    return None if kb is None else round(kb / 1024, 3)


def bench(export_dir, device: str | Path = "desktop", runtime=None, threads: int | None = None, precisions=None,
          compare: str | None = None, results=None, resume: bool = False, min_runs: int = DEFAULT_MIN_RUNS,
          min_secs: float = DEFAULT_MIN_SECS, max_secs: float = DEFAULT_MAX_SECS, warmup: int = DEFAULT_WARMUP,
          timeout: float | None = None, frontend: bool = True, progress: bool = True, answers: bool = True,
          allow_disagreement: bool = False) -> BenchResult:
    """Benchmark the artefacts of ``export_dir`` on ``device``; see the module docstring.

    ``runtime``: "onnxruntime", "litert", "torch" or several comma-separated (default: the device profile's);
    ``precisions``: a subset of fp32, fp16, int8-dynamic, int8 (default: all in the export);
    ``compare="single"``: the Georgiev comparison; ``timeout``: seconds per runner process (default
    from ``max_secs``); ``frontend``: with ``compare``, also measure the feature front-end once;
    ``answers``: also check the device's top-1 answers on the whole test split against this machine's
    (``mtl_edge.bench.answers``) and, unless ``allow_disagreement``, fail at the end when an artefact
    answers differently on the device (its timings are still written, marked ``disagrees``).
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
    runtimes = _runtime_list(runtime, dev)
    wanted = _precision_list(precisions)
    results_dir = Path(results) if results is not None else export / "bench"
    testset_path = export / manifest.get("testset", "testset.npz")
    if not testset_path.is_file():
        raise MtlEdgeError(f"{export}: no {testset_path.name}; benchmark inputs come from the export's test clips")
    with np.load(testset_path, allow_pickle=False) as ts:
        features = np.ascontiguousarray(ts["features"], dtype=np.float32)
        clip_paths = [str(p) for p in ts["paths"]] if "paths" in ts else []

    def log(msg: str) -> None:
        if progress:
            from mtl_edge.progress import stderr

            stderr.print(msg, markup=False, highlight=False)

    checker = None
    if answers:
        from mtl_edge.bench.answers import DesktopAnswers

        checker = DesktopAnswers(export, manifest)
    session = _Session(dev, export, features, timeout, log)
    try:
        out = _bench(session, dev, export, manifest, runtimes, wanted, results_dir, threads, warmup, min_runs,
                     min_secs, max_secs, timeout, compare, resume, frontend, clip_paths, log, checker)
    finally:
        session.transport.close()
    bad = [m for m in out.measurements if m.get("answers_status") == "disagrees"]
    if bad and not allow_disagreement:
        listing = "; ".join(f"{m['artefact']} ({m['runtime']} {m['runtime_version']}: agreement "
                            f"{m['answers_agreement_min']} < {m['answers_threshold']})" for m in bad)
        raise MtlEdgeError(f"device {dev.name}: {len(bad)} artefact(s) answer differently on the device than on "
                           f"this machine: {listing}. Their timings are written (marked answers_status=disagrees) "
                           f"in {', '.join(str(r) for r in out.results)}, but do not use these artefacts with this "
                           "runtime (--allow-disagreement to accept)")
    return out


def _bench(session, dev, export, manifest, runtimes, wanted, results_dir, threads, warmup, min_runs, min_secs,
           max_secs, timeout, compare, resume, frontend, clip_paths, log, checker) -> BenchResult:
    env = session.transport.environment()
    env = {("device_missing" if k == "missing" else k): v for k, v in env.items() if k != "machine"}
    out = BenchResult()
    fe_cache: dict = {}

    for rt in runtimes:
        fmt = RUNTIMES[rt]
        results_file = results_dir / f"{dev.name}-{rt}.jsonl"
        out.results.append(results_file)
        # end-to-end (waveform-in) artefacts take clips, not feature rows: not measured by this runner
        available = [a for a in entries(manifest, fmt=fmt) if not str(a.get("model", "")).startswith("e2e:")]
        present = list(dict.fromkeys(a["precision"] for a in available))
        chosen = [p for p in (wanted or PRECISIONS) if p in present]
        if not chosen:
            hint = " (export with --format onnx,tflite,torch to get them)" if fmt == "torch" and not present else ""
            raise MtlEdgeError(f"{export}: no {fmt} artefacts{' of precision ' + ','.join(wanted) if wanted else ''} "
                               f"for runtime {rt} in the manifest{hint}")
        settings = {"device": dev.name, "runtime": rt, "threads": threads, "cpu_affinity": dev.cpu_affinity,
                    "warmup_runs": warmup, "min_runs": min_runs, "min_secs": float(min_secs),
                    "max_secs": float(max_secs)}
        existing = read_lines(results_file) if resume else []

        def measure(arts: list[dict], mode: str) -> dict:
            sha = "+".join(a["sha256"] for a in arts)
            key = {"kind": "measurement", "mode": mode, "artefact_sha256": sha, **settings}
            if resume:
                found = [line for line in existing if _settings_match(line, key)]
                if found:
                    out.skipped += 1
                    log(f"skip (resume): {mode} {'+'.join(a['model'] for a in arts)} {fmt} {arts[0]['precision']}")
                    return found[-1]
            paths = [_check_artefact(export, a) for a in arts]
            if rt == "tflite-runtime":
                for a in arts:
                    _check_tflite_runtime(a, allow=checker is None, log=log)
            names = "+".join(a["model"] for a in arts)
            label = (_label(arts[0]) if len(arts) == 1 else
                     f"co-resident artefacts {', '.join(a['path'] for a in arts)} ({fmt} {arts[0]['precision']})")
            log(f"measure: {mode} {names} {fmt} {arts[0]['precision']}")
            job = {"runtime": rt, "features": session.features, "threads": threads, "warmup": warmup,
                   "min_runs": min_runs, "min_secs": min_secs, "max_secs": max_secs, "windows": 10,
                   "answers": checker is not None,
                   "artefacts": [{"name": a["model"], "path": session.transport.put(p, p.name)}
                                 for a, p in zip(arts, paths)]}
            limit = timeout if timeout is not None else 60 + 30 * len(arts) + 2 * max_secs + 0.5 * warmup
            temperature_before = session.temperature(label, results_file)
            report = session.run(None, job, label, results_file, limit)
            temperature_after = session.temperature(label, results_file)
            stats = latency_stats(report["total"]["times_ms"])
            tasks = [t for a in arts for t in a["tasks"]]
            record = {
                "kind": "measurement", "schema": SCHEMA,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **settings, "mode": mode, "transport": dev.transport, "machine": report["machine"],
                "emulated": dev.emulated, "runtime_version": report["runtime_version"],
                "model": names, "tasks": tasks, "artefact": "+".join(a["path"] for a in arts),
                "artefact_sha256": sha, "format": fmt, "precision": arts[0]["precision"],
                "status": "+".join(sorted({a["status"] for a in arts})),
                "model_bytes": int(sum(a["bytes"] for a in arts)),
                "import_ms": _r(report["import_ms"]),
                "init_ms": _r(sum(m["init_ms"] for m in report["artefacts"])),
                "first_ms": _r(sum(m["first_ms"] for m in report["artefacts"])),
                **{k: (_r(v, 5) if k.endswith("_ms") else v) for k, v in stats.items()},
                "wall_s": _r(report["wall_s"], 3), "capped": report["capped"], "clips": report["clips"],
                "rss_after_import_mb": _mb(report["rss_after_import_kb"]), "peak_rss_mb": _mb(report["peak_rss_kb"]),
                "delta_rss_mb": (_mb(report["peak_rss_kb"] - report["rss_after_import_kb"])
                                 if report["peak_rss_kb"] is not None and report["rss_after_import_kb"] is not None
                                 else None),
                "hwm_reset": report["hwm_reset"],
                **env, "temperature_before_c": temperature_before, "temperature_c": temperature_after,
                "python_version": report["python"], "numpy_version": report["numpy_version"],
                "export": str(export.resolve()),
            }
            if len(arts) > 1:
                record["members"] = [{"model": m["name"], "init_ms": _r(m["init_ms"]), "first_ms": _r(m["first_ms"]),
                                      "p50_ms": _r(m["p50_ms"], 5), "p90_ms": _r(m["p90_ms"], 5)}
                                     for m in report["artefacts"]]
            if checker is not None and "predictions" in report:
                record.update(checker.compare(arts, report["predictions"]))
                if record["answers_status"] == "disagrees":
                    log(f"WARNING: {record['artefact']} answers differently on device {dev.name} "
                        f"(agreement {record['answers_agreement_min']} < {record['answers_threshold']})")
            times = report["total"]["times_ms"]
            if len(times) > MAX_STORED_LATENCIES:  # evenly spaced samples keep the distribution, not the file size
                times = [times[int(i * len(times) / MAX_STORED_LATENCIES)] for i in range(MAX_STORED_LATENCIES)]
            record["latencies_ms"] = [round(v, 5) for v in times]
            append_line(results_file, record)
            out.measurements.append(record)
            return record

        for prec in chosen:
            group = [a for a in available if a["precision"] == prec]
            multi = [a for a in group if a["model"] == "multi"]
            singles = [a for a in group if a["model"].startswith("single:")]
            alone = {a["model"]: measure([a], "alone") for a in group}
            if compare != "single":
                continue
            if not multi or not singles:
                raise MtlEdgeError(f"{export}: --compare single needs the multi-task model and single-task models in "
                                   f"{fmt} {prec}; the manifest has {', '.join(a['model'] for a in group) or 'none'}")
            multi_tasks = set(multi[0]["tasks"])
            singles = [a for a in singles if a["tasks"][0] in multi_tasks]
            missing = sorted(multi_tasks - {a["tasks"][0] for a in singles})
            if missing:
                raise MtlEdgeError(f"{export}: no single-task {fmt} {prec} artefact for task(s) {', '.join(missing)}; "
                                   "the comparison needs one per task of the multi-task model")
            coresident = measure(singles, "coresident")
            ckey = {"kind": "compare", "multi_sha256": multi[0]["sha256"],
                    "single_sha256": [a["sha256"] for a in singles], **settings}
            if resume and any(_settings_match(line, ckey) for line in existing):
                out.skipped += 1
                continue
            if frontend and "fe" not in fe_cache:
                fe_cache["fe"] = _frontend(session, manifest, clip_paths, min_runs, min_secs, max_secs, log)
            record = compare_record(alone[multi[0]["model"]], [alone[a["model"]] for a in singles], coresident,
                                    multi[0], singles, fe_cache.get("fe"))
            record.update(ckey)
            append_line(results_file, record)
            out.compares.append(record)
    return out


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def compare_record(multi: dict, singles: list[dict], coresident: dict | None, multi_entry: dict,
                   single_entries: list[dict], fe: dict | None = None) -> dict:
    """The compare line from the measurement lines of the multi model, each single model and the co-resident run."""
    n = len(singles)
    s_p50 = sum(s["p50_ms"] for s in singles)
    s_delta = sum(s["delta_rss_mb"] for s in singles) if all(s["delta_rss_mb"] is not None for s in singles) else None
    s_peak = sum(s["peak_rss_mb"] for s in singles) if all(s["peak_rss_mb"] is not None for s in singles) else None
    s_bytes = sum(s["model_bytes"] for s in singles)
    rec = {
        "kind": "compare", "schema": SCHEMA,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": multi["device"], "runtime": multi["runtime"], "runtime_version": multi["runtime_version"],
        "machine": multi["machine"], "emulated": multi["emulated"], "format": multi["format"],
        "precision": multi["precision"], "tasks": list(multi["tasks"]), "n_single": n,
        "multi_p50_ms": multi["p50_ms"], "single_p50_sum_ms": _r(s_p50, 5),
        "coresident_p50_ms": coresident["p50_ms"] if coresident else None,
        "runtime_ratio": _ratio(multi["p50_ms"], s_p50),
        "runtime_ratio_coresident": _ratio(multi["p50_ms"], coresident["p50_ms"]) if coresident else None,
        "multi_delta_rss_mb": multi["delta_rss_mb"], "single_delta_rss_sum_mb": _r(s_delta, 3),
        "coresident_delta_rss_mb": coresident["delta_rss_mb"] if coresident else None,
        "memory_ratio": _ratio(multi["delta_rss_mb"], s_delta),
        "memory_ratio_coresident": _ratio(multi["delta_rss_mb"], coresident["delta_rss_mb"]) if coresident else None,
        "multi_peak_rss_mb": multi["peak_rss_mb"], "single_peak_rss_sum_mb": _r(s_peak, 3),
        "memory_ratio_peak": _ratio(multi["peak_rss_mb"], s_peak),
        "multi_model_bytes": multi["model_bytes"], "single_model_bytes_sum": s_bytes,
        "size_ratio": _ratio(multi["model_bytes"], s_bytes),
        "frontend_p50_ms": fe["p50_ms"] if fe else None, "frontend_delta_rss_mb": fe["delta_rss_mb"] if fe else None,
        "runtime_ratio_with_frontend": (_ratio(multi["p50_ms"] + fe["p50_ms"], s_p50 + n * fe["p50_ms"])
                                        if fe else None),
        "memory_ratio_with_frontend": (_ratio(multi["delta_rss_mb"] + fe["delta_rss_mb"],
                                              s_delta + n * fe["delta_rss_mb"])
                                       if fe and s_delta is not None and multi["delta_rss_mb"] is not None else None),
        "multi_status": multi_entry.get("status"),
        "single_status": sorted({e.get("status") for e in single_entries}),
    }
    mver = ((multi_entry.get("verification") or {}).get("tasks") or {})
    for t in multi["tasks"]:
        rec[f"accuracy_multi_{t}"] = (mver.get(t) or {}).get("accuracy")
    for e in single_entries:
        t = e["tasks"][0]
        rec[f"accuracy_single_{t}"] = ((((e.get("verification") or {}).get("tasks") or {}).get(t)) or {}).get("accuracy")
    for k in ("cpu_model", "cpu_governor", "cpu_freq_mhz", "temperature_c", "threads", "cpu_affinity"):
        rec[k] = multi.get(k)
    return rec


def _frontend(session: _Session, manifest: dict, clip_paths: list[str], min_runs: int, min_secs: float,
              max_secs: float, log: Callable) -> dict | None:
    """The front-end (log-mel summary of one clip) measured once in its own process; None when it cannot be."""
    import sys

    corpus = Path(manifest.get("corpus") or "")
    clips = [str(corpus / p) for p in clip_paths[:8] if (corpus / p).is_file()]
    if session.device.transport != "local" or not clips:
        log("front-end: not measured (needs the local corpus clips of the export)")
        return None
    log("measure: feature front-end (logmel.extract, one clip)")
    job = {"clips": clips, "feature_config": manifest["feature_config"], "warmup": 3,
           "min_runs": min(min_runs, 30), "min_secs": min(min_secs, 1.0), "max_secs": max(1.0, min(max_secs, 5.0))}
    prefix = ["taskset", "-c", session.device.cpu_affinity] if session.device.cpu_affinity else []
    try:
        report = session.run([*prefix, sys.executable, "-m", "mtl_edge.bench.frontend"], job, "feature front-end",
                             Path("(no results written by the front-end)"), 120)
    except MtlEdgeError as exc:
        log(f"front-end: not measured ({exc})")
        return None
    delta = (report["peak_rss_kb"] - report["rss_after_import_kb"]) if report.get("peak_rss_kb") else None
    return {"p50_ms": round(report["p50_ms"], 5), "delta_rss_mb": _mb(delta), "runs": report["runs"]}
