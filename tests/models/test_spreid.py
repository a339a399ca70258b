"""SPReID (sec. 3.3, Tables 4-5, footnotes 1-2) on small tensors."""
import pytest
import torch

from hspreid.errors import UserError
from hspreid.models.spreid import (SPReID, l1_normalize, parsing_pooling, region_maps, spreid_descriptor,
                                   stripe_prior)


def test_parsing_pooling_is_the_normalised_weighted_average():
    maps = torch.arange(1 * 2 * 2 * 2, dtype=torch.float32).view(1, 2, 2, 2)   # C=2, 2x2 grid
    regions = torch.tensor([[[1.0, 3.0], [0.0, 0.0]],                            # weights 1/4, 3/4 on row 0
                            [[0.0, 0.0], [0.0, 2.0]]])[None]                     # all on pixel (1, 1)
    got = parsing_pooling(maps, regions)
    expected = torch.tensor([[(1 * 0 + 3 * 1) / 4, (1 * 4 + 3 * 5) / 4],
                             [3.0, 7.0]])
    assert got.shape == (1, 2, 2)
    assert torch.allclose(got[0], expected)


def test_invisible_region_pools_to_zero_vector():
    maps = torch.rand(2, 3, 4, 2) + 1
    regions = torch.zeros(2, 5, 4, 2)
    regions[:, :4] = torch.rand(2, 4, 4, 2)
    w = l1_normalize(regions)
    assert torch.allclose(w[:, :4].sum(-1), torch.ones(2, 4))
    pooled = parsing_pooling(maps, regions)
    assert torch.equal(pooled[:, 4], torch.zeros(2, 3))
    assert torch.isfinite(pooled).all()


def test_descriptor_max_over_body_parts_and_order():
    pooled = torch.tensor([[[9.0, 9.0], [1.0, 5.0], [4.0, 2.0], [0.0, 0.0], [3.0, 1.0]]])   # fg, head..shoes
    glob = torch.tensor([[7.0, 8.0]])
    assert spreid_descriptor(pooled, glob, True).tolist() == [[9, 9, 4, 5, 7, 8]]
    assert spreid_descriptor(pooled, glob, False).tolist() == [[4, 5, 7, 8]]


def test_region_maps_from_labels_one_hot_area_and_ignore():
    labels = torch.tensor([[1, 1, 2, 2], [3, 255, 4, 0]], dtype=torch.uint8).view(1, 1, 2, 4)
    maps = region_maps(labels, (2, 4))
    assert maps.shape == (1, 5, 2, 4)
    assert maps[0, 0].tolist() == [[1, 1, 1, 1], [1, 0, 1, 0]]      # foreground = sum of parts, 255 nowhere
    assert maps[0, 1:].sum(0).tolist() == maps[0, 0].tolist()
    small = region_maps(labels, (1, 2))                              # area: fraction of each cell
    assert small[0, 1].tolist() == [[0.5, 0.0]] and small[0, 0].tolist() == [[0.75, 0.75]]


def test_region_maps_from_probabilities():
    p = torch.rand(2, 3, 5, 8, 4).softmax(dim=2)
    maps = region_maps(p, (8, 4))
    assert torch.allclose(maps[:, 0], 1 - p.flatten(0, 1)[:, 0])
    assert torch.allclose(maps[:, 0], maps[:, 1:].sum(1), atol=1e-5)   # 1 - p0 = sum of the 4 parts
    assert region_maps(p, (4, 2)).shape == (6, 5, 4, 2)
    with pytest.raises(ValueError, match="probabilities"):
        region_maps(torch.rand(1, 1, 20, 4, 4), (2, 2))


def test_stripe_prior_partitions_the_foreground():
    prior = stripe_prior((14, 2))
    assert torch.equal(prior[1:].sum(0), prior[0]) and prior[0].min() == 1
    assert prior[1, :, 0].tolist()[:3] == [1, 1, 0]                            # head: top 1/7


@pytest.mark.parametrize("t", [1, 3])
def test_spreid_shapes_for_each_representation(t):
    clips = torch.randint(0, 255, (2, t, 3, 64, 32), dtype=torch.uint8)
    labels = torch.randint(0, 5, (2, t, 32, 16), dtype=torch.uint8)
    for rep, dims in (("wfg", {"global": 3 * 512}), ("wofg", {"global": 2 * 512}),
                      ("combined", {"global": 3 * 512, "wofg": 2 * 512})):
        out = SPReID(num_classes=4, representation=rep, backbone="resnet18").eval()(clips, labels)
        assert {k: v.shape[1] for k, v in out["features"].items()} == dims
        assert all(v.shape == (2, 4) for v in out["logits"].values())
    assert out["embedding"]["global"].shape == (2, 5 * 512)
    assert torch.allclose(out["embedding"]["global"][:, :1536].norm(dim=1), torch.ones(2), atol=1e-5)


def test_spreid_backward_separate_backbones_and_probabilities():
    model = SPReID(num_classes=3, shared_backbone=False, backbone="resnet18")
    net = model.nets["global"]
    assert net.parse_trunk is not None and net.parse_trunk is not net.trunk
    own = {id(p) for p in net.trunk.parameters()}
    assert not own & {id(p) for p in net.parse_trunk.parameters()}            # two backbones, no shared tensor
    assert not torch.equal(net.trunk[0].weight, net.parse_trunk[0].weight)   # initialised independently
    probs = torch.rand(4, 2, 5, 20, 10).softmax(dim=2)
    out = model(torch.randint(0, 255, (4, 2, 3, 64, 32), dtype=torch.uint8), probs)
    loss = torch.nn.functional.cross_entropy(out["logits"]["global"], torch.tensor([0, 1, 2, 0]))
    loss.backward()
    g1, g2 = net.trunk[0].weight.grad, net.parse_trunk[0].weight.grad
    assert g1 is not None and g2 is not None and not torch.equal(g1, g2)     # each gets its own gradient


def test_spreid_pooling_follows_the_parsing():
    """Same image, parsing moved: the foreground vector changes, the global one does not."""
    model = SPReID(num_classes=2, backbone="resnet18").eval()
    clips = torch.randint(0, 255, (1, 1, 3, 64, 32), dtype=torch.uint8).expand(2, -1, -1, -1, -1)
    labels = torch.zeros(2, 1, 64, 32, dtype=torch.uint8)
    labels[0, 0, :32] = 2
    labels[1, 0, 32:] = 3
    feat = model(clips, labels)["features"]["global"]
    fg, glob = feat[:, :512], feat[:, 1024:]
    assert torch.allclose(glob[0], glob[1]) and not torch.allclose(fg[0], fg[1])


def test_spreid_missing_parsing_and_config_errors():
    model = SPReID(num_classes=2, backbone="resnet18").eval()
    assert model(torch.randint(0, 255, (1, 2, 3, 64, 32), dtype=torch.uint8))["features"]["global"].shape == (1, 1536)
    assert SPReID.extra_inputs == ("parsing",)
    with pytest.raises(ValueError, match="parsing"):
        SPReID(num_classes=2, backbone="resnet18", fallback="error")(torch.zeros(1, 1, 3, 64, 32))
    with pytest.raises(UserError, match="model.representation"):
        SPReID(num_classes=2, representation="combo")
    with pytest.raises(UserError, match="model.fallback"):
        SPReID(num_classes=2, fallback="zeros")
