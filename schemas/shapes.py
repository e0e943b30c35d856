"""A record's fields, declared once in its dataclass, as the other forms need them.

The JSON Schema type of each field is derived from its annotation, so the OpenAPI schema of a
feed item is generated from ``DropEvent`` and the JSON Schema files under ``schemas/json/``
are tested against the dataclasses (``tests/unit/test_records.py``): adding a field to a
record is one line in its dataclass (plus its description in the public JSON Schema file,
which the test asks for).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_type(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of one annotation: scalars, ``X | None``, ``tuple[X, ...]``,
    ``Literal[...]``; anything else is an object."""
    origin = get_origin(annotation)
    if origin is Literal:
        return {"type": "string", "enum": list(get_args(annotation))}
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            inner = json_type(args[0])
            return {**inner, "type": [inner["type"], "null"]}
    if origin in (tuple, list) and get_args(annotation):
        return {"type": "array", "items": json_type(get_args(annotation)[0])}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    return {"type": "object"}


def fields(record: type, exclude: tuple[str, ...] = ("extra",)) -> dict[str, Any]:
    """``{field name: annotation}`` of a record dataclass, in declaration order."""
    hints = typing.get_type_hints(record)
    return {f.name: hints[f.name] for f in dataclasses.fields(record) if f.name not in exclude}


def properties(record: type, exclude: tuple[str, ...] = ("extra",)) -> dict[str, Any]:
    """The JSON Schema ``properties`` of a record dataclass, in declaration order."""
    return {name: json_type(a) for name, a in fields(record, exclude).items()}
