"""Summarise experiments/wavenet_aux.sh: the scene task's test MAP@3 and top-1 accuracy per variant.

Usage: python experiments/wavenet_aux.py RUNS_FOLDER OUT_FOLDER

Writes OUT_FOLDER/table.csv (one row per run), OUT_FOLDER/table.md (mean and standard deviation
over seeds per variant, with the number of seeds), OUT_FOLDER/wavenet_aux.png (the three views:
auxiliary tasks, amount of unlabelled audio, augmentation) and copies each finished run's
metrics.json and config.json (no checkpoints, no curves).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from kept_runs import keep_run_files

MAIN = "scene"
AUXILIARY = ["alone", "next_step", "denoise", "upsample", "next_step+denoise", "next_step+upsample", "denoise+upsample", "all"]
UNLABELLED = [("all-unlabeled60s", 60), ("all-unlabeled300s", 300), ("all", None)]
AUGMENTATION = ["alone", "alone-aug", "all", "all-aug"]
# Balanced batches of 48 share the clips among the tasks: beside k auxiliaries scene sees 48 / (k + 1)
# labelled clips per step. Tagging alone at that batch (``alone-b24`` etc.) is the matched control.
MATCHED = {1: "alone-b24", 2: "alone-b16", 3: "alone-b12"}
CONTROLS = list(MATCHED.values())


def matched_control(variant: str) -> str | None:
    """The alone run with as many labelled clips per step as ``variant`` gives scene (None: no control;
    augmented variants double the labelled pool, so no alone run matches them)."""
    if variant == "alone" or variant in CONTROLS or variant.endswith("-aug"):
        return None
    base = variant.split("-unlabeled")[0]
    auxiliaries = 3 if base == "all" else base.count("+") + 1
    return MATCHED[auxiliaries]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _paired_gain(group: list[dict], alone: dict[int, float]) -> tuple[str, str]:
    """Mean ± sd of (variant - reference) over the seeds both have, and the paired t-test's p-value."""
    from scipy import stats

    pairs = [(r["map_at_3"], alone[r["seed"]]) for r in group if r["seed"] in alone]
    if not pairs:
        return "", ""
    diffs = [a - b for a, b in pairs]
    m, s = _mean_sd(diffs)
    if len(pairs) < 2:  # one seed: no spread, no test
        return f"{m:+.3f}", "-"
    p = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue if s > 0 else float("nan")
    return f"{m:+.3f} ± {s:.3f}", f"{p:.2f}"


def _fmt(values: list[float]) -> str:
    m, s = _mean_sd(values)
    return f"{m:.3f} ± {s:.3f}" if len(values) > 1 else f"{m:.3f}"


def main(runs: Path, out: Path) -> None:
    rows = []
    for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").is_file()):
        variant, _, seed = run.name.rpartition("-s")
        metrics = json.loads((run / "metrics.json").read_text())
        test = metrics["tasks"][MAIN]["multi"]
        rows.append({"variant": variant, "seed": int(seed), "map_at_3": test["map_at_3"], "accuracy": test["accuracy"],
                     "test_samples": metrics["tasks"][MAIN]["test_samples"]})
        keep_run_files(run, out / "runs" / run.name)
    if not rows:
        raise SystemExit(f"no finished runs in {runs}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    by_variant = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    order = list(dict.fromkeys([*AUXILIARY, *(v for v, _ in UNLABELLED), *AUGMENTATION, *CONTROLS, *sorted(by_variant)]))
    lines = [f"| variant | seeds | {MAIN} MAP@3 | {MAIN} top-1 | MAP@3 - alone (same seed) | p | "
             "matched control | MAP@3 - matched control (same seed) | p |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_seed = {v: {r["seed"]: r["map_at_3"] for r in group} for v, group in by_variant.items()}
    for variant in order:
        group = by_variant.get(variant)
        if not group:
            continue
        gain, p = _paired_gain(group, by_seed.get("alone", {})) if variant != "alone" else ("", "")
        control = matched_control(variant)
        matched, p_matched = _paired_gain(group, by_seed.get(control, {})) if control else ("", "")
        lines.append(f"| {variant} | {len(group)} | {_fmt([r['map_at_3'] for r in group])} | "
                     f"{_fmt([r['accuracy'] for r in group])} | {gain} | {p} | {control or ''} | {matched} | {p_matched} |")
    lines.append("")
    lines.append("Mean ± standard deviation over seeds. A gain is the mean of the per-seed differences from the "
                 "reference run with the same seed (± their standard deviation), tested by a paired t-test "
                 "(two-sided, p; no correction for the multiple comparisons). `alone` trains scene on all 48 "
                 "clips of each batch; the matched control is `alone` at the batch scene gets beside the "
                 "auxiliaries (48 / (auxiliaries + 1) labelled clips per step), so its column is the "
                 "auxiliaries' effect with the labelled clips per step held equal.")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(by_variant, out / "wavenet_aux.png")


def _plot(by_variant: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stats(variant):
        values = [r["map_at_3"] for r in by_variant.get(variant, [])]
        return _mean_sd(values) if values else (float("nan"), 0.0)

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [3, 1.3, 1.6]})
    for ax, variants, title in ((axes[0], AUXILIARY, "auxiliary tasks"), (axes[2], AUGMENTATION, "augmentation")):
        means, sds = zip(*(stats(v) for v in variants))
        ax.errorbar(range(len(variants)), means, yerr=sds, fmt="o", capsize=3, color="#4C72B0", label="the variant")
        controls = [matched_control(v) for v in variants]
        if any(controls):
            xs = [i for i, c in enumerate(controls) if c]
            ax.plot(xs, [stats(controls[i])[0] for i in xs], "D", color="#DD8452",
                    label="alone at the same labelled clips per step")
            ax.legend(fontsize=7, loc="lower left")
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel(f"{MAIN} test MAP@3 (mean ± sd over seeds)")
    points = [(seconds, *stats(v)) for v, seconds in UNLABELLED]
    total = max((s for s, _, _ in points if s), default=300) * 4  # "all" drawn past the largest cap
    xs = [s if s else total for s, _, _ in points]
    axes[1].errorbar(xs, [m for _, m, _ in points], yerr=[sd for _, _, sd in points], marker="o", capsize=3)
    axes[1].set_xscale("log")
    axes[1].set_xticks(xs, [f"{s} s" if s else "all" for s, _, _ in points])
    axes[1].set_title("unlabelled audio (all three)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
