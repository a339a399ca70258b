import pytest
import torch

from hspreid.errors import UserError
from hspreid.losses import Criterion, batch_hard_triplet, identity_loss


def brute_force_triplet(x, labels, margin):
    losses = []
    for i in range(len(x)):
        d = [float(torch.dist(x[i], x[j])) for j in range(len(x))]
        pos = [d[j] for j in range(len(x)) if labels[j] == labels[i] and j != i]
        neg = [d[j] for j in range(len(x)) if labels[j] != labels[i]]
        if pos and neg:
            losses.append(max(max(pos) - min(neg) + margin, 0.0))
    return sum(losses) / len(losses)


def test_batch_hard_triplet_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4])  # label 4 has no positive
    got = float(batch_hard_triplet(x, labels, margin=0.3))
    assert got == pytest.approx(brute_force_triplet(x, labels, 0.3), rel=1e-5)


def test_triplet_zero_when_classes_are_far_apart():
    x = torch.tensor([[0.0, 0], [0.1, 0], [10, 0], [10.1, 0]])
    assert float(batch_hard_triplet(x, torch.tensor([0, 0, 1, 1]), 0.3)) == 0.0


def test_identity_loss_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    logp = torch.log_softmax(logits, 1)[0]
    eps = 0.1
    expected = -((1 - eps) * logp[0] + eps / 3 * logp.sum())
    assert float(identity_loss(logits, torch.tensor([0]), eps)) == pytest.approx(float(expected), rel=1e-6)


def test_criterion_weights_and_unknown_term():
    out = {"logits": {"global": torch.randn(4, 3)}, "features": {"global": torch.randn(4, 8)}}
    batch = {"label": torch.tensor([0, 0, 1, 1])}
    total, parts = Criterion({"id": {"weight": 2.0}, "triplet": {"weight": 0.0}})(out, batch)
    assert float(total) == pytest.approx(2 * parts["id"], rel=1e-6) and "triplet" not in parts
    with pytest.raises(UserError, match="tripplet"):
        Criterion({"tripplet": {}})
    with pytest.raises(UserError, match="margn"):
        Criterion({"triplet": {"margn": 0.3}})
