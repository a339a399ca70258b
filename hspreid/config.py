"""Configuration: data-set and method YAML files, their merge, and a stable hash for provenance.

A run is a (data set, method) pair. Its configuration is the method file
(``config/methods/<method>.yaml``, paper defaults) deep-merged with the data set's ``overrides``
(``config/datasets/<dataset>.yaml``; e.g. the synthetic demo scales training down for the CPU) and
then with the data set's ``method_overrides[<method>]``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from hspreid.errors import UserError


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
