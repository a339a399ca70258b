"""ResNet backbones from torchvision, with last stride 1 and weights only from a local file."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from hspreid.errors import UserError

_RESNETS = {"resnet18": tvm.resnet18, "resnet34": tvm.resnet34, "resnet50": tvm.resnet50,
            "resnet101": tvm.resnet101}


def build_resnet(name: str = "resnet50", last_stride: int = 1, pretrained: str | None = None,
                 layer3_stride: int = 2) -> tuple[nn.Module, int]:
    """(trunk conv1..layer4, output channels). ``pretrained`` is a local ImageNet state-dict file.

    The output stride is 32 with both strides 2, 16 with ``last_stride=1`` (BoT), 8 with
    ``layer3_stride=1`` as well (a finer part-label grid, closer to HRNet's stride 4 in ISP).
    Nothing is ever downloaded: without a file the network starts from random weights.
    """
    if name not in _RESNETS:
        raise UserError(f"model.backbone: unknown backbone {name!r}; expected one of {sorted(_RESNETS)}")
    net = _RESNETS[name](weights=None)
    if pretrained:
        load_pretrained(net, pretrained)
    for layer, stride in ((net.layer3, layer3_stride), (net.layer4, last_stride)):
        if stride not in (1, 2):
            raise UserError(f"model: backbone strides must be 1 or 2, got {stride}")
        block = layer[0]
        conv = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck strides in conv2
        conv.stride = (stride, stride)
        if block.downsample is not None:
            block.downsample[0].stride = (stride, stride)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return trunk, net.fc.in_features


def load_pretrained(net: nn.Module, path: str | Path) -> None:
    """Load an ImageNet state dict (torchvision naming) from a local file; the fc layer is ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.pretrained: {path} not found; give the path of a local torchvision "
                        "ResNet state dict (e.g. resnet50-0676ba61.pth) or null to start from scratch")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise UserError(f"model.pretrained: {path} does not match the backbone "
                        f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
