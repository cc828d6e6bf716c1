"""Feature benchmarks: throughput, incremental updates and model quality. Writes bench/FEATURES_RESULTS.md.

    .venv/bin/python bench/bench_features.py [--repeats 3] [--sizes 10000,100000,1000000] [--generated N]
                                             [--parts throughput,quality,incremental]

Throughput is at t = created_at, split into the history features (everything but the issue's own text
and the text score), the own-text features, and the text score. Figures are medians of repeated runs.
Incremental updates are measured twice per history size: with the same day of activity on every size
(synthetic.same_activity: fixed numbers of new issues, closes and comments per day; the target's
measure) and with the generator's natural activity (which grows with the history's daily rate).
Only a run of all parts rewrites the results file.
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
    same_activity,
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


def daily_updates(issues, comments, days) -> dict:
    """Fit on the tables as of days[0], then one FeatureBuilder.update per following day."""
    builder = FeatureBuilder(include_pull_requests=True, text_score=False)
    start = time.perf_counter()
    builder.fit(*snapshot_tables(issues, comments, days[0]))
    fit_s = time.perf_counter() - start
    times, changed_rows, new_comments, recomputed = [], [], [], []
    for a, b in zip(days, days[1:], strict=False):
        changed, fresh = changes_between(issues, comments, a, b)
        start = time.perf_counter()
        builder.update(changed, fresh, as_of=b)
        times.append(time.perf_counter() - start)
        changed_rows.append(len(changed))
        new_comments.append(len(fresh))
        recomputed.append(builder.last_recomputed)
    return {"full_fit_s": fit_s, "update_s": statistics.median(times), "first_update_s": times[0],
            "changed_rows": int(statistics.median(changed_rows)), "new_comments": int(statistics.median(new_comments)),
            "recomputed_rows": int(statistics.median(recomputed))}


def incremental(size: int, repeats: int) -> dict:
    """The same days of updates on a generated history, with its natural activity and thinned to the same
    activity as every other size (the fit, on the tables up to days[0], is the same for both)."""
    issues = synthetic_issues(size, per_day=max(50.0, size / 3000), seed=1)
    comments = synthetic_comments(issues, seed=1)
    end = issues["created_at"].max().floor("D")
    days = [end - pd.Timedelta(days=repeats - k) for k in range(repeats + 1)]
    natural = daily_updates(issues, comments, days)
    same = daily_updates(*same_activity(issues, comments, days, seed=1), days)
    return {"history": size, "natural": natural, "same": same}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--generated", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "FEATURES_RESULTS.md"))
    parser.add_argument("--parts", default="throughput,quality,incremental",
                        help="comma-separated subset to run while iterating (the results file is only rewritten "
                             "by a run of all parts)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    info = machine()
    print(info, flush=True)

    through, quality, incr = [], [], []
    frames = {}
    exports = load_exports() if parts & {"throughput", "quality"} else {}
    for name, (issues, comments) in exports.items():
        frame, med = timed_fit(issues, comments, args.repeats)
        frames[name] = frame
        through.append(throughput_row(f"{name} export (issues only)", len(frame), med))
        print(through[-1], flush=True)
    if "throughput" in parts:
        gen_issues = synthetic_issues(args.generated, seed=0)
        gen_comments = synthetic_comments(gen_issues, seed=0)
        _, med = timed_fit(gen_issues, gen_comments, args.repeats, include_pull_requests=True, text_score=False)
        through.append(throughput_row(f"generated, {len(gen_comments):,} comments", len(gen_issues), med))
        print(through[-1], flush=True)
        del gen_issues, gen_comments

    for name, frame in frames.items() if "quality" in parts else ():
        quality.append({"data": name, "t": "created_at", "rows": int(frame["closed_within_7d"].notna().sum()),
                        "ours": auc_of(frame, FEATURE_NAMES),
                        "ours_without_text_score": auc_of(frame, [c for c in FEATURE_NAMES if c != "text_score"]),
                        "text_score_alone": text_score_auc(frame),
                        "reference_leaky": auc_of(frame, REFERENCE_NAMES)})
        print(quality[-1], flush=True)
    if "quality" in parts:
        rust_issues, rust_comments = exports["rust"]
        late, _ = timed_fit(rust_issues, rust_comments, 1, hours_after_creation=24)
        quality.append({"data": "rust", "t": "created_at + 24 h (comments)",
                        "rows": int(late["closed_within_7d"].notna().sum()),
                        "ours": auc_of(late, FEATURE_NAMES),
                        "ours_without_text_score": auc_of(late, [c for c in FEATURE_NAMES if c != "text_score"]),
                        "text_score_alone": text_score_auc(late),
                        "reference_leaky": auc_of(late, REFERENCE_NAMES)})
        print(quality[-1], flush=True)

    for size in [int(s) for s in args.sizes.split(",") if s] if "incremental" in parts else ():
        incr.append(incremental(size, args.repeats))
        print(incr[-1], flush=True)

    if parts >= {"throughput", "quality", "incremental"}:
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
              "The same days after the fit, twice: thinned to the same activity on every history size "
              "(`synthetic.same_activity`: 40 new issues, 10 closes of older issues and 60 comments a day) "
              "and with the generator's natural activity (its daily rate is max(50, history / 3000) issues, "
              "so the 1M history gets ~7x more). Changed rows = new or changed issue rows in the day's upsert; "
              "first update = the first update after the fit (one-off costs, natural activity).", "",
              "| history | full fit s | same activity: update s (median) | changed rows / comments per day | "
              "recomputed rows | natural: update s (median) | changed rows / comments per day | recomputed rows | "
              "first update s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in incr:
        s, n = r["same"], r["natural"]
        lines.append(f"| {r['history']:,} | {n['full_fit_s']:.2f} | {s['update_s']:.3f} | "
                     f"{s['changed_rows']:,} / {s['new_comments']:,} | {s['recomputed_rows']:,} | "
                     f"{n['update_s']:.3f} | {n['changed_rows']:,} / {n['new_comments']:,} | "
                     f"{n['recomputed_rows']:,} | {n['first_update_s']:.3f} |")
    if len(incr) >= 2:
        first, last = incr[0], incr[-1]
        lines += ["", f"Update time ratio largest/smallest history ({last['history']:,} / {first['history']:,}), "
                      f"same day of activity (the target's measure, <= 2x): "
                      f"**{last['same']['update_s'] / first['same']['update_s']:.1f}x**. "
                      f"With the generator's natural activity ({last['natural']['changed_rows']:,} vs "
                      f"{first['natural']['changed_rows']:,} changed rows a day): "
                      f"{last['natural']['update_s'] / first['natural']['update_s']:.1f}x."]
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
