"""Progress lines of the CLI: one live line for the running step on a terminal (rich), updated from the
work's progress events (pages and items fetched, the asset that runs, Optuna trials), and one line per
finished step with its counts and elapsed time, on a terminal or not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from issue_assets import progress


class _Step:
    def __init__(self, title: str):
        self.title = title
        self.began = time.perf_counter()
        self.pages: dict[str, list[int]] = {}  # kind -> [pages, items]
        self.running: str | None = None
        self.trials = 0
        self.summary = ""
        self.lock = threading.Lock()

    def on_event(self, event: str, info: dict) -> None:
        with self.lock:
            if event == "page":
                counts = self.pages.setdefault(info.get("kind", "items"), [0, 0])
                counts[0] += 1
                counts[1] += int(info.get("items") or 0)
            elif event == "step" and info.get("state") == "started":
                self.running = info.get("step")
            elif event == "trial":
                self.trials += 1

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def detail(self) -> str:
        with self.lock:
            parts = [f"{kind} {p:,} pages / {n:,} items" for kind, (p, n) in self.pages.items()]
            if self.running:
                parts.append(f"running {self.running}")
            if self.trials:
                parts.append(f"{self.trials} trials")
        return " · ".join(parts)


class Steps:
    """`with steps.step("ingest_job demo-org/demo-project") as step: ...; step.summary = "..."`."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)

    def line(self, text: str) -> None:
        self.console.print(text, markup=False)

    @contextmanager
    def step(self, title: str) -> Iterator[_Step]:
        current = _Step(title)

        def frame() -> Table:
            grid = Table.grid(padding=(0, 1))
            grid.add_row(Spinner("dots"), Text(f"{title}  {current.detail()}  {current.elapsed:.0f}s"))
            return grid

        live = Live(get_renderable=frame, console=self.console, transient=True, refresh_per_second=4) \
            if self.console.is_terminal else None
        failed = True
        try:
            with progress.listening(current.on_event):
                if live is not None:
                    with live:
                        yield current
                else:
                    yield current
            failed = False
        finally:
            mark = "x" if failed else "✓"
            end = f": {current.summary}" if current.summary and not failed else (" failed" if failed else "")
            self.line(f"{mark} {title}{end}  ({current.elapsed:.1f}s)")
