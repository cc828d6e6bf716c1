"""`issue-assets repair`: check every lake file of a repository and restore each damaged one from its source.

    raw log part       dropped from the manifest; its months are re-read from GitHub without validators
                       (now when a client is given, else by the next ingest, which the manifest tells)
    raw manifest       rebuilt from the parts in the store (every version any run stored is kept) and the
                       cursor copy in state/<repo>/sync.json; every merge then starts over
    rejects part       dropped; re-derived by re-reading the history from GitHub
    current table      rebuilt from the raw log (merge_current(full=True))
    feature table      recomputed from the current tables (and its input snapshots)
    sync state copy    rewritten from the manifests
    predictions        a damaged parquet restored from its twin (latest <-> the batch it copies) or its CSV
    unreferenced parts left by killed runs are deleted once they are an hour old

Sits above the lake, ingest, features and serving layers it repairs; no Dagster import.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa

from issue_assets.features.table import load_snapshot, read_stored, refresh_features
from issue_assets.ingest import layout
from issue_assets.ingest.current import merge_current, read_current
from issue_assets.ingest.rawlog import FORMAT, PART_RE, REJECTS_RE, Commit, RawLog, empty_manifest, new_epoch
from issue_assets.ingest.sync import parse_time, sync_incremental, sync_window
from issue_assets.lake import keys
from issue_assets.lake.documents import dumps, parse_json, read_json
from issue_assets.lake.parts import FileRecord, read_part
from issue_assets.lake.store import (
    DamagedFile,
    KeyNotFound,
    ObjectStore,
    StoreError,
    parquet_bytes,
    parse_parquet,
)

log = logging.getLogger("issue_assets.repair")

ORPHAN_GRACE_SECONDS = 3600.0


@dataclass
class RepairReport:
    """What a repair found (`damaged`), did (`actions`), left for the next ingest, and could not restore."""

    repo: str
    checked: int = 0
    damaged: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost

    def lines(self) -> list[str]:
        state = "nothing damaged" if not self.damaged else f"{len(self.damaged)} damaged"
        out = [f"{self.repo}: {self.checked} files checked, {state}, {len(self.actions)} repairs"]
        out += [f"  damaged: {d}" for d in self.damaged]
        out += [f"  repaired: {a}" for a in self.actions]
        out += [f"  pending: {p}" for p in self.pending]
        out += [f"  NOT restored: {x}" for x in self.lost]
        return out


def repair_repository(store: ObjectStore, repo: str, *, client=None, rebuild: bool = False,
                      now: Callable[[], float] = time.time) -> RepairReport:
    """Check every file of `repo` in the lake and restore what is damaged; `rebuild` also recomputes the
    derived tables (current, features) that look whole. `client` (a GitHubClient) re-reads what only
    GitHub has, now; without one, the next ingest does (the manifest records where to start)."""
    layout.check_repo(repo)
    report = RepairReport(repo)
    for kind in layout.KINDS:
        dropped, rebuilt = _repair_raw_log(store, repo, kind, report, now)
        mark = RawLog(store, kind, repo).manifest().get("refetch")
        if client is not None and mark is not None:
            _refetch(store, repo, kind, client, mark, dropped, report)
        elif mark is not None:
            report.pending.append(f"raw {kind}: the next `issue-assets ingest --repo {repo}` re-reads from "
                                  f"{mark} without validators")
        _repair_current(store, repo, kind, report, rebuild or rebuilt)
    _repair_features(store, repo, report, rebuild)
    _repair_snapshot(store, repo, report)
    _repair_sync_state(store, repo, report)
    _repair_predictions(store, repo, report)
    _repair_served(store, repo, report)
    _repair_outcomes(store, repo, report)
    return report


def _refetch(store: ObjectStore, repo: str, kind: str, client, mark: str, dropped: dict[str, int],
             report: RepairReport) -> None:
    """Re-read from GitHub, without validators, what the dropped parts held: each month on its own when
    only month parts were dropped, else the whole history (that also clears the mark)."""
    rawlog = RawLog(store, kind, repo)
    if mark == "beginning" or not dropped:
        result = sync_incremental(client, store, repo, kind)
        report.actions.append(f"raw {kind}: whole history re-read from GitHub ({result.items_fetched} items, "
                              f"{result.new_versions} versions added)")
    else:
        for month in sorted(dropped):
            start = datetime.fromisoformat(f"{month}-01T00:00:00+00:00")
            end = (start + timedelta(days=32)).replace(day=1)
            result = sync_window(client, store, repo, kind, start, end, full=True)
            report.actions.append(f"raw {kind} {month}: re-read from GitHub ({result.new_versions} versions)")

        def clear(doc, work):
            if doc.get("refetch") == mark:
                doc["refetch"] = None
                return True
            return False

        rawlog.commit(clear)
    months = rawlog.manifest()["months"]
    for month, rows in sorted(dropped.items()):
        now_rows = int(months.get(month, {}).get("rows", 0))
        if now_rows < rows:
            report.lost.append(f"raw {kind} {month}: {rows - now_rows} of {rows} versions could not be re-read "
                               "(GitHub serves each item's latest version only; these were superseded since)")


def repositories(store: ObjectStore) -> list[str]:
    """Every repository the lake holds a file of."""
    slugs = set()
    for kind in layout.KINDS:
        slugs |= {key.split("/")[2] for key in store.list(f"raw/{kind}/") if key.count("/") >= 3}
        slugs |= {key.split("/")[2].removesuffix(".parquet") for key in store.list(f"current/{kind}/")
                  if key.endswith(".parquet")}
    slugs |= {key.split("/")[1].removesuffix(".parquet") for key in store.list("features/")
              if key.endswith(".parquet") and ".inputs." not in key}
    slugs |= {key.split("/")[1] for key in store.list("predictions/") if key.count("/") >= 2}
    repos = []
    for slug in sorted(slugs):
        try:
            repos.append(layout.slug_repo(slug))
        except ValueError:
            continue
    return repos


# ---- raw log ---------------------------------------------------------------------------------

def _repair_raw_log(store: ObjectStore, repo: str, kind: str, report: RepairReport,
                    now: Callable[[], float]) -> tuple[dict[str, int], bool]:
    """({month: rows recorded} of the month parts dropped, whether the manifest was rebuilt)."""
    rawlog = RawLog(store, kind, repo)
    report.checked += 1
    try:
        doc, _ = rawlog.read()
    except DamagedFile as exc:
        report.damaged.append(f"{exc.location} ({exc.reason})")
        _rebuild_manifest(rawlog, report)
        return {}, True
    if rawlog.stored_format() != FORMAT and (doc["months"] or store.list(layout.legacy_rejects_prefix(repo, kind))):
        rawlog.commit(lambda d, w: False)  # converts a lake written before parts
        report.actions.append(f"{rawlog.key}: converted to the checksummed manifest format")
        doc = rawlog.manifest()
    bad_months, bad_rejects = [], []
    for month, entry in sorted(doc["months"].items()):
        report.checked += 1
        if _part_damage(store, rawlog, entry, report):
            bad_months.append(month)
    for entry in doc["rejects"]:
        report.checked += 1
        if _part_damage(store, rawlog, entry, report):
            bad_rejects.append(entry["key"])
    if bad_months or bad_rejects:
        def drop(d, work):
            for month in bad_months:
                entry = d["months"].pop(month, None)
                if entry:
                    work.replaced.append(entry["key"])
            keep = [e for e in d["rejects"] if e["key"] not in bad_rejects]
            work.replaced += [e["key"] for e in d["rejects"] if e["key"] in bad_rejects]
            d["rejects"] = keep
            start = "beginning" if bad_rejects or not bad_months else f"{min(bad_months)}-01T00:00:00Z"
            held = d.get("refetch")
            d["refetch"] = start if held is None or start == "beginning" or (
                held != "beginning" and start < held) else held
            return True

        rawlog.commit(drop)
        report.actions.append(f"{rawlog.key}: {len(bad_months)} damaged month parts and {len(bad_rejects)} "
                              "rejects parts dropped; marked for re-reading from GitHub")
    _sweep_orphans(store, rawlog, report, now)
    return {m: int(doc["months"][m]["rows"]) for m in bad_months}, bool(bad_rejects)


def _part_damage(store: ObjectStore, rawlog: RawLog, entry: dict, report: RepairReport) -> bool:
    try:
        read_part(store, FileRecord.from_dict(entry), remedy=rawlog.remedy)
        return False
    except KeyNotFound:
        report.damaged.append(f"{store.uri}/{entry['key']} (missing)")
    except DamagedFile as exc:
        report.damaged.append(f"{exc.location} ({exc.reason})")
    return True


def _rebuild_manifest(rawlog: RawLog, report: RepairReport) -> None:
    """Every readable part in the store (committed or left by a killed run: all hold versions fetched
    from GitHub) folded into one part per month; the cursor from the copy in sync.json."""
    store = rawlog.store
    damaged_version = store.version(rawlog.key)
    by_month: dict[str, list[pd.DataFrame]] = {}
    rejects: list[pd.DataFrame] = []
    unreadable: list[str] = []
    keys = store.list(layout.raw_prefix(rawlog.kind, rawlog.repo))
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        month = PART_RE.match(name)
        if not month and not REJECTS_RE.match(name):
            continue
        try:
            frame, _ = parse_parquet(store.get_bytes(key), f"{store.uri}/{key}", remedy=rawlog.remedy)
        except DamagedFile as exc:
            unreadable.append(key)
            report.damaged.append(f"{exc.location} ({exc.reason})")
            continue
        (by_month.setdefault(month.group(1), []) if month else rejects).append(frame)
    state = read_json(store, layout.sync_state_key(rawlog.repo), default={}) if _json_ok(store, rawlog.repo) else {}
    cursor = (state.get("cursors") or {}).get(rawlog.kind)
    doc = empty_manifest()
    doc["epoch"] = new_epoch()
    newest = None
    work = Commit([], [])
    for month, frames in sorted(by_month.items()):
        merged = pd.concat(frames, ignore_index=True).sort_values("fetched_at", kind="stable")
        merged = merged.drop_duplicates(["id", "updated_at"], keep="first")
        merged = merged.sort_values(["updated_at", "id"], kind="stable").reset_index(drop=True)
        rawlog.put_month(doc, work, month, merged)
        top = merged["updated_at"].max()
        newest = top if newest is None or top > newest else newest
    if rejects:
        rawlog.add_rejects(doc, work, rejects)
    doc["seq"] = 1
    for entry in doc["months"].values():
        entry["seq"] = 1
    # The copied cursor was written after the manifest that held it, so every version up to it was
    # committed then; it is kept only if the parts found reach it (a lost part would leave a gap).
    held = parse_time(cursor)
    doc["cursor"] = cursor if held is not None and newest is not None and newest >= pd.Timestamp(held) else None
    if unreadable or doc["cursor"] is None and doc["months"]:
        doc["refetch"] = "beginning"
    if not store.compare_and_put(rawlog.key, dumps(doc), damaged_version):
        raise StoreError(f"{store.uri}/{rawlog.key} changed while the repair rebuilt it; run the repair again")
    for key in keys:
        if (PART_RE.match(key.rsplit("/", 1)[-1]) or REJECTS_RE.match(key.rsplit("/", 1)[-1])) \
                and key not in work.written:
            store.delete(key)
    report.actions.append(f"{rawlog.key}: rebuilt from {sum(len(f) for f in by_month.values())} stored versions "
                          f"in {len(by_month)} months (cursor {doc['cursor'] or 'reset'})")


def _json_ok(store: ObjectStore, repo: str) -> bool:
    try:
        read_json(store, layout.sync_state_key(repo), default={})
        return True
    except DamagedFile:
        return False


def _sweep_orphans(store: ObjectStore, rawlog: RawLog, report: RepairReport, now: Callable[[], float]) -> None:
    doc = rawlog.manifest()
    referenced = {e["key"] for e in doc["months"].values()} | {e["key"] for e in doc["rejects"]}
    for key in store.list(layout.raw_prefix(rawlog.kind, rawlog.repo)):
        name = key.rsplit("/", 1)[-1]
        match = PART_RE.match(name)
        unique = match.group(2) if match else (name.split(".")[1] if REJECTS_RE.match(name) else None)
        if key in referenced or unique is None:
            continue
        written = int(unique.split("-")[0], 16) / 1e9
        if now() - written > ORPHAN_GRACE_SECONDS:  # a younger one may belong to a commit in flight
            store.delete(key)
            report.actions.append(f"{key}: unreferenced part of a killed run deleted")


# ---- derived tables ----------------------------------------------------------------------------

def _repair_current(store: ObjectStore, repo: str, kind: str, report: RepairReport, rebuild: bool) -> None:
    key = layout.current_key(kind, repo)
    report.checked += 1
    try:
        read_current(store, kind, repo)
    except DamagedFile as exc:
        report.damaged.append(f"{exc.location} ({exc.reason})")
        rebuild = True
    if not rebuild and not store.exists(key):
        return
    result = merge_current(store, repo, kind, full=rebuild)
    if rebuild:
        report.actions.append(f"{key}: rebuilt from the raw log ({result.rows} rows)")


def _repair_features(store: ObjectStore, repo: str, report: RepairReport, rebuild: bool) -> None:
    key = keys.features_key(repo)
    if not store.exists(key):
        return
    report.checked += 1
    try:
        _, _, _, snaps = read_stored(store, repo)
    except DamagedFile as exc:
        report.damaged.append(f"{exc.location} ({exc.reason})")
        rebuild = True
    else:
        rebuild = rebuild or snaps is None
    if rebuild:
        result = refresh_features(store, repo, full=True)
        report.actions.append(f"{key}: recomputed from the current tables ({result.rows} rows)")
    _sweep_snapshots(store, repo, report)


def _sweep_snapshots(store: ObjectStore, repo: str, report: RepairReport) -> None:
    """Input snapshots no table names (a refresh killed before its commit, or after it)."""
    try:
        _, meta, _, _ = read_stored(store, repo)
    except DamagedFile:
        return
    keep = {e["key"] for e in (meta.get("inputs") or {}).values()}
    for key in store.list(f"features/{layout.repo_slug(repo)}.inputs."):
        stamp = key.rsplit(".", 2)[-2] if key.count(".") >= 3 else ""
        if key in keep or "-" not in stamp:
            continue
        try:
            age = time.time() - int(stamp.split("-")[0], 16) / 1e9
        except ValueError:
            continue
        if age > ORPHAN_GRACE_SECONDS:
            store.delete(key)
            report.actions.append(f"{key}: unreferenced input snapshot deleted")


def _repair_sync_state(store: ObjectStore, repo: str, report: RepairReport) -> None:
    key = layout.sync_state_key(repo)
    if not store.exists(key):
        return
    report.checked += 1
    if _json_ok(store, repo):
        return
    report.damaged.append(f"{store.uri}/{key} (not valid JSON)")
    cursors = {kind: RawLog(store, kind, repo).manifest().get("cursor") for kind in layout.KINDS}
    store.put_bytes(key, dumps({"cursors": {k: v for k, v in cursors.items() if v}}))
    report.actions.append(f"{key}: rewritten from the manifests' cursors")


def _repair_snapshot(store: ObjectStore, repo: str, report: RepairReport) -> None:
    """The service's event-store snapshot: rewritten by a refresh when it does not read back as the one its
    feature table records (a damaged file, or one a racing refresh wrote late)."""
    key = keys.feature_snapshot_key(repo)
    if not store.exists(key) or not store.exists(keys.features_key(repo)):
        return
    report.checked += 1
    try:
        load_snapshot(store, repo)
        _, meta, _, _ = read_stored(store, repo)
        recorded = meta.get("snapshot_sha256")
        if not recorded or hashlib.sha256(store.get_bytes(key)).hexdigest() == recorded:
            return
        report.damaged.append(f"{store.uri}/{key} (not the snapshot its feature table records)")
    except DamagedFile as exc:
        report.damaged.append(f"{exc.location} ({exc.reason})")
    refresh_features(store, repo)
    report.actions.append(f"{key}: rewritten from the current tables by a feature refresh")


def _repair_served(store: ObjectStore, repo: str, report: RepairReport) -> None:
    """Served-prediction log parts: the log is the only copy of what was served, so a damaged part cannot be
    restored; it is removed (so prediction_outcomes runs again) and its loss reported."""
    for key in [k for k in store.list(keys.served_prefix(repo)) if k.endswith(".parquet")]:
        report.checked += 1
        try:
            parse_parquet(store.get_bytes(key), f"{store.uri}/{key}")
        except DamagedFile as exc:
            report.damaged.append(f"{exc.location} ({exc.reason})")
            store.delete(key)
            report.lost.append(f"{key}: the predictions it logged (the log is their only record); part removed")


def _repair_outcomes(store: ObjectStore, repo: str, report: RepairReport) -> None:
    """prediction_outcomes' files are derived from the served log: a damaged one is removed and recomputed by
    the asset's next run."""
    for key in (keys.outcomes_summary_key(repo), keys.outcomes_joined_key(repo)):
        if not store.exists(key):
            continue
        report.checked += 1
        try:
            data = store.get_bytes(key)
            if key.endswith(".json"):
                parse_json(data, f"{store.uri}/{key}")
            else:
                parse_parquet(data, f"{store.uri}/{key}")
        except DamagedFile as exc:
            report.damaged.append(f"{exc.location} ({exc.reason})")
            store.delete(key)
            report.pending.append(f"{key}: removed; prediction_outcomes recomputes it on its next run")


# ---- predictions -------------------------------------------------------------------------------

def _repair_predictions(store: ObjectStore, repo: str, report: RepairReport) -> None:
    slug = layout.repo_slug(repo)
    keys = [k for k in store.list(f"predictions/{slug}/") if k.endswith(".parquet")]
    damaged, whole = [], {}
    for key in keys:
        report.checked += 1
        try:
            data = store.get_bytes(key)
            parse_parquet(data, f"{store.uri}/{key}")
            whole[key] = data
        except DamagedFile as exc:
            report.damaged.append(f"{exc.location} ({exc.reason})")
            damaged.append(key)
    for key in damaged:
        stamp = key.rsplit("/", 1)[-1][: -len(".parquet")]
        csv_key = f"predict_outputs/{slug}/{stamp}.csv"
        csv = _get(store, csv_key)
        twin = next((k for k, data in whole.items() if k != key and csv is not None
                     and _get(store, f"predict_outputs/{slug}/{k.rsplit('/', 1)[-1][:-8]}.csv") == csv), None)
        if twin is not None:
            store.put_bytes(key, whole[twin])
            report.actions.append(f"{key}: restored from {twin} (the same batch)")
            continue
        restored = _from_csv(csv, next(iter(whole.values()), None)) if csv is not None else None
        if restored is not None:
            store.put_bytes(key, restored)
            report.actions.append(f"{key}: restored from {csv_key}")
        else:
            report.lost.append(f"{key}: damaged, and neither a twin parquet nor its CSV can restore it "
                               f"(run the predictions again: `issue-assets run --repo {repo}`)")


def _get(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get_bytes(key)
    except KeyNotFound:
        return None


def _from_csv(csv: bytes, reference: bytes | None) -> bytes | None:
    """Parquet rebuilt from a batch's CSV, typed as another batch of the same repository is."""
    if reference is None:
        return None
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(io.BytesIO(reference)).schema_arrow
    try:
        frame = pd.read_csv(io.BytesIO(csv), dtype=str, keep_default_na=False)
        columns = {}
        for f in schema:
            if f.name not in frame:
                return None
            text = frame[f.name].replace("", None)
            if pa.types.is_timestamp(f.type):
                columns[f.name] = pa.array(pd.to_datetime(text, utc=True, format="ISO8601"), type=f.type)
            elif pa.types.is_boolean(f.type):
                columns[f.name] = pa.array(text.map({"True": True, "False": False, None: None}), type=f.type)
            elif pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                columns[f.name] = pa.array(pd.to_numeric(text), type=f.type)
            else:
                columns[f.name] = pa.array(text, type=f.type)
        table = pa.Table.from_pydict(columns, schema=schema.remove_metadata())
    except (ValueError, TypeError, pa.ArrowException):
        return None
    return parquet_bytes(table.to_pandas())


def repair_lake(store: ObjectStore, repos: list[str] | None = None, *, client_for=None,
                **kwargs) -> list[RepairReport]:
    """repair_repository for the given repositories, or every one the lake holds; `client_for(repo)` gives
    each its own source's client (or None), closed afterwards."""
    out = []
    for repo in repos or repositories(store):
        client = client_for(repo) if client_for is not None else None
        try:
            out.append(repair_repository(store, repo, client=client, **kwargs))
        except StoreError as exc:
            report = RepairReport(repo)
            report.lost.append(str(exc))
            out.append(report)
        finally:
            if client is not None:
                client.close()
    return out
