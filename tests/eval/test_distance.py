"""Tests for hspreid.eval.distance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hspreid.eval import l2_normalize, pairwise_distance


def test_cosine_identical_orthogonal_opposite():
    a = np.array([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [-1.0, 0.0, 0.0]], dtype=np.float32)
    d = pairwise_distance(a, b, "cosine")
    expected = [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    np.testing.assert_allclose(d.numpy(), expected, atol=1e-6)


def test_cosine_of_identical_random_vectors_is_zero():
    x = torch.randn(20, 64)
    np.testing.assert_allclose(torch.diagonal(pairwise_distance(x, x)).numpy(), 0.0, atol=1e-6)


def test_squared_euclidean_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((13, 24)), rng.standard_normal((17, 24))
    brute = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # squared L2, torchreid convention
    d = pairwise_distance(a.astype(np.float32), b.astype(np.float32), "euclidean")
    assert d.dtype == torch.float32 and d.shape == (13, 17)
    np.testing.assert_allclose(d.numpy(), brute, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pairwise_distance(a, b, "euclidean").numpy(), brute, rtol=1e-10, atol=1e-10)
    assert (pairwise_distance(a, a, "euclidean").numpy() >= 0).all()


def test_numpy_torch_and_half_inputs():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((6, 8)).astype(np.float32)
    ref = pairwise_distance(a, b)
    assert isinstance(ref, torch.Tensor)
    np.testing.assert_allclose(pairwise_distance(torch.from_numpy(a), b).numpy(), ref.numpy(), atol=1e-6)
    half = pairwise_distance(torch.from_numpy(a).half(), b.astype(np.float16))
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half.numpy(), ref.numpy(), atol=5e-3)


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float16)
    y = l2_normalize(x)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(l2_normalize(np.array([[3.0], [4.0]]), dim=0).numpy(), [[0.6], [0.8]])


def test_bad_metric_and_shapes():
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(np.ones((2, 3)), np.ones((2, 3)), "manhattan")
    with pytest.raises(ValueError, match="width"):
        pairwise_distance(np.ones((2, 3)), np.ones((2, 4)))
