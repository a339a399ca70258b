"""Models: a method is a model (backbone + heads) plus its losses and a config file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hspreid.errors import UserError
from hspreid.models.baseline import Baseline
from hspreid.models.hcga import HCGA
from hspreid.models.isp import ISP
from hspreid.models.spreid import SPReID
from hspreid.models.ss_hsp import SSHSP
from hspreid.models.ssn3d import SSN3D

MODELS: dict[str, type[nn.Module]] = {"baseline": Baseline, "isp": ISP, "hcga": HCGA, "spreid": SPReID,
                                      "ssn3d": SSN3D, "ss_hsp": SSHSP}


def build_model(cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the model named by ``cfg["name"]`` with the remaining keys as keyword arguments."""
    cfg = dict(cfg)
    name = cfg.pop("name", "baseline")
    if name not in MODELS:
        raise UserError(f"model.name: unknown model {name!r}; expected one of {sorted(MODELS)}")
    try:
        return MODELS[name](num_classes=num_classes, **cfg)
    except TypeError as e:
        raise UserError(f"model: bad option for {name!r}: {e}") from None


def model_extras(model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch entries ``model`` takes besides the frames: those of its ``extra_inputs`` (SPReID's
    ``parsing``, SSN3D's ``keypoints``) that the batch carries, as keyword arguments."""
    return {k: batch[k] for k in getattr(model, "extra_inputs", ()) if k in batch}


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``model.pt``; returns (model in eval mode, the checkpoint dict)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: trained model not found (run the train stage first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(ckpt["model_cfg"], ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
