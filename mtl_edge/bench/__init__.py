"""Benchmark exported artefacts on a device: runtime and memory, and the Georgiev multi vs single comparison.

``bench(EXPORT, device="desktop", compare="single")`` (see ``harness``) runs ``runner.py`` (numpy + the
runtime only) in a separate process per measurement and appends flat JSON lines to
``EXPORT/bench/<device>-<runtime>.jsonl``; ``mtl_edge.report.render_report`` turns them into Markdown + PNG.
Device profiles are TOML files in ``devices/`` (``devices.load_device``).
"""

from mtl_edge.bench.devices import Device, known_devices, load_device
from mtl_edge.bench.harness import BenchResult, bench, compare_record, latency_stats, read_lines

__all__ = ["BenchResult", "Device", "bench", "compare_record", "known_devices", "latency_stats", "load_device",
           "read_lines"]
