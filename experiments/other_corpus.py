"""Experiment 4: an auxiliary task from the main task's own corpus against the same auxiliary from another corpus.

Usage: python experiments/other_corpus.py SWEEPS OUT_FOLDER

SWEEPS holds, per pair MAIN+AUX, two sweeps with singles and pairs over the same seeds (see
experiments/README.md): ``same/MAIN+AUX`` (both tasks from the demo corpus) and ``other/MAIN+AUX``
(MAIN from the demo corpus, ``AUX@`` the other corpus). The main task's single-task baseline is the
same training in both (same corpus, seed and config; checked). Per pair it reports the main task's
test macro-F1 and accuracy alone, beside the same-corpus auxiliary and beside the other-corpus
auxiliary, each gain over alone, and the difference other - same, as the mean over seeds with a
95 % t interval over the seeds (paired by seed).

Writes OUT_FOLDER/table.md, table.csv, gains.png and, per sweep, sweep.json, results.csv and each
run's metrics.json and status.json (no checkpoints, no curves; corpus paths relative to the
repository root).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from overlap import keep  # the sweep's settings, results and each run's metrics and status

ARMS = ("same", "other")
METRICS = ("macro_f1", "accuracy")


def test_metric(sweep: Path, combo: str, seed: int, task: str, metric: str) -> float:
    metrics = json.loads((sweep / "runs" / combo / f"seed{seed}" / "metrics.json").read_text())
    return float(metrics["tasks"][task]["test"][metric])


def interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % t interval over seeds."""
    from scipy import stats

    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def main(sweeps: Path, out: Path) -> None:
    pairs = sorted(p.name for p in (sweeps / "same").iterdir() if (p / "sweep.json").is_file())
    rows = []
    for pair in pairs:
        main_task, aux = pair.split("+")
        folders = {arm: sweeps / arm / pair for arm in ARMS}
        configs = {arm: json.loads((f / "sweep.json").read_text()) for arm, f in folders.items()}
        if "task_corpora" in configs["same"] or "task_corpora" not in configs["other"]:
            raise SystemExit(f"{pair}: same/ must be a one-corpus sweep and other/ a two-corpus one")
        if {k: v for k, v in configs["same"].items() if k not in ("corpus", "corpus_fingerprint")} != \
                {k: v for k, v in configs["other"].items() if k not in ("corpus", "corpus_fingerprint", "task_corpora")}:
            raise SystemExit(f"{pair}: the two sweeps differ in more than the auxiliary's corpus")
        if configs["other"]["task_corpora"][main_task]["fingerprint"] != configs["same"]["corpus_fingerprint"]:
            raise SystemExit(f"{pair}: the main task reads another corpus in the two sweeps")
        seeds = configs["same"]["seeds"]
        for metric in METRICS:
            alone = np.array([test_metric(folders["same"], main_task, s, main_task, metric) for s in seeds])
            alone_other = np.array([test_metric(folders["other"], main_task, s, main_task, metric) for s in seeds])
            if not np.array_equal(alone, alone_other):
                raise SystemExit(f"{pair}: the main task's baseline differs between the sweeps ({alone} / {alone_other})")
            with_aux = {arm: np.array([test_metric(folders[arm], pair, s, main_task, metric) for s in seeds]) for arm in ARMS}
            aux_score = {arm: np.array([test_metric(folders[arm], pair, s, aux, metric) for s in seeds]) for arm in ARMS}
            row = {"pair": pair, "main": main_task, "auxiliary": aux, "metric": metric, "seeds": len(seeds),
                   "alone": float(alone.mean())}
            for arm in ARMS:
                row[f"with_{arm}"] = float(with_aux[arm].mean())
                row[f"gain_{arm}"], row[f"gain_{arm}_lo"], row[f"gain_{arm}_hi"] = interval(with_aux[arm] - alone)
                row[f"aux_{arm}"] = float(aux_score[arm].mean())
            row["other_minus_same"], row["other_minus_same_lo"], row["other_minus_same_hi"] = interval(
                with_aux["other"] - with_aux["same"])
            row["per_seed_other_minus_same"] = " ".join(f"{v:+.4f}" for v in with_aux["other"] - with_aux["same"])
            rows.append(row)
        for arm in ARMS:
            keep(folders[arm], out / arm / pair)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    atomic.write_text(out / "table.csv", buf.getvalue())
    atomic.write_text(out / "table.md", markdown(rows))
    plot([r for r in rows if r["metric"] == "macro_f1"], out / "gains.png")
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    def ci(row, key):
        return f"{row[key]:+.3f} [{row[key + '_lo']:+.3f}, {row[key + '_hi']:+.3f}]"

    lines = ["| main | auxiliary | metric | alone | with same-corpus aux | gain | with other-corpus aux | gain | "
             "other − same | aux's own score (same / other corpus) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['main']} | {r['auxiliary']} | {r['metric']} | {r['alone']:.3f} | {r['with_same']:.3f} | "
                     f"{ci(r, 'gain_same')} | {r['with_other']:.3f} | {ci(r, 'gain_other')} | {ci(r, 'other_minus_same')} | "
                     f"{r['aux_same']:.3f} / {r['aux_other']:.3f} |")
    return ("Test metrics of the main task (demo corpus test split), mean over seeds; gains and differences with "
            "95 % t intervals over the seeds (paired by seed).\n\n" + "\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.7 * len(rows)))
    y = np.arange(len(rows))
    for shift, arm, colour in ((-0.15, "same", "tab:blue"), (0.15, "other", "tab:orange")):
        means = [r[f"gain_{arm}"] for r in rows]
        err = [[m - r[f"gain_{arm}_lo"] for m, r in zip(means, rows)], [r[f"gain_{arm}_hi"] - m for m, r in zip(means, rows)]]
        ax.errorbar(means, y + shift, xerr=err, fmt="o", color=colour, capsize=3,
                    label=f"auxiliary from the {'same' if arm == 'same' else 'other'} corpus")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(y, [f"{r['main']} + {r['auxiliary']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("main task's test macro-F1 gain over alone (mean over seeds, 95 % t interval)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    atomic.write_png(path, fig)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
