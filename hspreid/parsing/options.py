"""The pseudo-label options, one frozen dataclass per block: the only place their defaults are written.

A method's ``pseudo_labels`` block is flat: :class:`PseudoLabelConfig`'s keys (the mode, K, how many frames
are embedded at a time) and the chosen mode's options, :class:`KMeansOptions` (ISP) or :class:`CoparseOptions`
(HCGA). :func:`pseudo_label_config` splits and checks it; the library functions take the options objects.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from hspreid.config import typed_config
from hspreid.errors import UserError

INITS = ("kmeans++", "random", "deterministic")
FOREGROUND_RULES = ("activation", "centre")
BORDER_RULES = ("reference", "border_half", "ring_share")
SPLITS = ("structure", "mean")
LAYER1_MODES = ("auto", "conv", "kernel")
GROUPINGS = ("auto", "grouped", "split")


def _at_least(owner: str, **values: int) -> None:
    for key, (value, low) in values.items():
        if value < low:
            raise UserError(f"{owner}: {key} must be >= {low}, got {value!r}")


@dataclass(frozen=True)
class KMeansOptions:
    """ISP §3.2: cascaded k-means per identity (see :mod:`hspreid.parsing.pseudo_labels`)."""

    sharpen: bool = True               # activation through sigmoid(10 a - 2), the reference's ENHANCED flag
    foreground: Literal["activation", "centre"] = "activation"   # which 2-means cluster is the person
    iters: int = 20                    # full-data Lloyd iterations (the reference's 20)
    init: Literal["kmeans++", "random", "deterministic"] = "kmeans++"
    spherical: bool = False            # cosine k-means instead of the paper's euclidean on unit vectors
    init_sample: int | None = 4096     # seeds drawn from at most this many foreground pixels (None: all)
    n_init: int = 4                    # k-means++ seedings per identity; the best on the subsample starts Lloyd
    init_points_per_part: int = 64     # that subsample: at most this many foreground pixels per part
    ids_per_batch: int = 64            # identities clustered together
    max_points: int | None = None      # cap on a batch's padded pixels

    def __post_init__(self) -> None:
        _at_least("k-means", iters=(self.iters, 0), ids_per_batch=(self.ids_per_batch, 1), n_init=(self.n_init, 1),
                  init_points_per_part=(self.init_points_per_part, 1))
        if self.init not in INITS:
            raise UserError(f"k-means: init must be one of {INITS}, got {self.init!r}")
        if self.foreground not in FOREGROUND_RULES:
            raise UserError(f"k-means: foreground must be one of {FOREGROUND_RULES}, got {self.foreground!r}")
        if self.max_points is not None:
            _at_least("k-means", max_points=(self.max_points, 1))
        if self.init_sample is not None:
            _at_least("k-means", init_sample=(self.init_sample, 1))


@dataclass(frozen=True)
class CoparseOptions:
    """HCGA §III.B: per-identity co-parsing (see :mod:`hspreid.parsing.coparse`)."""

    min_labels: int = 18               # stop below this many distinct labels (Algorithm 1 line 8)
    max_steps: int = 32
    lambda_local: float = 2.0          # eq. 5's weights
    lambda_back: float = 1.0
    lr: float = 0.1                    # SGD
    momentum: float = 0.9
    hidden: int = 64                   # decoder widths (the reference's MyNet)
    out_channels: int = 32
    p: Literal[1, 2] = 1               # p-norm of eqs. 2 and 4
    window: int = 3                    # R of eq. 2
    local_diagonals: bool = True
    rule: Literal["reference", "border_half", "ring_share"] = "reference"   # CPLR's background rule
    split: Literal["structure", "mean"] | None = None           # CPLR's parts (None: structure for 4, else mean)
    ids_per_batch: int = 16
    layer1: Literal["auto", "conv", "kernel"] = "auto"          # the first conv's exact form
    grouping: Literal["auto", "grouped", "split"] = "auto"

    def __post_init__(self) -> None:
        _at_least("co-parsing", min_labels=(self.min_labels, 1), max_steps=(self.max_steps, 1),
                  hidden=(self.hidden, 1), out_channels=(self.out_channels, 2), ids_per_batch=(self.ids_per_batch, 1))
        if self.out_channels > 256:
            raise UserError(f"co-parsing: out_channels must be <= 256 (labels are stored as uint8), "
                            f"got {self.out_channels!r}")
        for key in ("lambda_local", "lambda_back", "lr"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserError(f"co-parsing: {key} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"co-parsing: momentum must be in [0, 1), got {self.momentum!r}")
        if self.p not in (1, 2):
            raise UserError(f"co-parsing: p must be 1 or 2 (the p-norm of HCGA eqs. 2 and 4), got {self.p!r}")
        if self.window < 1 or self.window % 2 == 0:
            raise UserError(f"co-parsing: window (R of HCGA eq. 2) must be an odd int >= 1, got {self.window!r}")
        for key, allowed in (("rule", BORDER_RULES), ("layer1", LAYER1_MODES), ("grouping", GROUPINGS)):
            if getattr(self, key) not in allowed:
                raise UserError(f"co-parsing: {key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.split is not None and self.split not in SPLITS:
            raise UserError(f"co-parsing: split must be one of {SPLITS} or None, got {self.split!r}")

    def split_for(self, num_parts: int) -> str:
        """The part split rule for ``num_parts``: ``split``, or "structure" for 4 parts and "mean" otherwise."""
        if self.split is None:
            return "structure" if num_parts == 4 else "mean"
        if self.split == "structure" and num_parts != 4:
            raise UserError(f"co-parsing: split='structure' (head/upper/lower) needs num_parts=4, got "
                            f"num_parts={num_parts}; use split='mean'")
        return self.split


MODES: dict[str, type] = {"kmeans": KMeansOptions, "coparse": CoparseOptions}


@dataclass(frozen=True)
class PseudoLabelConfig:
    """The keys of a ``pseudo_labels`` block that every mode shares."""

    mode: Literal["kmeans", "coparse"] = "kmeans"
    num_parts: int = 7                 # K: the background and K-1 parts
    frames_per_batch: int = 128        # frames embedded by the model at a time


def pseudo_label_config(block: Mapping[str, Any] | None,
                        where: str = "pseudo_labels") -> tuple[PseudoLabelConfig, KMeansOptions | CoparseOptions]:
    """A ``pseudo_labels`` block -> (its shared keys, the chosen mode's options); a typo, a wrong type or a key
    of the other mode is one line naming it."""
    block = dict(block or {})
    shared = {f.name for f in dataclasses.fields(PseudoLabelConfig)}
    common = typed_config(PseudoLabelConfig, {k: v for k, v in block.items() if k in shared}, where)
    options = typed_config(MODES[common.mode], {k: v for k, v in block.items() if k not in shared},
                           f"{where} (mode {common.mode})")
    return common, options
