"""Run resolution: which data sets and methods exist, and what one (data set, method) run reads, writes and passes
to each stage. The Snakemake rules only look things up here (``workflow/rules/common.smk``).

A :class:`Catalog` loads ``config/config.yaml``'s data-set and method folders once, validates every file against
its JSON schema (filling the schema's defaults, as Snakemake's ``validate`` does), resolves ``extends`` chains,
and checks the names that files give each other. :meth:`Catalog.run` gives the :class:`Run` of a (data set,
method) pair: its merged configuration, its paths and the parameters of its stages, each computed once.
"""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hspreid.config import config_hash, load_yaml, nearest, resolve_extends, resolve_method
from hspreid.data.parsing_stores import SOURCES, ParserSource
from hspreid.errors import UserError

PARSING_SOURCES = tuple(SOURCES)
PARSERS = tuple(name for name, options in SOURCES.items() if options is ParserSource)
"""Parsing sources that are the trained model of the method of that name."""
TRAIN_KEYS = ("model", "train", "losses", "augment", "keypoints")
"""The blocks of a method's configuration that the train stage reads."""


def as_json(obj: Any) -> str:
    """Compact, key-sorted JSON: a rule's parameter (Snakemake reruns a job when it changes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def validate(entry: dict, schema: str | Path, where: str) -> None:
    """Validate ``entry`` against a JSON schema (YAML), filling in the schema's defaults in place (the
    jsonschema FAQ's recipe, as Snakemake's ``validate`` does); one line naming ``where`` and the key."""
    import jsonschema

    Validator = jsonschema.validators.validator_for(_schema(str(schema)))

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from Validator.VALIDATORS["properties"](validator, properties, instance, subschema)

    filling = jsonschema.validators.extend(Validator, {"properties": set_defaults})
    errors = list(filling(_schema(str(schema))).iter_errors(entry))   # every default filled
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        key = ".".join(str(k) for k in error.absolute_path)
        raise UserError(f"{where}: {key + ': ' if key else ''}{error.message}")


@functools.lru_cache(maxsize=None)
def _schema(path: str) -> dict:
    return load_yaml(path)


@dataclass(frozen=True, eq=False)
class Catalog:
    """Every data set and method of a configuration (see the module doc)."""

    config: dict
    datasets: dict[str, dict]
    methods: dict[str, dict]
    lineage: dict[str, list[str]]

    @classmethod
    def load(cls, config: dict, schemas: str | Path) -> "Catalog":
        """Validate ``config`` (a parsed config.yaml, completed in place) and load its data-set and method files."""
        schemas = Path(schemas)
        validate(config, schemas / "config.schema.yaml", "config/config.yaml")
        datasets = _load_folder(Path(config["datasets_dir"]), schemas / "dataset.schema.yaml")
        methods = _load_folder(Path(config["methods_dir"]), schemas / "method.schema.yaml", extends=True)
        catalog = cls(config, datasets[0], methods[0], methods[1])
        catalog.check_names()
        return catalog

    # ------------------------------------------------------------------ names
    @property
    def synthetic(self) -> list[str]:
        return sorted(d for d, c in self.datasets.items() if "synthetic" in c)

    @property
    def round_methods(self) -> list[str]:
        return sorted(m for m, c in self.methods.items() if "rounds" in c)

    @property
    def plain_methods(self) -> list[str]:
        return sorted(m for m in self.methods if "rounds" not in self.methods[m])

    @property
    def ablations(self) -> dict[str, dict[str, str]]:
        return self.config.get("ablations", {})

    def check_names(self) -> None:
        """Every name a file gives another must exist: a synthetic set's root, ``method_overrides``, ``train_on``,
        ``features_from``, ``rounds.init``, the ablation tables' methods."""
        datasets_dir, methods_dir = self.config["datasets_dir"], self.config["methods_dir"]
        for name, cfg in self.datasets.items():
            where = f"{datasets_dir}/{name}.yaml"
            if "synthetic" in cfg and cfg["root"] != f"data/{name}":
                raise UserError(f"{where}: a synthetic data set's root must be data/{name}")
            for method in cfg.get("method_overrides", {}):
                self._known(method, self.methods, f"{where}: method_overrides names method", methods_dir)
            if "train_on" in cfg:
                self._known(cfg["train_on"], self.datasets, f"{where}: train_on names data set", datasets_dir)
        for name, cfg in self.methods.items():
            where = f"{methods_dir}/{name}.yaml"
            if "features_from" in cfg:
                self._known(cfg["features_from"], self.methods, f"{where}: features_from names method", methods_dir)
            if "rounds" in cfg:
                self._known(cfg["rounds"]["init"], self.methods, f"{where}: rounds.init names method", methods_dir)
        for table, rows in self.ablations.items():
            for method in rows:
                self._known(method, self.methods, f"config/config.yaml: ablations.{table} names method",
                            methods_dir)

    @staticmethod
    def _known(name: str, known: Mapping[str, Any], what: str, folder: str) -> None:
        if name not in known:
            raise UserError(f"{what} {name!r}, which is not in {folder}/{nearest(name, known)}; "
                            f"expected one of {sorted(known)}")

    def check_target(self, dataset: str, method: str | None = None) -> None:
        """A target's data set and method exist, or one line naming the unknown one and the nearest."""
        self._known(dataset, self.datasets, "unknown data set", self.config["datasets_dir"])
        if method is not None:
            self._known(method, self.methods, "unknown method", self.config["methods_dir"])

    # ------------------------------------------------------------------ runs
    @functools.lru_cache(maxsize=None)
    def run(self, dataset: str, method: str) -> "Run":
        """The (data set, method) run, resolved once."""
        self.check_target(dataset, method)
        return Run(self, dataset, method)

    def root(self, dataset: str) -> str:
        """A data set's root; a missing real data set is one line saying where to put it."""
        cfg = self.datasets[dataset]
        root = cfg["root"]
        if "synthetic" not in cfg and not Path(root).exists():
            raise UserError(f"{root}: data set '{dataset}' ({cfg['kind']} layout) not found; unpack it there "
                            f"in its native layout (see README.md, 'Real data sets')")
        return root

    def frames_params(self, dataset: str) -> str:
        cfg = self.datasets[dataset]
        return as_json({**cfg.get("frames", {}), "reader": cfg.get("reader", {})})

    def synth_params(self, dataset: str) -> str:
        return as_json(self.datasets[dataset]["synthetic"].get("params", {}))

    @functools.lru_cache(maxsize=None)
    def parsing_options(self, dataset: str, source: str) -> dict:
        """Options of parsing source ``source`` on ``dataset``: the ``parsing.<source>`` block of the methods that
        use that source there. One store serves them all, so they must agree."""
        found = {}
        for method in self.methods:
            cfg = self.run(dataset, method).config.get("parsing") or {}
            if cfg.get("source") == source:
                found[method] = cfg.get(source) or {}
        if len({as_json(v) for v in found.values()}) > 1:
            raise UserError(f"results/{dataset}/parsing/{source}.zarr is shared by methods {sorted(found)}, but "
                            f"their parsing.{source} options differ: { {m: found[m] for m in sorted(found)} }")
        return next(iter(found.values()), {})

    def parsing_params(self, dataset: str, source: str) -> str:
        return as_json({"source": source, **self.parsing_options(dataset, source)})

    def external_maps(self, dataset: str, source: str) -> str | list:
        """The external label maps (``parsing.external.path``); inside a data set's root, that root (so that a
        synthetic set's maps wait for its synthesis)."""
        if source != "external":
            return []
        path = self.parsing_options(dataset, source).get("path")
        if not path:
            raise UserError(f"parsing.external.path is not set for data set '{dataset}': name the directory (or "
                            "zarr store) of your parser's label maps in the method file or in the data set's "
                            "method_overrides")
        for name, cfg in self.datasets.items():
            if Path(cfg["root"]) == Path(path) or Path(cfg["root"]) in Path(path).parents:
                return self.root(name)
        return path


class Run:
    """One (data set, method) run: its merged configuration (the method's, then the data set's ``overrides``,
    then its ``method_overrides`` along the method's lineage), its files and its stages' parameters."""

    def __init__(self, catalog: Catalog, dataset: str, method: str):
        self.catalog, self.dataset, self.method = catalog, dataset, method
        self.config = resolve_method(catalog.methods[method], catalog.datasets[dataset], catalog.lineage[method])
        self.train_dataset: str = catalog.datasets[dataset].get("train_on", dataset)
        self.folder = f"results/{dataset}/{method}"
        self.check_blocks()

    def check_blocks(self) -> None:
        """Build every typed block of the configuration once, so that a typo or a value of the wrong type is one
        line when the DAG is planned (a dry run included), not a failure hours into a run."""
        from hspreid.config import typed_config
        from hspreid.data.datasets import AugmentConfig
        from hspreid.data.keypoints import KeypointConfig
        from hspreid.data.parsing_stores import SOURCES
        from hspreid.engine.trainer import TrainConfig
        from hspreid.eval.ranking import RankConfig
        from hspreid.features import FeatureConfig
        from hspreid.parsing import pseudo_label_config
        from hspreid.segmentation.pretrain import split_params

        where = f"{self.method} on {self.dataset}"
        self.train = typed_config(TrainConfig, self.config.get("train"), f"{where}: train")
        for key, cls in (("augment", AugmentConfig), ("features", FeatureConfig), ("rank", RankConfig),
                         ("keypoints", KeypointConfig)):
            if self.config.get(key) is not None:
                typed_config(cls, self.config[key], f"{where}: {key}")
        if "pseudo_labels" in self.config:
            pseudo_label_config(self.config["pseudo_labels"], f"{where}: pseudo_labels")
        self.segmentation_processes = 1
        if self.config.get("segmentation") is not None:
            _, training = split_params(self.config["segmentation"], f"{where}: segmentation")
            self.segmentation_processes = training["nproc_per_node"]
        parsing = self.config.get("parsing") or {}
        for source, options in parsing.items():
            if source in SOURCES:
                typed_config(SOURCES[source], options, f"{where}: parsing.{source}")

    def check_data(self) -> None:
        """Every data set this run reads exists (its own and, for Occluded-REID, the one it trains on), or one
        line naming the missing root."""
        for dataset in dict.fromkeys((self.dataset, self.train_dataset)):
            self.catalog.root(dataset)

    # ------------------------------------------------------------------ files
    @property
    def train_frames(self) -> str:
        return f"results/{self.train_dataset}/frames.zarr"

    @property
    def train_index(self) -> str:
        return f"results/{self.train_dataset}/index.parquet"

    @property
    def model(self) -> str:
        """The trained model this run ranks with: the one trained on its training data set (Occluded-REID
        ranks with ``results/market1501/<method>/model.pt``; no second training)."""
        return f"results/{self.train_dataset}/{self.method}/model.pt"

    @property
    def checkpoint(self) -> str:
        return f"{self.catalog.config['checkpoint_dir']}/{self.dataset}/{self.method}.pt"

    def round_checkpoint(self, r: int) -> str:
        return f"{self.catalog.config['checkpoint_dir']}/{self.dataset}/{self.method}/round{r}.pt"

    @property
    def rounds(self) -> dict:
        return self.config["rounds"]

    def previous_model(self, r: int) -> str:
        """Model round r-1; round 0 starts from the ``rounds.init`` method's trained model."""
        if r == 0:
            return f"results/{self.dataset}/{self.rounds['init']}/model.pt"
        return f"{self.folder}/round{r - 1}/model.pt"

    @property
    def last_round_model(self) -> str:
        return f"{self.folder}/round{self.rounds['count'] - 1}/model.pt"

    @property
    def features_source(self) -> str:
        """The method whose features this run ranks: itself, or ``features_from`` (isp_no_arm ranks isp's)."""
        return self.catalog.methods[self.method].get("features_from", self.method)

    @property
    def ranked_features(self) -> str:
        return f"results/{self.dataset}/{self.features_source}/features.zarr"

    @property
    def ranked_model(self) -> str:
        """The model behind the ranked features (its training curves and part maps go into the pictures)."""
        return self.catalog.run(self.dataset, self.features_source).model

    @functools.cached_property
    def segmenter_owner(self) -> str:
        """The method whose pretrained segmenter this run uses: the first of its lineage (base first) whose
        resolved ``segmentation`` block is the same, so ablations that change only re-ID settings share it."""
        own = self.config.get("segmentation")
        return next(m for m in self.catalog.lineage[self.method]
                    if self.catalog.run(self.dataset, m).config.get("segmentation") == own)

    @property
    def segmenter(self) -> str | list:
        """SS-HSP's pretrained segmenter (stage 1), trained on the data set the method trains on; none for a
        method without a ``segmentation`` block or whose model uses neither parts nor motion (Table 3's Basel)."""
        model = self.config["model"]
        if self.config.get("segmentation") is None or not (model.get("parts", True) or model.get("motion", True)):
            return []
        return f"results/{self.train_dataset}/{self.segmenter_owner}/segmenter.pt"

    @property
    def parsing_source(self) -> str | None:
        return (self.config.get("parsing") or {}).get("source")

    @property
    def train_parsing(self) -> str | list:
        """The parsing store of the training frames when the method names a parsing source (SPReID)."""
        source = self.parsing_source
        return [] if source is None else f"results/{self.train_dataset}/parsing/{source}.zarr"

    @property
    def test_parsing(self) -> str | list:
        """The parsing store of the data set's frames (test frames included) when the method names a source."""
        source = self.parsing_source
        return [] if source is None else f"results/{self.dataset}/parsing/{source}.zarr"

    @property
    def keypoints_root(self) -> str | list:
        """The training data set's root when the method trains with key points (SSN3D semi-supervised)."""
        return [] if self.config.get("keypoints") is None else self.catalog.root(self.train_dataset)

    @property
    def keypoints_file(self) -> str | list:
        """A user's key-point CSV (``keypoints.file``), tracked as an input."""
        return (self.config.get("keypoints") or {}).get("file") or []

    # ------------------------------------------------------------------ processes and resources
    def processes(self, block: str) -> int:
        """Training processes of a torch stage: ``<block>.nproc_per_node`` (``train`` or ``segmentation``)."""
        return self.segmentation_processes if block == "segmentation" else self.train.nproc_per_node

    def launcher(self, block: str) -> str:
        """How the stage is started: ``python``, or ``torchrun`` with one process per GPU (gloo on the CPU)."""
        n = self.processes(block)
        return "python" if n == 1 else f"torchrun --standalone --nproc_per_node {n}"

    def gpus(self, block: str | None = None) -> int:
        """GPUs a torch job asks for: one per process, none where the config says ``device: cpu``."""
        return 0 if self.catalog.config["device"] == "cpu" else (self.processes(block) if block else 1)

    def cpus_per_gpu(self) -> int:
        """CPU cores per GPU on a cluster: torch's threads and the data loader's workers."""
        return int(self.catalog.config["torch_threads"]) + self.train.num_workers

    # ------------------------------------------------------------------ stage parameters
    def train_params(self, round_: int | None = None) -> str:
        params = {k: self.config[k] for k in TRAIN_KEYS if self.config.get(k) is not None}
        if self.segmenter:  # SS-HSP: the pretrained segmenter's path (the train rule's input)
            params["segmenter"] = self.segmenter
        if round_ is not None:  # round r: epochs r*E .. (r+1)*E-1 of one LR schedule
            epochs = self.rounds["epochs"]
            params["train"] = {**params.get("train", {}), "epochs": epochs, "start_epoch": round_ * epochs}
        return as_json(params)

    def segmentation_params(self) -> str:
        return as_json(self.config["segmentation"])

    def pseudo_label_params(self) -> str:
        return as_json(self.config.get("pseudo_labels", {}))

    def features_params(self) -> str:
        return as_json(self.config.get("features", {}))

    def rank_params(self) -> str:
        data = {k: v for k, v in self.catalog.datasets[self.dataset].items()
                if k not in ("overrides", "method_overrides")}
        hashed = {"dataset": data, "method": self.config, "seed": self.catalog.config["seed"]}
        trained_on = {"trained_on": self.train_dataset} if self.train_dataset != self.dataset else {}
        return as_json({**self.config.get("rank", {}), "dataset": self.dataset, "method": self.method,
                        "config_hash": config_hash(hashed), **trained_on})


def _load_folder(folder: Path, schema: Path, extends: bool = False) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """name -> configuration of every folder/*.yaml, validated (after resolving ``extends``), and the lineages."""
    paths = {path.stem: path for path in sorted(folder.glob("*.yaml"))}
    if not paths:
        raise UserError(f"{folder}: no *.yaml files found")
    entries = {name: load_yaml(path) for name, path in paths.items()}
    try:
        entries, lineage = resolve_extends(entries) if extends else (entries, {n: [n] for n in entries})
    except UserError as e:
        raise UserError(f"{folder}: {e}") from None
    for name, entry in entries.items():
        validate(entry, schema, str(paths[name]))
    return entries, lineage
