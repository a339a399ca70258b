"""Models: a method is a model (backbone + heads) plus its losses and a config file.

``model.pt`` (written by :func:`save_model`, read by :func:`load_model`) holds the model's config
(``model_cfg``), ``num_classes``, its ``state_dict`` and the run's record (training history, config hash,
rounds, segmentation summary, stage timings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hspreid.errors import UserError
from hspreid.models.base import ReIDModel
from hspreid.models.baseline import Baseline
from hspreid.models.hcga import HCGA
from hspreid.models.isp import ISP
from hspreid.models.spreid import SPReID
from hspreid.models.ss_hsp import SSHSP
from hspreid.models.ssn3d import SSN3D

MODELS: dict[str, type[ReIDModel]] = {"baseline": Baseline, "isp": ISP, "hcga": HCGA, "spreid": SPReID,
                                      "ssn3d": SSN3D, "ss_hsp": SSHSP}


def build_model(cfg: dict[str, Any], num_classes: int) -> ReIDModel:
    """Build the model named by ``cfg["name"]`` with the remaining keys as keyword arguments."""
    cfg = dict(cfg)
    name = cfg.pop("name", "baseline")
    if name not in MODELS:
        raise UserError(f"model.name: unknown model {name!r}; expected one of {sorted(MODELS)}")
    try:
        return MODELS[name](num_classes=num_classes, **cfg)
    except TypeError as e:
        raise UserError(f"model: bad option for {name!r}: {e}") from None


def save_model(path: str | Path, model: ReIDModel, model_cfg: dict[str, Any], num_classes: int,
               **record: Any) -> None:
    """Write ``model.pt`` atomically: what :func:`load_model` needs to rebuild ``model``, plus ``record``."""
    import torch

    from hspreid.io import atomic_file

    with atomic_file(Path(path)) as tmp:
        torch.save({"model_cfg": model_cfg, "num_classes": num_classes, "state_dict": model.cpu().state_dict(),
                    **record}, tmp)


def load_model(path: str | Path) -> tuple[ReIDModel, dict]:
    """Rebuild a trained model from ``model.pt``; returns (model in eval mode, the checkpoint dict)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: trained model not found (run the train stage first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ckpt["model_cfg"], ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


__all__ = ["MODELS", "ReIDModel", "build_model", "load_model", "save_model"]
