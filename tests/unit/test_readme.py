"""The README's tables and examples stay true to the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from events.jsonl import parse_event
from events.models import SessionResumed, TenantProfileUpdated
from projections.governor.fold import ADMISSION_REASONS

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_readme_documents_every_admission_reason_code() -> None:
    table = re.findall(r"^\| `([A-Z_]+)` \| (.+) \|$", README, flags=re.MULTILINE)
    documented = {code: meaning for code, meaning in table if code in ADMISSION_REASONS}
    assert documented == ADMISSION_REASONS


def _emit_examples() -> list[dict]:  # type: ignore[type-arg]
    """The JSON of every `printf '%s\\n' '...' | ... govstream emit -` example."""
    found = re.findall(r"printf '%s\\n' '(\{.*?\})'", README, flags=re.DOTALL)
    return [json.loads(" ".join(text.split())) for text in found]


def test_operator_guide_events_are_valid() -> None:
    events = [parse_event(data) for data in _emit_examples()]
    assert [type(e) for e in events] == [TenantProfileUpdated, SessionResumed]
    profile = events[0]
    assert isinstance(profile, TenantProfileUpdated)
    assert profile.budgets.concurrent_calls_per_tool == 10
    assert profile.tool_permissions == {"shell": "deny"}


def test_readme_lists_every_route_with_who_may_call_it() -> None:
    from streams.http_guard import ROUTES

    rows = re.findall(
        r"^\| (GET|POST) \| `(/(?:v1|console)[^`]*)` \| ([^|]+) \| ([^|]+) \|$",
        README,
        flags=re.MULTILINE,
    )
    words = {"tenant": "tenant key", "operator": "operator key", "local": "local secret"}
    documented = {
        (method, path): frozenset(role for role, text in words.items() if text in who)
        for method, path, who, _ in rows
    }
    assert documented == {(r.method, r.path): r.roles for r in ROUTES}


def test_readme_lists_every_redaction_kind() -> None:
    from projections.redaction import Redactor

    table = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", README, flags=re.MULTILINE)
    kinds = Redactor().kinds
    assert [kind for kind, _ in table if kind in kinds] == list(kinds)
