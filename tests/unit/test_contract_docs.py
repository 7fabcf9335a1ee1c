"""The event contract docs are generated from the code and stay in step with it."""

from __future__ import annotations

import json

import pytest

from events.jsonl import parse_event
from events.models import CATALOG, SESSION_EVENTS, TENANT_EVENTS
from govstream.contract import EVENTS_DOC, LIFECYCLE_DOC, example, render_events, render_lifecycle
from projections.lifecycle import ALLOWED


def test_the_committed_docs_are_what_the_code_generates() -> None:
    """Refresh with `govstream schemas docs` after changing a model or the machine."""
    assert EVENTS_DOC.read_text() == render_events()
    assert LIFECYCLE_DOC.read_text() == render_lifecycle()


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_event_is_documented_with_every_field_and_a_valid_example(name: str) -> None:
    model = CATALOG[name]
    text = EVENTS_DOC.read_text()
    section = text.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
    for field in model.model_fields:
        assert f"| `{field}` |" in section, field
    line = section.split("```json\n", 1)[1].split("\n```", 1)[0]
    data = json.loads(line)
    assert data["type"] == name and data == {"type": name, **example(model)}
    if model in (*SESSION_EVENTS, *TENANT_EVENTS):
        assert type(parse_event(data)).__name__ == name  # what `govstream emit` reads


def test_every_transition_is_in_the_lifecycle_table() -> None:
    text = LIFECYCLE_DOC.read_text()
    rows = {
        line.split(" | ")[0].strip("| `") for line in text.splitlines() if line.startswith("| ")
    }
    assert "(no session yet)" in rows and "waiting_for_tool" in rows
    assert text.count(" | ") > len(ALLOWED)
    assert "send ToolCallCompleted status=rejected for it before closing" in text
