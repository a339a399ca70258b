"""End to end: the real Snakefile on a tiny synthetic MARS-layout data set, in a temporary workdir.

Proves the caching contract: a second run has nothing to do; a ranking option reruns only `rank`;
training epochs rerun train, extract_features and rank but not the frames; same seed, same metrics.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGET = "results/synth_tiny/baseline/metrics.json"
OUTPUTS = {
    "synthesize": "data/synth_tiny",
    "extract_frames": "results/synth_tiny/index.parquet",
    "train": "results/synth_tiny/baseline/model.pt",
    "extract_features": "results/synth_tiny/baseline/features.zarr",
    "rank": TARGET,
}
TINY = """\
kind: mars
modality: video
root: data/synth_tiny
synthetic:
  layout: mars
  params: {num_train_ids: 8, num_test_ids: 6, num_distractors: 2, num_junk: 2,
           frames_per_tracklet: [4, 8], height: 64, width: 32}
frames: {height: 64, width: 32}
overrides:
  model: {backbone: resnet18}
  train: {epochs: 2, warmup_epochs: 1, milestones: [5], num_ids: 4, num_instances: 2, num_frames: 2,
          num_workers: 0, log_every: 0}
  features: {clip_len: 4, num_workers: 0}
"""
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "cmc", "num_query", "num_gallery")


def snakemake(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


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


def set_overrides(workdir: Path, extra: str) -> None:
    (workdir / "config/datasets/synth_tiny.yaml").write_text(TINY + extra)


def metric_numbers(workdir: Path) -> dict:
    m = json.loads((workdir / TARGET).read_text())
    return {k: m[k] for k in METRIC_KEYS}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("wf")
    (wd / "config/datasets").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", wd / "config/config.yaml")
    shutil.copytree(REPO / "config/methods", wd / "config/methods")
    set_overrides(wd, "")
    snakemake(wd, TARGET)
    return wd


def test_metrics_json_has_the_protocol_and_numbers(workdir):
    m = json.loads((workdir / TARGET).read_text())
    assert m["dataset"] == "synth_tiny" and m["method"] == "baseline" and m["protocol"] == "official"
    assert 0.0 <= m["mAP"] <= 1.0 and 0.0 <= m["rank1"] <= m["rank5"] <= m["rank20"] <= 1.0
    assert m["num_query"] > 0 and m["num_gallery"] >= m["num_query"]  # official MARS: queries in the gallery
    assert set(m["stage_seconds"]) == {"extract_frames", "train", "extract_features", "rank"}
    assert len(m["config_hash"]) == 12


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
    for name, min_hw in (("cmc.png", (400, 700)), ("ranked.png", (300, 300))):
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


def test_same_seed_same_metrics(workdir):
    snakemake(workdir, TARGET)  # back to the base configuration
    first = metric_numbers(workdir)
    snakemake(workdir, TARGET, "--forcerun", "train")
    assert metric_numbers(workdir) == first
