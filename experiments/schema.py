"""A strict schema for nested YAML mappings, declared as dataclasses.

Each section of a config is a dataclass: its fields are the allowed keys, their annotations the
allowed types (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``list[...]``, ``dict``,
a nested section, unions with ``None``), and ``field(metadata=rule(lo, hi))`` an inclusive
range. :func:`check_section` refuses unknown keys (naming the key path and the closest valid
key), wrong types and out-of-range values, each with the key path named.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

_UNIONS = (typing.Union, types.UnionType)

__all__ = [
    "UnknownOption",
    "ConfigError",
    "check_section",
    "closest",
    "rule",
    "schema_path",
    "unknown_key",
]


class ConfigError(ValueError):
    """A bad config key or value; the message names the key path and what is allowed."""


class UnknownOption(ConfigError, TypeError):
    """A config key that is no option of its search method or controller kind (a
    ``TypeError`` too, as the registries raise for an option a method does not take)."""


def rule(lo: float | None = None, hi: float | None = None, allowed: str | None = None) -> Any:
    """Field metadata: an inclusive numeric range (for numbers and lists of numbers) and an
    optional text describing what is allowed."""
    return {"lo": lo, "hi": hi, "allowed": allowed}


def closest(key: str, choices: Iterable[str]) -> str | None:
    """The valid key most like ``key`` (case-insensitive, difflib), or ``None``."""
    options = list(choices)
    lower = {c.lower(): c for c in options}
    hit = difflib.get_close_matches(key.lower(), list(lower), n=1, cutoff=0.5)
    return lower[hit[0]] if hit else None


def unknown_key(path: str, key: str, choices: Iterable[str], owner: str = "") -> str:
    """``config key 'sampler.stepz' is unknown (did you mean 'sampler.steps'?); allowed: ...``;
    ``owner`` (``search method 'x'``) adds ``: search method 'x' takes no option 'KEY'``."""
    options = list(choices)
    full = f"{path}.{key}" if path else key
    near = closest(key, options)
    hint = f" (did you mean {(f'{path}.{near}' if path else near)!r}?)" if near else ""
    why = f": {owner} takes no option {key!r}" if owner else ""
    return f"config key {full!r} is unknown{why}{hint}; allowed: {', '.join(options) or 'none'}"


def unknown_value(key: str, value: str, choices: Iterable[str]) -> ConfigError:
    """``config key 'methods[0].method'='eps-gredy' is unknown (did you mean 'eps-greedy'?);
    allowed: ...`` (a value that must name a registered entry)."""
    options = sorted(choices)
    near = closest(value, options)
    hint = f" (did you mean {near!r}?)" if near else ""
    return ConfigError(
        f"config key {key!r}={value!r} is unknown{hint}; allowed: {', '.join(options)}"
    )


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in _UNIONS:
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, "a mapping" if origin is dict or tp is dict else str(tp)
    )


def _matches(tp: Any, value: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if args and (origin in _UNIONS):
        return any(_matches(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_matches(args[0], v) for v in value)
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return isinstance(value, Mapping)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok and math.isfinite(float(value))
    if tp is str:
        return isinstance(value, str)
    return isinstance(value, tp)


def _section_of(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``Section | None``), if any."""
    for a in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(a):
            return a  # type: ignore[return-value]
    return None


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return True
    items = value if isinstance(value, list) else [value]
    nums = [v for v in items if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    return all((lo is None or v >= lo) and (hi is None or v <= hi) for v in nums)


def _allowed(tp: Any, meta: Mapping[str, Any]) -> str:
    if meta.get("allowed"):
        return str(meta["allowed"])
    lo, hi = meta.get("lo"), meta.get("hi")
    text = _describe(tp)
    if lo is not None or hi is not None:
        text += f" in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
    return text


def check_section(cls: type, raw: Any, path: str = "") -> dict[str, Any]:
    """``raw`` checked against section ``cls`` and filled with its defaults (a new dict;
    nested sections recursively).

    Raises:
        ConfigError: ``raw`` is not a mapping, has a key ``cls`` does not declare, or a value
            of the wrong type or out of range (each message names the key path).
    """
    where = path or "the config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(unknown_key(path, str(key), list(fields)))
    out: dict[str, Any] = {}
    for name, f in fields.items():
        full = f"{path}.{name}" if path else name
        if name not in raw:
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                default = dataclasses.asdict(default)
            sub = _section_of(hints[name])
            if sub is not None and isinstance(default, Mapping):
                default = check_section(sub, default, full)
            out[name] = default
            continue
        value, tp = raw[name], hints[name]
        if not _matches(tp, value) or not _in_range(value, f.metadata):
            raise ConfigError(
                f"config key {full!r}={value!r} is invalid, allowed: {_allowed(tp, f.metadata)}"
            )
        sub = _section_of(tp)
        out[name] = check_section(sub, value, full) if sub and value is not None else value
    return out


def _holds_mapping(tp: Any) -> bool:
    options = typing.get_args(tp) if typing.get_origin(tp) in _UNIONS else (tp,)
    return any(a is dict or typing.get_origin(a) is dict for a in options)


def schema_path(cls: type, key: str) -> None:
    """Check that dotted ``key`` names a key of section ``cls`` (descending into nested
    sections; a key inside a free-form mapping or list is not checked here).

    Raises:
        ConfigError: an empty part, or an unknown key (naming the closest valid one).
    """
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"config key {key!r} is empty or has an empty part (use a.b.c)")
    node: type | None = cls
    for i, part in enumerate(parts):
        if node is None:
            return  # a free-form mapping: its keys are checked with the whole config
        fields = {f.name for f in dataclasses.fields(node)}  # type: ignore[arg-type]
        if part not in fields:
            raise ConfigError(unknown_key(".".join(parts[:i]), part, sorted(fields)))
        tp = _hints(node)[part]
        node = _section_of(tp)
        if node is None and i < len(parts) - 1 and not _holds_mapping(tp):
            here = ".".join(parts[: i + 1])
            raise ConfigError(
                f"config key {key!r}: {here!r} holds {_describe(tp)}, not a mapping; "
                f"set it whole (--set '{here}=...')"
            )
