import numpy as np
import torch
from torch import nn

from hspreid.data.frames import FrameStore
from hspreid.data.index import tracklet_table
from hspreid.data.sampling import consecutive_clips, evenly_spaced_clip
from hspreid.features import extract_features, read_features, write_features


class ClipMean(nn.Module):
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
