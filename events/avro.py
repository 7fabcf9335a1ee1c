"""Avro schemas generated from the pydantic models (the models are the source).

Mapping: str -> string, int -> long, float -> double, bool -> boolean,
bytes -> bytes, datetime -> long/timestamp-micros, X | None -> ["null", X]
with default null, Literal[...] -> enum, list[X] -> array, dict[str, X] -> map,
nested model -> record. A field with a default gets the same Avro default, so
adding a defaulted field is a backward- and forward-compatible change.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

NAMESPACE = "govstream.events"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


class _Builder:
    """Builds one record schema; named types are defined once, then referenced."""

    def __init__(self) -> None:
        self.defined: set[str] = set()

    def record(self, model: type[BaseModel]) -> dict[str, Any]:
        name = model.__name__
        if name in self.defined:
            return f"{NAMESPACE}.{name}"  # type: ignore[return-value]
        self.defined.add(name)
        fields = [self.field(model, fname, finfo) for fname, finfo in model.model_fields.items()]
        schema: dict[str, Any] = {"type": "record", "name": name, "namespace": NAMESPACE}
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            schema["doc"] = doc[0]
        schema["fields"] = fields
        return schema

    def field(self, model: type[BaseModel], name: str, info: FieldInfo) -> dict[str, Any]:
        avro_type = self.type_of(info.annotation, owner=model.__name__, field=name)
        out: dict[str, Any] = {"name": name, "type": avro_type}
        if info.description:
            out["doc"] = info.description
        default = _default_of(info)
        if default is not _NO_DEFAULT:
            out["default"] = default
        return out

    def type_of(self, tp: Any, *, owner: str, field: str) -> Any:
        tp = _strip_annotated(tp)
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1 or len(get_args(tp)) != 2:
                raise TypeError(f"{owner}.{field}: only `X | None` unions are supported")
            return ["null", self.type_of(members[0], owner=owner, field=field)]
        if origin is Literal:
            return {
                "type": "enum",
                "name": f"{owner}{_pascal(field)}",
                "symbols": [str(s) for s in get_args(tp)],
            }
        if origin is list:
            (item,) = get_args(tp)
            return {"type": "array", "items": self.type_of(item, owner=owner, field=field)}
        if origin is dict:
            key, value = get_args(tp)
            if _strip_annotated(key) is not str:
                raise TypeError(f"{owner}.{field}: map keys must be str")
            return {"type": "map", "values": self.type_of(value, owner=owner, field=field)}
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.record(tp)
        primitive = _PRIMITIVES.get(tp)
        if primitive is None:
            raise TypeError(f"{owner}.{field}: no Avro mapping for {tp!r}")
        return primitive


_PRIMITIVES: dict[Any, Any] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    bytes: "bytes",
    datetime: {"type": "long", "logicalType": "timestamp-micros"},
}

_NO_DEFAULT = object()


def _default_of(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return _NO_DEFAULT
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return int((value - _EPOCH).total_seconds() * 1_000_000)
    return value


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The Avro record schema (a JSON-able dict) of an event model."""
    return _Builder().record(model)


def canonical_json(schema: dict[str, Any]) -> str:
    """Stable text of a schema: what is committed and what ids are pinned to."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
