"""One reader per data set, each reading the data set's native layout into the frame index.

``read_dataset(kind, root, **options)`` is the entry point; every reader returns the index described in
:mod:`hspreid.data.index` (built with ``finalize_index``), with ``attrs["dataset"]`` and ``attrs["dropped"]``
(counts of what the reader left out: junk ids, empty tracklets, short tracklets, ...).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

import pandas as pd

from hspreid.errors import UserError

from ._common import join_words
from .cuhk03np import read_cuhk03_np
from .duke_video import read_dukemtmc_videoreid
from .ilidsvid_prid import read_ilidsvid, read_prid2011
from .image_folders import read_dukemtmc_reid, read_market1501, read_occluded_duke
from .mars import read_mars
from .mot import read_mot
from .occluded_reid import read_occluded_reid

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "mars": read_mars,
    "ilidsvid": read_ilidsvid,
    "prid2011": read_prid2011,
    "dukemtmc_videoreid": read_dukemtmc_videoreid,
    "market1501": read_market1501,
    "dukemtmc_reid": read_dukemtmc_reid,
    "occluded_duke": read_occluded_duke,
    "occluded_reid": read_occluded_reid,
    "cuhk03_np": read_cuhk03_np,
    "mot": read_mot,
}


def reader_options(kind: str) -> dict[str, object]:
    """The options a reader accepts, with their defaults."""
    params = inspect.signature(READERS[kind]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def read_dataset(kind: str, root: str | Path, **options: object) -> pd.DataFrame:
    """Read the data set of the given kind from its native layout under ``root``; return the frame index.

    An unknown kind or option, a bad option value, or a missing/incomplete layout raise a one-line
    :class:`UserError` naming it and what is allowed or expected.
    """
    if kind not in READERS:
        raise UserError(f"unknown data-set kind {kind!r}; allowed: {join_words(sorted(READERS))}")
    allowed = reader_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        allowed_text = join_words(sorted(allowed)) if allowed else "none"
        raise UserError(f"{kind}: unknown option {unknown[0]!r}; allowed options: {allowed_text}")
    return READERS[kind](root, **options)
