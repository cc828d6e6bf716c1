"""Feature benchmarks: throughput, the production refresher, quality and the choice of ages.
Writes bench/FEATURES_RESULTS.md.

    .venv/bin/python bench/bench_features.py [--repeats 3] [--sizes 10000,100000,1000000] [--generated N]
                                             [--seeds 3] [--parts throughput,quality,incremental]

Throughput: the non-text features (building the event store: normalize, key codes, event logs; then the
history and activity functions for every row) at age 0 and at every age, the own-text features (RE2, once per
issue) and the text score (hashing + per-period SGD fits), medians of repeated runs. The refresher:
`update_features` (what `refresh_features` runs) for one more day of the same activity on histories of
several sizes. Quality: XGBoost with fixed parameters, issues split 75/25 in time (all rows of an issue on
one side); test ROC AUC at age 0 and per age, for several sets of training ages and seeds (the choice of
AGES_HOURS). Only a run of all parts rewrites the results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402

from issue_assets.features.catalog import FEATURE_NAMES, REFERENCE_NAMES  # noqa: E402
from issue_assets.features.changes import earliest_change, input_snapshot  # noqa: E402
from issue_assets.features.compute import (  # noqa: E402
    AGES_HOURS,
    activity,
    compute_features,
    history,
    target_rows,
    update_features,
)
from issue_assets.features.store import EventStore  # noqa: E402
from issue_assets.features.synthetic import (  # noqa: E402
    same_activity,
    snapshot_tables,
    synthetic_comments,
    synthetic_issues,
)
from issue_assets.features.text import text_columns  # noqa: E402
from issue_assets.features.text_score import hash_texts  # noqa: E402
from issue_assets.github.export import iter_export  # noqa: E402
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
XGB_PARAMS = dict(tree_method="hist", n_estimators=400, max_depth=5, learning_rate=0.03, subsample=0.8,
                  colsample_bytree=0.5, min_child_weight=20, reg_lambda=5, n_jobs=2)
AGE_SETS = {"0 only": (0,), "0, 6, 24, 72 (chosen)": AGES_HOURS, "0, 1, 3, 6, 12, 24, 48, 72, 120": (0, 1, 3, 6, 12, 24,
                                                                                                   48, 72, 120)}


def machine() -> dict:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "pandas": pd.__version__, "numpy": np.__version__,
            "xgboost": xgb.__version__, "load": os.getloadavg()}


def load_exports():
    rust_v, _ = issue_versions(iter_export(DATA / "rust-lang_rust_issues.jsonl.gz"), "rust-lang/rust", "2025-12-20")
    rust_c, _ = comment_versions(iter_export(DATA / "rust-lang_rust_comments.jsonl.gz"), "rust-lang/rust",
                                 "2025-12-20")
    mat_v, _ = issue_versions(iter_export(DATA / "matomo-org_matomo_issues.jsonl.gz"), "matomo-org/matomo",
                              "2022-10-02")
    return {"rust": (issues_from_versions(rust_v), rust_c), "matomo": (issues_from_versions(mat_v), None)}


def throughput(name: str, issues, comments, repeats: int, text: bool, include_pull_requests: bool) -> dict:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store = EventStore.build(issues, comments, text_score=False)
        row = {"build": time.perf_counter() - t0}
        for label, ages in (("age0", (0,)), ("all", AGES_HOURS)):
            idx, t = target_rows(store, ages, include_pull_requests)
            rows = store.issues.take(idx)
            t0 = time.perf_counter()
            history(store, rows, t)
            activity(store, rows, t)
            row[label], row[f"{label}_rows"] = time.perf_counter() - t0, len(idx)
        if text:
            iss = store.issues
            t0 = time.perf_counter()
            text_columns(iss["title"], iss["body"])
            row["text"] = time.perf_counter() - t0
            scored = EventStore.build(issues, comments)
            idx, t = target_rows(scored, AGES_HOURS, include_pull_requests)
            t0 = time.perf_counter()
            hash_texts(iss["title"], iss["body"], scored.scorer.config)
            scored.scorer.scores(scored.issues.X[idx], t)
            row["text_score"] = time.perf_counter() - t0
        runs.append(row)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    n0, n = med["age0_rows"], med["all_rows"]
    return {"data": name, "issues": store.issues.n, "rows_age0": int(n0), "rows_all": int(n),
            "build_s": med["build"], "age0_s": med["build"] + med["age0"], "age0_per_s": n0 / (med["build"] + med["age0"]),
            "all_s": med["build"] + med["all"], "all_per_s": n / (med["build"] + med["all"]),
            "text_s": med.get("text"), "text_per_s": store.issues.n / med["text"] if "text" in med else None,
            "text_score_s": med.get("text_score")}


def split_issues(frame: pd.DataFrame, fraction: float = 0.75):
    rows = frame.loc[frame["closed_within_7d"].notna()].sort_values(["created_at", "repo", "id", "age_hours"])
    first = rows.loc[rows["age_hours"] == 0]
    cut = first["created_at"].iloc[int(len(first) * fraction)]
    return rows.loc[rows["created_at"] < cut], rows.loc[rows["created_at"] >= cut]


def auc(train, test, columns, seed: int) -> dict[str, float]:
    """Trained as the platform trains: each issue weighs 1 over its rows (training_sets' sample_weight)."""
    model = xgb.XGBClassifier(**XGB_PARAMS, random_state=seed)
    weight = 1.0 / train.groupby(["repo", "id"])["age_hours"].transform("size").to_numpy()
    model.fit(train[columns], train["closed_within_7d"].astype(int), sample_weight=weight)
    p = model.predict_proba(test[columns])[:, 1]
    y = test["closed_within_7d"].astype(int).to_numpy()
    ages = test["age_hours"].to_numpy()
    return {f"{a:g}": float(roc_auc_score(y[ages == a], p[ages == a])) for a in np.unique(ages)}


def quality(name: str, issues, comments, seeds: int) -> list[dict]:
    """Test AUC per age of models trained on different age sets; the test rows are the same for all (the
    chosen set's ages), so the columns compare models, not test sets."""
    dense = compute_features(issues, comments, ages_hours=AGE_SETS["0, 1, 3, 6, 12, 24, 48, 72, 120"])
    _, test = split_issues(dense)
    test = test.loc[test["age_hours"].isin(AGES_HOURS)]
    out = []
    for label, ages in AGE_SETS.items():
        train, _ = split_issues(dense.loc[dense["age_hours"].isin(ages)])
        runs = [auc(train, test, FEATURE_NAMES, seed) for seed in range(seeds)]
        out.append({"data": name, "ages": label, "train_rows": len(train),
                    **{a: (statistics.mean(r[a] for r in runs), statistics.pstdev(r[a] for r in runs))
                       for a in runs[0]}})
        print(out[-1], flush=True)
    chosen = dense.loc[dense["age_hours"].isin(AGES_HOURS)]
    train, _ = split_issues(chosen)
    zero = test.loc[test["age_hours"] == 0]
    extra = {"without text score": auc(train, test, [c for c in FEATURE_NAMES if c != "text_score"], 0)["0"],
             "reference (leaky ref_*)": auc(train.loc[train["age_hours"] == 0], zero, REFERENCE_NAMES, 0)["0"],
             "text score alone": float(roc_auc_score(zero["closed_within_7d"].astype(int),
                                                     zero["text_score"].fillna(zero["text_score"].median())))}
    out.append({"data": name, "extra": extra, "test_rows": {f"{a:g}": int((test["age_hours"] == a).sum())
                                                            for a in AGES_HOURS}})
    return out


def incremental(size: int, days_n: int) -> dict:
    """One more day (the same activity on every history size) through the production refresher."""
    issues = synthetic_issues(size, per_day=max(50.0, size / 3000), seed=1)
    comments = synthetic_comments(issues, seed=1)
    end = issues["created_at"].max().floor("D")
    days = [end - pd.Timedelta(days=days_n - k) for k in range(days_n + 1)]
    issues, comments = same_activity(issues, comments, days, seed=1)
    first = snapshot_tables(issues, comments, days[0])
    t0 = time.perf_counter()
    previous = compute_features(*first, as_of=days[0], text_score=False, include_pull_requests=True)
    fit_s = time.perf_counter() - t0
    times, recomputed = [], []
    for a, b in zip(days, days[1:], strict=False):
        old, new = snapshot_tables(issues, comments, a), snapshot_tables(issues, comments, b)
        since = earliest_change(input_snapshot(*old), input_snapshot(*new))
        t0 = time.perf_counter()
        previous, n = update_features(previous, *new, changed_since=since, as_of=b, text_score=False,
                                      include_pull_requests=True)
        times.append(time.perf_counter() - t0)
        recomputed.append(n)
    return {"history": size, "rows": len(previous), "full_s": fit_s, "update_s": statistics.median(times),
            "recomputed": int(statistics.median(recomputed))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--generated", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "FEATURES_RESULTS.md"))
    parser.add_argument("--parts", default="throughput,quality,incremental",
                        help="comma-separated subset (the results file is only rewritten by a run of all parts)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    info = machine()
    print(info, flush=True)
    through, qual, incr = [], [], []
    exports = load_exports() if parts & {"throughput", "quality"} else {}
    if "throughput" in parts:
        for name, (issues, comments) in exports.items():
            through.append(throughput(f"{name} export", issues, comments, args.repeats, True, False))
            print(through[-1], flush=True)
        gen_issues = synthetic_issues(args.generated, seed=0)
        gen_comments = synthetic_comments(gen_issues, seed=0)
        through.append(throughput(f"generated, {len(gen_comments):,} comments", gen_issues, gen_comments,
                                  args.repeats, False, True))
        print(through[-1], flush=True)
        del gen_issues, gen_comments
    if "quality" in parts:
        for name, (issues, comments) in exports.items():
            qual += quality(name, issues, comments, args.seeds)
    for size in [int(s) for s in args.sizes.split(",") if s] if "incremental" in parts else ():
        incr.append(incremental(size, args.repeats))
        print(incr[-1], flush=True)
    if parts >= {"throughput", "quality", "incremental"}:
        write_results(Path(args.out), info, through, qual, incr, args)


def write_results(path: Path, info, through, qual, incr, args) -> None:
    load = info["load"]
    lines = [
        "## Features (issue_assets/features)",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}; {info['date']}; Python {info['python']}, pandas "
        f"{info['pandas']}, numpy {info['numpy']}, xgboost {info['xgboost']}; load average at the start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. Medians of {args.repeats} runs; the machine was shared. "
        "Run: `.venv/bin/python bench/bench_features.py`.",
        "",
        "### Throughput",
        "",
        "Non-text = building the event store (normalize, key codes, event logs) + the history and activity "
        "functions for every row; at age 0 (one row per issue) and at every age (rows of issues still open at "
        "0, 6, 24, 72 h). Own text = the RE2 text features, once per issue. Text score = hashing + the "
        "period models' fits and scores for every row.",
        "",
        "| data | issues | rows age 0 | non-text age 0 s | issues/s | rows all ages | non-text all ages s | rows/s "
        "| own text s | own text issues/s | text score s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in through:
        text = f"{r['text_s']:.2f} | {r['text_per_s']:,.0f}" if r["text_s"] is not None else "— | —"
        score = f"{r['text_score_s']:.2f}" if r["text_score_s"] is not None else "—"
        lines.append(f"| {r['data']} | {r['issues']:,} | {r['rows_age0']:,} | {r['age0_s']:.2f} | "
                     f"{r['age0_per_s']:,.0f} | {r['rows_all']:,} | {r['all_s']:.2f} | {r['all_per_s']:,.0f} | "
                     f"{text} | {score} |")
    lines += ["", "### The refresher (update_features, what refresh_features runs): one more day",
              "", "The same day of activity on every history size (`synthetic.same_activity`: 40 new issues, 10 "
              "closes of older issues, 60 comments); text score off, pull requests included.", "",
              "| history | rows | full computation s | one day s (median) | rows computed |", "|---:|---:|---:|---:|---:|"]
    for r in incr:
        lines.append(f"| {r['history']:,} | {r['rows']:,} | {r['full_s']:.2f} | {r['update_s']:.2f} | "
                     f"{r['recomputed']:,} |")
    lines += ["", f"### Quality and the choice of ages: XGBoost test ROC AUC per age (mean ± sd over {args.seeds} "
              "seeds)", "", f"Params: `{XGB_PARAMS}`; rows weighted 1 / (rows of their issue), as the platform "
              "trains. Issues split 75/25 by created_at; the test rows are the same for every training set "
              "(ages 0, 6, 24, 72 h of the test issues).", "",
              "| data | training ages | train rows | AUC age 0 | AUC 6 h | AUC 24 h | AUC 72 h |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in qual:
        if "ages" in r:
            cells = " | ".join(f"{r[a][0]:.4f} ± {r[a][1]:.4f}" for a in ("0", "6", "24", "72"))
            lines.append(f"| {r['data']} | {r['ages']} | {r['train_rows']:,} | {cells} |")
    for r in qual:
        if "extra" in r:
            extra = ", ".join(f"{k} {v:.4f}" for k, v in r["extra"].items())
            lines.append(f"\n{r['data']}, age 0 (seed 0): {extra}; test rows per age {r['test_rows']}.")
    lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
