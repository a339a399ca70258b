# Configuration loading and the helpers the rules call (no rules in this file).
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from hspreid.errors import UserError
from hspreid.config import config_hash, load_yaml, resolve_extends, resolve_method

validate(config, "../schemas/config.schema.yaml")


def _load_dir(folder, schema, extends=False):
    """name -> configuration of every folder/*.yaml, validated (after resolving `extends`), and the lineages."""
    paths = {path.stem: path for path in sorted(Path(folder).glob("*.yaml"))}
    if not paths:
        raise WorkflowError(f"{folder}: no *.yaml files found")
    entries = {name: load_yaml(path) for name, path in paths.items()}
    try:
        entries, lineage = resolve_extends(entries) if extends else (entries, {n: [n] for n in entries})
    except UserError as e:
        raise WorkflowError(f"{folder}: {e}") from None
    for name, entry in entries.items():
        try:
            validate(entry, schema)
        except WorkflowError as e:
            raise WorkflowError(f"{paths[name]}: {e}") from None
    return entries, lineage


DATASETS, _ = _load_dir(config["datasets_dir"], "../schemas/dataset.schema.yaml")
METHODS, LINEAGE = _load_dir(config["methods_dir"], "../schemas/method.schema.yaml", extends=True)
SYNTHETIC = sorted(d for d, c in DATASETS.items() if "synthetic" in c)
for _name in SYNTHETIC:
    if DATASETS[_name]["root"] != f"data/{_name}":
        raise WorkflowError(f"config/datasets/{_name}.yaml: a synthetic data set's root must be data/{_name}")


PARSING_SOURCES = ("oracle", "isp", "hcga", "external", "ss_hsp")
PARSERS = ("isp", "hcga", "ss_hsp")  # parsing sources that are the trained model of the method of that name
ROUND_METHODS = sorted(m for m, c in METHODS.items() if "rounds" in c)
PLAIN_METHODS = sorted(m for m in METHODS if m not in ROUND_METHODS)
ABLATIONS = config.get("ablations", {})
for _table, _rows in ABLATIONS.items():
    for _method in _rows:
        if _method not in METHODS:
            raise WorkflowError(f"config/config.yaml: ablations.{_table} names {_method!r}, which is not in "
                                f"{config['methods_dir']}/")


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    round=r"\d+",
    table="|".join(ABLATIONS) or "^$",
    source="|".join(PARSING_SOURCES),


def max_threads(wanted=8):
    """Threads for a compute-heavy rule: `wanted`, but never more than this machine's cores."""
    return min(wanted, os.cpu_count() or 1)


# torch's CPU threads in every torch stage: from the config, not from --cores, because torch's CPU
# reductions split by thread count and so the metrics would change with --cores.
TORCH_THREADS = config["torch_threads"]


def run_config(dataset, method):
    """The merged method configuration of one (data set, method) run."""
    return resolve_method(METHODS[method], DATASETS[dataset], LINEAGE[method])


def as_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def dataset_root(wildcards):
    """Root of the data set; a missing real data set stops the DAG with a line saying where to put it."""
    return root_of(wildcards.dataset)


def root_of(dataset):
    """Root of a data set by name (see dataset_root)."""
    cfg = DATASETS[dataset]
    root = cfg["root"]
    if "synthetic" not in cfg and not Path(root).exists():
        raise WorkflowError(
            f"{root}: data set '{dataset}' ({cfg['kind']} layout) not found; unpack it there "
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
    params = {k: cfg[k] for k in ("model", "train", "losses", "augment", "keypoints") if cfg.get(k) is not None}
    segmenter = train_segmenter(wildcards)
    if segmenter:  # SS-HSP: the pretrained segmenter's path (the train rule's input)
        params["segmenter"] = segmenter
    if "round" in wildcards.keys():  # round r: epochs r*E .. (r+1)*E-1 of one LR schedule
        epochs = cfg["rounds"]["epochs"]
        params["train"] = {**params.get("train", {}), "epochs": epochs, "start_epoch": int(wildcards.round) * epochs}
    return as_json(params)


def segmenter_owner(dataset, method):
    """The method whose pretrained segmenter a run uses: the first of its lineage (base first) whose
    resolved `segmentation` block is the same, so ablations that change only re-ID settings share it."""
    own = run_config(dataset, method).get("segmentation")
    return next(m for m in LINEAGE[method] if run_config(dataset, m).get("segmentation") == own)


def train_segmenter(wildcards):
    """SS-HSP's pretrained segmenter (stage 1), trained on the data set the method trains on; none for a
    method without a `segmentation` block or whose model uses neither parts nor motion (Table 3's Basel)."""
    cfg = run_config(wildcards.dataset, wildcards.method)
    if cfg.get("segmentation") is None or not (cfg["model"].get("parts", True) or cfg["model"].get("motion", True)):
        return []
    owner = segmenter_owner(wildcards.dataset, wildcards.method)
    return f"results/{train_dataset(wildcards)}/{owner}/segmenter.pt"


def segmentation_params(wildcards):
    return as_json(run_config(wildcards.dataset, wildcards.method)["segmentation"])


def parsing_source(dataset, method):
    """The parsing source a run's method config names (`parsing.source`), or None."""
    return (run_config(dataset, method).get("parsing") or {}).get("source")


def train_parsing(wildcards):
    """The parsing store of the training frames when the method names a parsing source (SPReID)."""
    source = parsing_source(wildcards.dataset, wildcards.method)
    return [] if source is None else f"results/{train_dataset(wildcards)}/parsing/{source}.zarr"


def test_parsing(wildcards):
    """The parsing store of the data set's frames (test frames included) when the method names a source."""
    source = parsing_source(wildcards.dataset, wildcards.method)
    return [] if source is None else f"results/{wildcards.dataset}/parsing/{source}.zarr"


def parsing_options(wildcards):
    """Options of parsing source {source} on {dataset}: the `parsing.<source>` block of the methods that use
    that source there. One store serves them all, so they must agree."""
    found = {}
    for method in METHODS:
        cfg = run_config(wildcards.dataset, method).get("parsing") or {}
        if cfg.get("source") == wildcards.source:
            found[method] = cfg.get(wildcards.source) or {}
    if len({as_json(v) for v in found.values()}) > 1:
        raise WorkflowError(f"results/{wildcards.dataset}/parsing/{wildcards.source}.zarr is shared by methods "
                            f"{sorted(found)}, but their parsing.{wildcards.source} options differ: "
                            f"{ {m: found[m] for m in sorted(found)} }")
    return next(iter(found.values()), {})


def parsing_params(wildcards):
    return as_json({"source": wildcards.source, **parsing_options(wildcards)})


def parser_model(wildcards):
    """The trained parser of sources isp, hcga and ss_hsp: that method's model on this data set."""
    return f"results/{wildcards.dataset}/{wildcards.source}/model.pt" if wildcards.source in PARSERS else []


def parser_gpu(wildcards):
    return int(wildcards.source in PARSERS)


def external_maps(wildcards):
    """The external label maps (`parsing.external.path`); inside a data set's root, that root (so that a
    synthetic set's maps wait for its synthesis)."""
    if wildcards.source != "external":
        return []
    path = parsing_options(wildcards).get("path")
    if not path:
        raise WorkflowError(f"parsing.external.path is not set for data set '{wildcards.dataset}': name the "
                            "directory (or zarr store) of your parser's label maps in the method file or in the "
                            "data set's method_overrides")
    for name, cfg in DATASETS.items():
        if Path(cfg["root"]) == Path(path) or Path(cfg["root"]) in Path(path).parents:
            return root_of(name)
    return path


def keypoints_root(wildcards):
    """The training data set's root when the method trains with key points (SSN3D semi-supervised)."""
    return [] if run_config(wildcards.dataset, wildcards.method).get("keypoints") is None \
        else root_of(train_dataset(wildcards))


def keypoints_file(wildcards):
    """A user's key-point CSV (`keypoints.file`), tracked as an input."""
    block = run_config(wildcards.dataset, wildcards.method).get("keypoints") or {}
    return block.get("file") or []


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


def ablation_metrics(wildcards):
    return [f"results/{wildcards.dataset}/{m}/metrics.json" for m in ABLATIONS[wildcards.table]]


def ablation_rows(wildcards):
    return as_json(ABLATIONS[wildcards.table])
