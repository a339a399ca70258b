"""The shared stage skeleton: parameters, config typos, and torch's thread count."""
from __future__ import annotations

import pytest
import torch

from hspreid.config import check_keys
from hspreid.errors import UserError
from hspreid.stage import parse_params, run_stage, stage_parser


def test_params_must_be_a_json_object():
    assert parse_params('{"a": 1}') == {"a": 1}
    with pytest.raises(UserError, match="not valid JSON"):
        parse_params("{a: 1}")
    with pytest.raises(UserError, match="must be a JSON object"):
        parse_params("[1]")


def test_a_config_typo_names_the_key_the_nearest_and_the_allowed_ones():
    with pytest.raises(UserError, match=r"train: unknown key\(s\) \['epoch'\] \(did you mean 'epochs'\?\); "
                                        r"expected some of \['epochs', 'lr'\]"):
        check_keys({"epoch": 3}, {"epochs", "lr"}, "train")


def test_run_stage_sets_torch_threads_from_the_argument():
    before = torch.get_num_threads()
    seen = []
    try:
        args = stage_parser("x", torch_threads=True).parse_args(["--torch-threads", "1"])
        assert run_stage("x", args, lambda: seen.append(torch.get_num_threads())) == 0
        assert seen == [1]
        args = stage_parser("x", torch_threads=True).parse_args(["--torch-threads", "3"])
        assert run_stage("x", args, lambda: seen.append(torch.get_num_threads())) == 0
        assert seen == [1, 3]
    finally:
        torch.set_num_threads(before)


def test_run_stage_turns_a_bad_thread_count_into_one_line(tmp_path):
    log_file = tmp_path / "x.log"
    args = stage_parser("x", torch_threads=True).parse_args(["--torch-threads", "0", "--log-file", str(log_file)])
    assert run_stage("x", args, lambda: pytest.fail("the body must not run")) == 1
    assert "x failed: --torch-threads must be a positive integer, got 0" in log_file.read_text()


def test_stages_without_torch_have_no_thread_option():
    assert not hasattr(stage_parser("x").parse_args([]), "torch_threads")
