"""End to end: the real Snakefile on tiny synthetic data sets, in a temporary workdir.

Proves the caching contract: a second run has nothing to do; a ranking option reruns only `rank`;
training epochs rerun train, extract_features and rank but not the frames; same seed, same metrics
(and the same weights whatever --cores).
And the pseudo-label rounds (ISP): labels r from model r-1, every round kept, quality in metrics.json.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from _workflow import REPO, TARGET, TINY, dry_run, new_workdir, set_overrides, snakemake

from hspreid.data.frames import FrameStore
from hspreid.partmaps import label_quality

OUTPUTS = {
    "synthesize": "data/synth_tiny",
    "extract_frames": "results/synth_tiny/index.parquet",
    "train": "results/synth_tiny/baseline/model.pt",
    "extract_features": "results/synth_tiny/baseline/features.zarr",
    "rank": TARGET,
}
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "cmc", "num_query", "num_gallery")


def plan(workdir: Path) -> dict[str, str]:
    """output file -> 'update pending' / 'no update', from `snakemake --summary`."""
    text = snakemake(workdir, TARGET, "--summary")
    text = text[text.index("output_file"):]
    return {row["output_file"]: row["plan"] for row in csv.DictReader(io.StringIO(text), delimiter="\t")}


def pending_rules(workdir: Path) -> set[str]:
    p = plan(workdir)
    return {rule for rule, out in OUTPUTS.items() if p.get(out, "no update") != "no update"}


def mtimes(workdir: Path) -> dict[str, float]:
    def stamp(path: Path) -> float:
        marker = path / ".snakemake_timestamp"
        return (marker if marker.exists() else path).stat().st_mtime_ns

    return {rule: stamp(workdir / out) for rule, out in OUTPUTS.items()}


def metric_numbers(workdir: Path) -> dict:
    m = json.loads((workdir / TARGET).read_text())
    return {k: m[k] for k in METRIC_KEYS}


@pytest.fixture(scope="module")
def workdir(tiny_workflow) -> Path:
    return tiny_workflow["workdir"]


def test_metrics_json_has_the_protocol_and_numbers(workdir):
    """metrics.json's numbers are those of torchreid's evaluator on the stored features and the data set's
    query and gallery tracklets (an independent oracle, tests/eval/_reference_rank.py)."""
    import pandas as pd

    from hspreid.data.feature_store import read_features
    from hspreid.data.index import tracklet_table

    sys.path.insert(0, str(Path(__file__).parent / "eval"))
    from _reference_rank import eval_market1501_reference

    m = json.loads((workdir / TARGET).read_text())
    assert m["dataset"] == "synth_tiny" and m["method"] == "baseline" and m["protocol"] == "official"
    tracks = tracklet_table(pd.read_parquet(workdir / "results/synth_tiny/index.parquet"))
    test = tracks[tracks["subset"] == "test"]
    assert m["num_query"] == int(test["query"].sum()) > 0                    # the protocol's query tracklets
    assert m["num_gallery"] == int(test["gallery"].sum()) >= m["num_query"]  # official MARS: queries in the gallery
    feats, _ = read_features(workdir / "results/synth_tiny/baseline/features.zarr")
    unit = feats["global"] / np.linalg.norm(feats["global"], axis=1, keepdims=True)
    q, g = feats["query"], feats["gallery"]
    dist = 1.0 - unit[q] @ unit[g].T                                         # rank.metric: cosine
    cmc, mAP, mINP = eval_market1501_reference(dist, feats["pid"][q], feats["pid"][g], feats["camid"][q],
                                               feats["camid"][g], max_rank=10)
    assert m["mAP"] == pytest.approx(mAP, abs=1e-5) and m["mINP"] == pytest.approx(mINP, abs=1e-5)
    assert m["rank1"] == pytest.approx(cmc[0], abs=1e-6) and m["rank5"] == pytest.approx(cmc[4], abs=1e-6)
    assert set(m["stage_seconds"]) == {"extract_frames", "train", "extract_features", "rank"}
    assert len(m["config_hash"]) == 12 and m["world_size"] == 1


def test_rank_writes_tables_and_pictures(workdir):
    import cv2
    import pandas as pd

    run = workdir / "results/synth_tiny/baseline"
    m = json.loads((run / "metrics.json").read_text())
    assert m["distance"] == "global" and m["rerank"]["enabled"] is False
    cmc = pd.read_csv(run / "cmc.csv")
    assert len(cmc) == 50 and cmc["cmc"].is_monotonic_increasing and cmc["cmc"].iloc[0] == pytest.approx(m["rank1"], abs=1e-6)
    per_query = pd.read_parquet(run / "per_query.parquet")
    assert len(per_query) == m["num_query"] and {"pid", "camid", "AP", "first_match_rank"} <= set(per_query)
    assert per_query["AP"].mean() == pytest.approx(m["mAP"], abs=1e-6)
    for name, min_hw in (("cmc.png", (400, 700)), ("ranked.png", (300, 300)), ("training.png", (400, 700))):
        image = cv2.imread(str(run / name))
        assert image is not None and image.shape[0] >= min_hw[0] and image.shape[1] >= min_hw[1], name
        assert image.std() > 10, f"{name} looks blank"
    assert "mAP" in (run / "metrics.html").read_text()


def test_rerun_does_only_what_changed(workdir):
    assert pending_rules(workdir) == set()
    before = mtimes(workdir)

    set_overrides(workdir, "method_overrides:\n  baseline:\n    rank: {ap: trapezoid}\n")
    assert pending_rules(workdir) == {"rank"}
    snakemake(workdir, TARGET)
    after = mtimes(workdir)
    assert {r for r in OUTPUTS if after[r] != before[r]} == {"rank"}
    assert json.loads((workdir / TARGET).read_text())["ap"] == "trapezoid"

    set_overrides(workdir, "method_overrides:\n  baseline:\n    train: {epochs: 1}\n")
    assert pending_rules(workdir) == {"train", "extract_features", "rank"}
    snakemake(workdir, TARGET)
    final = mtimes(workdir)
    assert {r for r in OUTPUTS if final[r] != after[r]} == {"train", "extract_features", "rank"}
    set_overrides(workdir, "")


def trained_weights(workdir: Path) -> dict:
    import torch

    ckpt = torch.load(workdir / OUTPUTS["train"], map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_same_seed_same_metrics_whatever_the_cores(workdir):
    """Retraining with --cores 1 instead of 2 gives bitwise the same weights: torch's CPU threads come
    from the config's torch_threads, not from the job's Snakemake threads (which follow --cores)."""
    snakemake(workdir, TARGET)  # back to the base configuration
    first, weights = metric_numbers(workdir), trained_weights(workdir)
    snakemake(workdir, TARGET, "--forcerun", "train", "--cores", "1")
    assert metric_numbers(workdir) == first
    again = trained_weights(workdir)
    assert all(weights[k].equal(again[k]) for k in weights)


TINY_MARKET = """\
kind: market1501
modality: image
root: data/synth_tiny_market
synthetic:
  layout: market
  params: {num_train_ids: 8, num_test_ids: 6, num_distractors: 4, num_junk: 2, images_per_cam: [2, 3],
           height: 64, width: 32}
frames: {height: 64, width: 32}
overrides:
  model: {backbone: resnet18, layer3_stride: 1}
  train: {epochs: 1, warmup_epochs: 1, milestones: [5], num_ids: 4, num_instances: 2, num_frames: 1,
          num_workers: 0, log_every: 0}
  features: {clip_len: 1, num_workers: 0}
method_overrides:
  isp:
    model: {num_parts: 4}
    pseudo_labels: {num_parts: 4, ids_per_batch: 3, foreground: centre, sharpen: false}
    rounds: {count: 2, epochs: 1, init: baseline}
  hcga:
    pseudo_labels: {min_labels: 8, max_steps: 4}
    rounds: {count: 1, epochs: 1, init: baseline}
"""


def test_isp_rounds(tmp_path_factory):
    wd = new_workdir(tmp_path_factory)
    (wd / "config/datasets/synth_tiny_market.yaml").write_text(TINY_MARKET)
    run = wd / "results/synth_tiny_market"
    snakemake(wd, *(str(run.relative_to(wd) / f"{m}/metrics.json") for m in ("isp", "isp_no_arm", "hcga")))
    rounds = []
    for r in (0, 1):
        group = zarr.open_group(str(run / f"isp/round{r}/pseudo_labels.zarr"), mode="r")
        assert group.attrs["round"] == r and group.attrs["K"] == 4
        assert group["labels"].shape[1:] == (8, 4) and int(group["labels"][...].max()) <= 3
        assert group.attrs["source_model"].endswith("baseline/model.pt" if r == 0 else "isp/round0/model.pt")
        rounds.append(group.attrs["iou"])
        assert group.attrs["identities"] == 8 and 0 <= group.attrs["foreground_below_threshold"] <= 8
    m = json.loads((run / "isp/metrics.json").read_text())
    assert m["distance"] == "isp" and [x["round"] for x in m["rounds"]] == [0, 1]
    assert m["rounds"][1]["foreground_below_threshold"] == group.attrs["foreground_below_threshold"]
    assert [x["pseudo_label_iou"] for x in m["rounds"]] == rounds
    frames = FrameStore(run / "frames.zarr")                                   # the IoU is the labels' own
    rows = group["rows"][...]
    assert rounds[1] == label_quality(group["labels"][...], num_parts=4, fit=frames.read(rows, "pid") % 2 == 0,
                                      **frames.ground_truth(rows))
    assert all(0 <= x["parsing_iou"]["foreground_iou"] <= 1 for x in m["rounds"])
    assert all(0 <= x["parsing_iou"]["label_fit"]["pixel_accuracy"] <= 1 for x in m["rounds"])   # model r vs labels r
    assert "mean_layout" in m["rounds"][0]["pseudo_label_iou"]
    assert m["parsing_iou"]["frames"] > 0 and len(m["parsing_iou"]["part_iou"]) >= 3
    no_arm = json.loads((run / "isp_no_arm/metrics.json").read_text())
    assert no_arm["distance"] == "concat" and not (run / "isp_no_arm/model.pt").exists()  # isp's features
    coparsed = zarr.open_group(str(run / "hcga/round0/pseudo_labels.zarr"), mode="r")
    assert coparsed.attrs["mode"] == "coparse" and coparsed.attrs["K"] == 4
    assert int(coparsed["labels"][...].max()) <= 3 and isinstance(coparsed.attrs["fallbacks"], dict)
    hcga = json.loads((run / "hcga/metrics.json").read_text())
    assert hcga["distance"] == "hcga" and len(hcga["rounds"]) == 1 and hcga["parsing_iou"]["frames"] > 0
    picture = wd / "rounds.png"
    subprocess.run([sys.executable, "-m", "hspreid.cli", "inspect", "--rounds", str(run / "isp"), "--png",
                    str(picture)], check=True, capture_output=True)
    assert picture.stat().st_size > 1000


def test_spreid_oracle_parsing(tmp_path_factory):
    """SPReID through the DAG: parse_frames writes the oracle store, train and extract_features read it."""
    wd = new_workdir(tmp_path_factory)
    (wd / "config/datasets/synth_tiny_market.yaml").write_text(TINY_MARKET)
    run = wd / "results/synth_tiny_market"
    snakemake(wd, "results/synth_tiny_market/spreid_oracle/metrics.json")
    store = zarr.open_group(str(run / "parsing/oracle.zarr"), mode="r")
    frames = zarr.open_group(str(run / "frames.zarr"), mode="r")
    labels, masks = store["labels"][...], frames["masks"][...]
    assert store.attrs["source"] == "oracle" and labels.shape == masks.shape
    assert list(store["rows"][...]) == list(range(len(masks)))              # every frame, train and test
    assert (labels == np.where(masks == 5, 255, masks)).all()
    features = zarr.open_group(str(run / "spreid_oracle/features.zarr"), mode="r")
    assert features.attrs["parsing"]["store"].endswith("parsing/oracle.zarr")
    m = json.loads((run / "spreid_oracle/metrics.json").read_text())
    assert m["method"] == "spreid_oracle" and m["distance"] == "global" and 0 <= m["mAP"] <= 1
    assert m["parsing"]["source"] == "oracle"
    assert not (run / "baseline").exists()                                  # the oracle needs no parser


SS_HSP_TINY = """\
method_overrides:
  ss_hsp:
    model: {num_frames: 2, feat_dim: 16, relation_dim: 8, motion_channels: 4}
    segmentation: {steps: 3, batch_size: 4, seg_size: [32, 16], unet_channels: 4, unet_max_channels: 16,
                   predictor_channels: 4, predictor_max_channels: 8, num_res_blocks: 1,
                   reconstruction: l1_ssim, log_every: 1}
  spreid:
    parsing: {ss_hsp: {frames_per_batch: 16}}
"""


def test_ss_hsp_two_stages(tmp_path_factory):
    """SS-HSP through the DAG: pretrain_segmentation (segmenter, part maps of every frame, IoU beside the
    stripes'), train from that segmenter, rank; an ablation that changes only re-ID losses shares the
    segmenter; SPReID takes the trained SS-HSP model as its parser."""
    wd = new_workdir(tmp_path_factory)
    (wd / "config/datasets/synth_tiny.yaml").write_text(TINY + SS_HSP_TINY)
    run = wd / "results/synth_tiny"
    snakemake(wd, *(f"results/synth_tiny/{m}/metrics.json" for m in ("ss_hsp", "ss_hsp_no_tri", "spreid_ss_hsp")))
    summary = json.loads((run / "ss_hsp/segmentation.json").read_text())
    assert summary["steps"] == 3 and summary["num_parts"] == 6
    assert 0 <= summary["mean_part_iou"] <= 1 and 0 <= summary["stripes_mean_part_iou"] <= 1
    parts = zarr.open_group(str(run / "ss_hsp/parsing.zarr"), mode="r")
    frames = FrameStore(run / "frames.zarr")
    assert parts["labels"].shape == (len(frames), 32, 16) and int(parts["labels"][...].max()) <= 6
    assert not (run / "ss_hsp_no_tri/segmenter.pt").exists()              # shares ss_hsp's segmenter
    m = json.loads((run / "ss_hsp/metrics.json").read_text())
    assert m["segmentation"]["mean_part_iou"] == summary["mean_part_iou"] and 0 <= m["mAP"] <= 1
    assert m["parsing_iou"]["frames"] > 0                                   # the fine-tuned segmenter's parts
    spreid = json.loads((run / "spreid_ss_hsp/metrics.json").read_text())
    assert spreid["parsing"]["source"] == "ss_hsp"


@pytest.mark.parametrize("target, edit, line", [
    ("results/synth_tiny/basline/metrics.json", "",
     "unknown method 'basline', which is not in config/methods/ (did you mean 'baseline'?)"),
    ("results/synth_tny/baseline/metrics.json", "",
     "unknown data set 'synth_tny', which is not in config/datasets/ (did you mean 'synth_tiny'?)"),
    (TARGET, "method_overrides:\n  basline: {train: {epochs: 3}}\n",
     "synth_tiny.yaml: method_overrides names method 'basline', which is not in config/methods/"),
    (TARGET, "method_overrides:\n  baseline: {train: {epochs: two}}\n",
     "baseline on synth_tiny: train.epochs: expected an integer, got 'two'"),
    (TARGET, "method_overrides:\n  baseline: {augment: {flip: '0.5'}}\n",
     "baseline on synth_tiny: augment.flip: expected a number, got '0.5'"),
])
def test_config_mistakes_stop_a_dry_run_with_one_line(tmp_path_factory, target, edit, line):
    wd = new_workdir(tmp_path_factory)
    set_overrides(wd, edit)
    proc = dry_run(wd, target)
    assert proc.returncode != 0 and line in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_a_missing_real_data_set_stops_a_dry_run_with_one_line(tmp_path_factory):
    """Not the catch-all rule's silent plan: the missing root, named, and where to put it."""
    wd = new_workdir(tmp_path_factory)
    shutil.copy(REPO / "config/datasets/market1501.yaml", wd / "config/datasets/market1501.yaml")
    proc = dry_run(wd, "results/market1501/baseline/metrics.json")
    line = "data/Market-1501: data set 'market1501' (market1501 layout) not found; unpack it there"
    assert proc.returncode != 0 and line in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
