"""SS-HSP eqs. 1-3: per-part affine flow, mask-weighted combination, background visibility, warping."""
import math

import torch

from hspreid.segmentation.motion import (background_visibility, combine_flows, coordinate_grid, inverse_2x2,
                                         part_flows, warp)


def _random_affine(b: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.eye(2) + 0.3 * torch.randn(b, k, 2, 2, generator=g)


def test_coordinate_grid_is_h_by_w_xy_in_minus1_1():
    grid = coordinate_grid(4, 3)
    assert grid.shape == (4, 3, 2)
    assert torch.allclose(grid[0, :, 0], torch.tensor([-1.0, 0.0, 1.0]))       # x along the width
    assert torch.allclose(grid[:, 0, 1], torch.linspace(-1, 1, 4))              # y along the height


def test_inverse_2x2_matches_linalg_inv_and_is_finite_when_singular():
    m = _random_affine(3, 5)
    assert torch.allclose(inverse_2x2(m), torch.linalg.inv(m), atol=1e-5)
    singular = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[1e-9, 0.0], [0.0, 1e-9]]])
    inv = inverse_2x2(singular)
    assert torch.isfinite(inv).all()
    m.requires_grad_(True)
    inverse_2x2(torch.cat([m.flatten(0, 1), singular])).sum().backward()
    assert torch.isfinite(m.grad).all()


def test_eq1_identity_motion_gives_identity_flow():
    grid = coordinate_grid(8, 4)
    shift = torch.rand(2, 3, 2) * 2 - 1
    affine = _random_affine(2, 3)
    flows = part_flows(shift, affine, shift, affine, grid)                      # A_t = A_t+1, e_t = e_t+1
    assert flows.shape == (2, 3, 8, 4, 2)
    assert torch.allclose(flows, grid.expand_as(flows), atol=1e-5)


def test_eq1_maps_target_centre_to_source_centre_and_recovers_a_translation():
    grid = coordinate_grid(8, 4)
    e_tgt = torch.tensor([[[0.2, -0.3]]])
    d = torch.tensor([0.1, 0.25])
    affine = _random_affine(1, 1, seed=3)
    flows = part_flows(e_tgt + d, affine, e_tgt, affine, grid)                  # pure translation by d
    assert torch.allclose(flows[0, 0], grid + d, atol=1e-5)
    # a general affine motion still sends e_{t+1} to e_t
    e_src = torch.tensor([[[-0.5, 0.4]]])
    g = part_flows(e_src, _random_affine(1, 1, seed=4), e_tgt, affine, e_tgt[0, 0].view(1, 1, 2))
    assert torch.allclose(g[0, 0, 0, 0], e_src[0, 0], atol=1e-5)


def test_identity_flow_warp_leaves_a_frame_unchanged():
    frame = torch.rand(2, 3, 16, 8)
    flow = coordinate_grid(16, 8).expand(2, 16, 8, 2)
    assert torch.allclose(warp(frame, flow), frame, atol=1e-5)
    # a flow at a coarser resolution is resized (the identity stays the identity)
    assert torch.allclose(warp(frame, coordinate_grid(8, 4).expand(2, 8, 4, 2)), frame, atol=1e-5)


def test_translated_part_is_recovered_by_warping_with_eq1_and_eq2():
    h, w = 16, 16
    source = torch.zeros(1, 1, h, w)
    source[0, 0, 5:9, 4:7] = 1.0                                                # a blob (the part) in I_t
    target = torch.roll(source, shifts=(2, 3), dims=(2, 3))                     # it moved 2 px down, 3 px right
    d = torch.tensor([3 * 2 / (w - 1), 2 * 2 / (h - 1)])                        # (dx, dy) in grid units
    grid = coordinate_grid(h, w)
    e_tgt = torch.tensor([[[0.1, 0.0]]])
    flows = part_flows(e_tgt - d, torch.eye(2).view(1, 1, 2, 2), e_tgt, torch.eye(2).view(1, 1, 2, 2), grid)
    masks = torch.zeros(1, 2, h, w)
    masks[:, 1] = 1.0                                                           # whole frame = part 1
    flow = combine_flows(flows, masks, grid)
    assert torch.allclose(warp(source, flow), target, atol=1e-4)


def test_eq2_combines_part_flows_with_target_masks_background_static():
    h, w = 4, 4
    grid = coordinate_grid(h, w)
    flows = torch.stack([grid + 0.5, grid - 0.5], dim=0)[None]                  # K = 2 constant shifts
    masks = torch.zeros(1, 3, h, w)
    masks[0, 0, :, :2] = 1.0                                                    # left half: background
    masks[0, 1, :2, 2:] = 1.0                                                   # top right: part 1
    masks[0, 1, 2:, 2:] = 0.25                                                  # bottom right: a soft mix
    masks[0, 2, 2:, 2:] = 0.75
    out = combine_flows(flows, masks, grid)
    assert out.shape == (1, h, w, 2)
    assert torch.allclose(out[0, :, :2], grid[:, :2])
    assert torch.allclose(out[0, :2, 2:], grid[:2, 2:] + 0.5)
    assert torch.allclose(out[0, 2:, 2:], grid[2:, 2:] + 0.25 * 0.5 - 0.75 * 0.5)


def test_eq3_visibility_shape_range_and_values():
    g = torch.Generator().manual_seed(0)
    m_src = torch.randn(2, 4, 8, 4, generator=g).softmax(1).requires_grad_(True)
    m_tgt = torch.randn(2, 4, 8, 4, generator=g).softmax(1).requires_grad_(True)
    vis = background_visibility(m_src, m_tgt)
    assert vis.shape == (2, 1, 8, 4)
    assert (vis >= 0).all() and (vis <= 1).all()
    expected = 1 - m_tgt[:, :1] * m_src[:, 1:].sum(1, keepdim=True)
    assert torch.allclose(vis, expected)
    vis.sum().backward()
    assert m_src.grad is not None
    assert m_tgt.grad is None or not m_tgt.grad.any()                          # target bg detached (MCS)
    fg = torch.zeros(1, 2, 1, 1)
    fg[:, 1] = 1.0
    bg = torch.zeros(1, 2, 1, 1)
    bg[:, 0] = 1.0
    assert not background_visibility(m_src, m_tgt, detach_source=True).requires_grad    # O trains no map
    assert float(background_visibility(fg, bg)) == 0.0                         # bg in I_t+1 hidden by a part of I_t
    assert float(background_visibility(fg, fg)) == 1.0
    assert float(background_visibility(bg, bg)) == 1.0
    assert math.isclose(float(background_visibility(fg, 0.5 * (fg + bg))), 0.5)


def test_affine_flow_and_a_moving_background_in_eq2():
    from hspreid.segmentation.motion import affine_flow

    grid = coordinate_grid(8, 4)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    assert torch.allclose(affine_flow(identity, grid), grid.expand(2, 8, 4, 2))
    theta = torch.tensor([[[2.0, 0.0, 0.1], [0.0, 1.0, -0.2]]]).expand(2, 2, 3)
    bg = affine_flow(theta, grid)
    assert torch.allclose(bg[..., 0], 2 * grid[..., 0] + 0.1) and torch.allclose(bg[..., 1], grid[..., 1] - 0.2)
    masks = torch.zeros(2, 3, 8, 4)
    masks[:, 0] = 1.0                                                            # all background
    flows = torch.rand(2, 2, 8, 4, 2)
    assert torch.allclose(combine_flows(flows, masks, grid, background=bg), bg)
    assert torch.allclose(combine_flows(flows, masks, grid), grid.expand(2, 8, 4, 2))   # static by default
