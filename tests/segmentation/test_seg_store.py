"""Part label maps from the segmenter's soft masks."""
import pytest

from hspreid.errors import UserError


def test_part_labels_argmax_and_foreground_rules():
    import torch

    from hspreid.segmentation.store import part_labels

    masks = torch.tensor([[0.4, 0.2, 0.2, 0.2], [0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1]]).T.reshape(1, 4, 1, 3)
    assert part_labels(masks).tolist() == [[[0, 0, 2]]]
    assert part_labels(masks, "foreground").tolist() == [[[1, 0, 2]]]              # parts together outweigh bg
    with pytest.raises(UserError, match="labels"):
        part_labels(masks, "max")
