"""Feature benchmarks: throughput, incremental updates and model quality. Writes bench/FEATURES_RESULTS.md.

    .venv/bin/python bench/bench_features.py [--repeats 3] [--sizes 10000,100000,1000000] [--quick]

Throughput is at t = created_at, split into the history features (everything but the issue's own text
and the text score), the own-text features, and the text score. Figures are medians of repeated runs.
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

from issue_assets.features import FEATURE_NAMES, REFERENCE_NAMES, FeatureBuilder  # noqa: E402
from issue_assets.features.synthetic import (  # noqa: E402
    changes_between,
    snapshot_tables,
    synthetic_comments,
    synthetic_issues,
)
from issue_assets.github.export import iter_export  # noqa: E402
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
HISTORY_STAGES = ("load", "event_logs", "history", "assemble")
XGB_PARAMS = dict(tree_method="hist", n_estimators=400, max_depth=5, learning_rate=0.03, subsample=0.8,
                  colsample_bytree=0.5, min_child_weight=20, reg_lambda=5, random_state=0, n_jobs=2)


def machine() -> dict:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "pandas": pd.__version__, "numpy": np.__version__,
            "xgboost": xgb.__version__}


def load_exports():
    rust_v, _ = issue_versions(iter_export(DATA / "rust-lang_rust_issues.jsonl.gz"), "rust-lang/rust",
                               "2025-12-20")
    rust_c, _ = comment_versions(iter_export(DATA / "rust-lang_rust_comments.jsonl.gz"), "rust-lang/rust",
                                 "2025-12-20")
    mat_v, _ = issue_versions(iter_export(DATA / "matomo-org_matomo_issues.jsonl.gz"), "matomo-org/matomo",
                              "2022-10-02")
    return {"rust": (issues_from_versions(rust_v), rust_c), "matomo": (issues_from_versions(mat_v), None)}


def timed_fit(issues, comments, repeats: int, **kwargs):
    runs = []
    frame = None
    for _ in range(repeats):
        builder = FeatureBuilder(**kwargs)
        start = time.perf_counter()
        frame = builder.fit(issues, comments)
        total = time.perf_counter() - start
        runs.append({**builder.timings, "total": total})
    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
    return frame, med


def throughput_row(name: str, rows: int, med: dict) -> dict:
    hist = sum(med.get(k, 0.0) for k in HISTORY_STAGES)
    return {"data": name, "rows": rows, "history_s": hist, "history_per_s": rows / hist,
            "own_text_s": med.get("text", 0.0), "own_text_per_s": rows / max(med.get("text", 0.0), 1e-9),
            "reference_s": med.get("reference", 0.0), "text_score_s": med.get("text_score", 0.0),
            "total_s": med["total"]}


def auc_of(frame: pd.DataFrame, columns: list[str]) -> float:
    rows = frame.loc[frame["closed_within_7d"].notna()].sort_values(["created_at", "repo", "id"])
    cut = int(len(rows) * 0.75)
    train, test = rows.iloc[:cut], rows.iloc[cut:]
    model = xgb.XGBClassifier(**XGB_PARAMS)
    model.fit(train[columns], train["closed_within_7d"].astype(int))
    return float(roc_auc_score(test["closed_within_7d"].astype(int), model.predict_proba(test[columns])[:, 1]))


def text_score_auc(frame: pd.DataFrame) -> float:
    rows = frame.loc[frame["closed_within_7d"].notna()].sort_values(["created_at", "repo", "id"])
    test = rows.iloc[int(len(rows) * 0.75):]
    score = test["text_score"].fillna(test["text_score"].median())
    return float(roc_auc_score(test["closed_within_7d"].astype(int), score))


def incremental(size: int, repeats: int) -> dict:
    issues = synthetic_issues(size, per_day=max(50.0, size / 3000), seed=1)
    comments = synthetic_comments(issues, seed=1)
    end = issues["created_at"].max().floor("D")
    days = [end - pd.Timedelta(days=repeats - k) for k in range(repeats + 1)]
    builder = FeatureBuilder(include_pull_requests=True, text_score=False)
    start = time.perf_counter()
    builder.fit(*snapshot_tables(issues, comments, days[0]))
    fit_s = time.perf_counter() - start
    times, changed_rows, recomputed = [], [], []
    for a, b in zip(days, days[1:], strict=False):
        changed, fresh = changes_between(issues, comments, a, b)
        start = time.perf_counter()
        builder.update(changed, fresh, as_of=b)
        times.append(time.perf_counter() - start)
        changed_rows.append(len(changed))
        recomputed.append(builder.last_recomputed)
    return {"history": size, "full_fit_s": fit_s, "update_s": statistics.median(times), "first_update_s": times[0],
            "changed_rows": int(statistics.median(changed_rows)), "recomputed_rows": int(statistics.median(recomputed))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--generated", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "FEATURES_RESULTS.md"))
    args = parser.parse_args()
    info = machine()
    print(info, flush=True)

    exports = load_exports()
    through, quality = [], []
    frames = {}
    for name, (issues, comments) in exports.items():
        frame, med = timed_fit(issues, comments, args.repeats)
        frames[name] = frame
        through.append(throughput_row(f"{name} export (issues only)", len(frame), med))
        print(through[-1], flush=True)
    gen_issues = synthetic_issues(args.generated, seed=0)
    gen_comments = synthetic_comments(gen_issues, seed=0)
    _, med = timed_fit(gen_issues, gen_comments, args.repeats, include_pull_requests=True, text_score=False)
    through.append(throughput_row(f"generated, {len(gen_comments):,} comments", len(gen_issues), med))
    print(through[-1], flush=True)
    del gen_issues, gen_comments

    for name, frame in frames.items():
        quality.append({"data": name, "t": "created_at", "rows": int(frame["closed_within_7d"].notna().sum()),
                        "ours": auc_of(frame, FEATURE_NAMES),
                        "ours_without_text_score": auc_of(frame, [c for c in FEATURE_NAMES if c != "text_score"]),
                        "text_score_alone": text_score_auc(frame),
                        "reference_leaky": auc_of(frame, REFERENCE_NAMES)})
        print(quality[-1], flush=True)
    rust_issues, rust_comments = exports["rust"]
    late, _ = timed_fit(rust_issues, rust_comments, 1, hours_after_creation=24)
    quality.append({"data": "rust", "t": "created_at + 24 h (comments)", "rows": int(late["closed_within_7d"].notna().sum()),
                    "ours": auc_of(late, FEATURE_NAMES),
                    "ours_without_text_score": auc_of(late, [c for c in FEATURE_NAMES if c != "text_score"]),
                    "text_score_alone": text_score_auc(late),
                    "reference_leaky": auc_of(late, REFERENCE_NAMES)})
    print(quality[-1], flush=True)

    incr = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        incr.append(incremental(size, args.repeats))
        print(incr[-1], flush=True)

    write_results(Path(args.out), info, through, quality, incr, args.repeats)


def write_results(path: Path, info, through, quality, incr, repeats) -> None:
    lines = [
        "## Features (issue_assets/features)",
        "",
        f"Machine: {info['nproc']} cores, {info['cpu']}; {info['date']}; Python {info['python']}, "
        f"pandas {info['pandas']}, numpy {info['numpy']}, xgboost {info['xgboost']}. "
        f"Medians of {repeats} runs; the machine was shared with other jobs. "
        "Run: `.venv/bin/python bench/bench_features.py`.",
        "",
        "### Throughput at t = created_at",
        "",
        "History = load + event logs + author/repository/calendar/activity features + assembly (all "
        "non-text features); own text = the regex/length group (pyarrow RE2); text score = hashing + "
        "per-period SGD fits.",
        "",
        "| data | rows | history s | history issues/s | own-text s | own-text issues/s | text score s | total s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in through:
        lines.append(f"| {r['data']} | {r['rows']:,} | {r['history_s']:.2f} | {r['history_per_s']:,.0f} | "
                     f"{r['own_text_s']:.2f} | {r['own_text_per_s']:,.0f} | {r['text_score_s']:.2f} | "
                     f"{r['total_s']:.2f} |")
    lines += ["", "### Incremental: one more day on a history (FeatureBuilder.update, text score off)", "",
              "| history | full fit s | update s (median) | first update s | changed rows/day | recomputed rows |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in incr:
        lines.append(f"| {r['history']:,} | {r['full_fit_s']:.2f} | {r['update_s']:.3f} | {r['first_update_s']:.3f} | "
                     f"{r['changed_rows']:,} | "
                     f"{r['recomputed_rows']:,} |")
    if len(incr) >= 2:
        lines += ["", f"Update time ratio largest/smallest history: {incr[-1]['update_s'] / incr[0]['update_s']:.1f}x."]
    lines += ["", "### Quality: XGBoost test AUC, 75/25 temporal split (issues with a known label)", "",
              f"Params: `{XGB_PARAMS}`.", "",
              "| data | prediction time | labelled rows | ours | ours without text score | text score alone | "
              "reference (leaky ref_*) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in quality:
        lines.append(f"| {r['data']} | {r['t']} | {r['rows']:,} | {r['ours']:.4f} | {r['ours_without_text_score']:.4f} | "
                     f"{r['text_score_alone']:.4f} | {r['reference_leaky']:.4f} |")
    lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
