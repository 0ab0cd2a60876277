"""What a sweep shows: the live progress table while it trains and the table of its results."""

from __future__ import annotations

import time

from mtl_edge.research.runs import RunSpec


class Board:
    """The live table: runs done / running / failed / waiting, elapsed and time left."""

    def __init__(self, runs: list[RunSpec], skipped: list[RunSpec], workers: int, first_estimate: float):
        self.state = {r: "waiting" for r in runs} | {r: "skipped" for r in skipped}
        self.started: dict[RunSpec, float] = {}
        self.errors: dict[RunSpec, str] = {}
        self.durations: list[float] = []
        self.workers, self.first_estimate, self.t0 = workers, first_estimate, time.time()

    def start(self, spec: RunSpec) -> None:
        if self.state[spec] == "waiting":  # a worker's start event may arrive after its result
            self.started[spec] = time.time()  # before the state: the refresh thread reads both
            self.state[spec] = "running"

    def finish(self, spec: RunSpec, status: dict) -> None:
        done = status.get("status") == "done"
        self.durations.append(status.get("wall_s") or time.time() - self.started.get(spec, time.time()))
        if not done:
            self.errors[spec] = status.get("error", "")
        self.state[spec] = "done" if done else "failed"

    def time_left(self) -> float:
        left = [s for s, v in self.state.items() if v in ("waiting", "running")]
        if not self.durations:
            return max(0.0, self.first_estimate - (time.time() - self.t0))
        per_run = sum(self.durations) / len(self.durations)
        return -(-len(left) // self.workers) * per_run

    def render(self):
        from rich.table import Table

        counts = {k: sum(v == k for v in self.state.values()) for k in ("skipped", "done", "running", "failed", "waiting")}
        table = Table(title=f"sweep: {len(self.state)} runs", title_justify="left")
        for column in ("done before", "done", "running", "failed", "waiting", "elapsed", "time left"):
            table.add_column(column, justify="right")
        table.add_row(*(str(counts[k]) for k in ("skipped", "done", "running", "failed", "waiting")),
                      _clock(time.time() - self.t0), "~" + _clock(self.time_left()))
        runs = Table(show_header=False, box=None)
        for spec, state in self.state.items():
            if state == "running":
                runs.add_row("[cyan]running[/cyan]", spec.label, _clock(time.time() - self.started[spec]))
            elif state == "failed":
                runs.add_row("[red]failed[/red]", spec.label, self.errors[spec][:120])
        from rich.console import Group

        return Group(table, runs)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render_results(rows: list[dict], console=None) -> None:
    """Mean over seeds of each combination's baseline, model and gain, per task (stdout)."""
    from rich.table import Table

    from mtl_edge.progress import stdout_console

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["combo"], row["task"], row["metric"]), []).append(row)
    table = Table(title="test split: combination vs single-task baselines (mean over seeds)")
    for column in ("combo", "task", "metric", "seeds", "single", "multi", "gain"):
        table.add_column(column, justify="left" if column in ("combo", "task", "metric") else "right")
    for (combo, task, metric), group in groups.items():
        cells = []
        for key in ("single", "multi", "gain"):
            values = [r[key] for r in group if r["gain"] is not None]
            cells.append(f"{sum(values) / len(values):+.3f}" if key == "gain" and values else
                         f"{sum(values) / len(values):.3f}" if values else "-")
        table.add_row(combo, task, metric, str(sum(r["gain"] is not None for r in group)), *cells)
    (console or stdout_console()).print(table)
