"""Validation of option dataclasses from TOML tables: types, ranges, unknown keys.

Every config section and every registered component's options are frozen dataclasses. A field
may carry a check in its metadata (``field(default=..., metadata=check(positive))``); a failed
check raises :class:`ConfigError` naming the dotted key, e.g.
``population.dropout_rate: must be in [0, 1), got 1.5``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """Bad experiment input. ``str(err)`` is one line: the key or file, then what is wrong."""


def read_csv_input(path: Any, key: str) -> Any:
    """A CSV file named by config key ``key`` as a DataFrame; ConfigError if it cannot be read."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise ConfigError(f"{key}: {path}: no such file") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ConfigError(f"{key}: {path}: cannot be read as CSV ({e})") from None


def check(*checks: Check) -> dict[str, Any]:
    """Field metadata attaching value checks; each returns an error text or None."""
    return {"checks": checks}


def positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v!r}"


def finite(v: Any) -> str | None:
    return None if math.isfinite(v) else f"must be finite, got {v!r}"


def at_least(lo: float) -> Check:
    return lambda v: None if v >= lo else f"must be >= {lo}, got {v!r}"


def in_range(lo: float, hi: float, *, hi_open: bool = False, lo_open: bool = False) -> Check:
    def _check(v: Any) -> str | None:
        ok_lo = v > lo if lo_open else v >= lo
        ok_hi = v < hi if hi_open else v <= hi
        if ok_lo and ok_hi:
            return None
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        return f"must be in {left}{lo:g}, {hi:g}{right}, got {v!r}"

    return _check


def each(inner: Check) -> Check:
    def _check(values: Any) -> str | None:
        for v in values:
            err = inner(v)
            if err:
                return err
        return None

    return _check


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    if origin is list:
        (inner,) = get_args(hint) or (Any,)
        return f"a list of {_type_name(inner)}"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def coerce(hint: Any, value: Any, key: str) -> Any:
    """Convert a TOML value to ``hint`` or raise ConfigError naming ``key``."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise ConfigError(f"{key}: must be one of {_type_name(hint)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(hint):
            try:
                return coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: must be {_type_name(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: must be empty")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # + 0.0 turns -0.0 into 0.0: numpy refuses a scale of -0.0 as negative.
            return float(value) + 0.0
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        if isinstance(value, list | tuple):
            args = get_args(hint)
            inner = args[0] if args else Any
            items = tuple(coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
            return items
    elif dataclasses.is_dataclass(hint):
        if hasattr(hint, "from_value"):
            return hint.from_value(value, key)
        if isinstance(value, dict):
            return build(hint, value, key)
    else:
        raise TypeError(f"unsupported option type {hint!r} for {key}")
    raise ConfigError(f"{key}: must be {_type_name(hint)}, got {value!r}")


def build(cls: type, table: dict[str, Any], prefix: str, *, skip: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from a TOML table; ``prefix`` is the dotted section name."""
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields) - set(skip))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key (known keys: {known})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in table:
            value = coerce(hints[name], table[name], key)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ConfigError(f"{key}: required key is missing")
        for chk in f.metadata.get("checks", ()):
            err = chk(value)
            if err:
                raise ConfigError(f"{key}: {err}")
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        err = validate()
        if err:
            raise ConfigError(f"{prefix}.{err}" if prefix else err)
    return obj


def to_table(obj: Any) -> Any:
    """Dataclass (or value) -> plain TOML-ready value; inverse of :func:`build`."""
    if dataclasses.is_dataclass(obj):
        if hasattr(obj, "to_value"):
            return obj.to_value()
        return {f.name: to_table(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_table(v) for v in obj]
    return obj
