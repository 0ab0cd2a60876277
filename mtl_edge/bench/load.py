"""How busy the machine was: load averages around each measurement, and the gate of the benchmark scripts.

Every measurement line records the device's 1/5/15-minute load averages read just before and just after
its runner process (``load_1m_before`` ... ``load_15m_after``). The benchmark itself raises the load: a
runner pinned to ``threads`` cores adds up to ``threads * (1 - exp(-t / 60))`` to the 1-minute average
after ``t`` seconds of back-to-back runners (the kernel's exponentially damped average, time constant one
minute). A line is marked ``busy`` when the 1-minute load, less that estimate of the benchmark's own
share (``load_own_estimate``), is above ``BUSY_LOAD``: some other work shared the CPU, and the figure is
suspect.

The scripts under ``benchmarks/`` read the 1-minute load before they start (``gate``) and refuse to write a
committed result (under ``benchmarks/results/``) when it is above ``BUSY_LOAD`` (``MTL_EDGE_BUSY_LOAD``
overrides it), unless told to (``--allow-busy``, recorded in their result with the load and ``argv``).
Before refusing they wait up to ``SETTLE_S`` seconds (``MTL_EDGE_SETTLE_S``) for the load to fall: in
``make bench`` one script starts right after another has raised the 1-minute average, which takes about
a minute to decay; work that keeps the machine busy still makes them refuse.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

BUSY_LOAD = 0.5  # 1-minute load average above which a machine is not idle enough for a committed figure
SETTLE_S = 300.0  # how long a script waits for the load to fall below BUSY_LOAD before refusing


def local_load() -> tuple[float, float, float]:
    """This machine's 1, 5 and 15-minute load averages."""
    import psutil

    one, five, fifteen = psutil.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def parse_loadavg(text: str | None) -> tuple[float, float, float] | None:
    """The three load averages of a ``/proc/loadavg`` line (None when the device does not expose it)."""
    try:
        one, five, fifteen = (float(v) for v in (text or "").split()[:3])
    except ValueError:
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


def own_load(elapsed_s: float, threads: int) -> float:
    """Upper estimate of the 1-minute load the benchmark itself put on the device after ``elapsed_s`` seconds."""
    return threads * (1.0 - math.exp(-max(0.0, elapsed_s) / 60.0))


def load_fields(before, after, elapsed_after_s: float, threads: int) -> dict:
    """The load fields of a measurement line; ``before``/``after``: (1m, 5m, 15m) or None; busy when the higher
    1-minute reading less the benchmark's own share after ``elapsed_after_s`` seconds is above ``BUSY_LOAD``."""
    out: dict = {}
    for when, values in (("before", before), ("after", after)):
        for minutes, value in zip((1, 5, 15), values or (None, None, None)):
            out[f"load_{minutes}m_{when}"] = value
    own = round(own_load(elapsed_after_s, threads), 2)  # the larger of the two estimates: lenient before
    out["load_own_estimate"] = own
    known = [v[0] for v in (before, after) if v is not None]
    out["busy"] = (max(known) - own > BUSY_LOAD) if known else None
    return out


RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"  # the committed results


def committed(out) -> bool:
    """Whether ``out`` is a committed result (under the repository's ``benchmarks/results/``)."""
    return out is not None and RESULTS in Path(out).resolve().parents


def script_argv(argv: list[str] | None = None) -> list[str]:
    """A benchmark script's command line as recorded in its result: the script relative to the working folder
    (``benchmarks/x.py`` when run from the repository root), no path of this machine."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    if script.is_absolute():
        try:
            script = script.relative_to(Path.cwd())
        except ValueError:
            script = Path("benchmarks") / script.name
    return [script.as_posix(), *argv[1:]]


def gate(allow_busy: bool, what: str, out=None) -> dict:
    """Before a benchmark script starts: its 1-minute load. Above ``BUSY_LOAD`` it refuses (exit 2) to write a
    committed result (``out`` under ``benchmarks/results/``) unless ``allow_busy``; otherwise it warns.

    Returns the fields the script records in its result (``load_1m_at_start``, ``allow_busy``, ``busy``, ...).
    """
    threshold = float(os.environ.get("MTL_EDGE_BUSY_LOAD", BUSY_LOAD))
    settle = float(os.environ.get("MTL_EDGE_SETTLE_S", SETTLE_S))
    one, five, fifteen = local_load()
    waited = 0.0
    if one > threshold and committed(out) and not allow_busy and settle > 0:
        sys.stderr.write(f"{what}: 1-minute load {one:.2f} > {threshold}; waiting up to {settle:.0f} s for it to fall\n")
        started = time.monotonic()
        while one > threshold and time.monotonic() - started < settle:
            time.sleep(min(5.0, settle))
            one, five, fifteen = local_load()
        waited = round(time.monotonic() - started, 1)
    busy = one > threshold
    if busy and committed(out) and not allow_busy:
        sys.stderr.write(f"{what}: the machine is busy (1-minute load average {one:.2f} > {threshold}"
                         f"{f' after waiting {waited:.0f} s' if waited else ''}); a figure "
                         f"measured now would not be the machine's, so {out} is not written. Wait until it is idle, "
                         "or pass --allow-busy (recorded in the result)\n")
        raise SystemExit(2)
    if busy:
        sys.stderr.write(f"WARNING: {what}: measuring on a busy machine (1-minute load {one:.2f} > {threshold}); "
                         "the result records it\n")
    return {"load_1m_at_start": one, "load_5m_at_start": five, "load_15m_at_start": fifteen,
            "busy_load_threshold": threshold, "allow_busy": bool(allow_busy), "busy": busy, "waited_for_idle_s": waited}
