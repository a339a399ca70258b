"""Parsing stores (stage parse_frames): every source folded to the five-region code."""
import json

import cv2
import numpy as np
import pytest
import zarr
from PIL import Image

from hspreid.data.frames import FrameStore
from hspreid.data.label_maps import LabelMaps
from hspreid.errors import UserError
from hspreid.partmaps import HEIGHT_BANDS, LIP_TO_REGIONS, resolve_table
from stages import parse_frames


def _run(tiny_mars, out, params: dict) -> int:
    index = tiny_mars["frames"].parent / "index.parquet"
    if not index.exists():
        tiny_mars["index"].to_parquet(index)
    return parse_frames.main(["--frames", str(tiny_mars["frames"]), "--index", str(index), "--output", str(out),
                              "--params", json.dumps(params)])


def test_oracle_maps_ground_truth_and_belongings(tiny_mars, tmp_path):
    masks = FrameStore(tiny_mars["frames"]).read(np.arange(len(tiny_mars["index"])), "masks")
    assert (masks == 5).any()                                   # the tiny set draws some bags
    assert _run(tiny_mars, tmp_path / "oracle.zarr", {"source": "oracle"}) == 0
    store = LabelMaps(tmp_path / "oracle.zarr")
    expected = np.where(masks == 5, 255, masks)
    assert np.array_equal(store.rows, np.arange(len(masks))) and np.array_equal(store.read(store.rows), expected)
    assert store.attrs["source"] == "oracle" and store.attrs["regions"][1:] == ["head", "upper", "lower", "shoes"]
    assert store.attrs["iou"] is None                           # the oracle is the reference itself
    assert _run(tiny_mars, tmp_path / "bags.zarr", {"source": "oracle", "belongings": 2}) == 0
    assert np.array_equal(LabelMaps(tmp_path / "bags.zarr").read([3, 1]), np.where(masks == 5, 2, masks)[[3, 1]])


def test_external_png_maps_with_the_lip_table(tiny_mars, tmp_path):
    index = tiny_mars["index"]
    lip = np.arange(20, dtype=np.uint8).repeat(4).reshape(10, 8)   # every LIP class, at a size unlike the frames'
    folder = tmp_path / "lip_maps"
    for k, rel in enumerate(index["path"]):
        png = folder / rel.rsplit(".", 1)[0]
        png.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(lip)
        if k % 2:                                               # palette PNGs keep their indices
            image = image.convert("P")
            image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
        image.save(png.with_suffix(".png"))
    assert _run(tiny_mars, tmp_path / "external.zarr", {"source": "external", "path": str(folder)}) == 0
    store = LabelMaps(tmp_path / "external.zarr")
    h, w = FrameStore(tiny_mars["frames"]).frame_size
    assert store.size == (h, w) and store.attrs["source"] == "external"
    expected = cv2.resize(np.asarray(LIP_TO_REGIONS, np.uint8)[lip], (w, h), interpolation=cv2.INTER_NEAREST)
    got = store.read(np.arange(len(index)))
    assert (got == expected).all() and set(np.unique(got)) == {0, 1, 2, 3, 4}
    assert store.attrs["iou"]["frames"] == len(index)            # scored against the ground truth
    (folder / index["path"].iloc[2]).with_suffix(".png").unlink()
    assert _run(tiny_mars, tmp_path / "broken.zarr", {"source": "external", "path": str(folder)}) == 1
    assert not (tmp_path / "broken.zarr").exists()


def test_external_zarr_by_rows_and_a_custom_table(tiny_mars, tmp_path):
    n = len(tiny_mars["index"])
    group = zarr.open_group(str(tmp_path / "maps.zarr"), mode="w")
    group.create_array("labels", data=np.full((n, 4, 2), 7, np.uint8))
    group.create_array("rows", data=np.arange(n)[::-1].copy())
    params = {"source": "external", "path": str(tmp_path / "maps.zarr"), "table": {"7": 3}}
    assert _run(tiny_mars, tmp_path / "ext.zarr", params) == 0
    assert (LabelMaps(tmp_path / "ext.zarr").read(np.arange(n)) == 3).all()


def test_tables_and_unavailable_sources(tiny_mars, tmp_path):
    assert resolve_table("lip") == LIP_TO_REGIONS and resolve_table([0, 255, 4]) == [0, 255, 4]
    with pytest.raises(UserError, match=r"table\[1\]"):
        resolve_table([0, 9])
    with pytest.raises(UserError, match="unknown table"):
        resolve_table("atr")
    assert parse_frames.resolve_params({"source": "ss_hsp"})["bands"] == list(HEIGHT_BANDS)
    with pytest.raises(UserError, match="parsing.oracle"):
        parse_frames.resolve_params({"source": "oracle", "table": "lip"})
    assert _run(tiny_mars, tmp_path / "x.zarr", {"source": "isp"}) == 1     # no --model
