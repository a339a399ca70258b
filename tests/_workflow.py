"""The real Snakefile on a tiny synthetic MARS-layout set, in a temporary workdir: the helpers shared by
the end-to-end tests (test_workflow.py), the `tiny_workflow` fixture (conftest.py) and the SLURM test."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = "results/synth_tiny/baseline/metrics.json"
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


def snakemake(workdir: Path, *args: str, timeout: float | None = None) -> str:
    """Run the Snakefile in `workdir` with --cores 2; its stdout, or AssertionError with the logs' tails."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


def dry_run(workdir: Path, target: str, *args: str) -> subprocess.CompletedProcess:
    """`snakemake -n target` in `workdir`, whatever its exit status."""
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                           str(workdir), *args, "-n", target], capture_output=True, text=True)


def set_overrides(workdir: Path, extra: str) -> None:
    (workdir / "config/datasets/synth_tiny.yaml").write_text(TINY + extra)


def new_workdir(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("wf")
    (wd / "config/datasets").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", wd / "config/config.yaml")
    shutil.copytree(REPO / "config/methods", wd / "config/methods")
    return wd
