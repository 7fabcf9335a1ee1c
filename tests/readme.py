"""The README's code snippets, so tests run them as a reader would."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(name: str) -> str:
    """The fenced block after `<!-- snippet: NAME ... -->` in the README."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- snippet: {re.escape(name)}\b.*?-->\n```\w*\n(.*?)\n```", text, re.S)
    if found is None:
        raise AssertionError(f"README.md has no snippet {name!r}")
    return found.group(1) + "\n"
