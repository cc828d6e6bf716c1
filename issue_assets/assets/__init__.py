"""Software-defined assets, one module per concern, and what they share: the automation condition and how
numbers and plots go into metadata."""

import base64

import dagster as dg


def rounded(value) -> float:
    """A metric in metadata: 4 places; NaN when undefined."""
    return round(float(value), 4) if value is not None and value == value else float("nan")


def png_metadata(data: bytes) -> dg.MetadataValue:
    """A PNG shown inline in the UI (Markdown with a data URI: Dagster has no image metadata type)."""
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(data).decode()})")


def follows_updates() -> dg.AutomationCondition:
    """Materialize after any dependency updates (or when missing): Dagster's `eager()`, except that an update
    is forgotten only once a request was made *after* it.

    `eager()` forgets a dependency's update when the asset itself is updated or requested in the same tick.
    Under the daemon that loses updates: a poll-driven ingest that lands while the asset's previous run is
    in flight (or in the tick where that run finishes) was never seen by that run, and nothing requests it
    again until the next change (measured in the soak: a new comment never reached `issue_comments`). Here
    the trigger is reset only by a tick that made a request and saw no newer update; the price is, rarely,
    one redundant run of an incremental asset.
    """
    updated = dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
    handled = dg.AutomationCondition.newly_requested() & ~dg.AutomationCondition.any_deps_updated()
    return (
        dg.AutomationCondition.in_latest_time_window()
        & updated.since(handled)
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follows_updates")


def judges_on_cron(cron: str) -> dg.AutomationCondition:
    """Materialize at every tick of `cron` whether or not a dependency changed since, once none is missing.

    For an asset whose input changes with time itself and outside Dagster's view: `prediction_outcomes`
    reads the service's served log and learns outcomes as issues close or leave their 7-day window.
    Dagster's `on_cron` also waits until every dependency updated after the tick, so once ingestion goes
    quiet it never judges again (measured in the soak). A tick that falls while a run is in progress is
    handled when that run ends.
    """
    return (
        dg.AutomationCondition.cron_tick_passed(cron).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"judges_on_cron({cron})")
