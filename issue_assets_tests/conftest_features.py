"""Shared helpers for the feature tests: the real exports, loaded once per session, and truncation."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from issue_assets.github.export import iter_export
from issue_assets.github.normalize import comment_versions, issue_versions, issues_from_versions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RUST_ISSUES = DATA / "rust-lang_rust_issues.jsonl.gz"
RUST_COMMENTS = DATA / "rust-lang_rust_comments.jsonl.gz"
MATOMO_ISSUES = DATA / "matomo-org_matomo_issues.jsonl.gz"
RUST_SNAPSHOT = pd.Timestamp("2025-12-20", tz="UTC")
MATOMO_SNAPSHOT = pd.Timestamp("2022-10-02", tz="UTC")


def require(*paths: Path) -> None:
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared export(s) not found under {DATA}: {', '.join(missing)}")


@cache
def rust_issues() -> pd.DataFrame:
    require(RUST_ISSUES)
    versions, _ = issue_versions(iter_export(RUST_ISSUES), "rust-lang/rust", RUST_SNAPSHOT)
    return issues_from_versions(versions)


@cache
def rust_comments() -> pd.DataFrame:
    require(RUST_COMMENTS)
    comments, _ = comment_versions(iter_export(RUST_COMMENTS), "rust-lang/rust", RUST_SNAPSHOT)
    return comments


@cache
def matomo_issues() -> pd.DataFrame:
    require(MATOMO_ISSUES)
    versions, _ = issue_versions(iter_export(MATOMO_ISSUES), "matomo-org/matomo", MATOMO_SNAPSHOT)
    return issues_from_versions(versions)


def snapshot_at(issues: pd.DataFrame, comments: pd.DataFrame | None, cutoff: pd.Timestamp):
    """The tables as a sync taken at `cutoff` would have held them."""
    iss = issues.loc[issues["created_at"] <= cutoff].copy()
    late = iss["closed_at"].notna() & (iss["closed_at"] > cutoff)
    iss.loc[late, "closed_at"] = pd.NaT
    iss.loc[late, "state"] = "open"
    iss.loc[late, "state_reason"] = pd.NA
    iss["updated_at"] = iss["updated_at"].where(iss["updated_at"] <= cutoff, cutoff)
    iss["first_seen_at"] = cutoff
    iss["fetched_at"] = cutoff
    iss = iss.reset_index(drop=True)
    if comments is None:
        return iss, None
    com = comments.loc[comments["created_at"] <= cutoff].copy()
    com["updated_at"] = com["updated_at"].where(com["updated_at"] <= cutoff, cutoff)
    com["fetched_at"] = cutoff
    return iss, com.reset_index(drop=True)
