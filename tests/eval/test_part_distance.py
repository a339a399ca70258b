"""ISP eq. 10, HCGA eq. 10, SPReID-style concatenation: checked pair by pair against the formulas."""
import numpy as np
import pytest
import torch

from hspreid.errors import UserError
from hspreid.eval.part_distance import PartAwareDistance


def cos(a, b):
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def isp_eq10(q, g, i, j):
    shared = [k for k in range(q["parts"].shape[1]) if q["visible"][i, k] and g["visible"][j, k]]
    d_k = sum(1 - cos(q["parts"][i, k], g["parts"][j, k]) for k in shared)
    d_g = 1 - cos(q["global"][i], g["global"][j])
    d_f = 1 - cos(q["foreground"][i], g["foreground"][j])
    return (d_k + d_g + d_f) / (len(shared) + 2)


def hcga_eq10(q, g, i, j):
    shared = [k for k in range(q["parts"].shape[1]) if q["visible"][i, k] and g["visible"][j, k]]
    sim = (cos(q["foreground"][i], g["foreground"][j])
           + 0.5 * sum(cos(q["parts"][i, k], g["parts"][j, k]) for k in shared)) / (1 + len(shared))
    return 1 - sim


def feats(n, k=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"global": rng.normal(size=(n, d)), "foreground": rng.normal(size=(n, d)),
            "parts": rng.normal(size=(n, k, d)), "visible": rng.random((n, k)) < 0.6}


@pytest.mark.parametrize("mode,formula", [("isp", isp_eq10), ("hcga", hcga_eq10)])
def test_visible_part_formulas_pair_by_pair(mode, formula):
    q, g = feats(5, seed=1), feats(7, seed=2)
    q["visible"][0] = False                      # a query with no visible part: no shared part anywhere
    g["visible"][1] = [True, False, False]       # part 0 only: shared with some queries, not others
    dist = PartAwareDistance(q, g, mode).distance_block(np.arange(5)).numpy()
    for i in range(5):
        for j in range(7):
            assert dist[i, j] == pytest.approx(formula(q, g, i, j), abs=1e-5)


def test_hand_computed_isp_and_hcga():
    e = np.eye(2)
    q = {"global": e[[0]], "foreground": e[[0]], "parts": np.stack([[e[0], e[1]]]), "visible": np.array([[1, 1]], bool)}
    g = {"global": e[[1]], "foreground": e[[0]], "parts": np.stack([[e[0], e[0]]]), "visible": np.array([[1, 0]], bool)}
    # ISP: shared part 0 (d=0); d_g = 1 (orthogonal); d_f = 0  -> (0 + 1 + 0) / (1 + 2)
    assert float(PartAwareDistance(q, g, "isp").distance_block(np.array([0]))) == pytest.approx(1 / 3)
    # HCGA: cos_f = 1, shared part 0 cos = 1 -> sim = (1 + 0.5) / 2 -> distance 0.25
    assert float(PartAwareDistance(q, g, "hcga").distance_block(np.array([0]))) == pytest.approx(0.25)
    g["visible"][:] = False  # no shared visible part: ISP = (d_g + d_f) / 2, HCGA = 1 - cos_f
    assert float(PartAwareDistance(q, g, "isp").distance_block(np.array([0]))) == pytest.approx(0.5)
    assert float(PartAwareDistance(q, g, "hcga").distance_block(np.array([0]))) == pytest.approx(0.0)


def test_concat_normalises_each_component_and_part():
    q, g = feats(3, seed=3), feats(4, seed=4)
    dist = PartAwareDistance(q, g, "concat", components=["global", "parts"]).distance_block(np.arange(3)).numpy()

    def rep(f, i):
        pieces = [f["global"][i] / np.linalg.norm(f["global"][i])]
        pieces += [p / np.linalg.norm(p) for p in f["parts"][i]]
        return np.concatenate(pieces)

    for i in range(3):
        for j in range(4):
            assert dist[i, j] == pytest.approx(1 - cos(rep(q, i), rep(g, j)), abs=1e-5)


def test_global_blocks_and_missing_features():
    q, g = feats(6, seed=5), feats(9, seed=6)
    pad = PartAwareDistance(q, g, "global")
    full = pad.distance_block(np.arange(6)).numpy()
    assert np.allclose(np.concatenate([pad.distance_block(np.array([i])).numpy() for i in range(6)]), full)
    assert full[0, 0] == pytest.approx(1 - cos(q["global"][0], g["global"][0]), abs=1e-6)
    with pytest.raises(UserError, match="parts"):
        PartAwareDistance({"global": q["global"]}, {"global": g["global"]}, "isp")
    with pytest.raises(UserError, match="distance"):
        PartAwareDistance(q, g, "l3")


def test_float16_parts_give_the_same_distances():
    q, g = feats(5, seed=7), feats(6, seed=8)
    ref = PartAwareDistance(q, g, "isp").distance_block(np.arange(5)).numpy()
    half = {k: (v.astype(np.float16) if k == "parts" else v) for k, v in q.items()}
    ghalf = {k: (v.astype(np.float16) if k == "parts" else v) for k, v in g.items()}
    pad = PartAwareDistance(half, ghalf, "isp", inplace=True)
    assert pad.g["p"].dtype == torch.float16
    assert np.allclose(pad.distance_block(np.arange(5)).numpy(), ref, atol=2e-3)
