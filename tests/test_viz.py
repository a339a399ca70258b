"""Tests for hspreid.viz: CMC plot, query choice, top-of-ranking, ranked-list picture, atomic PNG."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hspreid import viz
from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table


# ----------------------------------------------------------------------------- palette
def test_palette():
    pal = viz.PART_PALETTE
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert tuple(pal[0]) == (0, 0, 0)
    assert len({tuple(c) for c in pal[:6]}) == 6  # background + 5 distinct parts
    assert tuple(pal[255]) == (128, 128, 128)
    assert len({tuple(c) for c in pal[6:255]}) > 6  # other labels cycle through several colours
    # the colours cli.py used (BGR there) are kept
    bgr_old = [[0, 0, 0], [0, 200, 255], [0, 0, 220], [220, 0, 0], [0, 180, 0], [200, 0, 200]]
    np.testing.assert_array_equal(pal[:6, ::-1], bgr_old)


# ----------------------------------------------------------------------------- save_png
def test_save_png_roundtrip_and_atomic(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = tmp_path / "sub" / "a.png"
    viz.save_png(out, rgb)
    np.testing.assert_array_equal(cv2.imread(str(out))[..., ::-1], rgb)
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.png"]
    viz.save_png(out, rgb[::-1].copy())  # overwrite in place, still no temp file
    np.testing.assert_array_equal(cv2.imread(str(out))[..., ::-1], rgb[::-1])
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.png"]


def test_save_png_failure_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError):
        viz.save_png(tmp_path / "bad.png", np.zeros((4, 4, 3), np.float32))

    def boom(self, data):
        Path.write_text(self, "partial")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", boom)
    with pytest.raises(OSError):
        viz.save_png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- plot_cmc
def _png_stats(path: Path) -> tuple[tuple[int, int], float]:
    img = cv2.imread(str(path))
    assert img is not None
    return img.shape[:2], float(img.std())


def test_plot_cmc(tmp_path):
    cmc = np.minimum(np.cumsum(np.r_[0.4, np.full(59, 0.01)]), 1.0)
    out = tmp_path / "cmc.png"
    viz.plot_cmc(cmc, out, title="test", max_rank=50)
    size, std = _png_stats(out)
    w, h = viz.CMC_FIGSIZE[0] * viz.CMC_DPI, viz.CMC_FIGSIZE[1] * viz.CMC_DPI
    assert size == (round(h), round(w))
    assert std > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmc.png"]


def test_plot_cmc_short_percent_and_several(tmp_path):
    viz.plot_cmc(np.array([55.0, 70.0, 80.0]), tmp_path / "short.png", title="3 ranks in %")
    viz.plot_cmc({"a": np.linspace(0.3, 0.9, 50), "b": np.linspace(0.5, 1.0, 50)}, tmp_path / "two.png",
                 title="two runs")
    for name in ("short.png", "two.png"):
        assert _png_stats(tmp_path / name)[1] > 10


# ----------------------------------------------------------------------------- pick_queries
def _per_query(ap, first, valid=None):
    ap = np.asarray(ap, float)
    valid = np.isfinite(ap) if valid is None else np.asarray(valid)
    return pd.DataFrame({"query": np.arange(len(ap)), "valid": valid, "AP": ap,
                         "first_match_rank": np.asarray(first), "INP": ap})


def test_pick_queries_spread_and_deterministic():
    rng = np.random.default_rng(1)
    ap = rng.random(50)
    first = rng.integers(1, 20, 50)
    ap[[3, 7]] = np.nan  # invalid queries
    pq = _per_query(ap, first)
    pick = viz.pick_queries(pq, 8)
    assert len(pick) == 8 and len(set(pick.tolist())) == 8
    np.testing.assert_array_equal(pick, viz.pick_queries(pq.sample(frac=1, random_state=0), 8))
    assert pick[0] == np.nanargmin(ap) and pick[-1] == np.nanargmax(ap)
    assert not {3, 7} & set(pick.tolist())
    assert np.all(np.diff(ap[pick]) >= 0)  # hardest first


def test_pick_queries_ties_and_few():
    pq = _per_query([1.0, 0.5, 1.0, 0.5, 1.0], [1, 2, 1, 9, 1])
    pick = viz.pick_queries(pq, 2)
    assert pick.tolist() == [3, 4]  # AP ties: worse first-match rank first, then query number
    assert viz.pick_queries(pq, 10).tolist() == [3, 1, 0, 2, 4]
    assert viz.pick_queries(_per_query([np.nan], [0]), 3).size == 0
    assert viz.pick_queries(pq, 0).size == 0


# ----------------------------------------------------------------------------- top_ranked
def test_top_ranked_matches_brute_force():
    rng = np.random.default_rng(2)
    dist = rng.integers(0, 4, (6, 15)).astype(np.float32)  # ties: stable order decides
    qp, gp = rng.integers(1, 4, 6), rng.integers(0, 4, 15)
    qc, gc = rng.integers(0, 2, 6), rng.integers(0, 2, 15)
    ranked, matches, junk = viz.top_ranked(dist, qp, gp, qc, gc, top=12)
    assert ranked.shape == matches.shape == junk.shape == (6, 12) and not junk.any()
    kept_ranked, kept_matches, kept_junk = viz.top_ranked(dist, qp, gp, qc, gc, top=12, drop_junk=False)
    for i in range(6):
        order = np.argsort(dist[i], kind="stable")
        is_junk = (gp[order] == qp[i]) & (gc[order] == qc[i])
        keep = order[~is_junk][:12]
        np.testing.assert_array_equal(ranked[i, :len(keep)], keep)
        assert (ranked[i, len(keep):] == -1).all()
        np.testing.assert_array_equal(matches[i, :len(keep)], gp[keep] == qp[i])
        assert not matches[i, len(keep):].any()
        np.testing.assert_array_equal(kept_ranked[i], order[:12])
        np.testing.assert_array_equal(kept_junk[i], is_junk[:12])
        np.testing.assert_array_equal(kept_matches[i], (gp[order[:12]] == qp[i]) & ~is_junk[:12])


# ----------------------------------------------------------------------------- ranked_list_image
class _NoMasks:
    """A frame store seen without its ground-truth masks."""

    def __init__(self, store: FrameStore):
        self.store, self.masks = store, None

    def read(self, rows, array="images"):
        return self.store.read(rows, array)


@pytest.fixture(scope="module")
def ranking(tiny_mars):
    """A random ranking of the tiny set's test tracklets: (store, tracks, q_rows, g_rows, ranked, matches, junk)."""
    store = FrameStore(tiny_mars["frames"])
    tracks = tracklet_table(tiny_mars["index"])
    test = tracks[tracks["subset"] == "test"]
    q_rows = test.index[test["query"]].to_numpy()[:3]
    g_rows = test.index[test["gallery"]].to_numpy()
    rng = np.random.default_rng(0)
    dist = rng.random((len(q_rows), len(g_rows)))
    q, g = tracks.loc[q_rows], tracks.loc[g_rows]
    ranked, matches, junk = viz.top_ranked(dist, q["pid"], g["pid"], q["camid"], g["camid"], top=5, drop_junk=False)
    assert matches.any() and (~matches & ~junk & (ranked >= 0)).any()  # both colours get drawn
    return store, tracks, q_rows, g_rows, ranked, matches, junk


def _border_colour(img, box, border):
    y0, x0, y1, x1 = box
    return [tuple(int(v) for v in img[y, x]) for y, x in
            ((y0 + border // 2, (x0 + x1) // 2), (y1 - 1 - border // 2, (x0 + x1) // 2), ((y0 + y1) // 2, x0))]


def test_ranked_list_image_borders_and_overlay(ranking):
    store, tracks, q_rows, g_rows, ranked, matches, junk = ranking
    img = viz.ranked_list_image(store, tracks, q_rows, g_rows, ranked, matches, junk, top=5)
    frame_hw = store.frame_size
    lay = viz.ranked_list_layout(frame_hw, len(q_rows), 5, overlay=True)
    assert img.dtype == np.uint8 and img.shape == (lay.height, lay.width, 3)
    assert lay.tile_h == 128 and lay.width < 2000
    assert lay.height > viz.ranked_list_layout(frame_hw, len(q_rows), 5, overlay=False).height
    for i in range(len(q_rows)):
        assert set(_border_colour(img, lay.cell_box(i, 0), lay.border)) == {viz.QUERY_RGB}
        for k in range(5):
            want = (viz.JUNK_RGB if junk[i, k] else viz.MATCH_RGB if matches[i, k] else viz.WRONG_RGB)
            for overlay in (False, True):
                assert set(_border_colour(img, lay.cell_box(i, k + 1, overlay), lay.border)) == {want}
        # the overlay row shows the same frame blended with the part colours
        y0, x0, y1, x1 = lay.cell_box(i, 0)
        oy0, ox0, oy1, ox1 = lay.cell_box(i, 0, overlay=True)
        b = lay.border
        plain = img[y0 + b:y1 - b, x0 + b:x1 - b].astype(int)
        over = img[oy0 + b:oy1 - b, ox0 + b:ox1 - b].astype(int)
        assert np.abs(plain - over).mean() > 5
    # the query's own picture is its middle frame, upscaled
    t = int(q_rows[0])
    mid = store.read([tracks.at[t, "start"] + tracks.at[t, "length"] // 2])[0]
    y0, x0, y1, x1 = lay.cell_box(0, 0)
    tile = img[y0 + lay.border:y1 - lay.border, x0 + lay.border:x1 - lay.border]
    expect = cv2.resize(mid, (lay.tile_w, lay.tile_h), interpolation=cv2.INTER_LINEAR)
    assert np.abs(tile.astype(int) - expect).mean() < 1


def test_ranked_list_image_without_masks_and_predicted(ranking):
    store, tracks, q_rows, g_rows, ranked, matches, _ = ranking
    plain = viz.ranked_list_image(_NoMasks(store), tracks, q_rows, g_rows, ranked, matches, top=5)
    lay = viz.ranked_list_layout(store.frame_size, len(q_rows), 5, overlay=False)
    assert plain.shape == (lay.height, lay.width, 3)
    # junk=None: every drawn item is green or red, none grey
    y0, x0, _, _ = lay.cell_box(0, 1)
    assert tuple(plain[y0, x0]) in (viz.MATCH_RGB, viz.WRONG_RGB)

    calls = []

    def parsing(rows):  # a coarse predicted map: all "head"
        calls.append(np.asarray(rows))
        return np.ones((len(rows), 8, 4), np.uint8)

    img = viz.ranked_list_image(_NoMasks(store), tracks, q_rows, g_rows, ranked, matches, top=5, parsing=parsing)
    lay = viz.ranked_list_layout(store.frame_size, len(q_rows), 5, overlay=True)
    assert img.shape == (lay.height, lay.width, 3) and len(calls) == 1
    oy0, ox0, oy1, ox1 = lay.cell_box(1, 2, overlay=True)
    b = lay.border
    tile = img[oy0 + b:oy1 - b, ox0 + b:ox1 - b].reshape(-1, 3).mean(0)
    head = viz.PART_PALETTE[1].astype(float)
    assert np.abs(tile - head).sum() < np.abs(tile - 128).sum()  # tinted towards the head colour

    no_overlay = viz.ranked_list_image(store, tracks, q_rows, g_rows, ranked, matches, top=5, overlay=False)
    assert no_overlay.shape == plain.shape


def test_ranked_list_image_padding_and_width(ranking):
    store, tracks, q_rows, g_rows, ranked, matches, junk = ranking
    # fewer ranked columns than `top`: the rest are empty slots; a long list is shrunk to fit
    img = viz.ranked_list_image(store, tracks, q_rows, g_rows, ranked[:, :2], matches[:, :2], junk[:, :2], top=40)
    assert img.shape[1] <= 2000
    with pytest.raises(ValueError):
        viz.ranked_list_image(store, tracks, q_rows, g_rows, ranked, matches[:, :2])
    with pytest.raises(ValueError):
        viz.ranked_list_image(store, tracks, q_rows, g_rows, np.full_like(ranked, len(g_rows)), matches)


def test_query_captions():
    pq = _per_query([0.25, np.nan], [4, 0])
    assert viz.query_captions(pq, np.array([0, 1])) == ["AP 25.0%, first match at rank 4",
                                                        "no true match in the gallery"]


def test_store_frames_image_rows_and_key_points(tiny_mars, tmp_path):
    from hspreid.data.frames import FramesConfig, write_frame_store
    from hspreid.data.keypoints import load_keypoints

    root, index = tiny_mars["root"], tiny_mars["index"]
    write_frame_store(index, root, tmp_path / "f.zarr", FramesConfig(height=32, width=16),
                      keypoints=load_keypoints(root, index))
    store = FrameStore(tmp_path / "f.zarr")
    picture = viz.store_frames_image(store, count=4)
    assert picture.shape == (3 * 128, 4 * 64, 3)                    # frames, masks, limbs; scaled up 4 x
    rows = np.sort(np.random.default_rng(0).choice(len(store), size=4, replace=False))
    limbs = viz.LIMB_PALETTE[store.read(rows, "limbs")].repeat(4, axis=1).repeat(4, axis=2)
    assert np.array_equal(picture[256:], np.concatenate(list(limbs), axis=1))
    points = store.read(rows, "keypoints")
    x, y = (points[0, :, 0] * 64).astype(int), (points[0, :, 1] * 128).astype(int)
    seen = points[0, :, 2] > 0
    assert seen.any() and (picture[y[seen], x[seen]] == 255).all()      # a white dot on every visible key point
