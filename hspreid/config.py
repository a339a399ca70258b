"""Configuration: data-set and method YAML files, their merge, and a stable hash for provenance.

A run is a (data set, method) pair. Its configuration is the method file
(``config/methods/<method>.yaml``, paper defaults) deep-merged with the data set's ``overrides``
(``config/datasets/<dataset>.yaml``; e.g. the synthetic demo scales training down for the CPU) and
then with the data set's ``method_overrides[<method>]``.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from hspreid.errors import UserError

T = TypeVar("T")


def nearest(name: str, allowed: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of ``allowed`` to a mistyped ``name``, else ""."""
    close = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(params: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Reject unknown keys (a config typo) with a line naming the key, the nearest allowed one and the rest."""
    allowed = sorted(allowed)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}{nearest(unknown[0], allowed)}; "
                        f"expected some of {allowed}")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML/JSON ``value`` fits the type ``hint`` (lists stand for tuples; ints for floats)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, h) for v, h in zip(value, args))
    if origin is dict or hint is dict:
        return isinstance(value, Mapping) and (not args or all(_fits(k, args[0]) and _fits(v, args[1])
                                                               for k, v in value.items()))
    return isinstance(value, hint) if isinstance(hint, type) else True


def typed_config(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build the config dataclass ``cls`` (the one source of a block's defaults) from a config block, naming any
    unknown key or a value of the wrong type in one line. A field's ``metadata["key"]`` names its config key
    when that is not a Python name (e.g. ``lambda``); a nested dataclass field takes a nested block."""
    values = dict(values or {})
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}
    check_keys(values, fields, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        f = fields[key]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = typed_config(hint, value, f"{where}.{key}")
        elif not _fits(value, hint):
            raise UserError(f"{where}.{key}: expected {_type_name(hint)}, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


def block_values(cfg: Any) -> dict[str, Any]:
    """A config dataclass back to its block (config keys, nested blocks as mappings): what a stage records."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.metadata.get("key", f.name)] = block_values(value) if dataclasses.is_dataclass(value) else value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``override`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_method(method_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any],
                   method: str | list[str]) -> dict[str, Any]:
    """The configuration a (data set, method) run uses: the method's, then the data set's
    ``overrides``, then its ``method_overrides`` of each name in ``method`` (a name, or a method's
    lineage base first -- see :func:`resolve_extends` -- so a data set's settings for ``hcga``
    also reach the ablations that extend it)."""
    merged = deep_merge(method_cfg, dataset_cfg.get("overrides", {}) or {})
    per_method = dataset_cfg.get("method_overrides", {}) or {}
    for name in [method] if isinstance(method, str) else method:
        merged = deep_merge(merged, per_method.get(name, {}) or {})
    return merged


def resolve_extends(entries: Mapping[str, Mapping[str, Any]], what: str = "method") -> tuple[dict, dict]:
    """Resolve ``extends: <name>`` (an ablation is its base configuration plus the keys it changes).

    Returns (name -> merged configuration without ``extends``, name -> lineage [root, ..., name]).
    """
    resolved: dict[str, dict] = {}
    lineage: dict[str, list[str]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> None:
        if name in resolved:
            return
        if name in chain:
            raise UserError(f"{what} {name!r}: 'extends' forms a cycle ({' -> '.join(chain + (name,))})")
        entry = dict(entries[name])
        base = entry.pop("extends", None)
        if base is None:
            resolved[name], lineage[name] = entry, [name]
            return
        if base not in entries:
            raise UserError(f"{what} {name!r}: extends {base!r}, which does not exist")
        resolve(base, chain + (name,))
        resolved[name], lineage[name] = deep_merge(resolved[base], entry), lineage[base] + [name]

    for name in entries:
        resolve(name, ())
    return resolved, lineage


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
