from hspreid.config import config_hash, deep_merge, resolve_method


def test_deep_merge_and_resolution_order():
    method = {"model": {"backbone": "resnet50", "last_stride": 1}, "train": {"epochs": 120}}
    dataset = {"overrides": {"model": {"backbone": "resnet18"}, "train": {"epochs": 16}},
               "method_overrides": {"m": {"train": {"epochs": 3}}}}
    cfg = resolve_method(method, dataset, "m")
    assert cfg == {"model": {"backbone": "resnet18", "last_stride": 1}, "train": {"epochs": 3}}
    assert resolve_method(method, dataset, "other")["train"]["epochs"] == 16
    assert method["model"]["backbone"] == "resnet50"  # inputs untouched
    assert deep_merge({"a": {"b": 1}}, {"a": 2}) == {"a": 2}


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
