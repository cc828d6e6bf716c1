"""What every benchmark result names: the machine it ran on."""

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def write_results(path, text: str) -> None:
    """Write a results file, keeping its hand-written "## Notes" section (analysis) across re-runs."""
    path = Path(path)
    previous = path.read_text() if path.exists() else ""
    notes = "## Notes" + previous.split("\n## Notes", 1)[1].rstrip() + "\n" if "\n## Notes" in previous else ""
    path.write_text(text.rstrip() + "\n" + ("\n" + notes if notes else ""))
