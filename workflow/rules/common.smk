# Configuration loading and the helpers the rules call (no rules in this file).
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from hspreid.config import config_hash, load_yaml, resolve_method

validate(config, "../schemas/config.schema.yaml")


def _load_dir(folder, schema):
    entries = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        entry = load_yaml(path)
        try:
            validate(entry, schema)
        except WorkflowError as e:
            raise WorkflowError(f"{path}: {e}") from None
        entries[path.stem] = entry
    if not entries:
        raise WorkflowError(f"{folder}: no *.yaml files found")
    return entries


DATASETS = _load_dir(config["datasets_dir"], "../schemas/dataset.schema.yaml")
METHODS = _load_dir(config["methods_dir"], "../schemas/method.schema.yaml")
SYNTHETIC = sorted(d for d, c in DATASETS.items() if "synthetic" in c)
for _name in SYNTHETIC:
    if DATASETS[_name]["root"] != f"data/{_name}":
        raise WorkflowError(f"config/datasets/{_name}.yaml: a synthetic data set's root must be data/{_name}")


ROUND_METHODS = sorted(m for m, c in METHODS.items() if "rounds" in c)
PLAIN_METHODS = sorted(m for m in METHODS if m not in ROUND_METHODS)


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    round=r"\d+",


def max_threads(wanted=8):
    """Threads for a compute-heavy rule: `wanted`, but never more than this machine's cores."""
    return min(wanted, os.cpu_count() or 1)


def run_config(dataset, method):
    """The merged method configuration of one (data set, method) run."""
    return resolve_method(METHODS[method], DATASETS[dataset], method)


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def dataset_root(wildcards):
    """Root of the data set; a missing real data set stops the DAG with a line saying where to put it."""
    cfg = DATASETS[wildcards.dataset]
    root = cfg["root"]
    if "synthetic" not in cfg and not Path(root).exists():
        raise WorkflowError(
            f"{root}: data set '{wildcards.dataset}' ({cfg['kind']} layout) not found; unpack it there "
            f"in its native layout (see README.md, 'Real data sets')"
        )
    return root


def dataset_kind(wildcards):
    return DATASETS[wildcards.dataset]["kind"]


def checkpoint_path(wildcards):
    return f"{config['checkpoint_dir']}/{wildcards.dataset}/{wildcards.method}.pt"


def synth_params(wildcards):
    return as_json(DATASETS[wildcards.dataset]["synthetic"].get("params", {}))


def synth_layout(wildcards):
    return DATASETS[wildcards.dataset]["synthetic"]["layout"]


def frames_params(wildcards):
    cfg = DATASETS[wildcards.dataset]
    return as_json({**cfg.get("frames", {}), "reader": cfg.get("reader", {})})


def train_dataset(wildcards):
    """The data set whose training split a run trains on (itself unless `train_on` says otherwise)."""
    return DATASETS[wildcards.dataset].get("train_on", wildcards.dataset)


def train_frames(wildcards):
    return f"results/{train_dataset(wildcards)}/frames.zarr"


def train_index(wildcards):
    return f"results/{train_dataset(wildcards)}/index.parquet"


def train_params(wildcards):
    cfg = run_config(wildcards.dataset, wildcards.method)
    params = {k: cfg[k] for k in ("model", "train", "losses", "augment") if k in cfg}
    if "round" in wildcards.keys():  # each round trains rounds.epochs epochs
        params["train"] = {**params.get("train", {}), "epochs": cfg["rounds"]["epochs"]}
    return as_json(params)


def rounds_of(wildcards):
    return run_config(wildcards.dataset, wildcards.method)["rounds"]


def previous_model(wildcards):
    """Model round r-1; round 0 starts from the `rounds.init` method's trained model."""
    r = int(wildcards.round)
    if r == 0:
        return f"results/{wildcards.dataset}/{rounds_of(wildcards)['init']}/model.pt"
    return f"results/{wildcards.dataset}/{wildcards.method}/round{r - 1}/model.pt"


def last_round_model(wildcards):
    return f"results/{wildcards.dataset}/{wildcards.method}/round{rounds_of(wildcards)['count'] - 1}/model.pt"


def pseudo_label_params(wildcards):
    return as_json(run_config(wildcards.dataset, wildcards.method).get("pseudo_labels", {}))


def round_checkpoint(wildcards):
    return f"{config['checkpoint_dir']}/{wildcards.dataset}/{wildcards.method}/round{wildcards.round}.pt"


def ranked_features(wildcards):
    """A method may rank another method's features (`features_from`, e.g. isp_no_arm uses isp's)."""
    source = METHODS[wildcards.method].get("features_from", wildcards.method)
    return f"results/{wildcards.dataset}/{source}/features.zarr"


def features_params(wildcards):
    return as_json(run_config(wildcards.dataset, wildcards.method).get("features", {}))


def rank_params(wildcards):
    cfg = run_config(wildcards.dataset, wildcards.method)
    data = {k: v for k, v in DATASETS[wildcards.dataset].items() if k not in ("overrides", "method_overrides")}
    return as_json({**cfg.get("rank", {}), "dataset": wildcards.dataset, "method": wildcards.method,
                    "config_hash": config_hash({"dataset": data, "method": cfg, "seed": config["seed"]})})
