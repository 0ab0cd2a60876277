"""Why the single-task models run slower co-resident (one process, back to back) than alone.

For the ONNX single-task models (``--precision``, default fp32) of an export, each configuration below runs in its own process,
pinned like ``devices/desktop.toml`` (taskset list, one intra-op thread), on the export's test clips,
alternating configurations over ``--rounds``; the figure of a configuration is the median over rounds of
its p50 per inference (one run = every model once on the same clip, as the harness's co-resident mode):

- ``alone``: one single-task model per process (the sum over the models is reported);
- ``coresident``: the N sessions with the harness's options (per-session thread pools, intra=1, inter=1);
- ``coresident_global_pool``: one process-wide thread pool (``use_per_session_threads = False``,
  ``set_global_thread_pool_sizes(1, 1)``), spinning off;
- ``coresident_no_spin``: per-session pools with ``session.intra_op.allow_spinning = 0``;
- ``coresident_no_arena``: ``enable_cpu_mem_arena = False``;
- ``same_session_xN``: one single-task session called N times per run (the working set of one model);
- ``same_model_N_sessions``: N sessions of the *same* file (N copies of one model's weights: the working
  set of N models, with identical graphs).

If thread pools or arenas were the cause, the option rows would close the gap; if the cause is the
working set (N models' weights no longer fit the core's cache), ``same_model_N_sessions`` is as slow as
``coresident`` and ``same_session_xN`` as fast as ``alone``.

    .venv/bin/python benchmarks/coresident.py EXPORT_DIR [--precision fp32] [--rounds 5] [--min-secs 1]
        [--allow-busy] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
cfg = json.load(open(sys.argv[1]))
opts_kind = cfg["options"]
if opts_kind == "global_pool":
    ort.set_global_thread_pool_sizes(1, 1)
def options():
    o = ort.SessionOptions()
    o.log_severity_level = 3
    if opts_kind == "global_pool":
        o.use_per_session_threads = False
    else:
        o.intra_op_num_threads = 1
        o.inter_op_num_threads = 1
    if opts_kind == "no_spin":
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if opts_kind == "no_arena":
        o.enable_cpu_mem_arena = False
    return o
sessions = []
for path in cfg["paths"]:
    s = ort.InferenceSession(path, sess_options=options(), providers=["CPUExecutionProvider"])
    sessions.append(s)
calls = [sessions[i] for i in cfg["order"]]
x = np.load(cfg["features"]).astype(np.float32)
rows = [np.ascontiguousarray(x[i:i + 1]) for i in range(len(x))]
feeds = [[{s.get_inputs()[0].name: r} for r in rows] for s in calls]
for i in range(50):
    for s, f in zip(calls, feeds):
        s.run(None, f[i % len(rows)])
totals, per = [], [[] for _ in calls]
start = time.perf_counter_ns(); i = 0
while True:
    total = 0
    for k, (s, f) in enumerate(zip(calls, feeds)):
        t0 = time.perf_counter_ns(); s.run(None, f[i % len(rows)]); dt = time.perf_counter_ns() - t0
        per[k].append(dt); total += dt
    totals.append(total); i += 1
    el = time.perf_counter_ns() - start
    if el >= cfg["max_secs"] * 1e9 or (i >= cfg["min_runs"] and el >= cfg["min_secs"] * 1e9):
        break
print(json.dumps({"p50_ms": float(np.median(totals)) / 1e6, "runs": i,
                  "member_p50_ms": [float(np.median(p)) / 1e6 for p in per]}))
"""

CONFIGS = ("alone", "coresident", "coresident_global_pool", "coresident_no_spin", "coresident_no_arena",
           "same_session_xN", "same_model_N_sessions")


def _jobs(name: str, paths: list[str]) -> list[dict]:
    """The child processes of one configuration (``alone``: one per model)."""
    n = len(paths)
    if name == "alone":
        return [{"paths": [p], "order": [0], "options": "default"} for p in paths]
    if name == "same_session_xN":
        return [{"paths": [paths[0]], "order": [0] * n, "options": "default"}]
    if name == "same_model_N_sessions":
        return [{"paths": [paths[0]] * n, "order": list(range(n)), "options": "default"}]
    options = {"coresident": "default", "coresident_global_pool": "global_pool", "coresident_no_spin": "no_spin",
               "coresident_no_arena": "no_arena"}[name]
    return [{"paths": paths, "order": list(range(n)), "options": options}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--precision", default="fp32", help="fp32, fp16, int8-dynamic or int8 (default fp32)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-runs", type=int, default=200)
    ap.add_argument("--min-secs", type=float, default=1.0)
    ap.add_argument("--allow-busy", action="store_true",
                    help="write a committed result even when the 1-minute load is above 0.5 (recorded)")
    ap.add_argument("--out", type=Path, help="also write the result JSON here")
    args = ap.parse_args()

    import numpy as np

    from mtl_edge import atomic
    from mtl_edge.bench import load_device
    from mtl_edge.bench.environment import local_environment
    from mtl_edge.bench.load import gate, local_load, script_argv
    from mtl_edge.export.manifest import entries, read_manifest

    started = gate(args.allow_busy, "coresident.py", args.out)
    manifest = read_manifest(args.export)
    singles = [e for e in entries(manifest, fmt="onnx", precision=args.precision) if e["model"].startswith("single:")]
    paths = [str((args.export / e["path"]).resolve()) for e in singles]
    device = load_device("desktop")
    prefix = ["taskset", "-c", device.cpu_affinity] if device.cpu_affinity else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rounds: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coresident-") as tmp:
        features = Path(tmp) / "features.npy"
        with np.load(args.export / manifest.get("testset", "testset.npz")) as ts:
            np.save(features, ts["features"])
        for r in range(args.rounds):
            for name in CONFIGS:
                outs = []
                for job in _jobs(name, paths):
                    job_file = Path(tmp) / "job.json"
                    job_file.write_text(json.dumps({**job, "features": str(features), "min_runs": args.min_runs,
                                                    "min_secs": args.min_secs, "max_secs": 4 * args.min_secs}))
                    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD, str(job_file)], capture_output=True,
                                          text=True, check=True, env=env)
                    outs.append(json.loads(proc.stdout))
                rounds[name].append({"p50_ms": sum(o["p50_ms"] for o in outs),
                                     "member_p50_ms": [m for o in outs for m in o["member_p50_ms"]]})
            print(f"round {r}: " + ", ".join(f"{c} {rounds[c][-1]['p50_ms']:.4f}" for c in CONFIGS), file=sys.stderr)
    table = {c: {"p50_ms": round(statistics.median(x["p50_ms"] for x in v), 5),
                 "min_round_p50_ms": round(min(x["p50_ms"] for x in v), 5),
                 "rounds_p50_ms": [round(x["p50_ms"], 5) for x in v],
                 "member_p50_ms": [round(statistics.median(x["member_p50_ms"][k] for x in v), 5)
                                   for k in range(len(v[0]["member_p50_ms"]))]} for c, v in rounds.items()}
    base = table["alone"]["p50_ms"]
    base_min = table["alone"]["min_round_p50_ms"]
    for row in table.values():
        row["vs_alone"] = round(row["p50_ms"] / base, 3)
        row["min_vs_alone"] = round(row["min_round_p50_ms"] / base_min, 3)
    result = {
        "benchmark": "coresident", "argv": script_argv(),
        "export": str(args.export), "precision": args.precision, "models": [e["model"] for e in singles],
        "model_bytes": [e["bytes"] for e in singles], "rounds": args.rounds, "min_runs": args.min_runs,
        "min_secs": args.min_secs, "configs": table, "wall_s": round(time.perf_counter() - t0, 1),
        **started, "load_1m_at_end": local_load()[0],
        "machine": {"uname_m": platform.machine(), **local_environment(), "python": platform.python_version(),
                    "cpu_affinity": device.cpu_affinity, "threads": 1},
    }
    print(f"{args.precision}, {len(paths)} single-task models of {sum(e['bytes'] for e in singles) / 1e6:.1f} MB; "
          f"1-minute load {started['load_1m_at_start']} at start, {result['load_1m_at_end']} at end\n")
    print(f"| configuration | p50 ms per run (all {len(paths)} models), median of rounds | vs alone | best round | "
          "vs alone | per model p50 ms |")
    print("|---|---|---|---|---|---|")
    for c, row in table.items():
        print(f"| {c} | {row['p50_ms']:.4f} | {row['vs_alone']:.2f} | {row['min_round_p50_ms']:.4f} | "
              f"{row['min_vs_alone']:.2f} | "
              + ", ".join(f"{v:.4f}" for v in row["member_p50_ms"]) + " |")
    if args.out:
        atomic.write_json(args.out, result, sort_keys=False)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
