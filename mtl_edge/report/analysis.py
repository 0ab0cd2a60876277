"""The files of an analysis (``mtl-edge analyze``): Markdown report, CSV tables, PNG heatmap of the
pairwise gains with significance marks and a bar chart of the strongest correlations."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mtl_edge import atomic

TOP_CORRELATIONS = 20


def _csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else f"{row[k]:.6g}" if isinstance(row.get(k), float) else row[k])
                         for k in columns})
    atomic.write_text(path, buf.getvalue())


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:+.{digits}f}" if isinstance(v, float) else str(v)


def write_analysis(analysis, tasks: list[str], out: Path, wall_s: float | None = None, command: str = "") -> list[Path]:
    """Write every file of the analysis into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    _csv(out / "gains.csv", analysis.gains,
         ["main", "aux", "metric", "seeds", "single", "multi", "gain", "ci_low", "ci_high", "p", "p_holm", "significant"])
    _csv(out / "correlations.csv", analysis.correlations, ["feature", "r", "p", "n"])
    _csv(out / "per_class.csv", analysis.per_class, ["main", "aux", "label", "single", "multi", "change"])
    features = [{"main": m, "aux": a} | f for (m, a), f in analysis.features.items()]
    _csv(out / "pair_features.csv", features, ["main", "aux", *sorted({k for f in analysis.features.values() for k in f})])
    atomic.write_json(out / "regression.json", analysis.regression, sort_keys=False)
    paths = [out / n for n in ("gains.csv", "correlations.csv", "per_class.csv", "pair_features.csv", "regression.json")]
    paths += [_heatmap(analysis, tasks, out / "gains_heatmap.png"), _correlation_chart(analysis, out / "correlations.png")]
    atomic.write_text(out / "report.md", render_markdown(analysis, tasks, wall_s, command))
    return [out / "report.md", *paths]


def render_markdown(analysis, tasks: list[str], wall_s: float | None = None, command: str = "") -> str:
    lines = [f"# When sharing helps: pairwise gains in {analysis.metric}", ""]
    if command:
        lines += [f"Command: `{command}`" + (f" ({wall_s:.0f} s)" if wall_s is not None else ""), ""]
    sig = [g for g in analysis.gains if g["significant"]]
    pos = [g for g in analysis.gains if g["gain"] > 0]
    lines += [f"{len(analysis.gains)} directed (main, auxiliary) pairs; {len(pos)} with a positive mean gain, "
              f"{len(sig)} significant after Holm correction (paired t-test over seeds, α = 0.05).", ""]
    other = sorted({(g["main"], g["metric"]) for g in analysis.gains if g.get("metric", analysis.metric) != analysis.metric})
    if other:
        lines += ["Main tasks without " + analysis.metric + " are scored by their own selection metric: " +
                  ", ".join(f"{t} ({m})" for t, m in other) + ".", ""]
    lines += ["## Gain of the main task (multi − single), mean over seeds, 95 % CI", "",
              "| main | aux | seeds | single | multi | gain | 95 % CI | p (Holm) |", "|---|---|---|---|---|---|---|---|"]
    for g in sorted(analysis.gains, key=lambda g: -g["gain"]):
        ci = "–" if g["ci_low"] is None else f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]"
        mark = " *" if g["significant"] else ""
        p = "–" if g["p_holm"] is None else f"{g['p_holm']:.3g}{mark}"
        main = g["main"] if g.get("metric", analysis.metric) == analysis.metric else f"{g['main']} ({g['metric']})"
        lines.append(f"| {main} | {g['aux']} | {g['seeds']} | {g['single']:.3f} | {g['multi']:.3f} | "
                     f"{g['gain']:+.3f} | {ci} | {p} |")
    lines += ["", "![gains](gains_heatmap.png)", "", "## Correlation of pair features with the gain (Pearson)", ""]
    if analysis.correlations:
        lines += ["| feature | r | p | n |", "|---|---|---|---|"]
        lines += [f"| {c['feature']} | {c['r']:+.3f} | {c['p']:.3g} | {c['n']} |" for c in analysis.correlations[:TOP_CORRELATIONS]]
        lines += ["", f"(the {min(TOP_CORRELATIONS, len(analysis.correlations))} strongest of {len(analysis.correlations)}; "
                      "all in correlations.csv)", "", "![correlations](correlations.png)"]
    else:
        lines.append("No feature varies across the pairs.")
    lines += ["", "## Predicting a positive gain (logistic regression)", ""]
    reg = analysis.regression
    if "skipped" in reg:
        lines.append(f"Not run: {reg['skipped']}.")
    else:
        lines += [f"{reg['points']} pairs ({reg['positive']} positive), {reg['features']} features "
                  f"({reg['data_features']} of them dataset features), {reg['folds']}-fold stratified CV repeated "
                  f"{reg['repeats']} times, min-max scaling fitted inside each fold.", "",
                  "| model | F1 mean | F1 std |", "|---|---|---|"]
        for name, key in (("all features", "all_features"), ("dataset features only", "data_features_only"),
                          ("majority class", "majority")):
            if reg.get(key):
                lines.append(f"| {name} | {reg[key]['f1_mean']:.3f} | {reg[key]['f1_std']:.3f} |")
        lines += ["", "Recursive feature elimination (rank 1 = kept last):", "", "| rank | feature |", "|---|---|"]
        lines += [f"| {r['rank']} | {r['feature']} |" for r in reg["ranking"][:15]]
    lines += ["", "## Per-class F1 changes (largest first)", ""]
    if analysis.per_class:
        lines += ["| main | aux | label | single | multi | change |", "|---|---|---|---|---|---|"]
        top = sorted(analysis.per_class, key=lambda c: -abs(c["change"]))[:20]
        lines += [f"| {c['main']} | {c['aux']} | {c['label']} | {c['single']:.3f} | {c['multi']:.3f} | {c['change']:+.3f} |"
                  for c in top]
        lines.append("\n(all in per_class.csv)")
    else:
        lines.append("No per-class F1 was recorded.")
    if analysis.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in analysis.notes]]
    return "\n".join(lines) + "\n"


def _heatmap(analysis, tasks: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.full((len(tasks), len(tasks)), np.nan)
    marks = {}
    for g in analysis.gains:
        i, j = tasks.index(g["main"]), tasks.index(g["aux"])
        grid[i, j] = g["gain"]
        marks[(i, j)] = "*" if g["significant"] else ""
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(tasks), 0.8 + 0.7 * len(tasks)))
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
    for (i, j), mark in marks.items():
        ax.text(j, i, f"{grid[i, j]:+.3f}{mark}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("auxiliary task")
    ax.set_ylabel("main task")
    ax.set_title(f"gain in {analysis.metric} (* significant, Holm)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return atomic.write_png(path, fig)


def _correlation_chart(analysis, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = analysis.correlations[:TOP_CORRELATIONS][::-1]
    fig, ax = plt.subplots(figsize=(7, 1 + 0.3 * max(1, len(top))))
    ax.barh([c["feature"] for c in top], [c["r"] for c in top],
            color=["tab:blue" if c["p"] < 0.05 else "tab:gray" for c in top])
    ax.set_xlabel("Pearson r with the gain (blue: p < 0.05)")
    ax.axvline(0, color="black", linewidth=0.5)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
