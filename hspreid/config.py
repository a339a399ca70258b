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


def resolve_method(method_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The configuration a (data set, method) run uses."""
    merged = deep_merge(method_cfg, dataset_cfg.get("overrides", {}) or {})
    return deep_merge(merged, (dataset_cfg.get("method_overrides", {}) or {}).get(method, {}) or {})


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
