"""The pretrain_segmentation stage on the tiny synthetic MARS set: checkpoint, part maps of every frame, summary."""
import json

import numpy as np
import pytest
import torch
import zarr

from hspreid.data.label_maps import LabelMaps
from hspreid.errors import UserError
from hspreid.segmentation import load_segmenter
from hspreid.segmentation.pretrain import TRAIN_DEFAULTS, model_defaults, split_params
from stages import pretrain_segmentation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"num_parts": 3, "seg_size": [32, 16], "unet_channels": 4, "unet_max_channels": 16, "predictor_channels": 8,
        "predictor_max_channels": 16, "num_res_blocks": 1, "reconstruction": "l1_ssim",
        "steps": 3, "batch_size": 2, "log_every": 2, "gap": 2, "infer_batch_size": 16}


def _run(tiny_mars, tmp_path, params, name="run"):
    out = tmp_path / name
    argv = ["--frames", str(tiny_mars["frames"]), "--index", str(tmp_path / "index.parquet"),
            "--params", json.dumps(params), "--model-out", str(out / "segmenter.pt"),
            "--parsing-out", str(out / "parsing.zarr"), "--summary", str(out / "segmentation.json"),
            "--device", "cpu", "--seed", "0", "--log-file", str(out / "log.txt")]
    return pretrain_segmentation.main(argv), out


@pytest.fixture
def index_file(tiny_mars, tmp_path):
    tiny_mars["index"].to_parquet(tmp_path / "index.parquet")


@pytest.mark.usefixtures("index_file")
def test_stage_trains_segments_every_frame_and_scores(tiny_mars, tmp_path):
    rc, out = _run(tiny_mars, tmp_path, TINY)
    assert rc == 0
    n = len(tiny_mars["index"])
    model, ckpt = load_segmenter(out / "segmenter.pt")
    assert ckpt["step"] == 3 and model.num_parts == 3 and model.seg_size == (32, 16)

    group = zarr.open_group(str(out / "parsing.zarr"), mode="r")
    labels = group["labels"][...]
    assert labels.shape == (n, 32, 16) and labels.dtype == np.uint8 and int(labels.max()) <= 3
    assert group["rows"][...].tolist() == list(range(n))
    assert group.attrs["num_parts"] == 3 and group.attrs["seg_size"] == [32, 16]
    assert group.attrs["model"] == str(out / "segmenter.pt")
    assert not (out / "parsing.zarr.tmp").exists() and not list(out.glob(".*.tmp*"))
    frames = LabelMaps(out / "parsing.zarr").read(np.array([0, n - 1]))   # readable as a parsing store
    from hspreid.data.frames import FrameStore
    expected = model.segment(FrameStore(tiny_mars["frames"]).read(np.array([0, n - 1])))["labels"].numpy()
    np.testing.assert_array_equal(frames, expected)                            # the maps are the model's

    summary = json.loads((out / "segmentation.json").read_text())
    assert summary["steps"] == 3 and summary["seconds"] > 0
    assert summary["train_pairs_per_s"] > 0 and summary["inference_frames_per_s"] > 0
    assert {"total", "rec", "equ", "geo"} <= set(summary["final_loss"])
    assert summary["params"]["gap"] == 2 and summary["params"]["lr"] == TRAIN_DEFAULTS["lr"]
    q = summary["quality"]["test"]                                             # tiny_mars has ground-truth masks
    for name in ("model", "stripes", "stripes_gt_foreground", "stripes_model_foreground", "mean_layout"):
        assert 0 <= q[name]["mean_part_iou"] <= 1 and 0 <= q[name]["foreground_iou"] <= 1
    assert summary["stripes_mean_part_iou"] == q["stripes"]["mean_part_iou"]
    assert summary["layout_foreground_iou"] == q["mean_layout"]["foreground_iou"]
    assert summary["mean_part_iou"] == q["model"]["mean_part_iou"]
    assert "train" in summary["quality"]
    assert "segmenter step 2/3" in (out / "log.txt").read_text()               # periodic progress lines
    assert summary["curve"] == []                                              # quality_every: null


@pytest.mark.usefixtures("index_file")
def test_stage_is_deterministic_in_its_seed_with_or_without_its_curve(tiny_mars, tmp_path):
    params = {**TINY, "steps": 2}
    maps = []
    for name, every in (("a", None), ("b", 1)):
        rc, out = _run(tiny_mars, tmp_path, {**params, "quality_every": every}, name)
        assert rc == 0
        maps.append(zarr.open_group(str(out / "parsing.zarr"), mode="r")["labels"][...])
        sd = torch.load(out / "segmenter.pt", weights_only=False)["state_dict"]
        maps.append(sd["unet.head.weight"])
    np.testing.assert_array_equal(maps[0], maps[2])
    assert torch.equal(maps[1], maps[3])
    summary = json.loads((out / "segmentation.json").read_text())   # run b: the test scores against steps
    assert [point["step"] for point in summary["curve"]] == [0, 1, 2]
    assert {k: v for k, v in summary["curve"][-1].items() if k != "step"} == {
        key: summary[key] for key in pretrain_segmentation.SUMMARY_SCORES}    # its last point: the final maps'
    assert summary["curve"][0] != summary["curve"][-1]


@pytest.mark.usefixtures("index_file")
def test_stage_rejects_unknown_keys_in_one_line(tiny_mars, tmp_path, caplog):
    rc, out = _run(tiny_mars, tmp_path, {**TINY, "stepz": 3})
    assert rc == 1 and not (out / "segmenter.pt").exists() and not (out / "parsing.zarr").exists()
    assert "stepz" in (out / "log.txt").read_text()


def test_split_params_defaults_and_errors():
    model, train = split_params({"num_parts": 4, "steps": 10})
    assert model["num_parts"] == 4 and model["background_motion"] == "affine"           # the stage's defaults
    assert train["steps"] == 10 and train["batch_size"] == TRAIN_DEFAULTS["batch_size"]
    assert {"num_parts", "temperature", "reconstruction", "lambda_geo"} <= set(model_defaults())
    with pytest.raises(UserError, match="unknown key"):
        split_params({"lamda_geo": 1})
    with pytest.raises(UserError, match="batch_size"):
        split_params({"batch_size": 0})
    with pytest.raises(UserError, match="epochs"):
        split_params({"epochs": 0})
    with pytest.raises(UserError, match="labels"):
        split_params({"labels": "max"})
