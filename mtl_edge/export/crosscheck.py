"""Cross-check TFLite artefacts under the older ``tflite-runtime`` interpreter.

Many Raspberry Pi images ship ``tflite-runtime`` 2.14 rather than ai-edge-litert. It needs numpy<2
(so it lives in its own environment, named by ``--tflite-runtime PYTHON``), cannot load some newer op
versions (FULLY_CONNECTED v12) and was seen returning silently wrong answers for dynamic-range
quantised models. Each TFLite artefact is run there by the benchmark runner with the registry's
``tflite-runtime`` module (``answers`` job, one timed run) on the whole test split and its top-1 answers are compared with ai-edge-litert's on the same
file (the quantisation error itself is already judged by the export's verification; this asks whether
the old interpreter computes the same graph): the manifest records ``ok`` (agreement >= 0.99),
``disagrees`` or ``cannot-load`` per artefact, with the agreement with PyTorch beside it, and the
benchmark refuses an artefact that is not ``ok`` for runtime ``tflite-runtime``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from mtl_edge.errors import MtlEdgeError

AGREEMENT = 0.99  # the same graph in two interpreters: only rounding may differ
INSTALL_HINT = ("python3 -m venv ENV && ENV/bin/pip install 'numpy<2' tflite-runtime==2.14.0, "
                "then --tflite-runtime ENV/bin/python")


def check_interpreter(python: str) -> str:
    """The tflite-runtime version importable by ``python`` (MtlEdgeError with the remedy otherwise)."""
    probe = "import numpy, tflite_runtime; print(tflite_runtime.__version__)"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MtlEdgeError(f"--tflite-runtime {python}: cannot run it ({exc}); {INSTALL_HINT}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MtlEdgeError(f"--tflite-runtime {python}: cannot import tflite_runtime and numpy ({last}); "
                           f"{INSTALL_HINT}")
    return proc.stdout.strip()


def crosscheck(python: str, artefacts: list[dict], folder: Path, work: Path, features: np.ndarray,
               references: dict[str, dict[str, np.ndarray]], log) -> None:
    """Add ``tflite_runtime`` = {version, status, agreement, reason} to every TFLite entry of ``artefacts``."""
    from mtl_edge import runtimes
    from mtl_edge.runtimes.agreement import agreement as agree
    from mtl_edge.runtimes.agreement import top1
    from mtl_edge.runtimes.runner import parse_report

    version = check_interpreter(python)
    old = runtimes.get_runtime("tflite-runtime")
    script = work / "tflite_runtime_runner.py"
    shutil.copyfile(runtimes.runner_file(), script)
    module = work / Path(old.file).name
    shutil.copyfile(old.file, module)
    rows = work / "tflite_runtime_features.npy"
    np.save(rows, np.ascontiguousarray(features, dtype=np.float32))
    for entry in artefacts:
        if entry["format"] != "tflite" or not entry.get("path") or entry.get("end_to_end"):
            continue
        job = {"runtime": old.name, "runtime_module": str(module), "runtime_options": old.options,
               "inputs": str(rows), "input_name": "features", "threads": 1, "warmup": 0, "min_runs": 1,
               "min_secs": 0, "max_secs": 0.001, "answers": True,
               "artefacts": [{"name": entry["model"], "path": str((folder / entry["path"]).resolve())}]}
        job_file = work / "tflite_runtime_job.json"
        job_file.write_text(json.dumps(job))
        try:
            proc = subprocess.run([python, str(script), str(job_file)], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            entry["tflite_runtime"] = {"version": version, "status": "cannot-load", "agreement": None,
                                       "reason": "timed out after 600 s"}
            continue
        try:
            report = parse_report(proc.stdout) if proc.returncode == 0 else None
        except ValueError:
            report = None
        if report is None:
            lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("STEP ")]
            entry["tflite_runtime"] = {"version": version, "status": "cannot-load", "agreement": None,
                                       "reason": (lines[-1] if lines else f"exit code {proc.returncode}")[:300]}
        else:
            answers = report["predictions"][entry["model"]]
            litert = runtimes.load_format("tflite", folder / entry["path"]).run(features)
            reference = references[entry["model"]]
            agreement = {t: round(agree(answers[t], top1(litert[t])), 4) for t in entry["tasks"]}
            torch_agreement = {t: round(agree(answers[t], top1(reference[t])), 4) for t in entry["tasks"]}
            worst = min(agreement.values())
            entry["tflite_runtime"] = {
                "version": version, "status": "ok" if worst >= AGREEMENT else "disagrees", "agreement": agreement,
                "agreement_with_pytorch": torch_agreement,
                "reason": None if worst >= AGREEMENT else
                f"top-1 agreement with ai-edge-litert on the same file {worst} < {AGREEMENT}"}
        if entry["tflite_runtime"]["status"] != "ok":
            log(f"WARNING: {entry['path']} under tflite-runtime {version}: {entry['tflite_runtime']['status']} "
                f"({entry['tflite_runtime']['reason']}); the benchmark refuses it for runtime tflite-runtime")
