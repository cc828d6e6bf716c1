"""What each registered version is now, read from the registry history: the one place this is decided.

States:
    champion          the pointer names it
    former champion   it was champion once (promoted, later replaced or rolled back)
    failed check      its last decision says it failed the blocking quality check
    rejected          its last decision kept the champion (the reason is the decision's)
    candidate         registered, no decision recorded yet

Public API:
    VersionState(version, state, reason, decided_at)
    version_states(events, champion) -> dict[version, VersionState]   every registered version
    test_roc_auc(metadata) -> float | None   a version's test ROC AUC at age 0 (the one every version is judged
                                             by; a version trained before ages had only that one)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CHAMPION = "champion"
FORMER = "former champion"
FAILED = "failed check"
REJECTED = "rejected"
CANDIDATE = "candidate"


@dataclass(frozen=True)
class VersionState:
    version: str
    state: str
    reason: str | None = None
    decided_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_states(events: list[dict[str, Any]], champion: str | None) -> dict[str, VersionState]:
    """Every registered version's state, from the history events (oldest first) and the champion."""
    registered = [e["version"] for e in events if e.get("event") == "registered"]
    was_champion: set[str] = set()
    last_decision: dict[str, dict[str, Any]] = {}
    for e in events:
        kind, version = e.get("event"), e.get("version")
        if kind in ("promoted", "rolled_back"):
            was_champion.add(version)
            if e.get("previous"):
                was_champion.add(e["previous"])
            if e.get("from"):
                was_champion.add(e["from"])
        if kind in ("decision", "promoted"):
            last_decision[version] = e
    out: dict[str, VersionState] = {}
    for version in dict.fromkeys(registered):
        decision_event = last_decision.get(version)
        decision = (decision_event or {}).get("decision") or {}
        at = (decision_event or {}).get("at")
        if version == champion:
            out[version] = VersionState(version, CHAMPION, decision.get("reason"), at)
        elif version in was_champion:
            out[version] = VersionState(version, FORMER, decision.get("reason"), at)
        elif decision_event is None:
            out[version] = VersionState(version, CANDIDATE)
        elif decision.get("check_passed") is False:
            out[version] = VersionState(version, FAILED, decision.get("reason"), at)
        else:
            out[version] = VersionState(version, REJECTED, decision.get("reason"), at)
    return out


def test_roc_auc(metadata: dict) -> float | None:
    metrics = metadata.get("metrics") or {}
    value = metrics.get("test_auc", metrics.get("roc_auc"))
    return float(value) if isinstance(value, int | float) else None
