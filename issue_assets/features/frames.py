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
from pandas._libs import lib

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


def _has_na(values: pd.Series) -> bool:
    """values.hasnans, without pandas' per-cell NA scan for python-backed strings when there is none."""
    arr = values.array
    if isinstance(arr, pd.arrays.StringArray) and getattr(arr.dtype, "storage", "python") == "python":
        try:
            if lib.is_string_array(arr._ndarray, skipna=False):
                return False  # every cell a str (one C type check per cell)
        except (AttributeError, TypeError):  # pragma: no cover - pandas' private helper changed
            pass
    return bool(values.hasnans)


def _string(df: pd.DataFrame, col: str, fill=None) -> pd.Series:
    if col not in df:
        return pd.Series(fill, index=df.index, dtype="string")
    s = df[col] if isinstance(df[col].dtype, pd.StringDtype) else df[col].astype("string")
    return s.fillna(fill) if fill is not None and _has_na(s) else s


def _set_string(df: pd.DataFrame, col: str, fill=None) -> None:
    """df[col] as a string column (NA -> fill); a column already so is left alone (assigning copies it)."""
    s = _string(df, col, fill)
    if col not in df or s is not df[col]:
        df[col] = s


def _set_typed(df: pd.DataFrame, col: str, dtype: str) -> None:
    if df[col].dtype != dtype:
        df[col] = df[col].astype(dtype)


def _unique_ids(ids: pd.Series) -> bool:
    values = ids.to_numpy()
    if len(values) < 2 or bool((values[1:] > values[:-1]).all()):
        return True  # increasing (ids follow creation): unique without hashing
    return pd.Index(values).is_unique


def normalize_issues(issues: pd.DataFrame) -> pd.DataFrame:
    df = issues.copy(deep=False)  # every change below assigns a new column: the input is never written
    for col in ISSUE_TIME_COLUMNS:
        if col not in df:
            df[col] = pd.Series(pd.NaT, index=df.index, dtype=TS)
        elif df[col].dtype != TS:
            df[col] = to_utc_series(df[col])
    if df["created_at"].hasnans:
        df = df.loc[df["created_at"].notna()]
    early = df["closed_at"].notna() & (df["closed_at"] < df["created_at"])
    if early.any():
        df["closed_at"] = df["closed_at"].where(~early, df["created_at"])
    _set_string(df, "repo", "")
    for col in ("title", "body", "user_login", "user_type", "author_association"):
        _set_string(df, col)
    if "user_id" in df:
        _set_typed(df, "user_id", "Int64")
    else:
        df["user_id"] = pd.Series(pd.NA, index=df.index, dtype="Int64")
    if "is_pull_request" not in df:
        df["is_pull_request"] = False
    elif df["is_pull_request"].dtype != bool:
        df["is_pull_request"] = df["is_pull_request"].fillna(False).astype(bool)
    _set_typed(df, "id", "int64")
    _set_typed(df, "number", "int64")
    if not _unique_ids(df["id"]):
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
    if (step >= 0).all():
        # Sorted by time: only runs of equal created_at can be out of order; check and sort just those.
        tie = np.flatnonzero(step == 0)
        repo = df["repo"].array
        python_strings = isinstance(repo, pd.arrays.StringArray) and getattr(repo.dtype, "storage", "") == "python"
        names = repo._ndarray if python_strings else np.asarray(repo.to_numpy(dtype=object))
        ids = df["id"].to_numpy()
        a, b = names[tie], names[tie + 1]
        in_order = (b > a) | ((b == a) & (ids[tie + 1] > ids[tie]))
        if in_order.all():
            return _reindexed(df)
        rows = np.union1d(tie, tie + 1)
        codes, _ = pd.factorize(names[rows], sort=True)
        moved = rows[np.lexsort((ids[rows], codes, created[rows]))]
        return _permuted(df, rows, moved)
    codes, names = pd.factorize(df["repo"], sort=True)
    ids = df["id"].to_numpy()
    tie = step == 0
    in_order = (step > 0) | (tie & ((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (ids[1:] > ids[:-1]))))
    if in_order.all():
        return _reindexed(df)
    order = np.lexsort((ids, codes, created))
    return _reindexed(df.take(order))


def _permuted(df: pd.DataFrame, rows: np.ndarray, source: np.ndarray) -> pd.DataFrame:
    """df with row rows[i] taken from row source[i] (a permutation of those rows; all others stay): each
    column copied once and patched at those rows, cheaper than a take when few rows move."""
    cols = {}
    for name in df.columns:
        values = df[name].array
        out = values.copy()
        out[rows] = values.take(source)
        cols[name] = out
    return pd.DataFrame(cols, index=pd.RangeIndex(len(df)), copy=False)


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
    # The needed columns without copying them (selecting a list of columns copies every block).
    df = pd.DataFrame({c: comments[c] for c in cols if c in comments}, copy=False)
    if df["created_at"].dtype != TS:
        df["created_at"] = to_utc_series(df["created_at"])
    if df["created_at"].hasnans:
        df = df.loc[df["created_at"].notna()]
    for col in ("repo", "user_login", "user_type", "author_association"):
        _set_string(df, col, "" if col == "repo" else None)
    if "user_id" in df:
        _set_typed(df, "user_id", "Int64")
    else:
        df["user_id"] = pd.Series(pd.NA, index=df.index, dtype="Int64")
    _set_typed(df, "issue_number", "int64")
    _set_typed(df, "id", "int64")
    if not _unique_ids(df["id"]):
        df = df.drop_duplicates(["repo", "id"], keep="last")
    return _sorted(df) if sort else _reindexed(df)
