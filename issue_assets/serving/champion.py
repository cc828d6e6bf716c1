"""The champion model held by the service, swapped without a restart and without failing a request.

A request takes `holder.current` once (one attribute read: a (version, model) pair) and uses that
pair to the end, so a swap never changes the model under a running request. A watcher thread reads
the registry pointer every `interval` seconds; when it names another version, the new model is
loaded completely, its booster set to one thread, and only then is the single reference replaced.
A registry that cannot be read (a promotion half-way, a store hiccup) keeps the current model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from issue_assets.modeling.training import TrainedModel
from issue_assets.registry import ModelRegistry


@dataclass(frozen=True)
class Champion:
    version: str
    model: TrainedModel
    metadata: dict[str, Any] = field(repr=False)
    loaded_at: float


class ChampionHolder:
    def __init__(self, registry: ModelRegistry, *, interval: float = 2.0,
                 on_swap: Callable[[Champion], None] | None = None):
        self.registry = registry
        self.interval = float(interval)
        self.on_swap = on_swap
        self.current: Champion | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> Champion | None:
        """Check the pointer once; load and swap in a new champion. Returns the current champion."""
        with self._lock:
            self.last_check = time.monotonic()
            try:
                pointer = self.registry.champion_pointer()
                if pointer is None:
                    self.last_error = None if self.current else "no model has been promoted in the registry yet"
                    return self.current
                version = pointer["version"]
                if self.current is not None and self.current.version == version:
                    self.last_error = None
                    return self.current
                model = self.registry.load_model(version)
                model.booster.set_param({"nthread": 1})
                metadata = self.registry.get_metadata(version)
            except Exception as exc:  # keep serving the model we have; report why in /healthz
                self.last_error = f"{type(exc).__name__}: {exc}"
                return self.current
            champion = Champion(version, model, metadata, time.time())
            self.current = champion
            self.last_error = None
        if self.on_swap:
            self.on_swap(champion)
        return champion

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def start(self) -> None:
        self.refresh()
        if self._thread is None and self.interval > 0:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
