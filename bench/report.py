"""BENCHMARKS.md sections: each benchmark owns the text between its two markers."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(text: str, begin: str, finish: str, path: Path = BENCHMARKS) -> None:
    """Replace what lies between `begin` and `finish` (markers included in `text`),
    or append `text` when the file has no such section yet."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in current and finish in current:
        head, rest = current.split(begin, 1)
        tail = rest.split(finish, 1)[1].lstrip("\n")
        current = head + text + ("\n" + tail if tail else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current)
