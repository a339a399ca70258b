"""The pseudo-label options have one source of defaults: the option dataclasses, read by the stage and the
library alike."""
import dataclasses
import inspect

import pytest

from hspreid.config import block_values
from hspreid.errors import UserError
from hspreid.parsing import (CoparseOptions, KMeansOptions, PseudoLabelConfig, cascaded_part_labels,
                             coparse_identities, coparse_part_labels, label_identities, pseudo_label_config)


@pytest.mark.parametrize("function, options", [(cascaded_part_labels, KMeansOptions), (label_identities, KMeansOptions),
                                               (coparse_part_labels, CoparseOptions),
                                               (coparse_identities, CoparseOptions)])
def test_the_library_takes_its_defaults_from_the_dataclass(function, options):
    params = inspect.signature(function).parameters
    assert params["options"].default == options()
    fields = {f.name for f in dataclasses.fields(options)}
    assert not fields & set(params), f"{function.__name__} repeats option(s) {fields & set(params)}"


@pytest.mark.parametrize("block, options", [({}, KMeansOptions()), ({"mode": "coparse"}, CoparseOptions()),
                                            ({"mode": "kmeans", "iters": 5}, KMeansOptions(iters=5))])
def test_the_stage_reads_the_same_dataclasses(block, options):
    common, got = pseudo_label_config(block)
    assert got == options and common == PseudoLabelConfig(**{k: v for k, v in block.items() if k == "mode"})
    assert block_values(got) == block_values(options)


def test_isp_sharpens_by_default_as_the_reference_code():
    assert KMeansOptions().sharpen is True


@pytest.mark.parametrize("block, line", [
    ({"mode": "kmeans", "min_labels": 3}, "pseudo_labels (mode kmeans): unknown key(s) ['min_labels']"),
    ({"mode": "coparse", "lambda_local": "2"}, "pseudo_labels (mode coparse).lambda_local: expected a number"),
    ({"mode": "mean-shift"}, "pseudo_labels.mode: expected 'kmeans' or 'coparse'"),
    ({"num_parts": 7.5}, "pseudo_labels.num_parts: expected an integer"),
])
def test_a_bad_block_is_one_line(block, line):
    with pytest.raises(UserError) as err:
        pseudo_label_config(block)
    assert str(err.value).startswith(line)
