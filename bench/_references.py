"""Literal re-implementations of the peer toolboxes' code that the benchmarks measure ours against.

* :func:`eval_market1501_reference` -- torchreid ``metrics/rank.py::eval_market1501`` (Python path:
  full ``np.argsort`` of the Q x G matrix, per-query loop) plus fast-reid's mINP lines; its one copy is
  ``tests/eval/_reference_rank.py``, the oracle the end-to-end test checks ``metrics.json`` against;
* :func:`torchreid_re_ranking`, :func:`reference_from_features` -- torchreid ``utils/rerank.py::
  re_ranking`` (dense numpy, per-item loops). Its one copy is ``tests/eval/_reference_rerank.py``,
  the oracle that the tests check ``hspreid.eval.rerank`` against, so that the tests stand on their
  own and the benchmark measures exactly the code the tests trust; it is imported from there.
"""
from __future__ import annotations

import sys

from _common import REPO

if str(REPO / "tests" / "eval") not in sys.path:
    sys.path.insert(0, str(REPO / "tests" / "eval"))

from _reference_rank import eval_market1501_reference  # noqa: E402
from _reference_rerank import reference_from_features, torchreid_re_ranking  # noqa: E402

__all__ = ["eval_market1501_reference", "reference_from_features", "torchreid_re_ranking"]
