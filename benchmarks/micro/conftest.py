"""pytest-benchmark settings of the micro-benchmarks: the load gate, and what their JSON records.

Run them with ``make bench-check`` (against the committed ``benchmarks/results/micro.json``) or
``make bench`` (rewrites it). Not collected by a plain ``pytest`` (``testpaths = ["tests"]``).
"""

from __future__ import annotations

import os

# one core means one core: the math libraries are pinned before numpy / torch are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--allow-busy", action="store_true",
                     help="write benchmarks/results/micro.json even when the 1-minute load is above 0.5 (recorded)")


def pytest_configure(config):
    from mtl_edge.bench.load import gate

    import pytest

    out = config.getoption("benchmark_json", None)
    try:
        config._mtl_edge_load = gate(config.getoption("allow_busy"), "micro-benchmarks", out)
    except SystemExit:  # the gate's message is on stderr
        pytest.exit(f"busy machine: {out} not written", returncode=2)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    from mtl_edge.bench.load import local_load

    output_json["argv"] = ["python", "-m", "pytest", *sys.argv[1:]]  # as typed, from the repository root
    output_json.update(config._mtl_edge_load)
    output_json["load_1m_at_end"] = local_load()[0]
