"""Query/gallery construction per evaluation protocol.

* ``official``: the gallery is every test item flagged ``gallery`` by the reader. For MARS that is
  all test tracklets, queries included (the official MATLAB protocol; the query itself is then
  junk as same id + same camera). For image data sets queries are not in the gallery anyway.
* ``torchreid``: queries removed from the gallery (torchreid / Video-Person-ReID on MARS; leaves
  140 MARS queries without a true match, which are skipped).
"""
from __future__ import annotations

import numpy as np

from hspreid.errors import UserError

PROTOCOLS = ("official", "torchreid")


def split_query_gallery(query: np.ndarray, gallery: np.ndarray, protocol: str = "official") -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the queries and of the gallery under ``protocol``."""
    query, gallery = np.asarray(query, bool), np.asarray(gallery, bool)
    if protocol == "official":
        g = gallery
    elif protocol == "torchreid":
        g = gallery & ~query
    else:
        raise UserError(f"rank.protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    q_idx, g_idx = np.flatnonzero(query), np.flatnonzero(g)
    if not len(q_idx) or not len(g_idx):
        raise UserError(f"protocol {protocol!r} leaves {len(q_idx)} queries and {len(g_idx)} gallery items")
    return q_idx, g_idx
