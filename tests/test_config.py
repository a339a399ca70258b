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


def test_extends_merges_the_base_and_keeps_the_lineage():
    import pytest

    from hspreid.config import resolve_extends
    from hspreid.errors import UserError

    entries = {"hcga": {"model": {"name": "hcga", "gam_t": 4}, "train": {"epochs": 120}},
               "hcga_t2": {"extends": "hcga", "model": {"gam_t": 2}},
               "deep": {"extends": "hcga_t2", "train": {"epochs": 5}}}
    resolved, lineage = resolve_extends(entries)
    assert resolved["hcga_t2"] == {"model": {"name": "hcga", "gam_t": 2}, "train": {"epochs": 120}}
    assert resolved["deep"]["train"]["epochs"] == 5 and resolved["deep"]["model"]["gam_t"] == 2
    assert lineage["deep"] == ["hcga", "hcga_t2", "deep"] and "extends" not in resolved["deep"]
    dataset = {"method_overrides": {"hcga": {"train": {"epochs": 7}}, "hcga_t2": {"model": {"gam_t": 3}}}}
    cfg = resolve_method(resolved["hcga_t2"], dataset, lineage["hcga_t2"])
    assert cfg["train"]["epochs"] == 7 and cfg["model"]["gam_t"] == 3   # base's overrides, then its own
    with pytest.raises(UserError, match="does not exist"):
        resolve_extends({"a": {"extends": "nope"}})
    with pytest.raises(UserError, match="cycle"):
        resolve_extends({"a": {"extends": "b"}, "b": {"extends": "a"}})


def test_typed_config_checks_every_value_against_its_field_type():
    import dataclasses
    from typing import Literal

    import pytest

    from hspreid.config import block_values, typed_config
    from hspreid.errors import UserError

    @dataclasses.dataclass(frozen=True)
    class Inner:
        enabled: bool = False
        lam: float = dataclasses.field(default=0.3, metadata={"key": "lambda"})

    @dataclasses.dataclass(frozen=True)
    class Block:
        epochs: int = 3
        lr: float = 0.1
        area: tuple[float, float] = (0.0, 1.0)
        milestones: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
        mode: Literal["all", "evenly"] = "all"
        path: str | None = None
        mult: dict[str, float] = dataclasses.field(default_factory=dict)
        inner: Inner = Inner()

    cfg = typed_config(Block, {"epochs": 5, "lr": 1, "area": [0.1, 0.2], "inner": {"lambda": 0.5},
                               "mult": {"head": 0}}, "train")
    assert cfg.epochs == 5 and cfg.lr == 1 and cfg.area == [0.1, 0.2] and cfg.inner.lam == 0.5
    assert cfg.mult == {"head": 0}
    assert block_values(cfg)["inner"] == {"enabled": False, "lambda": 0.5}
    for block, line in [({"epochs": "two"}, "train.epochs: expected an integer, got 'two'"),
                        ({"epochs": True}, "train.epochs: expected an integer, got True"),
                        ({"lr": "0.5"}, "train.lr: expected a number, got '0.5'"),
                        ({"area": [0.1]}, "train.area: expected a list, got [0.1]"),
                        ({"milestones": [1, "x"]}, "train.milestones: expected a list, got [1, 'x']"),
                        ({"mode": "every"}, "train.mode: expected 'all' or 'evenly', got 'every'"),
                        ({"path": 3}, "train.path: expected a string or null, got 3"),
                        ({"mult": {"head": "x"}}, "train.mult: expected a mapping of a string to a number, got"),
                        ({"mult": [1]}, "train.mult: expected a mapping of a string to a number, got [1]"),
                        ({"inner": {"enabled": "yes"}}, "train.inner.enabled: expected true or false, got 'yes'"),
                        ({"epoch": 3}, "train: unknown key(s) ['epoch'] (did you mean 'epochs'?)")]:
        with pytest.raises(UserError) as err:
            typed_config(Block, block, "train")
        assert str(err.value).startswith(line), str(err.value)
