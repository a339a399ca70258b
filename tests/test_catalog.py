"""Run resolution (hspreid.catalog): what a (data set, method) run reads, writes and passes to its stages."""
import json
from pathlib import Path

import pytest
import yaml

from hspreid.catalog import Catalog
from hspreid.errors import UserError

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow/schemas"

DATASETS = {
    "synth": {"kind": "mars", "modality": "video", "root": "data/synth", "synthetic": {"layout": "mars"},
              "overrides": {"train": {"epochs": 4}},
              "method_overrides": {"ss": {"segmentation": {"steps": 10}},
                                   "spreid": {"parsing": {"external": {"path": "data/synth/masks"}}}}},
    "market": {"kind": "market1501", "modality": "image", "root": "data/market"},
    "occluded": {"kind": "occluded_reid", "modality": "image", "root": "data/occluded", "train_on": "market"},
}
METHODS = {
    "baseline": {"model": {"name": "baseline"}, "train": {"epochs": 120, "lr": 3.5e-4}},
    "isp": {"model": {"name": "isp"}, "rounds": {"count": 3, "epochs": 10, "init": "baseline"},
            "pseudo_labels": {"num_parts": 7}},
    "ss": {"model": {"name": "ss_hsp"}, "segmentation": {"steps": 300}},
    "ss_basel": {"extends": "ss", "model": {"parts": False, "motion": False}},
    "ss_no_tri": {"extends": "ss", "losses": {"id": {}}},
    "ss_no_geo": {"extends": "ss", "segmentation": {"lambda_geo": 0}},
    "spreid": {"model": {"name": "spreid"}, "parsing": {"source": "external", "external": {"table": "lip"}}},
    "isp_no_arm": {"extends": "isp", "features_from": "isp"},
}


def write_config(tmp_path: Path, datasets=DATASETS, methods=METHODS, **config) -> dict:
    for folder, entries in (("datasets", datasets), ("methods", methods)):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name, entry in entries.items():
            (tmp_path / folder / f"{name}.yaml").write_text(yaml.safe_dump(entry))
    return {"datasets_dir": str(tmp_path / "datasets"), "methods_dir": str(tmp_path / "methods"), **config}


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for root in ("data/market", "data/occluded"):
        (tmp_path / root).mkdir(parents=True)
    return Catalog.load(write_config(tmp_path), SCHEMAS)


def test_load_fills_schema_defaults_and_lists_the_kinds_of_method(catalog):
    assert catalog.config["seed"] == 0 and catalog.config["torch_threads"] == 2
    assert catalog.datasets["market"]["reader"] == {}                    # a schema default, filled in
    assert catalog.synthetic == ["synth"] and catalog.round_methods == ["isp", "isp_no_arm"]
    assert "baseline" in catalog.plain_methods and "isp" not in catalog.plain_methods


def test_config_merges_method_then_overrides_then_method_overrides_along_the_lineage(catalog):
    run = catalog.run("synth", "ss_no_tri")
    assert run.config["train"] == {"epochs": 4}                          # the data set's overrides
    assert run.config["segmentation"] == {"steps": 10}                   # method_overrides of the base ss
    assert catalog.run("synth", "ss_no_tri") is run                      # resolved once


def test_train_params_rounds_continue_one_schedule(catalog):
    run = catalog.run("market", "isp")
    assert run.previous_model(0) == "results/market/baseline/model.pt"
    assert run.previous_model(2) == "results/market/isp/round1/model.pt"
    assert run.last_round_model == "results/market/isp/round2/model.pt"
    assert json.loads(run.train_params(2))["train"] == {"epochs": 10, "start_epoch": 20}
    assert catalog.run("market", "isp_no_arm").ranked_features == "results/market/isp/features.zarr"


def test_segmenter_is_shared_by_ablations_that_keep_the_segmentation_block(catalog):
    assert catalog.run("synth", "ss_no_tri").segmenter == "results/synth/ss/segmenter.pt"
    assert catalog.run("synth", "ss_no_geo").segmenter == "results/synth/ss_no_geo/segmenter.pt"
    assert catalog.run("synth", "ss_basel").segmenter == []                 # neither parts nor motion
    assert json.loads(catalog.run("synth", "ss").train_params())["segmenter"] == "results/synth/ss/segmenter.pt"


def test_a_train_on_set_ranks_with_the_model_of_the_set_it_trains_on(catalog):
    run = catalog.run("occluded", "baseline")
    assert run.model == "results/market/baseline/model.pt" and run.train_frames == "results/market/frames.zarr"
    assert json.loads(run.rank_params())["trained_on"] == "market"
    assert "trained_on" not in json.loads(catalog.run("market", "baseline").rank_params())


def test_parsing_stores_and_the_external_maps_of_a_synthetic_set(catalog):
    run = catalog.run("synth", "spreid")
    assert run.train_parsing == run.test_parsing == "results/synth/parsing/external.zarr"
    assert catalog.external_maps("synth", "external") == "data/synth"      # waits for the synthesis
    assert json.loads(catalog.parsing_params("synth", "external")) == {
        "source": "external", "path": "data/synth/masks", "table": "lip"}
    with pytest.raises(UserError, match="parsing.external.path is not set for data set 'market'"):
        catalog.external_maps("market", "external")


def test_a_missing_real_data_set_names_where_it_must_be(catalog):
    assert catalog.root("market") == "data/market"
    catalog.datasets["market"]["root"] = "data/nowhere"
    with pytest.raises(UserError, match="data/nowhere: data set 'market' .* not found; unpack it there"):
        catalog.root("market")


def test_a_run_checks_every_data_set_it_reads(catalog):
    catalog.run("occluded", "baseline").check_data()
    catalog.datasets["market"]["root"] = "data/nowhere"                   # Occluded-REID trains on Market-1501
    with pytest.raises(UserError, match="data/nowhere: data set 'market' .* not found"):
        catalog.run("occluded", "baseline").check_data()


def test_unknown_names_are_one_line_with_the_nearest(catalog, tmp_path):
    with pytest.raises(UserError, match=r"unknown method 'basline', .* \(did you mean 'baseline'\?\)"):
        catalog.run("synth", "basline")
    with pytest.raises(UserError, match=r"unknown data set 'synt', .* \(did you mean 'synth'\?\)"):
        catalog.run("synt", "baseline")
    bad = {**DATASETS, "market": {**DATASETS["market"], "method_overrides": {"basline": {}}}}
    with pytest.raises(UserError, match=r"market.yaml: method_overrides names method 'basline'.*did you mean 'baseline'"):
        Catalog.load(write_config(tmp_path, datasets=bad), SCHEMAS)


@pytest.mark.parametrize("override, line", [
    ({"train": {"epochs": "two"}}, "baseline on market: train.epochs: expected an integer, got 'two'"),
    ({"augment": {"flip": "0.5"}}, "baseline on market: augment.flip: expected a number, got '0.5'"),
    ({"rank": {"rerank": {"k3": 1}}}, "baseline on market: rank.rerank: unknown key(s) ['k3']"),
])
def test_a_bad_block_is_caught_when_the_run_is_resolved(tmp_path, monkeypatch, override, line):
    monkeypatch.chdir(tmp_path)
    bad = {**DATASETS, "market": {**DATASETS["market"], "overrides": override}}
    catalog = Catalog.load(write_config(tmp_path, datasets=bad), SCHEMAS)
    with pytest.raises(UserError) as err:
        catalog.run("market", "baseline")
    assert str(err.value).startswith(line)


def test_schema_violations_name_the_file_and_the_key(tmp_path):
    bad = {**DATASETS, "market": {**DATASETS["market"], "frames": {"height": "tall"}}}
    with pytest.raises(UserError, match=r"market.yaml: frames.height: 'tall' is not of type 'integer'"):
        Catalog.load(write_config(tmp_path, datasets=bad), SCHEMAS)
