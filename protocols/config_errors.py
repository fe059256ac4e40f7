"""Why a configuration file was refused, in words an operator can act on.

msgspec reports a refused value as ``Expected `int` >= 1024 - at `$.port_base```. This turns it
into the field's path as the file is written (``keywords.3.when``), the offending value, the values
a choice allows and the field a misspelt name probably meant. Imported only when a file is wrong.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec.inspect as mi

_AT = re.compile(r"(?P<reason>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?", re.S)
_STEP = re.compile(r"\.([^.\[`]+)|\[(\d+)\]|\[\.\.\.\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_WRONG_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_CONSTRAINT = re.compile(r"Expected `(?P<want>[^`]+)`(?P<rest>.+)")
_CHOICE = re.compile(r"Invalid enum value (?P<value>.+)")

_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false",
               "null": "null", "object": "a mapping", "array": "a list"}

Step = str | int | None  # a field or key, a list index, an unnamed mapping key (msgspec's ``[...]``)
_ABSENT = object()


def describe(model: type, data: Any, message: str) -> tuple[str, str]:
    """(path of the field, reason) for msgspec's ``message`` about ``data`` converted to ``model``;
    the path is empty when the whole file is meant."""
    m = _AT.fullmatch(message)
    if m is None:  # not msgspec's usual form: its text as it is
        return "", message
    reason, in_key = m["reason"], bool(m["key"])
    steps: list[Step] = [s[0] or (int(s[1]) if s[1] else None) for s in _STEP.findall(m["path"] or "")]
    where = " (in one of its keys)" if in_key else " (in one of its values)" if steps and steps[-1] is None else ""
    loc = ".".join(str(s) for s in steps if s is not None)

    if u := _UNKNOWN.fullmatch(reason):
        name = u["name"]
        near = difflib.get_close_matches(name, _field_names(_type_at(model, steps)), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        return _join(loc, name), f"unknown field{hint}"
    if u := _MISSING.fullmatch(reason):
        return _join(loc, u["name"]), "required field is missing"
    value = _ABSENT if in_key else _value_at(data, steps)
    got = "" if value is _ABSENT else f", got {_short(value)}"
    if u := _WRONG_TYPE.fullmatch(reason):
        return loc, f"expected {_words(u['want'])}{got or ', got ' + _words(u['got'])}{where}"
    if u := _CONSTRAINT.fullmatch(reason):
        return loc, f"expected {_words(u['want'])}{u['rest']}{got}{where}"
    if u := _CHOICE.fullmatch(reason):
        options = _choices(_type_at(model, steps), in_key)
        if options:
            what = "key " if in_key else ""
            return loc, f"{what}{u['value']} is not one of {', '.join(repr(o) for o in options)}"
        return loc, f"invalid value {u['value']}{where}"
    return loc, reason + where


def _join(loc: str, name: str) -> str:
    return f"{loc}.{name}" if loc else name


def _words(types: str) -> str:
    """``bool | int | null`` as ``true/false, an integer or null``."""
    parts = [_TYPE_WORDS.get(t.strip(), t.strip()) for t in types.split("|")]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_at(data: Any, steps: list[Step]) -> Any:
    for step in steps:
        if isinstance(step, int) and isinstance(data, list) and step < len(data):
            data = data[step]
        elif isinstance(step, str) and isinstance(data, dict) and step in data:
            data = data[step]
        else:
            return _ABSENT
    return data


def _members(t: Any) -> list[Any]:
    """The types a value may have at ``t``: a union's members, a constrained type's base."""
    if isinstance(t, mi.Metadata):
        return _members(t.type)
    if isinstance(t, mi.UnionType):
        return [m for u in t.types for m in _members(u)]
    return [t]


def _type_at(model: type, steps: list[Step]) -> Any:
    t: Any = mi.type_info(model)
    for step in steps:
        t = next((n for m in _members(t) if (n := _inner(m, step)) is not None), None)
        if t is None:
            return None
    return t


def _inner(t: Any, step: Step) -> Any:
    if isinstance(t, mi.StructType) and isinstance(step, str):
        return next((f.type for f in t.fields if f.encode_name == step), None)
    if isinstance(t, mi.ListType) and isinstance(step, int):
        return t.item_type
    if isinstance(t, mi.DictType) and not isinstance(step, int):
        return t.value_type
    return None


def _field_names(t: Any) -> list[str]:
    return [f.encode_name for m in _members(t) if isinstance(m, mi.StructType) for f in m.fields]


def _choices(t: Any, in_key: bool) -> list[Any]:
    if in_key:
        return [v for m in _members(t) if isinstance(m, mi.DictType) for v in _choices(m.key_type, False)]
    return [v for m in _members(t) if isinstance(m, mi.LiteralType) for v in m.values]
