import numpy as np
import pytest
import torch

from hspreid.data.feature_store import read_features, write_features
from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table
from hspreid.data.sampling import consecutive_clips, evenly_spaced_clip
from hspreid.features import extract_features
from hspreid.models import ReIDModel


class ClipMean(ReIDModel):
    """Embedding = mean pixel value of the clip; 'visible' = [clip has > 3 frames, always True]."""

    def forward(self, clips):
        x = clips.float()
        b, t = x.shape[:2]
        visible = torch.stack([torch.full((b,), t > 3), torch.ones(b, dtype=torch.bool)], dim=1)
        return {"embedding": {"global": x.mean(dim=(1, 3, 4)), "visible": visible}}


def test_all_frames_mode_averages_clip_embeddings_and_ors_visibility(tiny_mars, tmp_path):
    index, store = tiny_mars["index"], FrameStore(tiny_mars["frames"])
    feats = extract_features(ClipMean(), tiny_mars["frames"], index, device=torch.device("cpu"), mode="all",
                             clip_len=4, frames_per_batch=8, num_workers=0)
    tracks = tracklet_table(index)
    tracks = tracks[tracks["subset"] == "test"]
    assert np.array_equal(feats["pid"], tracks["pid"].to_numpy())
    for i, (_, row) in enumerate(tracks.iterrows()):
        frames = store.read(np.arange(row["start"], row["start"] + row["length"])).astype(np.float64)
        clips = consecutive_clips(int(row["length"]), 4)
        expected = np.mean([frames[c].mean(axis=(0, 1, 2)) for c in clips], axis=0)
        assert np.allclose(feats["global"][i], expected, atol=1e-3)
        assert feats["visible"][i, 0] == any(len(c) > 3 for c in clips) and feats["visible"][i, 1]
    write_features(tmp_path / "f.zarr", feats, dtype="float16", attrs={"aggregation": {"mode": "all"}})
    back, attrs = read_features(tmp_path / "f.zarr")
    assert back["global"].dtype == np.float32 and back["visible"].dtype == bool
    assert np.allclose(back["global"], feats["global"], rtol=1e-3) and attrs["aggregation"]["mode"] == "all"


def test_evenly_mode_uses_evenly_spaced_frames(tiny_mars):
    index, store = tiny_mars["index"], FrameStore(tiny_mars["frames"])
    feats = extract_features(ClipMean(), tiny_mars["frames"], index, device=torch.device("cpu"), mode="evenly",
                             evenly_frames=5, num_workers=0)
    row = tracklet_table(index).query("subset == 'test'").iloc[0]
    frames = store.read(row["start"] + evenly_spaced_clip(int(row["length"]), 5)).astype(np.float64)
    assert np.allclose(feats["global"][0], frames.mean(axis=(0, 1, 2)), atol=1e-3)


class ParsingMean(ReIDModel):
    """Embedding = mean of the clip's parsing labels (a model that takes parsing maps, as SPReID)."""

    extra_inputs = ("parsing",)

    def forward(self, clips, parsing=None):
        assert parsing is not None and parsing.shape[:2] == clips.shape[:2]
        return {"embedding": {"global": parsing.float().mean(dim=(1, 2, 3))[:, None]}}


def test_models_that_take_parsing_get_the_test_frames_maps(tiny_mars, tmp_path):
    import zarr

    index = tiny_mars["index"]
    labels = (np.arange(len(index)) % 5).astype(np.uint8)[:, None, None].repeat(4, 1).repeat(2, 2)
    group = zarr.open_group(str(tmp_path / "parsing.zarr"), mode="w")
    group.create_array("rows", data=np.arange(len(index)))
    group.create_array("labels", data=labels)
    feats = extract_features(ParsingMean(), tiny_mars["frames"], index, device=torch.device("cpu"), mode="all",
                             clip_len=4, frames_per_batch=8, num_workers=0, parsing=tmp_path / "parsing.zarr")
    tracks = tracklet_table(index).query("subset == 'test'")
    for i, (_, row) in enumerate(tracks.iterrows()):
        values = labels[row["start"]:row["start"] + row["length"], 0, 0].astype(np.float64)
        expected = np.mean([values[c].mean() for c in consecutive_clips(int(row["length"]), 4)])
        assert feats["global"][i, 0] == pytest.approx(expected, abs=1e-5)
    plain = extract_features(ClipMean(), tiny_mars["frames"], index, device=torch.device("cpu"), clip_len=4,
                             num_workers=0, parsing=tmp_path / "missing.zarr")   # not read: ClipMean takes none
    assert len(plain["global"]) == len(tracks)
