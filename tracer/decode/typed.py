"""Records from JSON by their type: a recording's context (and the live watch's,
which takes the same road) is checked and built from the dataclasses that
describe it (model/host.py), so that the contract, the reader and the rules'
records are one description. A value that does not fit raises BadLine, saying
where and what was wanted.

Written here rather than taken from a schema library: the records are a handful
of frozen dataclasses, the checks must end in one sentence a user can act on,
and the reader must run where only the distro's Python is (no PyPI packages at
replay time besides click)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Union

T = typing.TypeVar("T")


class BadLine(Exception):
    """Where in a line the value does not fit, and why."""


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          type(None): "null", dict: "an object", list: "a list"}


def type_name(value: object) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def json_key(f: dataclasses.Field[Any]) -> str:
    """The field's key in the JSON (its `json` metadata, else its name)."""
    return str(f.metadata.get("json", f.name))


def parse(tp: Any, value: object, path: str = "") -> Any:
    """`value`, read from JSON, as the type `tp` describes; BadLine if it does not fit."""
    origin = typing.get_origin(tp)
    if origin is Union:
        return _parse_union(typing.get_args(tp), value, path)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _parse_record(tp, value, path)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise BadLine(f"{path or 'the line'} should be a list, not {type_name(value)}")
        return tuple(parse(item, v, f"{path}[{n}]") for n, v in enumerate(value))
    if origin in (Mapping, dict, typing.get_origin(Mapping[str, int])):
        item = typing.get_args(tp)[1]
        if not isinstance(value, dict):
            raise BadLine(f"{path or 'the line'} should be an object, not {type_name(value)}")
        return MappingProxyType({str(k): parse(item, v, f"{path}.{k}" if path else str(k))
                                 for k, v in value.items()})
    return _parse_plain(tp, value, path)


def _parse_union(options: tuple[Any, ...], value: object, path: str) -> Any:
    if value is None and type(None) in options:
        return None
    others = [t for t in options if t is not type(None)]
    if len(others) == 1:
        return parse(others[0], value, path)
    for option in others:
        try:
            return parse(option, value, path)
        except BadLine:
            continue
    raise BadLine(f"{path or 'the line'} has the wrong type ({type_name(value)})")


def _parse_plain(tp: Any, value: object, path: str) -> Any:
    # bool is an int to Python, never to a recording.
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    if tp is object:
        return value
    raise BadLine(f"{path or 'the line'} should be {_NAMES.get(tp, str(tp))}, not "
                  f"{type_name(value)}")


def _parse_record(cls: type[T], value: object, path: str) -> T:
    if not isinstance(value, dict):
        raise BadLine(f"{path or 'the line'} should be an object, not {type_name(value)}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = json_key(f)
        where = f"{path}.{key}" if path else key
        if key in value:
            kwargs[f.name] = parse(hints[f.name], value[key], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BadLine(f"{where} is missing")
    return cls(**kwargs)


def to_json(record: object) -> Any:
    """A record (dataclass, mapping, tuple) as JSON-ready values, keys as the
    contract names them: the inverse of parse()."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {json_key(f): to_json(getattr(record, f.name))
                for f in dataclasses.fields(record)}
    if isinstance(record, Mapping):
        return {str(k): to_json(v) for k, v in record.items()}
    if isinstance(record, (tuple, list)):
        return [to_json(v) for v in record]
    return record
