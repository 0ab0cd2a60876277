"""The benchmark's records as typed dataclasses; ``to_json()`` gives the flat line of the results file.

The line's field order and names are the results file's contract (``mtl_edge.report`` and earlier
results read them), so ``to_json`` lays the fields out in declaration order, with the open-ended
groups (latency statistics, device facts, answer checks, per-task accuracies) spliced in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

SCHEMA = 1


class _Line:
    kind: ClassVar[str]
    _spliced: ClassVar[tuple[str, ...]] = ()
    _optional: ClassVar[tuple[str, ...]] = ()  # left out of the line when None

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind, "schema": SCHEMA}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._spliced:
                out.update(value)
            elif not (f.name in self._optional and value is None):
                out[f.name] = value
        return out


@dataclass
class Measurement(_Line):
    """One runner process: one artefact (``alone``) or several back to back (``coresident``)."""

    kind: ClassVar[str] = "measurement"
    _spliced: ClassVar[tuple[str, ...]] = ("stats", "environment", "load", "answers")
    _optional: ClassVar[tuple[str, ...]] = ("members", "thread_pool", "answer_rows")

    time: str
    device: str
    runtime: str
    threads: int
    cpu_affinity: str | None
    warmup_runs: int
    min_runs: int
    min_secs: float
    max_secs: float
    mode: str
    transport: str
    machine: str
    emulated: bool
    runtime_version: str
    model: str
    tasks: list[str]
    artefact: str
    artefact_sha256: str
    format: str
    precision: str
    status: str
    model_bytes: int
    import_ms: float | None
    init_ms: float | None
    first_ms: float | None
    stats: dict  # runs, mean/std/min/max, p50/p90/p99, window medians (``runtimes.runner.latency_stats``)
    wall_s: float | None
    capped: bool
    clips: int
    rss_after_import_mb: float | None
    peak_rss_mb: float | None
    delta_rss_mb: float | None
    hwm_reset: bool
    environment: dict  # the transport's device facts (cpu_model, governor, ...)
    temperature_before_c: float | None
    temperature_c: float | None
    load: dict  # load_{1,5,15}m_{before,after}, load_own_estimate, busy (``bench.load.load_fields``)
    python_version: str
    numpy_version: str
    export: str
    thread_pool: str | None = None  # "per-session" or the runtime's shared pool of co-resident models ("global")
    members: list[dict] | None = None  # co-resident: each artefact's own init / first / p50 / p90
    answers: dict = field(default_factory=dict)  # answers_* fields (``bench.answers``)
    latencies_ms: list[float] = field(default_factory=list)
    answer_rows: int | None = None  # the test clips sent (bench --answer-rows); None: the whole test split


@dataclass
class Compare(_Line):
    """The Georgiev et al. comparison of the multi-task model with the sum of the single-task models."""

    kind: ClassVar[str] = "compare"
    _spliced: ClassVar[tuple[str, ...]] = ("accuracy",)
    _optional: ClassVar[tuple[str, ...]] = ("answer_rows",)

    time: str
    device: str
    runtime: str
    runtime_version: str
    machine: str
    emulated: bool
    format: str
    precision: str
    tasks: list[str]
    n_single: int
    multi_p50_ms: float
    single_p50_sum_ms: float | None
    coresident_p50_ms: float | None
    runtime_ratio: float | None
    runtime_ratio_coresident: float | None
    multi_delta_rss_mb: float | None
    single_delta_rss_sum_mb: float | None
    coresident_delta_rss_mb: float | None
    memory_ratio: float | None
    memory_ratio_coresident: float | None
    multi_peak_rss_mb: float | None
    single_peak_rss_sum_mb: float | None
    memory_ratio_peak: float | None
    multi_model_bytes: int
    single_model_bytes_sum: int
    size_ratio: float | None
    frontend_p50_ms: float | None
    frontend_delta_rss_mb: float | None
    runtime_ratio_shared_frontend: float | None  # headline: one front-end on each side
    runtime_ratio_coresident_shared_frontend: float | None
    memory_ratio_shared_frontend: float | None
    runtime_ratio_frontend_per_model: float | None  # variant: one front-end per single-task model
    memory_ratio_frontend_per_model: float | None
    busy: bool | None  # any of its measurements taken on a busy device (``bench.load``)
    multi_status: str | None
    single_status: list
    accuracy: dict  # accuracy_multi_<task>, accuracy_single_<task> from the export's verification
    cpu_model: str | None
    cpu_governor: str | None
    cpu_freq_mhz: float | None
    temperature_c: float | None
    threads: int
    cpu_affinity: str | None
    multi_sha256: str
    single_sha256: list[str]
    warmup_runs: int
    min_runs: int
    min_secs: float
    max_secs: float
    answer_rows: int | None = None  # as the measurements'
