"""CUHK03-NP (Zhong et al. CVPR'17, 767/700 split), Market-style release ``{labeled,detected}/<folders>``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import choice_option
from .image_folders import read_image_folders

VARIANTS = ("labeled", "detected")


def read_cuhk03_np(root: str | Path, *, variant: str = "labeled") -> pd.DataFrame:
    """CUHK03-NP from ``root/<variant>/{bounding_box_train,query,bounding_box_test}``; variant in ``attrs``.

    The default is ``labeled`` (fast-reid's; torchreid defaults to ``detected``): report which one was used.
    """
    variant = choice_option("cuhk03_np", "variant", variant, VARIANTS)
    df = read_image_folders(root, f"CUHK03-NP ({variant})", "cuhk03_np", sub=variant)
    df.attrs["variant"] = variant
    return df
