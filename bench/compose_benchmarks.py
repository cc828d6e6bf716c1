"""Compose BENCHMARKS.md from the sections the bench scripts write (bench/*_RESULTS.md)."""

from pathlib import Path

ORDER = ["INGEST", "FEATURES", "MODELING", "QUALITY", "SERVING", "PARTITIONING", "AUTOMATION", "SOAK", "RELIABILITY",
         "FUZZ"]
HEADER = """# Benchmarks

Every figure below was measured on this project's machine (2 cores, shared with other work, so
figures are noisy: medians and ratios are taken within one run). Each section names its date, the
machine and the command that produced it; re-run a script and then `python bench/compose_benchmarks.py`
to refresh this file. Sections are written by `bench/bench_*.py` into `bench/*_RESULTS.md`.
"""


def compose(root: Path) -> str:
    parts = [HEADER]
    for name in ORDER:
        path = root / "bench" / f"{name}_RESULTS.md"
        if path.exists():
            text = path.read_text().strip()
            # Demote the section's own title one level under this file's title.
            lines = [("#" + line) if line.startswith("#") else line for line in text.splitlines()]
            parts.append("\n".join(lines))
        else:
            parts.append(f"## {name.title()}\n\nNot measured yet.")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    (root / "BENCHMARKS.md").write_text(compose(root))
    print(f"wrote {root / 'BENCHMARKS.md'}")
