"""Facts about the machine a benchmark ran on: CPU, governor, frequency, temperature, load averages.

The same parser serves every device: the local machine's files are read directly, a remote
device runs ``PROBE_SCRIPT`` (a fixed POSIX sh script, no user input in it) and its sectioned output
is parsed by ``parse_probe``. A fact the device does not expose is None and listed in ``missing``:
its absence is recorded, never an error (an emulated board has no thermal zones; a phone may hide
its CPU model).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

SECTION = "==mtl-edge== "
PROBE_SCRIPT = "; ".join(
    f"echo '{SECTION}{name}'; {command} 2>/dev/null"
    for name, command in (
        ("machine", "uname -m"),
        ("cpuinfo", "cat /proc/cpuinfo"),
        ("governor", "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        ("freq", "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"),
        ("temps", "cat /sys/class/thermal/thermal_zone*/temp"),
        ("nproc", "nproc"),
        ("vcgencmd_temp", "vcgencmd measure_temp"),
        ("vcgencmd_throttled", "vcgencmd get_throttled"),
        ("android_model", "getprop ro.product.model"),
        ("android_version", "getprop ro.build.version.release"),
    )) + "; true"
TEMPERATURE_SCRIPT = "; ".join(
    f"echo '{SECTION}{name}'; {command} 2>/dev/null"
    for name, command in (("temps", "cat /sys/class/thermal/thermal_zone*/temp"),
                          ("vcgencmd_temp", "vcgencmd measure_temp"))) + "; true"
# read before and after every measurement: temperature and load averages in one round trip
CONDITIONS_SCRIPT = TEMPERATURE_SCRIPT.removesuffix("; true") + f"; echo '{SECTION}loadavg'; cat /proc/loadavg 2>/dev/null; true"


def parse_probe(text: str) -> dict[str, str]:
    """The sections of the probe's output: {name: text} (a section with no output is '')."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(SECTION):
            current = line[len(SECTION):].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items()}


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def environment_from(sections: dict[str, str]) -> dict:
    """Device facts from probe sections (see ``PROBE_SCRIPT``)."""
    model = mhz = None
    for line in (sections.get("cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and model is None and value:
            model = value
        elif key == "cpu MHz" and mhz is None:
            mhz = _float(value)
    freq = sections.get("freq") or ""
    if freq.isdigit():
        mhz = int(freq) / 1000
    temps = [int(v) / 1000 for v in (sections.get("temps") or "").split() if v.lstrip("-").isdigit()]
    vc_temp = (sections.get("vcgencmd_temp") or "").removeprefix("temp=").removesuffix("'C")
    throttled = (sections.get("vcgencmd_throttled") or "").removeprefix("throttled=") or None
    nproc = sections.get("nproc") or ""
    facts = {
        "machine": sections.get("machine") or None,
        "cpu_model": model,
        "cpu_governor": sections.get("governor") or None,
        "cpu_freq_mhz": round(mhz, 1) if mhz else None,
        "temperature_c": max(temps) if temps else None,
        "cpu_count": int(nproc) if nproc.isdigit() else None,
        "vcgencmd_temperature_c": _float(vc_temp),
        "throttled": throttled,
    }
    if "android_model" in sections:
        facts["android_model"] = sections.get("android_model") or None
        facts["android_version"] = sections.get("android_version") or None
    facts["missing"] = sorted(k for k, v in facts.items() if v is None)
    return facts


def temperature_from(sections: dict[str, str]) -> float | None:
    """The hottest thermal zone (or vcgencmd's reading) from a ``TEMPERATURE_SCRIPT`` output."""
    facts = environment_from(sections)
    return facts["temperature_c"] if facts["temperature_c"] is not None else facts["vcgencmd_temperature_c"]


def conditions_from(sections: dict[str, str]) -> dict:
    """Temperature and (1m, 5m, 15m) load averages from a ``CONDITIONS_SCRIPT`` output (None where not exposed)."""
    from mtl_edge.bench.load import parse_loadavg

    return {"temperature_c": temperature_from(sections), "load": parse_loadavg(sections.get("loadavg"))}


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def local_environment() -> dict:
    """CPU model, governor, frequency and temperature of this machine (None where it has none)."""
    temps = "\n".join(_read(z) for z in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")))
    facts = environment_from({
        "machine": platform.machine(), "cpuinfo": _read("/proc/cpuinfo"),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "freq": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"), "temps": temps,
        "nproc": str(os.cpu_count() or "")})
    for key in ("vcgencmd_temperature_c", "throttled"):
        facts.pop(key)
    facts["missing"] = sorted(k for k, v in facts.items() if v is None and k != "missing")
    return facts
