"""JSON Lines of events: `{"type": "TurnCompleted", ...fields}` per line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from events.models import CATALOG


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


def parse_event(obj: Any) -> BaseModel:
    """A JSON object with a "type" member -> validated event model."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    fields = dict(obj)
    event_type = fields.pop("type", None)
    if event_type is None:
        raise ValueError('missing "type" (an event type such as "TurnCompleted")')
    model = CATALOG.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        raise ValueError(f"unknown event type {event_type!r}")
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(f"{event_type}: {_describe(exc)}") from None


def to_json_line(event: BaseModel) -> str:
    return json.dumps({"type": type(event).__name__, **event.model_dump(mode="json")})


def parse_lines(lines: Iterable[str]) -> tuple[list[BaseModel], list[LineError]]:
    """Validate every line; blank lines are skipped. Returns (events, errors)."""
    events: list[BaseModel] = []
    errors: list[LineError] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        try:
            events.append(parse_event(obj))
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
    return events, errors
