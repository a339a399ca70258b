"""Region codes and folding tables (SPReID footnotes 1-2; folding K top-to-bottom parts by height)."""
import numpy as np
import torch

from hspreid.partmaps import (
    GROUND_TRUTH_NAMES,
    LIMB_NAMES,
    LIMB_TO_GROUND_TRUTH,
    LIP_TO_REGIONS,
    fold_parts_by_height,
    fold_probs_to_regions,
    fold_to_regions,
)


def test_lip_table_matches_footnotes():
    lip = {"bg": 0, "hat": 1, "hair": 2, "glove": 3, "sunglasses": 4, "upper": 5, "dress": 6, "coat": 7,
           "socks": 8, "pants": 9, "jumpsuit": 10, "scarf": 11, "skirt": 12, "face": 13, "arm": 14,
           "leg": 16, "shoe": 19}
    region = dict(zip(lip, fold_to_regions(torch.tensor(list(lip.values()))).tolist()))
    assert [region[k] for k in ("hat", "hair", "sunglasses", "face")] == [1] * 4
    assert [region[k] for k in ("glove", "upper", "dress", "coat", "jumpsuit", "scarf", "arm")] == [2] * 7
    assert [region[k] for k in ("pants", "skirt", "leg")] == [3] * 3
    assert [region[k] for k in ("socks", "shoe")] == [4] * 2 and region["bg"] == 0
    assert len(LIP_TO_REGIONS) == 20


def test_fold_to_regions_numpy_mapping_and_unknown():
    out = fold_to_regions(np.array([[0, 7], [3, 300]]), {0: 0, 7: 2})
    assert isinstance(out, np.ndarray) and out.tolist() == [[0, 2], [255, 255]]


def test_fold_probs_to_regions_sums_classes():
    p = torch.rand(2, 20, 3, 3).softmax(dim=1)
    r = fold_probs_to_regions(p)
    assert r.shape == (2, 5, 3, 3)
    assert torch.allclose(r.sum(1), torch.ones(2, 3, 3), atol=1e-5)
    assert torch.allclose(r[:, 4], p[:, [8, 18, 19]].sum(1))


def test_fold_parts_by_height_stripes_and_cut_legs():
    stripes = torch.arange(1, 7).repeat_interleave(4)[:, None].expand(24, 3)   # 6 equal bands, K = 7
    folded = fold_parts_by_height(stripes, num_parts=7)
    assert folded[::4, 0].tolist() == [1, 2, 2, 3, 3, 4]
    top = torch.tensor([[0, 1], [2, 2], [3, 3], [4, 255]])                     # per map, 255 kept
    assert fold_parts_by_height(top[None], 5)[0].tolist() == [[0, 1], [2, 2], [3, 3], [4, 255]]
    cut = torch.tensor([[1], [2], [2], [2], [3], [3], [3], [3]])               # legs fill the bottom half
    assert fold_parts_by_height(cut.numpy(), 4).ravel().tolist() == [1, 2, 2, 2, 3, 3, 3, 3]


def test_limb_table_folds_each_piece_into_its_region():
    assert len(LIMB_TO_GROUND_TRUTH) == len(LIMB_NAMES) == len(set(LIMB_NAMES))
    region = {name: GROUND_TRUTH_NAMES[code] for name, code in zip(LIMB_NAMES, LIMB_TO_GROUND_TRUTH)}
    assert region["background"] == "background" and region["head"] == "head" and region["belongings"] == "belongings"
    for side in "lr":
        assert region[f"{side}_upper_arm"] == region[f"{side}_forearm"] == region["torso"] == "upper"
        assert region[f"{side}_thigh"] == region[f"{side}_shin"] == region["pelvis"] == "lower"
        assert region[f"{side}_shoe"] == "shoes"
