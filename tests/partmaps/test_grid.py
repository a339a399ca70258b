"""Label maps on a grid: stripe partitions and nearest resizing."""
import numpy as np
import pytest

from hspreid.errors import UserError
from hspreid.partmaps import border_ring, resize_nearest, stripe_labels, stripe_rows


def test_stripes_of_the_whole_image():
    lab = stripe_labels((2, 8, 3), 4)
    assert lab.dtype == np.uint8 and lab.shape == (2, 8, 3)
    assert lab[0, :, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert (lab == lab[:, :, :1]).all() and (lab[0] == lab[1]).all()
    assert stripe_labels((1, 7, 1), 3)[0, :, 0].tolist() == [1, 1, 1, 2, 2, 3, 3]   # floor(row * K / h) + 1


def test_stripes_of_a_foreground_span_its_rows_only():
    fg = np.zeros((2, 10, 2), bool)
    fg[0, 2:6, 1] = True                                  # rows 2..5 -> two stripes of two rows
    lab = stripe_labels(fg.shape, 2, fg)
    assert lab[0, :, 1].tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 0, 0]
    assert (lab[0, :, 0] == 0).all() and (lab[1] == 0).all()                     # off the foreground; empty frame
    with pytest.raises(UserError, match="foreground shape"):
        stripe_labels((1, 10, 2), 2, fg)


def test_stripe_rows_equal_and_by_bounds():
    assert stripe_rows(7, 3).tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert stripe_rows(14, bounds=(1 / 7, 1 / 2, 6 / 7)).tolist() == [1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4]
    with pytest.raises(UserError, match="num_parts"):
        stripe_rows(4, 0)


def test_resize_nearest_one_map_a_batch_and_an_empty_batch():
    m = np.array([[1, 2], [3, 4]], np.uint8)
    assert resize_nearest(m, (4, 4)).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    batch = np.stack([m, m + 4])
    assert resize_nearest(batch, (1, 2)).tolist() == [[[1, 2]], [[5, 6]]]
    assert resize_nearest(batch, (2, 2)) is batch
    assert resize_nearest(np.zeros((0, 3, 3), np.uint8), (2, 2)).shape == (0, 2, 2)


def test_border_ring_is_the_outer_pixels_only():
    ring = border_ring(4, 3)
    assert ring.sum() == 2 * 3 + 2 * 2 and not ring[1:-1, 1:-1].any()
    assert border_ring(1, 1).tolist() == [[True]]
