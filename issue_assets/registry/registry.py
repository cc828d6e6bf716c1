"""Model versions, the champion pointer and an append-only history, on any ObjectStore (folder or S3).

Layout under the store root::

    models/<version>/model.json        XGBoost's own JSON (feature names included)
    models/<version>/calibration.json  calibrator + feature names + model sha256
    models/<version>/metadata.json     as-of, windows, row counts, features, params, metrics, ...
    models/<version>/*.png             plots
    models/<version>/report.html       the version's report (registry.reports), rewritten when its state changes
    models/champion.json               pointer: {version, model_sha256, sequence, previous, stack, event}
    models/latest_model.json           a byte copy of the champion's model.json
    models/model_metadata.json         history: every registration, decision, promotion, rollback
    models/events/<id>.json            each history event on its own (a registration's also carries the
                                       version's metadata and calibration), written before the history
    models/claims/<number>             version numbers taken

Concurrency, by optimistic compare-and-put only (flock-guarded compare locally, S3 conditional
`If-Match`/`If-None-Match` writes remotely; see `issue_assets.lake.store`):

* A version number is claimed by creating `models/claims/<number>` with "must not exist"; the
  loser of a race takes the next number. All version files are written before the history records
  the version, and nothing points at a version the history does not record.
* The champion pointer is the commit point of a promotion or rollback. It is replaced only by
  compare-and-put against the version read (re-read and retry on conflict), with a `sequence` that
  grows by one per change. It holds, in that one atomic record, the champion chain rollback walks
  (`stack`) and the history event of its own change (`event`).
* The history (and each event's own object) is written after the pointer. A reader that finds the
  pointer's event missing from it (a promoter killed in between) adds it in memory, and every writer
  adds it for good before it replaces the pointer, so pointer and history never disagree for good,
  whatever moment a process is killed at. Events carry unique ids: adding one twice is a no-op.
* `latest_model.json` is derived: after its pointer write, a promoter copies the model of the
  pointer's *current* version, re-reads the pointer, and repeats if the sequence moved. The last
  copy therefore always matches the final pointer. A reader that finds it missing or holding an
  earlier registered model (a promotion killed before its copy) completes the copy; bytes that are no
  registered model are damage, reported with the way out (`issue-assets model repair`).
* `registry.repair.repair_registry` restores what can be derived: the history from the event objects, metadata and
  calibration from registration events, the pointer from the history, latest_model.json from the
  champion's model, and the champion's model.json from latest_model.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import issue_assets
from issue_assets import config
from issue_assets.lake.documents import seal, unseal
from issue_assets.lake.store import DamagedFile, KeyNotFound, ObjectStore, StoreError, open_store

if TYPE_CHECKING:  # imported where a model is loaded: xgboost and scikit-learn cost seconds at start-up
    from issue_assets.modeling.training import TrainedModel

PREFIX = "models"
POINTER = f"{PREFIX}/champion.json"
LATEST = f"{PREFIX}/latest_model.json"
HISTORY = f"{PREFIX}/model_metadata.json"
CLAIMS = f"{PREFIX}/claims/"
EVENTS = f"{PREFIX}/events/"
CHAMPION_EVENTS = ("promoted", "rolled_back")
REPAIR = "issue-assets model repair"
HISTORY_FORMAT = 1
VERSION_RE = re.compile(r"^v(\d{4,})-(\d{8}T\d{6}Z)$")
ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED = {"model.json", "metadata.json", "calibration.json"}
_UNSET = object()
log = logging.getLogger("issue_assets.registry")


class RegistryError(RuntimeError):
    """The registry is inconsistent or an operation is impossible; the message names the key.
    `damaged_key` is set when the cause is a file that cannot be read back as written."""

    damaged_key: str | None = None


class PromotionConflict(RegistryError):
    """The champion changed since the promotion decision was made; decide again."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonable(value: Any) -> Any:
    """Metadata as strict JSON: numpy scalars unwrapped, NaN/inf -> None, timestamps as ISO strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return value.isoformat()
    if isinstance(value, pd.DataFrame):
        return _jsonable(value.to_dict(orient="records"))
    return value


def _dumps(value: Any) -> bytes:
    """Strict JSON, an object sealed with its sha256 (see `issue_assets.lake.documents.seal`)."""
    return json.dumps(seal(_jsonable(value)), indent=2, sort_keys=True, allow_nan=False).encode()


def code_version() -> dict[str, Any]:
    """issue_assets.__version__ and, when the package sits in a git checkout, the commit sha."""
    sha = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(issue_assets.__file__).parent, capture_output=True,
            text=True, timeout=5, check=False,
        )
        if out.returncode == 0:
            sha = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"issue_assets": issue_assets.__version__, "git_sha": sha}


def version_number(version: str) -> int:
    match = VERSION_RE.match(version)
    if not match:
        raise RegistryError(f"{version!r} is not a registry version (vNNNN-YYYYMMDDTHHMMSSZ)")
    return int(match.group(1))


class ModelRegistry:
    """Versions, champion and history on one ObjectStore. Safe for concurrent writers and for kill -9."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        now: Callable[[], datetime] | None = None,
        max_retries: int = 50,
        consistency_checks: int = 3,
        retry_delay: float = 0.05,
    ):
        self.store = store
        self._now = now or (lambda: datetime.now(UTC))
        self.max_retries = max_retries
        self.consistency_checks = consistency_checks
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        return f"ModelRegistry({self.store!r})"

    # ---- low-level reads -------------------------------------------------------------------
    def _damaged(self, key: str, reason: str) -> RegistryError:
        error = RegistryError(f"registry file {self.store.uri}/{key} is corrupt ({reason}); run `{REPAIR}`")
        error.damaged_key = key
        return error

    def _read_json(self, key: str) -> Any:
        try:
            data = self.store.get_bytes(key)
        except KeyNotFound:
            raise
        except StoreError as exc:
            raise RegistryError(f"cannot read {key} from {self.store.uri}: {exc}") from None
        return self._parse(key, data)

    def _parse(self, key: str, data: bytes) -> Any:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise self._damaged(key, "not valid JSON") from None
        try:
            return unseal(doc, key)
        except DamagedFile as exc:
            raise self._damaged(key, exc.reason) from None

    def _read_versioned(self, key: str) -> tuple[str | None, Any]:
        """(store version, parsed JSON) of one read: a CAS on that version fails if the object changed."""
        try:
            data, token = self.store.get_versioned(key)
        except KeyNotFound:
            return None, None
        except StoreError as exc:
            raise RegistryError(f"cannot read {key} from {self.store.uri}: {exc}") from None
        return token, self._parse(key, data)

    def _backoff(self, attempt: int) -> None:
        time.sleep(self.retry_delay * random.uniform(0.2, 1.0) * min(attempt + 1, 8))

    def _stamp(self) -> str:
        return self._now().astimezone(UTC).isoformat()

    # ---- history ---------------------------------------------------------------------------
    def _history_doc(self) -> tuple[str | None, dict[str, Any]]:
        token, doc = self._read_versioned(HISTORY)
        if doc is None:
            return None, {"format": HISTORY_FORMAT, "events": []}
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list) \
                or not all(isinstance(e, dict) for e in doc["events"]):
            raise self._damaged(HISTORY, "no events list")
        return token, doc

    def _new_event(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"at": self._stamp(), "id": f"{self._now().astimezone(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(6)}",
                **event}

    def _put_event_object(self, event: dict[str, Any], payload: Mapping[str, Any] | None = None) -> None:
        self.store.put_bytes(f"{EVENTS}{event['id']}.json", _dumps({"event": event, **(payload or {})}))

    def _append(self, event: dict[str, Any], payload: Mapping[str, Any] | None = None, *,
                object_written: bool = False) -> dict[str, Any]:
        """Record an event: its own object first (the copy repair rebuilds the history from), then the
        history by compare-and-put. Idempotent: an event already recorded (same id) is not added again."""
        if not object_written:
            self._put_event_object(event, payload)
        for attempt in range(self.max_retries):
            token, doc = self._history_doc()
            if any(_same_event(e, event) for e in doc["events"]):
                return event
            doc["events"].append(event)
            if self.store.compare_and_put(HISTORY, _dumps(doc), token):
                return event
            self._backoff(attempt)
        raise RegistryError(f"could not append to {HISTORY} after {self.max_retries} conflicting writes")

    def history(self) -> list[dict[str, Any]]:
        """Every event, oldest first: registered, decision, promoted, rolled_back (a champion change whose
        promoter was killed before writing the history is included from the pointer)."""
        events = list(self._history_doc()[1]["events"])
        pending = self._pending_pointer_event(events)
        return events + [pending] if pending else events

    def _pending_pointer_event(self, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        try:
            pointer = self._pointer()[1]
        except RegistryError:
            return None
        if pointer is None:
            return None
        event = _pointer_event(pointer)
        return None if any(_same_event(e, event) for e in events) else event

    def _reconcile(self, pointer: dict[str, Any] | None) -> None:
        """Make the history hold the pointer's own event (writers call this before replacing it)."""
        if pointer is None:
            return
        event = _pointer_event(pointer)
        _, doc = self._history_doc()
        if not any(_same_event(e, event) for e in doc["events"]):
            self._append(event)

    def list_versions(self) -> list[str]:
        """Registered versions, oldest first (only versions whose files were all written)."""
        versions = {e["version"] for e in self.history() if e.get("event") == "registered"}
        return sorted(versions, key=version_number)

    # ---- register --------------------------------------------------------------------------
    def _next_number(self) -> int:
        numbers = [0]
        for key in self.store.list(CLAIMS):
            name = key.rsplit("/", 1)[-1]
            if name.isdigit():
                numbers.append(int(name))
        return max(numbers) + 1

    def register(
        self, model: TrainedModel, metadata: Mapping[str, Any], artifacts: Mapping[str, bytes] | None = None
    ) -> str:
        """Store a model version (model, calibration, artifacts, metadata) and record it in the history."""
        saved = model.save()
        artifacts = dict(artifacts or {})
        for name in artifacts:
            if not ARTIFACT_RE.match(name) or name in RESERVED:
                raise RegistryError(f"artifact name {name!r} is not allowed")
        created = self._now().astimezone(UTC)
        number = self._next_number()
        for _ in range(self.max_retries):
            version = f"v{number:04d}-{created.strftime('%Y%m%dT%H%M%SZ')}"
            if self.store.compare_and_put(f"{CLAIMS}{number:06d}", version.encode(), None):
                break
            number = max(number + 1, self._next_number())
        else:
            raise RegistryError(f"could not claim a version number in {CLAIMS} after {self.max_retries} tries")
        base = f"{PREFIX}/{version}"
        self.store.put_bytes(f"{base}/model.json", saved.model_json)
        self.store.put_bytes(f"{base}/calibration.json", saved.calibration_json)
        for name, data in sorted(artifacts.items()):
            self.store.put_bytes(f"{base}/{name}", data)
        meta = {
            **dict(metadata),
            "version": version,
            "created_at": created.isoformat(),
            "code_version": code_version(),
            "model_sha256": sha256(saved.model_json),
            "calibration_sha256": sha256(saved.calibration_json),
            "feature_names": model.feature_names,
            "files": ["model.json", "calibration.json", "metadata.json", *sorted(artifacts)],
        }
        self.store.put_bytes(f"{base}/metadata.json", _dumps(meta))
        event = self._new_event({
            "event": "registered",
            "version": version,
            "model_sha256": meta["model_sha256"],
            "as_of": meta.get("as_of"),
            "metrics": meta.get("metrics"),
        })
        self._append(event, {"metadata": _jsonable(meta), "calibration_json": saved.calibration_json.decode("utf-8")})
        return version

    # ---- reading versions ------------------------------------------------------------------
    def _require_registered(self, version: str) -> None:
        if version not in self.list_versions():
            raise RegistryError(f"{PREFIX}/{version} is not a registered version in {self.store.uri}")

    def get_metadata(self, version: str) -> dict[str, Any]:
        key = f"{PREFIX}/{version}/metadata.json"
        try:
            meta = self._read_json(key)
        except KeyNotFound:
            raise RegistryError(f"{key} is missing from {self.store.uri}; run `{REPAIR}`") from None
        if not isinstance(meta, dict) or meta.get("version") != version:
            raise self._damaged(key, f"does not describe {version}")
        return meta

    def _model_bytes(self, version: str, expected_sha: str | None) -> bytes:
        key = f"{PREFIX}/{version}/model.json"
        try:
            data = self.store.get_bytes(key)
        except KeyNotFound:
            raise RegistryError(f"{key} is missing from {self.store.uri}; run `{REPAIR}`") from None
        if expected_sha and sha256(data) != expected_sha:
            raise self._damaged(key, "does not match its recorded sha256")
        return data

    def load_model(self, version: str) -> TrainedModel:
        """The version's TrainedModel (model.json verified against the recorded sha256)."""
        meta = self.get_metadata(version)
        model_json = self._model_bytes(version, meta.get("model_sha256"))
        cal_key = f"{PREFIX}/{version}/calibration.json"
        try:
            calibration = self.store.get_bytes(cal_key)
        except KeyNotFound:
            raise RegistryError(f"{cal_key} is missing from {self.store.uri}; run `{REPAIR}`") from None
        if meta.get("calibration_sha256") and sha256(calibration) != meta["calibration_sha256"]:
            raise self._damaged(cal_key, "does not match its recorded sha256")
        from issue_assets.modeling.training import TrainedModel

        try:
            return TrainedModel.load(model_json, calibration, version=version)
        except Exception as exc:  # xgboost raises its own error types for a bad model
            raise RegistryError(f"{PREFIX}/{version} cannot be loaded from {self.store.uri}: {exc}") from None

    # ---- champion --------------------------------------------------------------------------
    def _pointer(self) -> tuple[str | None, dict[str, Any] | None]:
        token, pointer = self._read_versioned(POINTER)
        if pointer is None:
            return None, None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str) \
                or not isinstance(pointer.get("sequence"), int) or not pointer.get("model_sha256"):
            raise self._damaged(POINTER, "lacks version/sequence/model_sha256")
        return token, pointer

    def champion_pointer(self) -> dict[str, Any] | None:
        return self._pointer()[1]

    def champion(self) -> str | None:
        """The champion version after verifying pointer, its model.json and latest_model.json agree.

        None when nothing was ever promoted. A latest_model.json that is missing or holds an earlier
        registered model (a promotion killed before its copy) is brought up to date; RegistryError
        (naming the key and the way out) for a missing pointer while the history records promotions, a
        pointer to a missing/corrupt model, or a latest_model.json that is no registered model.
        """
        for check in range(self.consistency_checks):
            _, pointer = self._pointer()
            if pointer is None:
                promoted = [e for e in self.history() if e.get("event") in CHAMPION_EVENTS]
                if promoted:
                    raise RegistryError(
                        f"{POINTER} is missing from {self.store.uri} but the history records champion "
                        f"{promoted[-1]['version']}; run `{REPAIR}`"
                    )
                return None
            version = pointer["version"]
            model = self._model_bytes(version, pointer["model_sha256"])
            try:
                latest = self.store.get_bytes(LATEST)
            except KeyNotFound:
                latest = None
            if latest == model:
                return version
            _, again = self._pointer()
            if again and again["sequence"] != pointer["sequence"]:
                continue  # a promotion landed between the reads; look again
            if check < self.consistency_checks - 1:
                self._backoff(check)
        # A promotion killed before its copy leaves latest_model.json missing or holding an earlier champion.
        earlier = {*self._stack(pointer), pointer.get("previous")}
        known = {e.get("model_sha256") for e in self.history() if e.get("event") == "registered"
                 and e.get("version") in earlier}
        if latest is None or sha256(latest) in known:
            log.warning("%s %s: completing the copy of champion %s", self.store.uri, LATEST, version)
            self._sync_latest()
            return self.champion()
        raise self._damaged(LATEST, f"differs from the champion's model.json, champion {version}, "
                                    f"{PREFIX}/{version}/model.json, and from every earlier champion's")

    def load_champion(self) -> TrainedModel | None:
        version = self.champion()
        return None if version is None else self.load_model(version)

    # ---- promotion -------------------------------------------------------------------------
    def _check_model(self, version: str) -> str:
        meta = self.get_metadata(version)
        model_sha = meta.get("model_sha256")
        data = self._model_bytes(version, model_sha)
        from issue_assets.modeling.training import TrainedModel

        try:
            TrainedModel.load(data, None)
        except Exception as exc:
            raise RegistryError(f"{PREFIX}/{version}/model.json is not a loadable XGBoost model: {exc}") from None
        return sha256(data)

    def _stack(self, pointer: dict[str, Any] | None) -> list[str]:
        """The champion chain up to and including the pointer's version."""
        if pointer is None:
            return []
        if isinstance(pointer.get("stack"), list):
            return list(pointer["stack"])
        return self._champion_stack(pointer["sequence"])  # a pointer written before it carried its chain

    def _write_pointer(self, build: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Read-modify-CAS loop on the pointer; `build(current)` returns the change (version, model_sha256,
        previous, kind, stack, event fields) or None (no change). The current pointer's own event is made
        durable in the history first, so replacing the pointer can never lose it."""
        for attempt in range(self.max_retries):
            token, current = self._pointer()
            change = build(current)
            if change is None:
                return None
            self._reconcile(current)
            sequence = (current["sequence"] if current else 0) + 1
            event = self._new_event({**change.pop("event"), "sequence": sequence})
            new = {**change, "sequence": sequence, "at": event["at"], "event": event}
            if self.store.compare_and_put(POINTER, _dumps(new), token):
                return new
            self._backoff(attempt)
        raise RegistryError(f"could not update {POINTER} after {self.max_retries} conflicting writes")

    def _sync_latest(self) -> None:
        """Copy the current champion's model.json to latest_model.json until the pointer is stable."""
        for attempt in range(self.max_retries):
            _, pointer = self._pointer()
            if pointer is None:
                return
            model = self._model_bytes(pointer["version"], pointer["model_sha256"])
            try:
                current = self.store.get_bytes(LATEST)
            except KeyNotFound:
                current = None
            if current != model:
                self.store.put_bytes(LATEST, model)
            _, again = self._pointer()
            if again is not None and again["sequence"] == pointer["sequence"]:
                return
            self._backoff(attempt)
        raise RegistryError(f"{POINTER} kept moving; {LATEST} may lag")

    def _finish_change(self, pointer: dict[str, Any]) -> None:
        self._append(pointer["event"])
        self._sync_latest()

    def record_decision(self, version: str, decision: Mapping[str, Any]) -> dict[str, Any]:
        """Append a (typically rejecting) promotion decision to the history."""
        self._require_registered(version)
        return self._append(self._new_event({"event": "decision", "version": version, "decision": dict(decision)}))

    def promote(
        self, version: str, decision: Mapping[str, Any] | None = None, *, expected_champion: Any = _UNSET
    ) -> dict[str, Any]:
        """Make `version` the champion; returns the new pointer.

        `expected_champion` (or decision["champion_version"]) is the champion the decision compared
        against; if the champion has changed since, PromotionConflict is raised so the caller decides
        again. Promoting the current champion records the decision and changes nothing else.
        """
        self._require_registered(version)
        model_sha = self._check_model(version)
        decision = dict(decision or {})
        if expected_champion is _UNSET and "champion_version" in decision:
            expected_champion = decision["champion_version"]

        def build(current):
            current_version = current["version"] if current else None
            if expected_champion is not _UNSET and current_version != expected_champion:
                raise PromotionConflict(
                    f"{POINTER}: champion is {current_version}, the decision for {version} was made "
                    f"against {expected_champion}"
                )
            if current_version == version:
                return None
            return {"version": version, "model_sha256": model_sha, "previous": current_version, "kind": "promotion",
                    "stack": [*self._stack(current), version],
                    "event": {"event": "promoted", "version": version, "previous": current_version,
                              "decision": decision}}

        pointer = self._write_pointer(build)
        if pointer is None:
            self._reconcile(self._pointer()[1])
            self._append(self._new_event({"event": "decision", "version": version, "decision": decision,
                                          "note": "already champion"}))
            self._sync_latest()
            return self._pointer()[1]
        self._finish_change(pointer)
        return pointer

    def _champion_stack(self, upto_sequence: int) -> list[str]:
        events = sorted(
            (e for e in self.history() if e.get("event") in CHAMPION_EVENTS and isinstance(e.get("sequence"), int)),
            key=lambda e: e["sequence"],
        )
        sequences = [e["sequence"] for e in events]
        if sequences[:upto_sequence] != list(range(1, upto_sequence + 1)):
            missing = sorted(set(range(1, upto_sequence + 1)) - set(sequences))
            raise RegistryError(f"{HISTORY} lacks champion events {missing[:5]} up to sequence {upto_sequence}; "
                                f"run `{REPAIR}`")
        stack: list[str] = []
        for e in events[:upto_sequence]:
            if e["event"] == "promoted":
                stack.append(e["version"])
            elif stack:
                stack.pop()
        return stack

    def rollback(self, reason: str = "") -> dict[str, Any]:
        """Make the previous champion (undoing promotions in order) the champion again."""
        targets: dict[str, Any] = {}

        def build(current):
            if current is None:
                raise RegistryError(f"{POINTER} does not exist: there is no champion to roll back")
            stack = self._stack(current)
            if not stack or stack[-1] != current["version"]:
                raise RegistryError(f"the champion chain ends at {stack[-1] if stack else None} but {POINTER} "
                                    f"names {current['version']}; run `{REPAIR}`")
            if len(stack) < 2:
                raise RegistryError(f"{HISTORY} records no champion before {current['version']} to roll back to")
            target = stack[-2]
            if targets.get("checked") != target:
                targets["sha"] = self._check_model(target)
                targets["checked"] = target
            return {"version": target, "model_sha256": targets["sha"], "previous": current["version"],
                    "kind": "rollback", "stack": stack[:-1],
                    "event": {"event": "rolled_back", "version": target, "from": current["version"],
                              "reason": reason}}

        pointer = self._write_pointer(build)
        self._finish_change(pointer)
        return pointer

    def repair_latest(self) -> str:
        """Explicitly rewrite latest_model.json from the verified champion; returns the version."""
        _, pointer = self._pointer()
        if pointer is None:
            raise RegistryError(f"{POINTER} does not exist; nothing to repair from")
        self._check_model(pointer["version"])
        self._sync_latest()
        return pointer["version"]


def _pointer_event(pointer: dict[str, Any]) -> dict[str, Any]:
    """The history event of the pointer's change (rebuilt from its fields for an older pointer)."""
    event = pointer.get("event")
    if isinstance(event, dict) and event.get("id"):
        return event
    if pointer.get("kind") == "rollback":
        return {"at": pointer.get("at"), "event": "rolled_back", "version": pointer["version"],
                "from": pointer.get("previous"), "sequence": pointer["sequence"], "reason": ""}
    return {"at": pointer.get("at"), "event": "promoted", "version": pointer["version"],
            "previous": pointer.get("previous"), "sequence": pointer["sequence"], "decision": {}}


def _same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """One event recorded twice: same id, or (events written before ids) the same champion sequence."""
    if a.get("id") and b.get("id"):
        return a["id"] == b["id"]
    if a.get("event") in CHAMPION_EVENTS and b.get("event") in CHAMPION_EVENTS:
        return a.get("sequence") == b.get("sequence")
    return a == b


def default_registry(env: Mapping[str, str] | None = None, s3_client=None) -> ModelRegistry:
    """The registry of the configuration (`config.model_store_uri`): MODEL_STORE, e.g. s3://bucket/prefix,
    with credentials from boto3's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an
    instance role), else ISSUE_ASSETS_HOME/registry. What the CLI and the HTTP service open."""
    return ModelRegistry(open_store(config.model_store_uri(env), s3_client=s3_client))
