# Lookups for the rules: every (data set, method) run is resolved by hspreid.catalog (tested on its own);
# the functions below only hand the rules what a run says.
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from hspreid.catalog import PARSERS, PARSING_SOURCES, Catalog
from hspreid.errors import UserError

try:
    CATALOG = Catalog.load(config, Path(workflow.basedir) / "workflow/schemas")
except UserError as e:
    raise WorkflowError(str(e)) from None
DATASETS, METHODS = CATALOG.datasets, CATALOG.methods
SYNTHETIC, ROUND_METHODS, PLAIN_METHODS = CATALOG.synthetic, CATALOG.round_methods, CATALOG.plain_methods
ABLATIONS = CATALOG.ablations
# torch's CPU threads in every torch stage: from the config, not from --cores, because torch's CPU
# reductions split by thread count and so the metrics would change with --cores.
TORCH_THREADS = config["torch_threads"]
# What every torch stage is told besides its own inputs: device, seed and threads.
TORCH_ARGS = f"--device {config['device']} --seed {config['seed']} --torch-threads {TORCH_THREADS}"
# What every torch job asks a cluster for besides GPUs and cores (config.yaml's torch_resources).
TORCH_MEM_MB, TORCH_RUNTIME = config["torch_resources"]["mem_mb"], config["torch_resources"]["runtime"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    round=r"\d+",
    table="|".join(ABLATIONS) or "^$",
    source="|".join(PARSING_SOURCES),


def max_threads(wanted=8):
    """Threads for a compute-heavy rule: `wanted`, but never more than this machine's cores."""
    return min(wanted, os.cpu_count() or 1)


def torch_threads_of(block):
    """A torch rule's threads: torch's threads in each of its processes (`<block>.nproc_per_node`)."""
    return lambda w: max_threads(TORCH_THREADS * run(w).processes(block)) if block else max_threads(TORCH_THREADS)


def looked_up(function):
    """A rule's input or params function: a user error becomes Snakemake's one-line WorkflowError."""

    def wrapped(wildcards):
        try:
            return function(wildcards)
        except UserError as e:
            raise WorkflowError(str(e)) from None

    wrapped.__name__ = function.__name__
    return wrapped


@looked_up
def run(wildcards):
    """The run of the job's {dataset} and {method}."""
    return CATALOG.run(wildcards.dataset, wildcards.method)


def round_of(wildcards):
    return int(wildcards.round) if "round" in wildcards.keys() else None


dataset_root = looked_up(lambda w: CATALOG.root(w.dataset))
dataset_kind = lambda w: DATASETS[w.dataset]["kind"]
synth_layout = lambda w: DATASETS[w.dataset]["synthetic"]["layout"]
synth_params = lambda w: CATALOG.synth_params(w.dataset)
frames_params = lambda w: CATALOG.frames_params(w.dataset)
train_frames = lambda w: run(w).train_frames
train_index = lambda w: run(w).train_index
checkpoint_path = lambda w: run(w).checkpoint
launcher_of = lambda block: (lambda w: run(w).launcher(block))
gpus_of = lambda block: (lambda w: run(w).gpus(block))
cpus_per_gpu = lambda w: run(w).cpus_per_gpu()
run_model = lambda w: run(w).model
train_params = looked_up(lambda w: run(w).train_params(round_of(w)))
train_segmenter = lambda w: run(w).segmenter
train_parsing = lambda w: run(w).train_parsing
test_parsing = lambda w: run(w).test_parsing
keypoints_root = looked_up(lambda w: run(w).keypoints_root)
keypoints_file = lambda w: run(w).keypoints_file
segmentation_params = lambda w: run(w).segmentation_params()
previous_model = lambda w: run(w).previous_model(int(w.round))
last_round_model = lambda w: run(w).last_round_model
round_checkpoint = lambda w: run(w).round_checkpoint(int(w.round))
pseudo_label_params = lambda w: run(w).pseudo_label_params()
ranked_features = lambda w: run(w).ranked_features
ranked_model = lambda w: run(w).ranked_model
features_params = lambda w: run(w).features_params()
rank_params = lambda w: run(w).rank_params()
parsing_params = looked_up(lambda w: CATALOG.parsing_params(w.dataset, w.source))
external_maps = looked_up(lambda w: CATALOG.external_maps(w.dataset, w.source))
parser_model = lambda w: f"results/{w.dataset}/{w.source}/model.pt" if w.source in PARSERS else []
parser_gpu = lambda w: int(w.source in PARSERS and config["device"] != "cpu")
ablation_metrics = lambda w: [f"results/{w.dataset}/{m}/metrics.json" for m in ABLATIONS[w.table]]
ablation_rows = lambda w: json.dumps(ABLATIONS[w.table], sort_keys=True, separators=(",", ":"))


@looked_up
def unknown_run(wildcards):
    """Input of the catch-all target (unknown_target in metrics.smk). A line naming an unknown data set or
    method, the run's own configuration error, or a missing data set it reads (the errors that stop rank's
    inputs, which Snakemake would otherwise swallow); nothing for a valid run, which `ruleorder` gives to rank."""
    CATALOG.run(wildcards.dataset, wildcards.method).check_data()
    return []
