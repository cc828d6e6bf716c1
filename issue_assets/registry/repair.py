"""`issue-assets model repair`: restore the registry files that can be derived from the others.

Every registry file has a second source: each history event is also its own object (a registration's
carrying the version's metadata and calibration), the pointer holds its own event and champion chain,
latest_model.json is a copy of the champion's model.json and the reverse. What has no second source
(the model.json of a version that is not the champion) is reported, never invented.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from issue_assets.lake.documents import unseal
from issue_assets.lake.store import DamagedFile, KeyNotFound
from issue_assets.registry.registry import (
    CHAMPION_EVENTS,
    CLAIMS,
    EVENTS,
    HISTORY,
    HISTORY_FORMAT,
    LATEST,
    POINTER,
    PREFIX,
    ModelRegistry,
    RegistryError,
    _dumps,
    _pointer_event,
    _same_event,
    sha256,
)


@dataclass
class RegistryRepair:
    """What a repair did (`actions`) and what it could not restore (`lost`)."""

    store: str
    actions: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    champion: str | None = None

    @property
    def ok(self) -> bool:
        return not self.lost

    def lines(self) -> list[str]:
        head = f"registry {self.store}: " + (f"{len(self.actions)} repairs" if self.actions else "nothing to repair")
        return [head, *(f"  repaired: {a}" for a in self.actions), *(f"  NOT restored: {x}" for x in self.lost),
                f"  champion: {self.champion}"]


def _load(store, key: str) -> Any | None:
    """Parsed and verified JSON, None when missing or damaged."""
    try:
        return unseal(json.loads(store.get_bytes(key)), key)
    except KeyNotFound:
        return None
    except (ValueError, UnicodeDecodeError, DamagedFile):
        return None


def repair_registry(reg: ModelRegistry) -> RegistryRepair:
    store = reg.store
    report = RegistryRepair(store.uri)

    # Event objects: each a copy of one history event (+ a registration's metadata and calibration).
    objects: dict[str, dict] = {}
    damaged_objects: list[str] = []
    for key in store.list(EVENTS):
        doc = _load(store, key)
        if isinstance(doc, dict) and isinstance(doc.get("event"), dict) and doc["event"].get("id"):
            objects[doc["event"]["id"]] = doc
        else:
            damaged_objects.append(key)

    # The history: kept when readable, else rebuilt from the event objects.
    try:
        token, history = reg._history_doc()
        events = list(history["events"])
        original: list | None = list(events)
    except RegistryError as exc:
        if not exc.damaged_key:
            raise
        token, original = store.version(HISTORY), None
        events = sorted((o["event"] for o in objects.values()), key=lambda e: (str(e.get("at")), e["id"]))
        report.actions.append(f"{HISTORY}: rebuilt from {len(events)} event objects")
    added = [o["event"] for o in objects.values() if not any(_same_event(e, o["event"]) for e in events)]
    if added and original is not None:
        report.actions.append(f"{HISTORY}: {len(added)} events recorded only in {EVENTS} added")
    events += sorted(added, key=lambda e: (str(e.get("at")), e["id"]))

    # Registrations whose event is lost everywhere, but whose files are whole.
    registered = {e["version"] for e in events if e.get("event") == "registered"}
    for key in store.list(CLAIMS):
        version = (_load_text(store, key) or "").strip()
        meta = _load(store, f"{PREFIX}/{version}/metadata.json") if version else None
        if version and version not in registered and isinstance(meta, dict) and meta.get("version") == version:
            events.append({"at": meta.get("created_at"), "event": "registered", "version": version,
                           "model_sha256": meta.get("model_sha256"), "as_of": meta.get("as_of"),
                           "metrics": meta.get("metrics"), "id": f"restored-{version}"})
            registered.add(version)
            report.actions.append(f"{HISTORY}: registration of {version} restored from its metadata.json")

    # The pointer: its own event into the history; rebuilt from the history when missing or damaged.
    try:
        pointer = reg._pointer()[1]
        pointer_damaged = False
    except RegistryError as exc:
        if not exc.damaged_key:
            raise
        pointer, pointer_damaged = None, True
    if pointer is not None:
        event = _pointer_event(pointer)
        if not any(_same_event(e, event) for e in events):
            events.append(event)
            report.actions.append(f"{HISTORY}: champion change {event['sequence']} ({event['version']}) "
                                  "added from the pointer")
    events = _fill_champion_gaps(events, pointer, report)

    if events != original:
        if not store.compare_and_put(HISTORY, _dumps({"format": HISTORY_FORMAT, "events": events}), token):
            raise RegistryError(f"{HISTORY} changed while the repair ran; run `issue-assets model repair` again")

    # Every event has its object again (the second copy the next repair may need).
    for event in events:
        if event.get("id") and event["id"] not in objects:
            payload = _registration_payload(store, event) if event.get("event") == "registered" else {}
            reg._put_event_object(event, payload)
            objects[event["id"]] = {"event": event, **payload}
    for key in damaged_objects:
        store.delete(key)
        report.actions.append(f"{key}: unreadable event object replaced from the history")

    # Metadata and calibration of every registered version.
    payloads = {o["event"]["version"]: o for o in objects.values() if o["event"].get("event") == "registered"}
    for version in sorted(registered):
        _repair_version(reg, version, payloads.get(version, {}), report)

    # The pointer from the history when it is missing or damaged.
    champion_events = sorted((e for e in events if e.get("event") in CHAMPION_EVENTS), key=lambda e: e["sequence"])
    if (pointer is None or pointer_damaged) and champion_events:
        last = champion_events[-1]
        stack = _replay(champion_events)
        meta = _load(store, f"{PREFIX}/{last['version']}/metadata.json") or {}
        new = {"version": last["version"], "model_sha256": meta.get("model_sha256"),
               "previous": last.get("previous", last.get("from")),
               "kind": "rollback" if last["event"] == "rolled_back" else "promotion",
               "stack": stack, "sequence": last["sequence"], "at": last.get("at"), "event": last}
        store.put_bytes(POINTER, _dumps(new))
        report.actions.append(f"{POINTER}: rebuilt from the history (champion {last['version']}, "
                              f"sequence {last['sequence']})")
        pointer = new

    # The champion's model.json from latest_model.json, then latest_model.json from the champion.
    if pointer is not None:
        model_key = f"{PREFIX}/{pointer['version']}/model.json"
        model = _bytes(store, model_key)
        if model is None or sha256(model) != pointer["model_sha256"]:
            latest = _bytes(store, LATEST)
            if latest is not None and sha256(latest) == pointer["model_sha256"]:
                store.put_bytes(model_key, latest)
                report.actions.append(f"{model_key}: restored from {LATEST}")
            else:
                report.lost.append(f"{model_key}: damaged, and {LATEST} is no copy of it; promote another "
                                   "version or roll back")
        if _bytes(store, LATEST) != _bytes(store, model_key) and not report.lost:
            reg._sync_latest()
            report.actions.append(f"{LATEST}: copied from {model_key}")
        report.champion = pointer["version"]
    return report


def _load_text(store, key: str) -> str | None:
    try:
        return store.get_bytes(key).decode("utf-8", "replace")
    except KeyNotFound:
        return None


def _bytes(store, key: str) -> bytes | None:
    try:
        return store.get_bytes(key)
    except KeyNotFound:
        return None


def _registration_payload(store, event: dict) -> dict:
    version = event["version"]
    meta = _load(store, f"{PREFIX}/{version}/metadata.json")
    calibration = _bytes(store, f"{PREFIX}/{version}/calibration.json")
    payload = {}
    if isinstance(meta, dict) and meta.get("version") == version:
        payload["metadata"] = meta
        if calibration is not None and sha256(calibration) == meta.get("calibration_sha256"):
            payload["calibration_json"] = calibration.decode("utf-8")
    return payload


def _repair_version(reg: ModelRegistry, version: str, payload: dict, report: RegistryRepair) -> None:
    store = reg.store
    meta_key = f"{PREFIX}/{version}/metadata.json"
    meta = _load(store, meta_key)
    if not (isinstance(meta, dict) and meta.get("version") == version):
        if isinstance(payload.get("metadata"), dict):
            meta = payload["metadata"]
            store.put_bytes(meta_key, _dumps(meta))
            report.actions.append(f"{meta_key}: restored from its registration event")
        else:
            report.lost.append(f"{meta_key}: damaged and no registration event holds a copy")
            return
    cal_key = f"{PREFIX}/{version}/calibration.json"
    calibration = _bytes(store, cal_key)
    if meta.get("calibration_sha256") and (calibration is None or sha256(calibration) != meta["calibration_sha256"]):
        copy = payload.get("calibration_json")
        if copy is not None and sha256(copy.encode("utf-8")) == meta["calibration_sha256"]:
            store.put_bytes(cal_key, copy.encode("utf-8"))
            report.actions.append(f"{cal_key}: restored from its registration event")
        else:
            report.lost.append(f"{cal_key}: damaged and no registration event holds a copy")
    model_key = f"{PREFIX}/{version}/model.json"
    model = _bytes(store, model_key)
    if model is None or (meta.get("model_sha256") and sha256(model) != meta["model_sha256"]):
        pointer_version = None
        try:
            pointer_version = (reg._pointer()[1] or {}).get("version")
        except RegistryError:
            pass
        if version != pointer_version:  # the champion's model is restored from latest_model.json later
            report.lost.append(f"{model_key}: damaged; a model that is not the champion has no second copy "
                               "(train it again)")


def _replay(champion_events: list[dict]) -> list[str]:
    stack: list[str] = []
    for e in champion_events:
        if e["event"] == "promoted":
            stack.append(e["version"])
        elif stack:
            stack.pop()
    return stack


def _fill_champion_gaps(events: list[dict], pointer: dict | None, report: RegistryRepair) -> list[dict]:
    """A registry written before pointers carried their own event can lack champion events (a promoter
    killed between pointer and history). Each missing change k is the `previous` (or `from`) of change
    k + 1; it was a rollback when it went back to the champion before k - 1's, a promotion otherwise."""
    champion = {e["sequence"]: e for e in events if e.get("event") in CHAMPION_EVENTS
                and isinstance(e.get("sequence"), int)}
    top = max([*champion, (pointer or {}).get("sequence", 0)])
    missing = [k for k in range(1, top + 1) if k not in champion]
    if not missing:
        return events
    restored = []
    for k in missing:
        after = champion.get(k + 1)
        if after is None and pointer is not None and pointer["sequence"] == k + 1:
            after = _pointer_event(pointer)
        version = (after or {}).get("previous", (after or {}).get("from"))
        if version is None:
            report.lost.append(f"{HISTORY}: champion change {k} cannot be reconstructed")
            continue
        before = _replay([champion[j] for j in sorted(champion) if j < k])
        kind = "rolled_back" if len(before) >= 2 and before[-2] == version else "promoted"
        event = {"at": None, "event": kind, "version": version, "sequence": k, "reconstructed": True,
                 "id": f"reconstructed-{k}"}
        event.update({"from": before[-1]} if kind == "rolled_back" else
                     {"previous": before[-1] if before else None, "decision": {}})
        champion[k] = event
        restored.append(event)
        report.actions.append(f"{HISTORY}: champion change {k} ({kind} {version}) reconstructed from change {k + 1}")
    return events + restored
