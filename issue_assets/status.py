"""`issue-assets status`: the operator's one look, from the lake, the registry and the Dagster instance's
records (no daemon needed, no code location loaded).

Sections are independent functions over one context, each returning plain JSON-ready data, so a new
view (e.g. live metrics once predictions are joined to their outcomes) is one more function. The lake and
registry sections need no Dagster import and are printed first; the instance's (daemon, freshness,
partitions without a source) follow once the instance is open (~0.6 s of imports).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from issue_assets import config
from issue_assets.features.labels import DEFAULT_HORIZON_DAYS
from issue_assets.ingest import layout, sources
from issue_assets.ingest.sync import cursor, iso
from issue_assets.lake import keys
from issue_assets.lake.documents import read_json
from issue_assets.lake.store import KeyNotFound, ObjectStore, StoreError, open_store, read_parquet

WATCHED = ("raw_issues", "issues", "issue_features", "open_issue_predictions", "production_model")


def window_split(issues: pd.DataFrame, now: pd.Timestamp, horizon_days: float = DEFAULT_HORIZON_DAYS) -> dict:
    """Open items of a current-issues table: pull requests, issues inside their window (opened less than
    `horizon_days` ago: still predictable) and decided issues (open past the window: their label is known)."""
    if not len(issues):
        return {"open": 0, "pull_requests": 0, "in_window": 0, "decided": 0}
    from issue_assets.features.labels import horizon_us, known_by, us

    is_open = issues["state"] == "open"
    prs = is_open & issues["is_pull_request"].astype(bool)
    open_issues = is_open & ~issues["is_pull_request"].astype(bool)
    # the one rule: open at `now` and its label not known yet (created less than the horizon ago)
    decided, _, _ = known_by(us(issues["created_at"]), np.full(len(issues), np.nan), float(now.value // 1000),
                             horizon_us(horizon_days))
    inside = open_issues & ~decided
    return {"open": int(is_open.sum()), "pull_requests": int(prs.sum()), "in_window": int(inside.sum()),
            "decided": int((open_issues & ~inside).sum())}


@dataclass
class Context:
    store: ObjectStore
    registry: object
    instance: object | None
    now: pd.Timestamp
    repos: list[str]


def _ago(ts: float | None, now: pd.Timestamp) -> str:
    if ts is None:
        return "never"
    seconds = now.timestamp() - ts
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{max(0, seconds):.0f} s ago"


def _iso_ts(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def _last_sweep(store: ObjectStore, repo: str) -> float | None:
    """When the last sweep of the repository finished (recorded in the raw log's manifests)."""
    from issue_assets.ingest.rawlog import RawLog
    from issue_assets.ingest.sync import parse_time

    times = [parse_time(RawLog(store, kind, repo).manifest().get("swept_at")) for kind in layout.KINDS]
    times = [t for t in times if t is not None]
    return max(times).timestamp() if times else None


def _last_materialization(ctx: Context, asset: str, partition: str | None = None) -> float | None:
    if ctx.instance is None:
        return None
    import dagster as dg

    records = ctx.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1)
    return records.records[0].timestamp if records.records else None


def repositories(ctx: Context) -> dict:
    bound = sources.all_sources(ctx.store)
    out = {}
    for repo in ctx.repos:
        source = bound.get(repo) or sources.source_of(repo, ctx.store)
        try:
            table = read_parquet(ctx.store, layout.current_key("issues", repo),
                                 columns=["state", "is_pull_request", "created_at"])
        except KeyNotFound:
            table = pd.DataFrame()
        ingested = _last_sweep(ctx.store, repo)
        newest = max((c for c in (cursor(ctx.store, repo, k) for k in ("issues", "comments")) if c is not None),
                     default=None)
        scored = None
        try:
            batch = read_parquet(ctx.store, keys.prediction_keys(repo, "latest")["parquet_latest"],
                                 columns=["model_version", "scoring_time", "status"])
            scored = {"rows": len(batch), "scored": int((batch["status"] == "scored").sum()),
                      "model_version": str(batch["model_version"].iloc[0]) if len(batch) else None,
                      "scoring_time": iso(batch["scoring_time"].iloc[0].to_pydatetime()) if len(batch) else None}
        except KeyNotFound:
            pass
        try:
            summary = read_json(ctx.store, keys.outcomes_summary_key(repo), default=None)
        except StoreError as exc:  # a damaged summary is reported, the rest of the status still shows
            summary = {"error": str(exc)}
        live = None
        if summary and "error" in summary:
            live = {"error": summary["error"]}
        elif summary:
            champ = summary.get("champion_live") or {}
            live = {"model_version": summary.get("champion"), "roc_auc": champ.get("roc_auc"),
                    "brier": champ.get("brier"), "calibration_error": champ.get("ece"), "n": champ.get("n", 0),
                    "served": summary.get("served", 0), "computed_at": summary.get("computed_at"),
                    "drifted": (summary.get("drift") or {}).get("drifted", [])}
        out[repo] = {"source": source.as_dict() | {"description": source.describe()}, "live": live,
                     "last_ingest": _iso_ts(ingested), "last_ingest_ago": _ago(ingested, ctx.now),
                     "newest_item": iso(newest), "items": len(table), **window_split(table, ctx.now),
                     "predictions": scored}
    return out


def model(ctx: Context) -> dict:
    from issue_assets.registry.states import test_roc_auc
    from issue_assets.retraining import count_new_labels

    registry = ctx.registry
    champion = registry.champion()
    meta = registry.get_metadata(champion) if champion else {}
    cutoff = meta.get("cutoff")
    since = pd.Timestamp(cutoff) if cutoff else None
    count = count_new_labels(ctx.store, ctx.repos, since, ctx.now)
    decisions = [e for e in registry.history() if e.get("event") in ("decision", "promoted", "rolled_back")]
    return {
        "champion": champion, "as_of": meta.get("as_of"), "cutoff": cutoff,
        "test_roc_auc": test_roc_auc(meta),
        "new_labels": {"since": cutoff, "count": count.total, "by_repo": count.by_repo,
                       "threshold": config.retrain_threshold(), "missing_features": count.missing},
        "versions": len(registry.list_versions()),
        "last_decisions": [{"at": e.get("at"), "event": e["event"], "version": e.get("version"),
                            "promote": (e.get("decision") or {}).get("promote", e["event"] == "promoted"),
                            "reason": (e.get("decision") or {}).get("reason") or e.get("reason")}
                           for e in decisions[-3:]],
    }


def freshness(ctx: Context) -> dict:
    """Dagster's own freshness state of the assets with a policy (evaluated by the daemon), and the time
    of each watched asset's last materialization."""
    if ctx.instance is None:
        return {}
    import dagster as dg

    keys = [dg.AssetKey(k) for k in WATCHED]
    states = ctx.instance.get_freshness_state_records(keys)
    out = {}
    for key in keys:
        record = states.get(key)
        last = _last_materialization(ctx, key.to_user_string())
        out[key.to_user_string()] = {
            "state": record.freshness_state.value if record else None,
            "evaluated": _iso_ts(record.updated_at.timestamp()) if record and record.updated_at else None,
            "last_materialization": _iso_ts(last), "ago": _ago(last, ctx.now)}
    return out


def daemon(ctx: Context) -> dict:
    if ctx.instance is None:
        return {"running": False, "detail": "no Dagster instance"}
    beats = ctx.instance.get_daemon_heartbeats()
    latest = max((b.timestamp for b in beats.values()), default=None)
    running = latest is not None and ctx.now.timestamp() - latest < 120
    return {"running": running, "last_heartbeat": _iso_ts(latest), "ago": _ago(latest, ctx.now)}


def unbound(ctx: Context) -> list[str]:
    """Partitions of the instance that no source binds yet (the repositories sensor binds them)."""
    if ctx.instance is None:
        return []
    return sorted(set(ctx.instance.get_dynamic_partitions("repos")) - set(ctx.repos))


LAKE_SECTIONS = {"repositories": repositories, "model": model}
INSTANCE_SECTIONS = {"daemon": daemon, "freshness": freshness, "unbound": unbound}


def collect_lake(*, store: ObjectStore | None = None, registry=None, now: pd.Timestamp | None = None) -> dict:
    """The sections read from the lake and the registry (every bound repository)."""
    from issue_assets.registry import default_registry

    store = store or open_store(config.lake_uri())
    ctx = Context(store, registry or default_registry(), None, now or pd.Timestamp.now(tz="UTC"),
                  sorted(sources.all_sources(store)))
    return {"generated_at": iso(ctx.now.to_pydatetime()), **{name: fn(ctx) for name, fn in LAKE_SECTIONS.items()}}


def collect_instance(instance, lake: dict, *, store: ObjectStore | None = None) -> dict:
    """The sections read from the Dagster instance's records."""
    ctx = Context(store or open_store(config.lake_uri()), None, instance, pd.Timestamp(lake["generated_at"]),
                  list(lake["repositories"]))
    return {name: fn(ctx) for name, fn in INSTANCE_SECTIONS.items()}


def collect(instance=None, **kwargs) -> dict:
    lake = collect_lake(**kwargs)
    return lake | collect_instance(instance, lake, store=kwargs.get("store"))


def _auc(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"


def format_lake(status: dict) -> list[str]:
    lines = [f"issue-assets status at {status['generated_at']}"]
    repos = status["repositories"]
    if not repos:
        lines.append("no repositories registered: `issue-assets repos add OWNER/NAME [--api-url URL]`")
    for repo, r in repos.items():
        pred = r["predictions"]
        lines += [f"{repo}",
                  f"  source       {r['source']['description']}",
                  f"  last sweep   {r['last_ingest'] or 'never'} ({r['last_ingest_ago']}); newest item "
                  f"{r['newest_item'] or '-'}",
                  f"  open         {r['open']}: {r['pull_requests']} pull requests, {r['in_window']} issues inside "
                  f"their 7-day window, {r['decided']} decided (open past it)",
                  "  predictions  " + (f"{pred['rows']} rows ({pred['scored']} scored, {pred['rows'] - pred['scored']} decided) "
                                       f"by {pred['model_version']} at {pred['scoring_time']}"
                                       if pred else "none yet")]
        live = r.get("live")
        if live is None:
            lines.append("  live         not judged yet (prediction_outcomes has not run)")
        elif "error" in live:
            lines.append(f"  live         {live['error']}")
        else:
            lines.append(f"  live         {live['model_version'] or '-'}: ROC AUC {_auc(live['roc_auc'])}, calibration "
                         f"error {_auc(live['calibration_error'])} on {live['n']} served predictions with known "
                         f"outcomes ({live['served']} served in all)"
                         + (f"; drifted: {', '.join(live['drifted'][:5])}"
                            + (f" and {len(live['drifted']) - 5} more" if len(live["drifted"]) > 5 else "")
                            if live["drifted"] else ""))
    m = status["model"]
    n = m["new_labels"]
    lines.append(f"champion       {m['champion'] or 'none yet'}" +
                 (f" (as of {m['as_of']}, test ROC AUC at age 0 {_auc(m['test_roc_auc'])})" if m["champion"] else "") +
                 f"; {m['versions']} versions registered")
    lines.append(f"new labels     {n['count']} of {n['threshold']} (RETRAIN_THRESHOLD) "
                 + (f"since the champion's cutoff {n['since']}" if n["since"] else "with no champion yet"))
    for e in m["last_decisions"]:
        verdict = "promoted" if e["promote"] else "kept the champion"
        lines.append(f"decision       {e['at'][:19]} {e['version']}: {verdict} ({e['reason']})")
    return lines


def format_instance(status: dict) -> list[str]:
    d = status["daemon"]
    lines = ["dagster-daemon " + (f"running (heartbeat {d['ago']})" if d.get("running") else
                                  f"not running (last heartbeat: {d.get('ago', 'never')})")]
    if status["unbound"]:
        lines.append(f"not bound yet  {', '.join(status['unbound'])} (partitions without a source: the repositories "
                     "sensor binds them to GITHUB_API_URL)")
    for asset, f in status["freshness"].items():
        state = {None: "not evaluated yet", "NOT_APPLICABLE": "no policy"}.get(f["state"], f["state"])
        lines.append(f"freshness      {asset:<23} {state:<18} last materialized {f['ago']}")
    return lines


def format_text(status: dict) -> list[str]:
    return format_lake(status) + format_instance(status)
