"""Configuration: plain dataclasses addressed by dotted keys.

Every choice of the pipeline is a key with a documented default (see the README's
configuration table). A key ``a.b`` is the field ``b`` of the nested dataclass ``a``
when there is one (``tracks.min_iou``), else the flat field ``a_b``
(``detector.weights`` is ``detector_weights``), so a stage's switch (``detector``)
and its options (``detector.weights``) read as one family. Values come from a TOML
file of flat keys and from ``--set key=value``; the latter win::

    # celmask.toml
    detector = "file"
    "detector.path" = "detections.parquet"
    "tracks.max_gap" = 8

    config = load_config("celmask.toml", ["refiner=none"])

Every number setting declares the values it may take on its field
(``Annotated[float, SHARE]``, see :class:`Range`; choices: :class:`OneOf`), and each
settings dataclass checks them as it is built (:func:`check_rules`), so a bad value
(``detector.conf=5``, a negative size, ``nan``) is a one-line error before any work
instead of a crash mid-run or, for ``nan``, silently different masks; ``celmask
config`` shows each rule. A float is always finite, rule or not.

:func:`config_hash` is the content key the manifest records: the same
settings give the same hash, whatever file or flags they came from.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from celmask.tasks.core.errors import CelmaskError

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a setting may be (each of them, for a list or table setting)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    """``low`` itself excluded."""
    open_high: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or (value < self.high if self.open_high else value <= self.high))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"{'<' if self.open_high else '<='} {self.high:g}"


@dataclasses.dataclass(frozen=True)
class OneOf:
    """The words a setting may be."""

    choices: tuple[str, ...]

    def holds(self, value: str) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return f"one of {', '.join(self.choices)}"


SHARE = Range(0, 1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, open_low=True)
FINITE = "a finite number"
"""The rule of a float setting that declares none."""


class RuleBroken(ValueError):
    """A setting's value breaks its declared rule."""

    def __init__(self, name: str, rule: str, value: Any) -> None:
        self.rule, self.value = rule, value
        super().__init__(self.about(name))

    def about(self, name: str) -> str:
        """The problem, calling the setting ``name`` (a field's name, or the dotted key)."""
        subject = f"every value of {name}" if isinstance(self.value, (tuple, dict)) else name
        return f"{subject} must be {self.rule}, got {self.value!r}"


@functools.cache
def _rules(cls: type) -> dict[str, Range | OneOf | None]:
    """Field name -> the rule declared on it (``Annotated[..., rule]``), for dataclass ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        f.name: next((m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, (Range, OneOf))), None)
        for f in dataclasses.fields(cls)
    }


def check_rules(config: Any) -> None:
    """Raise :class:`RuleBroken` for the first field of dataclass ``config`` (not those
    of the dataclasses inside it, which check their own) whose value, or one of whose
    values, breaks its rule or is a float that is not finite. Call it from ``__post_init__``."""
    for name, rule in _rules(type(config)).items():
        value = getattr(config, name)
        items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
        for item in items:
            if item is None or dataclasses.is_dataclass(item):
                continue
            if (rule is not None and not rule.holds(item)) or (isinstance(item, float) and not math.isfinite(item)):
                raise RuleBroken(name, str(rule) if rule is not None else FINITE, value)


def rule_text(config: Any, key: str) -> str:
    """What dotted ``key`` of ``config`` may be, as ``celmask config`` shows it ("" when anything goes)."""
    path, kind = _locate(type(config), key)
    cls = type(config)
    for name in path[:-1]:
        cls = _hints(cls)[name]
    rule = _rules(cls)[path[-1]]
    text = str(rule) if rule is not None else FINITE if kind is float else ""
    many = any(typing.get_origin(k) in (tuple, dict) for k in (kind, *typing.get_args(kind)))
    return f"each {text}" if text and many else text


def _fields(obj_or_cls: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj_or_cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every setting of a config dataclass (JSON types)."""
    out: dict[str, Any] = {}
    for name in _fields(config):
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{name}."))
            continue
        head, _, rest = name.partition("_")
        key = f"{prefix}{head}.{rest}" if rest and not prefix and head in _fields(config) else f"{prefix}{name}"
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _locate(cls: type, key: str) -> tuple[list[str], type]:
    """Attribute path and type of dotted ``key`` in config class ``cls``."""
    path: list[str] = []
    parts = key.split(".")
    while parts:
        hints = _hints(cls)
        head = parts[0]
        if head in hints and dataclasses.is_dataclass(hints[head]) and len(parts) > 1:
            path.append(head)
            cls = hints[head]
            parts = parts[1:]
            continue
        name = "_".join(parts) if len(path) == 0 else ".".join(parts)
        if name in hints:
            return path + [name], hints[name]
        break
    raise KeyError(key)


def _parse(raw: Any, kind: Any, key: str) -> Any:
    """``raw`` (a --set string or a TOML value) as a value of type ``kind``."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            return None
        return _parse(raw, next(a for a in args if a is not type(None)), key)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1", "yes", "on"):
            return True
        if str(raw).lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind in (int, float, str):
        if kind is int and isinstance(raw, float):
            raise ValueError(f"expected an integer, got {raw!r}")
        return kind(raw)
    if origin is tuple:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(_parse(i.strip() if isinstance(i, str) else i, args[0], key) for i in items if i != "")
    if origin is dict:
        if isinstance(raw, str):
            items = dict(pair.split(":", 1) for pair in raw.split(",") if pair)
        else:
            items = dict(raw)
        return {str(k).strip(): _parse(v.strip() if isinstance(v, str) else v, args[1], key) for k, v in items.items()}
    raise TypeError(f"config key {key}: unsupported type {kind}")


def _replace(config: C, path: list[str], value: Any) -> C:
    if len(path) == 1:
        return dataclasses.replace(config, **{path[0]: value})
    inner = getattr(config, path[0])
    return dataclasses.replace(config, **{path[0]: _replace(inner, path[1:], value)})


def apply(config: C, settings: dict[str, Any], where: str = "--set") -> C:
    """``config`` with dotted-key ``settings`` applied; an unknown key or bad value is
    a one-line :class:`CelmaskError` naming it and the keys there are."""
    renamed: dict[str, str] = getattr(type(config), "RENAMED", {})
    for key, raw in settings.items():
        if key in renamed:
            raise CelmaskError(where, f"{key!r} is now called {renamed[key]!r}", f"write {renamed[key]}={raw} instead")
        try:
            path, kind = _locate(type(config), key)
        except KeyError:
            import difflib

            close = difflib.get_close_matches(key, flatten(config), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise CelmaskError(
                where, f"unknown config key {key!r}", f"{hint}`celmask config` lists every key"
            ) from None
        try:
            config = _replace(config, path, _parse(raw, kind, key))
        except RuleBroken as error:
            raise CelmaskError(where, error.about(key), "`celmask config` shows every setting's rule") from None
        except (ValueError, TypeError) as error:
            raise CelmaskError(
                where, f"bad value {raw!r} for {key}: {error}", f"see `celmask config` for {key}'s type and default"
            ) from None
    return config


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CelmaskError("--set", f"expected key=value, got {pair!r}", "write e.g. --set refiner=none")
        out[key.strip()] = value.strip()
    return out


def load_config(default: C, path: str | Path | None = None, overrides: Iterable[str] = ()) -> C:
    """``default`` updated from a TOML file of flat dotted keys, then from ``key=value``
    overrides."""
    config = default if path is None else apply(default, read_settings(path), where=str(path))
    return apply(config, parse_overrides(overrides))


def read_settings(path: str | Path) -> dict[str, Any]:
    """The flat dotted settings of a TOML config file; a missing, unreadable or nested
    file is one line."""
    path = Path(path)
    try:
        settings = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CelmaskError(path, "config file not found", "pass an existing TOML file to --config") from None
    except OSError as error:  # a directory, no permission
        raise CelmaskError(
            path, f"cannot be read as a config file ({error.strerror})", "pass a readable TOML file to --config"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CelmaskError(
            path, f"is not valid TOML ({error})", 'write flat keys, e.g. "detector.weights" = "x.pt"'
        ) from None
    nested = [k for k, v in settings.items() if isinstance(v, dict)]
    if nested:
        raise CelmaskError(
            path, f"has tables {nested}", 'quote dotted keys: "tracks.max_gap" = 8, not tracks.max_gap = 8'
        )
    return settings


def config_json(config: Any) -> str:
    """Canonical JSON of every setting (sorted keys, no spaces): what the manifest stores."""
    return json.dumps(flatten(config), sort_keys=True, separators=(",", ":"))


def config_hash(config: Any) -> str:
    """sha256 of :func:`config_json`, the content key of a configuration."""
    return hashlib.sha256(config_json(config).encode()).hexdigest()


def _attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in ``cls``'s source (first sentence)."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def describe(config: Any) -> list[tuple[str, Any, str, str]]:
    """(dotted key, value, its rule, what it means) for every setting, from the
    dataclasses' fields and attribute docstrings: the one source for ``celmask config``
    and the README."""
    flat = flatten(config)
    out = []
    for key, value in flat.items():
        path, _ = _locate(type(config), key)
        cls = type(config)
        for name in path[:-1]:
            cls = _hints(cls)[name]
        out.append((key, value, rule_text(config, key), _attribute_docs(cls).get(path[-1], "")))
    return out


def changed(config: Any, default: Any) -> dict[str, Any]:
    """The flat dotted settings of ``config`` that differ from ``default``: what a
    person chose, short enough to read in a run's parameters."""
    base = flatten(default)
    return {k: v for k, v in flatten(config).items() if base.get(k) != v}
