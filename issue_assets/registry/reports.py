"""A version's HTML report (`issue_assets.modeling.report`), assembled from what the registry holds.

`report_html` reads the version's metadata, its plots and its history and renders the page; the service
answers `/models/{version}` with it, so what it shows is the registry's state at that moment.
`write_report` stores the same page as `models/<version>/report.html` beside the model, for anyone
reading the registry without the service; callers rewrite it whenever a version's state changes
(registration, a decision, a promotion or rollback).
"""

from __future__ import annotations

from issue_assets.lake.store import KeyNotFound
from issue_assets.modeling.report import PLOTS, render_report
from issue_assets.registry.registry import PREFIX, ModelRegistry
from issue_assets.registry.states import version_states

REPORT = "report.html"


def report_key(version: str) -> str:
    return f"{PREFIX}/{version}/{REPORT}"


def report_html(registry: ModelRegistry, version: str) -> str:
    metadata = registry.get_metadata(version)
    artifacts = {}
    for name, _ in PLOTS:
        try:
            artifacts[name] = registry.store.get_bytes(f"{PREFIX}/{version}/{name}")
        except KeyNotFound:
            continue
    history = registry.history()
    pointer = registry.champion_pointer()
    states = version_states(history, pointer["version"] if pointer else None)
    events = [e for e in history if version in (e.get("version"), e.get("previous"), e.get("from"))]
    return render_report(metadata, artifacts, events, states.get(version))


def write_report(registry: ModelRegistry, version: str) -> str:
    """Render and store the version's report; returns its key."""
    key = report_key(version)
    registry.store.put_bytes(key, report_html(registry, version).encode("utf-8"))
    return key


def write_reports(registry: ModelRegistry, versions) -> list[str]:
    """`write_report` for each named version (None skipped): what callers run after a state change."""
    return [write_report(registry, v) for v in dict.fromkeys(v for v in versions if v)]
