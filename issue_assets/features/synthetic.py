"""Generated issue histories in the ISSUE_COLUMNS / COMMENT_COLUMNS schemas, for benchmarks and tests.

Public API:
    synthetic_issues(n: int, *, repos: int = 4, authors: int | None = None, start="2015-01-01",
                     per_day: float = 300.0, pr_share: float = 0.4, seed: int = 0) -> DataFrame
    synthetic_comments(issues: DataFrame, *, per_issue: float = 2.0, seed: int = 0) -> DataFrame
    snapshot_tables(issues, comments, cutoff) -> (issues, comments)     as a sync at cutoff held them
    same_activity(issues, comments, days, *, new=40, closed=10, new_comments=60, seed=0) -> (issues, comments)
        the history thinned after days[0] so that each day (days[k], days[k+1]] brings exactly `new` new
        issues, `closed` closes of older issues and `new_comments` comments (fewer only if the day had
        fewer): the same day of activity on histories of any size. Nothing up to days[0] changes.
Creation times are a Poisson process of `per_day` items per day; close delays are log-normal with a
quarter never closed; a Zipf-like author mix gives heavy repeat authors. Everything is vectorized.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.github.normalize import COMMENT_COLUMNS, ISSUE_COLUMNS, TS

_WORDS = np.array(["error", "panic", "crash", "feature", "support", "docs", "build", "fails", "question",
                   "how", "regression", "compiler", "parser", "slow", "memory", "windows", "linux", "test"])


def _words(rng: np.random.Generator, n: int, k: int) -> pd.Series:
    idx = rng.integers(0, len(_WORDS), size=(n, k))
    parts = [pd.Series(_WORDS[idx[:, j]]) for j in range(k)]
    out = parts[0]
    for p in parts[1:]:
        out = out + " " + p
    return out


def synthetic_issues(n: int, *, repos: int = 4, authors: int | None = None, start="2015-01-01",
                     per_day: float = 300.0, pr_share: float = 0.4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    authors = authors or max(10, n // 20)
    gaps = rng.exponential(86_400e6 / per_day, size=n)
    created_us = pd.Timestamp(start, tz="UTC").value // 1000 + np.cumsum(gaps).astype("int64")
    created_us -= created_us % 1_000_000
    delay_us = (np.exp(rng.normal(11.5, 2.5, size=n)) * 1e6).astype("int64")
    delay_us -= delay_us % 1_000_000
    never = rng.random(n) < 0.25
    closed_us = np.where(never, np.iinfo("int64").min, created_us + delay_us)
    snapshot_us = int(created_us.max() + 86_400_000_000)
    closed_us = np.where(closed_us > snapshot_us, np.iinfo("int64").min, closed_us)
    author = np.minimum((rng.pareto(1.2, size=n) * authors / 50).astype("int64"), authors - 1)
    created = pd.Series(created_us.astype("datetime64[us]")).dt.tz_localize("UTC")
    closed = pd.Series(closed_us.astype("datetime64[us]")).dt.tz_localize("UTC")
    snapshot = pd.Timestamp(snapshot_us * 1000, tz="UTC")
    repo_names = np.array([f"org{i}/repo{i}" for i in range(repos)])
    df = pd.DataFrame({
        "repo": pd.Series(repo_names[rng.integers(0, repos, size=n)], dtype="string"),
        "id": np.arange(1, n + 1, dtype="int64") * 7 + 1000,
        "number": np.arange(1, n + 1, dtype="int64"),
        "title": _words(rng, n, 5).astype("string"),
        "body": (_words(rng, n, 20) + np.where(rng.random(n) < 0.3, "\n```\nstack backtrace:\n```", ""))
        .astype("string"),
        "user_login": pd.Series(author.astype(str), dtype="string").radd("user"),
        "user_id": pd.array(author + 1, dtype="Int64"),
        "user_type": pd.Series("User", index=range(n), dtype="string"),
        "author_association": pd.Series(np.where(author < 20, "MEMBER", "NONE"), dtype="string"),
        "created_at": created.astype(TS),
        "updated_at": closed.fillna(created).astype(TS),
        "closed_at": closed.astype(TS),
        "state": pd.Series(np.where(closed.isna(), "open", "closed"), dtype="string"),
        "state_reason": pd.Series(pd.NA, index=range(n), dtype="string"),
        "is_pull_request": rng.random(n) < pr_share,
        "labels": pd.Series("[]", index=range(n), dtype="string"),
        "comments": rng.poisson(2.0, size=n).astype("int64"),
        "locked": np.zeros(n, dtype=bool),
        "assignees_count": np.zeros(n, dtype="int64"),
        "milestone": pd.Series(pd.NA, index=range(n), dtype="string"),
        "reactions_total": np.zeros(n, dtype="int64"),
        "first_seen_at": pd.Series(snapshot, index=range(n)).astype(TS),
        "fetched_at": pd.Series(snapshot, index=range(n)).astype(TS),
        "quality_flags": pd.Series("", index=range(n), dtype="string"),
    })
    df["number"] = df.groupby("repo").cumcount().astype("int64") + 1
    return df[ISSUE_COLUMNS]


def synthetic_comments(issues: pd.DataFrame, *, per_issue: float = 2.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_issue, size=len(issues))
    parent = np.repeat(np.arange(len(issues)), counts)
    m = len(parent)
    created = issues["created_at"].dt.tz_localize(None).to_numpy(dtype="datetime64[us]")[parent]
    delay = (np.exp(rng.normal(10.0, 2.0, size=m)) * 1e6).astype("int64")
    delay -= delay % 1_000_000
    at = pd.Series(created + delay.astype("timedelta64[us]"))
    snapshot = issues["fetched_at"].max()
    author = rng.integers(0, max(10, len(issues) // 20), size=m)
    df = pd.DataFrame({
        "repo": issues["repo"].to_numpy()[parent],
        "id": np.arange(1, m + 1, dtype="int64") * 3 + 10_000_000,
        "issue_number": issues["number"].to_numpy()[parent],
        "user_login": pd.Series(author.astype(str), dtype="string").radd("user"),
        "user_id": pd.array(author + 1, dtype="Int64"),
        "user_type": pd.Series("User", index=range(m), dtype="string"),
        "author_association": pd.Series(np.where(author < 20, "MEMBER", "NONE"), dtype="string"),
        "created_at": at.dt.tz_localize("UTC").astype(TS),
        "updated_at": at.dt.tz_localize("UTC").astype(TS),
        "body": pd.Series("thanks", index=range(m), dtype="string"),
        "fetched_at": pd.Series(snapshot, index=range(m)).astype(TS),
    })
    df = df.loc[df["created_at"] <= snapshot].reset_index(drop=True)
    return df.astype({"repo": "string"})[COMMENT_COLUMNS]


def snapshot_tables(issues: pd.DataFrame, comments: pd.DataFrame | None, cutoff) -> tuple:
    """The tables as a sync at `cutoff` would have held them: later items gone, later closes undone."""
    cutoff = pd.Timestamp(cutoff)
    iss = issues.loc[issues["created_at"] <= cutoff].copy()
    late = iss["closed_at"].notna() & (iss["closed_at"] > cutoff)
    iss.loc[late, "closed_at"] = pd.NaT
    iss.loc[late, "state"] = "open"
    iss["first_seen_at"] = iss["first_seen_at"].where(iss["first_seen_at"] <= cutoff, cutoff)
    iss["fetched_at"] = cutoff
    iss = iss.astype({"first_seen_at": TS, "fetched_at": TS}).reset_index(drop=True)
    if comments is None:
        return iss, None
    com = comments.loc[comments["created_at"] <= cutoff].reset_index(drop=True)
    return iss, com


def same_activity(issues: pd.DataFrame, comments: pd.DataFrame | None, days, *, new: int = 40, closed: int = 10,
                  new_comments: int = 60, seed: int = 0) -> tuple:
    """Thin the activity after days[0] to fixed daily counts (see the module docstring)."""
    rng = np.random.default_rng(seed)
    days = [pd.Timestamp(d) for d in days]
    created, closed_at = issues["created_at"], issues["closed_at"]
    keep = (created <= days[-1]).to_numpy()
    reopen = np.zeros(len(issues), bool)
    for a, b in zip(days, days[1:], strict=False):
        fresh = np.flatnonzero(keep & (created > a).to_numpy() & (created <= b).to_numpy())
        keep[rng.choice(fresh, size=max(0, len(fresh) - new), replace=False)] = False
        closing = np.flatnonzero(keep & (created <= a).to_numpy() & (closed_at > a).to_numpy()
                                 & (closed_at <= b).to_numpy())
        reopen[rng.choice(closing, size=max(0, len(closing) - closed), replace=False)] = True
    iss = issues.copy()
    iss.loc[reopen, "closed_at"] = pd.NaT
    iss.loc[reopen, "state"] = "open"
    iss = iss.loc[keep].reset_index(drop=True)
    if comments is None:
        return iss, None
    kept = pd.MultiIndex.from_frame(iss[["repo", "number"]].astype({"repo": object}))
    on_kept = pd.MultiIndex.from_arrays([comments["repo"].astype(object), comments["issue_number"]]).isin(kept)
    ct = comments["created_at"]
    use = on_kept & (ct <= days[-1]).to_numpy()
    for a, b in zip(days, days[1:], strict=False):
        pool = np.flatnonzero(use & (ct > a).to_numpy() & (ct <= b).to_numpy())
        use[rng.choice(pool, size=max(0, len(pool) - new_comments), replace=False)] = False
    return iss, comments.loc[use].reset_index(drop=True)
