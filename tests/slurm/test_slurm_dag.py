"""The DAG on a real SLURM: `--workflow-profile profiles/slurm` submits every rule of the tiny synthetic
baseline as an sbatch job to a single-node cluster on this machine (local_slurm.py); the torch rules ask
for a GPU; the metrics equal the local run's. And the real MARS target plans without data or cluster."""
from __future__ import annotations

import json

import local_slurm
import pytest
from _workflow import REPO, TARGET, dry_run, new_workdir, set_overrides, snakemake

pytestmark = pytest.mark.slurm

PROFILE = ("--workflow-profile", str(REPO / "profiles/slurm"))
# No slurmdbd on the local cluster: job status from squeue, polled from 2 s after each submission.
NO_SLURMDBD = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2")
TIMINGS = ("stage_seconds",)


def test_tiny_dag_on_slurm_equals_the_local_run(slurm_cluster, tiny_workflow, tmp_path_factory):
    wd = new_workdir(tmp_path_factory)
    set_overrides(wd, "")
    snakemake(wd, TARGET, *PROFILE, *NO_SLURMDBD, "--default-resources",
              f"slurm_partition={slurm_cluster['partition']}", timeout=900)  # 220 s on 2 shared cores

    jobs = [j for j in local_slurm.jobs() if j.get("WorkDir") == str(wd)]
    assert len(jobs) == 5
    rules = {j["Comment"].removeprefix("rule_").split("_wildcards_")[0]: j for j in jobs}
    assert sorted(rules) == sorted(["synthesize", "extract_frames", "train", "extract_features", "rank"])
    assert all(j["JobState"] == "COMPLETED" and j["Partition"] == slurm_cluster["partition"] for j in jobs)
    gpus = {rule: j.get("TresPerJob", "") for rule, j in rules.items()}
    assert gpus == {"synthesize": "", "extract_frames": "", "rank": "",
                    "train": "gres:gpu:1", "extract_features": "gres:gpu:1"}

    local = {k: v for k, v in tiny_workflow["metrics"].items() if k not in TIMINGS}
    on_slurm = {k: v for k, v in json.loads((wd / TARGET).read_text()).items() if k not in TIMINGS}
    assert on_slurm == local


def test_mars_target_plans_through_the_slurm_profile(tmp_path_factory):
    """`snakemake --workflow-profile profiles/slurm -n results/mars/ss_hsp/metrics.json`: without data/MARS one
    line says where to put it; with it, the SS-HSP plan of five jobs, the torch rules asking for a GPU."""
    reason = local_slurm.plugin_missing()
    if reason:
        pytest.skip(reason)
    wd = new_workdir(tmp_path_factory)
    (wd / "config/datasets/mars.yaml").write_text((REPO / "config/datasets/mars.yaml").read_text())
    target = "results/mars/ss_hsp/metrics.json"

    missing = dry_run(wd, target, *PROFILE)
    assert missing.returncode != 0
    assert "data/MARS: data set 'mars' (mars layout) not found; unpack it there" in missing.stdout + missing.stderr

    (wd / "data/MARS").mkdir(parents=True)
    planned = dry_run(wd, target, *PROFILE)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    blocks = planned.stdout.split("\nrule ")[1:]
    resources = {b.split(":")[0]: b.split("resources: ")[1].split("\n")[0] for b in blocks}
    assert sorted(resources) == sorted(["extract_frames", "pretrain_segmentation", "train", "extract_features",
                                        "rank"])
    assert {r for r, res in resources.items() if "gpu=1" in res} == {"pretrain_segmentation", "train",
                                                                      "extract_features"}
