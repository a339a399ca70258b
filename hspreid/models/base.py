"""What every re-ID model offers the engine, the feature extractor and the label stages."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ReIDModel(nn.Module):
    """Base of the re-ID models: clips [B, T, 3, H, W] (uint8) -> {"features", "logits", "embedding", ...}.

    Subclasses state what they take and give instead of being probed:

    * ``extra_inputs``: batch entries ``forward`` takes besides the frames (SPReID ``parsing``, SSN3D
      ``keypoints``);
    * ``predicts_parsing``: whether ``forward`` outputs ``part_logits`` [B*T, num_parts, h, w] (ISP's and
      HCGA's part classifier, SS-HSP's segmenter), which the part-label stages and the parsing scores read;
    * ``num_parts``: classes of that parsing, background included (SSN3D: its self-separated parts);
    * ``requires_parsing``: whether it cannot run without ``parsing`` maps.

    Their backbone is ``self.trunk`` on frames normalised by ``self.normalize``; :meth:`frame_maps` gives its
    maps, the features that ISP's and HCGA's pseudo labels cluster.
    """

    extra_inputs: tuple[str, ...] = ()
    predicts_parsing: bool = False
    num_parts: int | None = None
    requires_parsing: bool = False

    def frame_maps(self, frames: torch.Tensor) -> torch.Tensor:
        """Backbone feature maps [N, C, h, w] of frames [N, 3, H, W] (uint8 or float in [0, 255])."""
        return self.trunk(self.normalize(frames))

    def extras(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``batch`` this model takes besides the frames, as keyword arguments."""
        return {k: batch[k] for k in self.extra_inputs if k in batch}
