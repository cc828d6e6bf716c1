"""GitHub JSON items -> typed tables. One schema for the raw log, the current state and the features.

Bad items never stop a sync: an issue or comment without `id`, `number`/`issue_url` or a parseable
`created_at` goes to a rejects table with its reason. Timestamps in any offset (or without one, read
as UTC) become UTC. A `closed_at` before `created_at` is kept as `created_at` (closed at once) and
flagged in `quality_flags`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd

ISSUE_VERSION_COLUMNS = [
    "repo", "id", "number", "created_at", "updated_at", "closed_at", "state", "is_pull_request",
    "fetched_at", "payload",
]

ISSUE_COLUMNS = [
    "repo", "id", "number", "title", "body", "user_login", "user_id", "user_type",
    "author_association", "created_at", "updated_at", "closed_at", "state", "state_reason",
    "is_pull_request", "labels", "comments", "locked", "assignees_count", "milestone",
    "reactions_total", "first_seen_at", "fetched_at", "quality_flags",
]

COMMENT_COLUMNS = [
    "repo", "id", "issue_number", "user_login", "user_id", "user_type", "author_association",
    "created_at", "updated_at", "body", "fetched_at",
]

REJECT_COLUMNS = ["repo", "kind", "id", "number", "reason", "payload", "fetched_at"]

TS = "datetime64[us, UTC]"


def to_utc(values) -> pd.Series:
    """Parse ISO-8601 timestamps in any offset; naive ones are taken as UTC; unparseable -> NaT."""
    fast = _github_times(values)
    if fast is not None:
        return fast
    s = pd.Series(values, dtype="object")
    # GitHub's own shape (2024-01-02T03:04:05Z) parses on a fast fixed-format path; the rest as ISO 8601.
    out = pd.to_datetime(s, utc=True, errors="coerce", format="%Y-%m-%dT%H:%M:%SZ").astype(TS)
    missed = out.isna() & s.notna()
    if missed.any():
        # One at a time: pandas' vectorized ISO-8601 parse lets a naive value inherit its neighbour's offset.
        out[missed] = pd.Series([_parse_one(v) for v in s[missed]], index=out.index[missed], dtype=TS)
    return out


def _github_times(values) -> pd.Series | None:
    """Every value None or GitHub's own `YYYY-MM-DDTHH:MM:SSZ`: numpy parses them at C speed (a sync
    normalizes four timestamp columns of every page). Anything else (or an impossible date): None."""
    index = values.index if isinstance(values, pd.Series) else None
    texts = values.tolist() if isinstance(values, (pd.Series, np.ndarray)) else list(values)
    stripped = []
    for v in texts:
        if v is None:
            stripped.append(None)
        elif type(v) is str and len(v) == 20 and v[19] == "Z" and v[10] == "T":
            stripped.append(v[:19])
        else:
            return None
    try:
        parsed = np.array(stripped, dtype="datetime64[us]")
    except ValueError:
        return None
    return pd.Series(pd.DatetimeIndex(parsed).tz_localize("UTC"), index=index, dtype=TS)


def _parse_one(value) -> pd.Timestamp:
    if not isinstance(value, str):
        return pd.NaT
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        return pd.NaT
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    try:
        return pd.Timestamp(ts)
    except (OverflowError, ValueError):
        return pd.NaT


def _payload(item: dict) -> str:
    """The item as compact JSON text (orjson: ~10x faster than the stdlib on GitHub's large items)."""
    try:
        return orjson.dumps(item).decode()
    except (TypeError, orjson.JSONEncodeError):  # lone surrogates, ints beyond 64 bits
        return _text(json.dumps(item, ensure_ascii=False, separators=(",", ":")))


def _user(item: dict) -> dict:
    user = item.get("user")
    return user if isinstance(user, dict) else {}


def _text(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    # Lone surrogates (from non-UTF-8 escapes) cannot be written to parquet: replace them.
    return value.encode("utf-8", "replace").decode("utf-8")


def _missing(item: dict, keys: Iterable[str]) -> str | None:
    for key in keys:
        if item.get(key) in (None, ""):
            return f"missing {key}"
    return None


def _reject(repo: str, kind: str, item, reason: str, fetched_at) -> dict:
    item = item if isinstance(item, dict) else {"value": item}
    number = item.get("number")
    return {
        "repo": repo, "kind": kind,
        "id": str(item.get("id")) if item.get("id") is not None else None,
        "number": str(number) if number is not None else None,
        "reason": reason,
        "payload": _text(json.dumps(item, ensure_ascii=False, default=str))[:100_000],
        "fetched_at": fetched_at,
    }


_EMPTY_REJECTS: pd.DataFrame | None = None


def rejects_frame(rows: list[dict]) -> pd.DataFrame:
    global _EMPTY_REJECTS
    if not rows:
        if _EMPTY_REJECTS is None:
            _EMPTY_REJECTS = _rejects(rows)
        return _EMPTY_REJECTS.copy()
    return _rejects(rows)


def _rejects(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=REJECT_COLUMNS)
    df["fetched_at"] = to_utc(df["fetched_at"])
    return df.astype({c: "string" for c in REJECT_COLUMNS if c != "fetched_at"})


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def issue_versions(items: Iterable[dict], repo: str, fetched_at) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items as returned by the issues endpoint -> (raw version rows, rejects)."""
    fetched_at = pd.Timestamp(fetched_at).tz_convert("UTC") if pd.Timestamp(fetched_at).tzinfo else \
        pd.Timestamp(fetched_at).tz_localize("UTC")
    rows, rejects = [], []
    for item in items:
        if not isinstance(item, dict):
            rejects.append(_reject(repo, "issue", item, "not a JSON object", fetched_at))
            continue
        reason = _missing(item, ("id", "number", "created_at"))
        if reason is None and (_int_or_none(item["id"]) is None or _int_or_none(item["number"]) is None):
            reason = "id or number is not an integer"
        if reason:
            rejects.append(_reject(repo, "issue", item, reason, fetched_at))
            continue
        rows.append({
            "repo": repo, "id": int(item["id"]), "number": int(item["number"]),
            "created_at": item.get("created_at"), "updated_at": item.get("updated_at") or item.get("created_at"),
            "closed_at": item.get("closed_at"), "state": _text(item.get("state") or "open"),
            "is_pull_request": "pull_request" in item and item.get("pull_request") is not None,
            "fetched_at": fetched_at,
            "payload": _payload(item),
        })
    df = pd.DataFrame(rows, columns=ISSUE_VERSION_COLUMNS)
    for col in ("created_at", "updated_at", "closed_at"):
        df[col] = to_utc(df[col])
    bad = df["created_at"].isna()
    if bad.any():
        for payload in df.loc[bad, "payload"]:
            rejects.append(_reject(repo, "issue", json.loads(payload), "unparseable created_at", fetched_at))
        df = df.loc[~bad].reset_index(drop=True)
    df["updated_at"] = df["updated_at"].fillna(df["created_at"])
    df["fetched_at"] = to_utc(df["fetched_at"])
    df = df.astype({"repo": "string", "id": "int64", "number": "int64", "state": "string",
                    "is_pull_request": "bool", "payload": "string"})
    return df, rejects_frame(rejects)


def issues_from_versions(versions: pd.DataFrame, first_seen: pd.Series | None = None) -> pd.DataFrame:
    """Raw version rows (one per id, already the latest) -> the typed current-state table."""
    records = []
    for payload in versions["payload"]:
        item = json.loads(payload)
        user = _user(item)
        labels = [lab.get("name") if isinstance(lab, dict) else str(lab) for lab in item.get("labels") or []]
        reactions = item.get("reactions") if isinstance(item.get("reactions"), dict) else {}
        milestone = item.get("milestone") if isinstance(item.get("milestone"), dict) else None
        records.append({
            "title": _text(item.get("title")), "body": _text(item.get("body")),
            "user_login": user.get("login"), "user_id": _int_or_none(user.get("id")),
            "user_type": user.get("type"), "author_association": item.get("author_association"),
            "state_reason": item.get("state_reason"), "labels": json.dumps([_text(x) for x in labels if x]),
            "comments": _int_or_none(item.get("comments")) or 0, "locked": bool(item.get("locked")),
            "assignees_count": len(item.get("assignees") or []),
            "milestone": _text(milestone.get("title")) if milestone else None,
            "reactions_total": _int_or_none(reactions.get("total_count")) or 0,
        })
    extra = pd.DataFrame(records, index=versions.index)
    df = pd.concat([versions.drop(columns=["payload"]), extra], axis=1)
    df["first_seen_at"] = first_seen.reindex(df.index) if first_seen is not None else df["fetched_at"]
    df["first_seen_at"] = df["first_seen_at"].astype(TS)
    early = df["closed_at"].notna() & (df["closed_at"] < df["created_at"])
    df["quality_flags"] = pd.Series("", index=df.index, dtype="string").mask(early, "closed_before_created")
    df.loc[early, "closed_at"] = df.loc[early, "created_at"]
    df = df.astype({"title": "string", "body": "string", "user_login": "string", "user_id": "Int64",
                    "user_type": "string", "author_association": "string", "state_reason": "string",
                    "labels": "string", "comments": "int64", "locked": "bool", "assignees_count": "int64",
                    "milestone": "string", "reactions_total": "int64"})
    return df[ISSUE_COLUMNS].reset_index(drop=True)


def _issue_number_from_url(url) -> int | None:
    if not isinstance(url, str) or "/issues/" not in url:
        return None
    return _int_or_none(url.rstrip("/").rsplit("/", 1)[-1])


def comment_versions(items: Iterable[dict], repo: str, fetched_at) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items as returned by the repository comments endpoint -> (comment rows, rejects)."""
    fetched_at = pd.Timestamp(fetched_at)
    fetched_at = fetched_at.tz_convert("UTC") if fetched_at.tzinfo else fetched_at.tz_localize("UTC")
    rows, rejects = [], []
    for item in items:
        if not isinstance(item, dict):
            rejects.append(_reject(repo, "comment", item, "not a JSON object", fetched_at))
            continue
        reason = _missing(item, ("id", "issue_url", "created_at"))
        number = _issue_number_from_url(item.get("issue_url"))
        if reason is None and (number is None or _int_or_none(item["id"]) is None):
            reason = "id or issue_url is not usable"
        if reason:
            rejects.append(_reject(repo, "comment", item, reason, fetched_at))
            continue
        user = _user(item)
        rows.append({
            "repo": repo, "id": int(item["id"]), "issue_number": number,
            "user_login": user.get("login"), "user_id": _int_or_none(user.get("id")),
            "user_type": user.get("type"), "author_association": item.get("author_association"),
            "created_at": item.get("created_at"), "updated_at": item.get("updated_at") or item.get("created_at"),
            "body": _text(item.get("body")), "fetched_at": fetched_at,
        })
    df = pd.DataFrame(rows, columns=COMMENT_COLUMNS)
    for col in ("created_at", "updated_at", "fetched_at"):
        df[col] = to_utc(df[col])
    bad = df["created_at"].isna()
    if bad.any():
        for _, row in df.loc[bad].iterrows():
            rejects.append(_reject(repo, "comment", {"id": row["id"]}, "unparseable created_at", fetched_at))
        df = df.loc[~bad].reset_index(drop=True)
    df["updated_at"] = df["updated_at"].fillna(df["created_at"])
    df = df.astype({"repo": "string", "id": "int64", "issue_number": "int64", "user_login": "string",
                    "user_id": "Int64", "user_type": "string", "author_association": "string",
                    "body": "string"})
    return df, rejects_frame(rejects)
