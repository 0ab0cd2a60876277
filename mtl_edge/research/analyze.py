"""``mtl-edge analyze``: when does sharing help? Gains of every (main, auxiliary) pair of a sweep,
their significance, their correlation with dataset and learning-curve features, and a logistic
regression that predicts a positive gain from the features (Bingel & Søgaard 2017).

- gain of main task m with auxiliary a, seed s: metric(m in {m, a}, s) - metric(m alone, s);
  mean and 95 % t confidence interval over seeds; paired t-test over seeds (multi against single),
  Holm-corrected across the directed pairs (with 5 seeds a Wilcoxon test cannot reach p < 0.05);
- Pearson r and p of every pair feature with the mean gain;
- logistic regression on gain > 0: min-max scaling fitted inside each fold (a pipeline), 5-fold
  stratified cross-validation repeated 100 times, F1 mean ± std, against the majority class and
  against a model on the dataset features only; recursive feature elimination ranks the features;
- per-class F1 change of each main task's labels, per pair, averaged over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtl_edge import atomic
from mtl_edge.errors import MtlEdgeError
from mtl_edge.research import features as feats
from mtl_edge.research.runs import RunSpec, finished_metrics

METRICS = ("macro_f1", "micro_f1", "accuracy")
FOLDS, REPEATS = 5, 100
MIN_POINTS_FOR_CV = 10  # below this, or with fewer than FOLDS of a class, only correlations are reported


@dataclass
class Analysis:
    metric: str
    gains: list[dict]  # per directed pair: main, aux, seeds, mean, ci_low, ci_high, p, p_holm, significant
    features: dict[tuple[str, str], dict]  # (main, aux) -> pair features
    correlations: list[dict]  # feature, r, p, n
    regression: dict  # {"skipped": reason} or F1 means/stds and the ranking
    per_class: list[dict]  # main, aux, label, single, multi, change
    notes: list[str] = field(default_factory=list)


def pair_gains(out: Path, tasks: list[str], seeds: list[int], metric: str) -> tuple[list[dict], list[dict]]:
    """Per directed pair: the gain per seed (runs not done are left out) and the per-class changes."""
    from scipy import stats

    gains, per_class = [], []
    for i, main in enumerate(tasks):
        for aux in tasks:
            if aux == main:
                continue
            pair = tuple(sorted((main, aux), key=tasks.index))
            values, classes, used = [], {}, metric
            for seed in seeds:
                finished = finished_metrics(out, RunSpec((main,), seed))
                single = finished.get("tasks", {}).get(main, {})
                multi = finished_metrics(out, RunSpec(pair, seed)).get("tasks", {}).get(main, {})
                if single and metric not in single.get("test", {}):  # a kind without it (a frame task): its own selection metric
                    used = (finished.get("task_specs", {}).get(main) or {}).get("select_metric") or metric
                a, b = single.get("test", {}).get(used), multi.get("test", {}).get(used)
                if a is None or b is None:
                    continue
                values.append((a, b))
                for label, f in (multi.get("per_class_f1") or {}).items():
                    g = (single.get("per_class_f1") or {}).get(label)
                    if f is not None and g is not None:
                        classes.setdefault(label, []).append((g, f))
            if not values:
                continue
            single_v, multi_v = np.array(values).T
            diff = multi_v - single_v
            n = len(diff)
            mean = float(diff.mean())
            if n > 1 and diff.std(ddof=1) > 0:
                half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
                p = float(stats.ttest_rel(multi_v, single_v).pvalue)
            else:
                half, p = (0.0 if n > 1 else None), (1.0 if n > 1 else None)
            gains.append({"main": main, "aux": aux, "metric": used, "seeds": n, "single": float(single_v.mean()),
                          "multi": float(multi_v.mean()), "gain": mean,
                          "ci_low": None if half is None else mean - half, "ci_high": None if half is None else mean + half,
                          "p": p})
            for label, pairs in sorted(classes.items()):
                g, f = np.array(pairs).T
                per_class.append({"main": main, "aux": aux, "label": label, "single": float(g.mean()),
                                  "multi": float(f.mean()), "change": float((f - g).mean())})
    tested = [g for g in gains if g["p"] is not None]
    if tested:
        from statsmodels.stats.multitest import multipletests

        reject, p_holm, _, _ = multipletests([g["p"] for g in tested], alpha=0.05, method="holm")
        for g, r, q in zip(tested, reject, p_holm):
            g["p_holm"], g["significant"] = float(q), bool(r)
    for g in gains:
        g.setdefault("p_holm", None)
        g.setdefault("significant", False)
    return gains, per_class


def task_features(out: Path, corpus: str, tasks: list[str], seeds: list[int], task_corpora: dict | None = None
                  ) -> dict[str, dict]:
    """Per task: dataset features (training rows; of each task's own corpus when ``task_corpora`` says so)
    and learning-curve features (mean over the seeds' single-task runs; a failed fit in any seed is
    reported as missing)."""
    groups: dict[str, list[str]] = {}
    for task in tasks:
        groups.setdefault(task_corpora[task]["corpus"] if task_corpora else corpus, []).append(task)
    data = {}
    for where, group in groups.items():
        data.update(feats.dataset_features(where, group))
    out_features = {}
    for task in tasks:
        per_seed = []
        for seed in seeds:
            path = RunSpec((task,), seed).folder(out) / "curves.csv"
            if path.is_file():
                per_seed.append(feats.curve_features(feats.read_curve(path, task)))
        curve = {}
        for key in feats.CURVE_FEATURES:
            values = [c.get(key) for c in per_seed]
            curve[key] = None if not values or any(v is None for v in values) else float(np.mean(values))
        errors = sorted({c["curve_fit_error"] for c in per_seed if c.get("curve_fit_error")})
        if errors:
            curve["curve_fit_error"] = "; ".join(errors)
        out_features[task] = data[task] | curve
    return out_features


def correlations(gains: list[dict], pair_features: dict) -> list[dict]:
    from scipy import stats

    names = sorted({k for f in pair_features.values() for k in f})
    out = []
    for name in names:
        xs, ys = [], []
        for g in gains:
            v = pair_features[(g["main"], g["aux"])].get(name)
            if v is not None and math.isfinite(v):
                xs.append(v)
                ys.append(g["gain"])
        if len(xs) >= 3 and np.std(xs) > 0 and np.std(ys) > 0:
            r, p = stats.pearsonr(xs, ys)
            out.append({"feature": name, "r": float(r), "p": float(p), "n": len(xs)})
    return sorted(out, key=lambda c: -abs(c["r"]))


def regression(gains: list[dict], pair_features: dict, seed: int = 0) -> dict:
    """Cross-validated F1 of a logistic regression on gain > 0 (all features, data features only,
    the majority class), and the features ranked by recursive feature elimination."""
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_selection import RFE
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    y = np.array([g["gain"] > 0 for g in gains], dtype=int)
    counts = np.bincount(y, minlength=2)
    if len(y) < MIN_POINTS_FOR_CV or counts.min() < FOLDS:
        return {"skipped": f"{len(y)} pair(s), {counts[1]} with a positive gain and {counts[0]} without: too few for "
                           f"{FOLDS}-fold cross-validation (needs at least {MIN_POINTS_FOR_CV} pairs and {FOLDS} of each "
                           f"class); only the correlations are reported"}
    names = sorted({k for f in pair_features.values() for k in f})
    matrix = np.array([[pair_features[(g["main"], g["aux"])].get(k) for k in names] for g in gains], dtype=object)
    usable = [j for j, k in enumerate(names)
              if all(v is not None and math.isfinite(v) for v in matrix[:, j]) and len({*matrix[:, j]}) > 1]
    names = [names[j] for j in usable]
    x = matrix[:, usable].astype(np.float64)
    data_cols = [j for j, k in enumerate(names) if k.split("_", 1)[1] in feats.DATA_FEATURES]
    cv = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=seed)

    def model():
        return make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=5000))

    def score(estimator, columns):
        s = cross_val_score(estimator, x[:, columns], y, cv=cv, scoring="f1")
        return {"f1_mean": float(s.mean()), "f1_std": float(s.std())}

    all_cols = list(range(len(names)))
    rfe = RFE(LogisticRegression(max_iter=5000), n_features_to_select=1).fit(MinMaxScaler().fit_transform(x), y)
    ranking = sorted(zip(rfe.ranking_.tolist(), names))
    return {
        "points": int(len(y)), "positive": int(counts[1]), "features": len(names), "data_features": len(data_cols),
        "folds": FOLDS, "repeats": REPEATS,
        "all_features": score(model(), all_cols),
        "data_features_only": score(model(), data_cols) if data_cols else None,
        "majority": score(DummyClassifier(strategy="most_frequent"), all_cols),
        "ranking": [{"rank": r, "feature": n} for r, n in ranking],
    }


def analyze(sweep: str | Path, metric: str = "macro_f1") -> Analysis:
    out = Path(sweep)
    if metric not in METRICS:
        raise MtlEdgeError(f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    config = atomic.read_json(out / "sweep.json", f"{out} is not a sweep folder (no sweep.json; mtl-edge sweep writes one)",
                              "; is it a sweep folder (written by mtl-edge sweep)?")
    if "pairs" not in config.get("combos", []):
        raise MtlEdgeError(f"{out} has no pairs (combos: {', '.join(config.get('combos', []))}); analyze needs --combos pairs")
    tasks, seeds = config["tasks"], config["seeds"]
    gains, per_class = pair_gains(out, tasks, seeds, metric)
    if not gains:
        raise MtlEdgeError(f"{out}: no pair has both its run and its single-task baseline finished; run the sweep first")
    per_task = task_features(out, config["corpus"], tasks, seeds, config.get("task_corpora"))
    pairs = {(g["main"], g["aux"]): feats.pair_features(per_task[g["main"]], per_task[g["aux"]]) for g in gains}
    notes = [f"{t}: learning-curve fit failed ({per_task[t]['curve_fit_error']}); its curve features are missing"
             for t in tasks if per_task[t].get("curve_fit_error")]
    missing = len(tasks) * (len(tasks) - 1) - len(gains)
    if missing:
        notes.append(f"{missing} directed pair(s) have no finished run and baseline and are left out")
    return Analysis(metric, gains, pairs, correlations(gains, pairs), regression(gains, pairs), per_class, notes)
