"""A trained model as a parser: part maps folded to the five regions by height."""
import numpy as np
import torch
from torch import nn

from hspreid.models import ReIDModel
from hspreid.models.parsing import parser_blocks


class StripeParser(ReIDModel):
    """A fake ISP: K = 4 parts as horizontal bands of an 8 x 4 grid (rows 0-1, 2-4, 5-7), column 0 background."""

    num_parts = 4
    predicts_parsing = True

    def forward(self, clips):
        n = clips.shape[0] * clips.shape[1]
        labels = torch.tensor([1, 1, 2, 2, 2, 3, 3, 3])[:, None].repeat(1, 4)
        labels[:, 0] = 0
        return {"part_logits": nn.functional.one_hot(labels, 4).permute(2, 0, 1).float().expand(n, -1, -1, -1)}


def test_parser_parts_are_folded_by_height(tiny_mars):
    rows = np.arange(5)
    (got_rows, maps), = parser_blocks(StripeParser(), tiny_mars["frames"], rows, device=torch.device("cpu"))
    assert np.array_equal(got_rows, rows) and maps.shape == (5, 8, 4) and maps.dtype == np.uint8
    # mean row fractions 0.125, 0.44, 0.81 -> head, upper, lower (bands 0.15 | 0.5 | 0.85)
    assert maps[0, :, 1].tolist() == [1, 1, 2, 2, 2, 3, 3, 3] and (maps[:, :, 0] == 0).all()
    (_, shifted), = parser_blocks(StripeParser(), tiny_mars["frames"], rows, device=torch.device("cpu"),
                                  bands=(0.1, 0.2, 0.3))
    assert shifted[0, :, 1].tolist() == [2, 2, 4, 4, 4, 4, 4, 4]

