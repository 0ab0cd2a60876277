"""Benchmark exported artefacts on a device: runtime and memory, and the Georgiev multi vs single comparison.

``bench(EXPORT, device="desktop", compare="single")`` (see ``harness``) runs ``mtl_edge/runtimes/runner.py``
(numpy + the runtime only) in a separate process per measurement and appends flat JSON lines to
``EXPORT/bench/<device>-<runtime>.jsonl``; ``mtl_edge.report.render_report`` turns them into Markdown + PNG.
Device profiles are TOML files in ``devices/`` (``devices.load_device``).
"""

from mtl_edge.bench.devices import Device, known_devices, load_device
from mtl_edge.bench.compare import compare_record
from mtl_edge.bench.harness import BenchConfig, BenchResult, bench
from mtl_edge.bench.results import read_lines
from mtl_edge.runtimes.runner import latency_stats

__all__ = ["BenchConfig", "BenchResult", "Device", "bench", "compare_record", "known_devices", "latency_stats", "load_device",
           "read_lines"]
