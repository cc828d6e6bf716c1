"""Input tables made safe for feature code: defined behaviour for bad input.

Public API:
    normalize_issues(issues: DataFrame) -> DataFrame     ISSUE_COLUMNS-compatible, sorted, one row per (repo, id)
    normalize_comments(comments: DataFrame | None) -> DataFrame

What "bad" input becomes:
- timestamps in another offset are converted to UTC; naive timestamps (or strings without a zone) are
  read as UTC; unparseable ones become NaT; issues without a created_at are dropped;
- a closed_at before created_at becomes created_at (closed at once), as in the normalize step;
- missing/None titles and bodies stay NA and read as ""; user_login/user_id missing is an unknown author;
- several (repo, id) rows: the one fetched last wins;
- missing optional columns (first_seen_at, fetched_at, user_type, author_association, is_pull_request)
  get neutral values (first_seen_at/fetched_at = NaT, i.e. never observed early).
Text with lone surrogates or any size is left as is; the text features are defined on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from issue_assets.github.normalize import to_utc

TS = "datetime64[us, UTC]"
ISSUE_TIME_COLUMNS = ("created_at", "closed_at", "updated_at", "first_seen_at", "fetched_at")


def to_utc_series(values: pd.Series) -> pd.Series:
    if values.dtype == TS:
        return values
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype(TS)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype(TS)
    return to_utc(values)


def _string(df: pd.DataFrame, col: str, fill=None) -> pd.Series:
    if col not in df:
        return pd.Series(fill, index=df.index, dtype="string")
    s = df[col] if isinstance(df[col].dtype, pd.StringDtype) else df[col].astype("string")
    return s.fillna(fill) if fill is not None and s.hasnans else s


def _typed(df: pd.DataFrame, col: str, dtype: str) -> pd.Series:
    return df[col] if df[col].dtype == dtype else df[col].astype(dtype)


def normalize_issues(issues: pd.DataFrame) -> pd.DataFrame:
    df = issues.copy(deep=False)  # every change below assigns a new column: the input is never written
    for col in ISSUE_TIME_COLUMNS:
        df[col] = to_utc_series(df[col]) if col in df else pd.Series(pd.NaT, index=df.index, dtype=TS)
    if df["created_at"].hasnans:
        df = df.loc[df["created_at"].notna()]
    early = df["closed_at"].notna() & (df["closed_at"] < df["created_at"])
    if early.any():
        df["closed_at"] = df["closed_at"].where(~early, df["created_at"])
    df["repo"] = _string(df, "repo", "")
    df["title"] = _string(df, "title")
    df["body"] = _string(df, "body")
    df["user_login"] = _string(df, "user_login")
    df["user_type"] = _string(df, "user_type")
    df["author_association"] = _string(df, "author_association")
    df["user_id"] = _typed(df, "user_id", "Int64") if "user_id" in df else pd.Series(pd.NA, index=df.index,
                                                                                      dtype="Int64")
    if "is_pull_request" not in df:
        df["is_pull_request"] = False
    elif df["is_pull_request"].dtype != bool:
        df["is_pull_request"] = df["is_pull_request"].fillna(False).astype(bool)
    df["id"] = _typed(df, "id", "int64")
    df["number"] = _typed(df, "number", "int64")
    if not pd.Index(df["id"]).is_unique:
        df = df.sort_values(["repo", "id", "fetched_at"], kind="stable", na_position="first")
        df = df.drop_duplicates(["repo", "id"], keep="last")
    return _sorted(df)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in (created_at, repo, id) order; a table already in that order is not copied again."""
    created = df["created_at"].array.asi8
    if len(df) < 2:
        return _reindexed(df)
    step = np.diff(created)
    if (step > 0).all():
        return _reindexed(df)
    codes, names = pd.factorize(df["repo"], sort=True)
    ids = df["id"].to_numpy()
    tie = step == 0
    in_order = (step > 0) | (tie & ((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (ids[1:] > ids[:-1]))))
    if in_order.all():
        return _reindexed(df)
    order = np.lexsort((ids, codes, created))
    return _reindexed(df.take(order))


def _reindexed(df: pd.DataFrame) -> pd.DataFrame:
    """df with a 0..n-1 index, sharing its column data (reset_index would copy every column)."""
    out = df.copy(deep=False)
    out.index = pd.RangeIndex(len(out))
    return out


def normalize_comments(comments: pd.DataFrame | None, *, sort: bool = True) -> pd.DataFrame:
    """sort=False keeps the input's row order (feature code does not depend on it)."""
    cols = ["repo", "id", "issue_number", "user_login", "user_id", "user_type", "author_association",
            "created_at"]
    if comments is None or len(comments) == 0:
        empty = pd.DataFrame({c: pd.Series(dtype="string") for c in cols})
        empty["id"] = empty["id"].astype("int64")
        empty["issue_number"] = empty["issue_number"].astype("int64")
        empty["user_id"] = empty["user_id"].astype("Int64")
        empty["created_at"] = pd.Series(dtype=TS)
        return empty
    df = comments[[c for c in cols if c in comments]].copy(deep=False)
    df["created_at"] = to_utc_series(df["created_at"])
    if df["created_at"].hasnans:
        df = df.loc[df["created_at"].notna()]
    for col in ("repo", "user_login", "user_type", "author_association"):
        df[col] = _string(df, col, "" if col == "repo" else None)
    df["user_id"] = _typed(df, "user_id", "Int64") if "user_id" in df else pd.Series(pd.NA, index=df.index,
                                                                                      dtype="Int64")
    df["issue_number"] = _typed(df, "issue_number", "int64")
    df["id"] = _typed(df, "id", "int64")
    if not pd.Index(df["id"]).is_unique:
        df = df.drop_duplicates(["repo", "id"], keep="last")
    return _sorted(df) if sort else _reindexed(df)
