"""Every free-text field of an event, redacted (events.models.FREE_TEXT_FIELDS). Pure.

The ClickHouse archive and the memory strata store what producers wrote in
prose; both take it through `redact_event`, so no store keeps a raw secret a
rule can find. The result records what was redacted per field (counts per
kind and a hash of the original), never the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from events.models import FREE_TEXT_FIELDS
from projections.redaction import Redactor


@dataclass(frozen=True)
class RedactedEvent:
    data: dict[str, Any]  # the event as JSON-ready data, free text redacted
    records: dict[str, Any]  # field -> redaction record(s), only fields that changed


def _redact_value(value: Any, redactor: Redactor) -> tuple[Any, Any]:
    """(redacted value, record or None) for a string, a list of strings or a string map."""
    if isinstance(value, str):
        result = redactor.redact(value)
        return result.text, (result.record.to_dict() if result.record.total else None)
    if isinstance(value, list):
        pairs = [_redact_value(v, redactor) for v in value]
        found = [r for _, r in pairs if r is not None]
        return [v for v, _ in pairs], (found or None)
    if isinstance(value, dict):
        pairs_by_key = {k: _redact_value(v, redactor) for k, v in value.items()}
        found_by_key = {k: r for k, (_, r) in pairs_by_key.items() if r is not None}
        return {k: v for k, (v, _) in pairs_by_key.items()}, (found_by_key or None)
    return value, None


def redact_event(event: BaseModel, redactor: Redactor) -> RedactedEvent | None:
    """The event's data with its free text redacted; None when nothing was redacted."""
    fields = FREE_TEXT_FIELDS.get(type(event).__name__)
    if not fields:
        return None
    data: dict[str, Any] | None = None
    records: dict[str, Any] = {}
    for name in fields:
        value = getattr(event, name)
        if value is None:
            continue
        cleaned, record = _redact_value(value, redactor)
        if record is not None:
            if data is None:
                data = event.model_dump(mode="json")
            data[name] = cleaned
            records[name] = record
    return None if data is None else RedactedEvent(data, records)
