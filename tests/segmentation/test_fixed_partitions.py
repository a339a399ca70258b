"""Fixed partitions for the pretext-task study: label maps from ground truth, one-hot maps, and their use in
the segmenter's forward pass, the pair sampler and pre-training."""
import numpy as np
import pytest
import torch

from hspreid.errors import UserError
from hspreid.segmentation import CoPartSegmenter, FramePairSampler, pretrain_segmenter
from hspreid.segmentation.fixed_partitions import PARTITIONS, partition_labels, partition_masks
from hspreid.segmentation.motion import part_centres

TINY = {"seg_size": (16, 16), "unet_channels": 4, "predictor_channels": 8, "predictor_max_channels": 16,
        "num_res_blocks": 1, "reconstruction": "l1_ssim", "lambda_equ": 0.0, "lambda_geo": 0.0}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _truth() -> np.ndarray:
    truth = np.zeros((2, 8, 4), np.uint8)
    truth[:, 1:3, 1:3] = 1                                               # head
    truth[:, 3:6, 1:3] = 2                                               # upper body
    truth[1, 6:8, 1] = 3                                                 # one leg, second frame only
    return truth


def test_partition_labels_from_ground_truth():
    truth = _truth()
    np.testing.assert_array_equal(partition_labels(truth, 3, "ground_truth"), truth)
    np.testing.assert_array_equal(partition_labels(truth, 3, "limbs"), truth)     # fine labels pass as they are
    np.testing.assert_array_equal(partition_labels(truth, 3, "foreground"), (truth > 0).astype(np.uint8))
    stripes = partition_labels(truth, 4, "stripes")
    assert stripes.shape == truth.shape and (stripes[:, :2] == 1).all() and (stripes[:, 6:] == 4).all()
    assert not partition_labels(truth, 3, "background").any()
    with pytest.raises(UserError, match="labels go up to 3 > K = 2"):
        partition_labels(truth, 2, "ground_truth")
    with pytest.raises(UserError, match="expected one of"):
        partition_labels(truth, 3, "stripe")
    assert set(PARTITIONS) == {"ground_truth", "limbs", "foreground", "stripes", "background"}


def test_partition_masks_are_one_hot_and_area_averaged():
    truth = _truth()
    full = partition_masks(truth, 3, (8, 4))
    assert full.shape == (2, 4, 8, 4)
    np.testing.assert_array_equal(full.argmax(1).numpy(), truth)
    assert torch.allclose(full.sum(1), torch.ones(2, 8, 4))
    half = partition_masks(truth, 3, (4, 2))
    assert torch.allclose(half.sum(1), torch.ones(2, 4, 2))             # still a distribution per pixel
    assert half[0, 1, 0, 0] == pytest.approx(0.25)                        # one head pixel of the 2 x 2 block


def test_forward_uses_the_fixed_masks_and_checks_their_shape():
    torch.manual_seed(0)
    model = CoPartSegmenter(num_parts=3, **TINY)
    src, drv = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    masks = (torch.zeros(2, 4, 16, 16), torch.zeros(2, 4, 16, 16))
    masks[0][:, 1], masks[1][:, 0] = 1.0, 1.0                            # I_t: all part 1; I_t+1: all background
    out = model(src, drv, masks)
    assert out["masks_source"] is masks[0] and out["masks_driving"] is masks[1]
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")[::-1], -1)
    assert torch.allclose(out["flow"][0], grid, atol=1e-5)               # background everywhere: identity flow (eq. 2)
    assert torch.allclose(out["visibility"], torch.zeros(2, 1, 16, 16))  # eq. 3: background of t+1 under part 1 of t
    with pytest.raises(UserError, match=r"fixed masks must be two tensors of shape \[2, 4, 16, 16\]"):
        model(src, drv, (masks[0][:, :3], masks[1]))


def test_sampler_carries_fixed_masks_and_pretraining_keeps_them(tiny_mars):
    index = tiny_mars["index"]

    def masks(truth_t, truth_d):
        return tuple(partition_masks(partition_labels(t, 6, "foreground"), 6, (16, 16)) for t in (truth_t, truth_d))

    sampler = FramePairSampler.from_index(tiny_mars["frames"], index, batch_size=3, seed=1, masks=masks)
    src, drv, (m_t, m_d) = next(iter(sampler))
    plain_src, _ = next(iter(FramePairSampler.from_index(tiny_mars["frames"], index, batch_size=3, seed=1)))
    assert torch.equal(src, plain_src)                                   # the same pairs, with their maps
    assert m_t.shape == m_d.shape == (3, 7, 16, 16) and float(m_t[:, 1].sum()) > 0
    assert (m_t[:, 2:] == 0).all()                                       # one part: the foreground
    torch.manual_seed(0)
    model = CoPartSegmenter(num_parts=6, **TINY)
    out = model(src, drv, (m_t, m_d))
    model.loss(out, src, drv)["total"].backward()
    grad = model.unet.head.weight.grad
    assert (grad[:7] == 0).all() and (grad[7:] != 0).any()              # mask logits: no gradient; motion: some
    result = pretrain_segmenter(model, sampler, steps=2, log_every=1)
    assert [h["step"] for h in result["history"]] == [1, 2] and np.isfinite(result["final"]["rec"])


def test_part_centroids_as_shifts():
    masks = torch.zeros(1, 3, 3, 5)
    masks[0, 1, 0, 0] = 1.0                                              # part 1: the top-left pixel
    masks[0, 1, 2, 4] = 1.0                                              # ... and the bottom-right one
    masks[0, 2, 2, 0] = 2.0                                              # part 2: the bottom-left pixel
    np.testing.assert_allclose(part_centres(masks)[1][0].numpy(), [[0.0, 0.0], [-1.0, 1.0]])
    assert part_centres(torch.zeros(1, 2, 3, 5))[1].abs().max() == 0     # no mass: the centre


def test_forward_with_fixed_shifts_translates_each_part():
    """(M_t, M_{t+1}, e_t, e_{t+1}): A = I, so part k's flow is z + e_t - e_{t+1} (eq. 1) where M_{t+1} is k."""
    torch.manual_seed(0)
    model = CoPartSegmenter(num_parts=2, **TINY)
    src, drv = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    maps = torch.zeros(1, 3, 16, 16)
    maps[:, 1, :8], maps[:, 2, 8:] = 1.0, 1.0                            # part 1 on top, part 2 below
    e_t, e_d = torch.tensor([[[0.1, 0.0], [0.0, 0.0]]]), torch.tensor([[[0.0, 0.0], [0.0, 0.2]]])
    out = model(src, drv, (maps, maps, e_t, e_d))
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")[::-1], -1)
    torch.testing.assert_close(out["flow"][0, :8], grid[:8] + torch.tensor([0.1, 0.0]))
    torch.testing.assert_close(out["flow"][0, 8:], grid[8:] + torch.tensor([0.0, -0.2]))
    with pytest.raises(UserError, match="optionally two shifts of shape"):
        model(src, drv, (maps, maps, e_t))
