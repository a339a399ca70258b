"""The feature store ``features.zarr``: embeddings of every test tracklet and their labels.

Embeddings (float32, or float16 on disk) are those the model outputs (``global``, ``foreground``, ``parts``
[N, K, D], bool ``visible`` [N, K] ...); label arrays are ``pid, camid, query, gallery, tracklet, num_frames``.
Attrs name the embeddings, the row count and the extraction's settings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hspreid.errors import UserError
from hspreid.io import atomic_dir

LABEL_KEYS = ("pid", "camid", "query", "gallery", "tracklet", "num_frames")


def write_features(out: str | Path, feats: dict[str, np.ndarray], *, dtype: str = "float32", attrs: dict) -> None:
    """Write ``features.zarr`` atomically: embeddings (float32 or float16) and label arrays, with attrs."""
    import zarr

    if dtype not in ("float32", "float16"):
        raise UserError(f"features.dtype: expected float32 or float16, got {dtype!r}")
    with atomic_dir(Path(out)) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        embeddings = []
        for name, value in feats.items():
            if name not in LABEL_KEYS:
                if value.dtype.kind == "f":
                    value = value.astype(dtype)
                embeddings.append(name)
            rows = max(1, (4 << 20) // max(value[:1].nbytes, 1))
            group.create_array(name, data=value, chunks=(min(rows, len(value)),) + value.shape[1:])
        group.attrs.update({**attrs, "embeddings": embeddings, "count": int(len(feats["pid"]))})


def read_features(path: str | Path, rows: np.ndarray | None = None, names: "list[str] | None" = None,
                  upcast: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of ``features.zarr`` (embeddings as float32 unless ``upcast=False``) and its attrs.

    ``names`` limits which arrays are read (default: all); ``rows`` reads only those rows, so a
    caller that needs the query and the gallery rows never holds the whole store twice.
    """
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise UserError(f"{path}: not a feature store (run the extract_features stage first)")
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    feats = {}
    for name in names if names is not None else list(attrs["embeddings"]) + list(LABEL_KEYS):
        arr = group[name]
        value = arr[...] if rows is None else arr.oindex[(np.asarray(rows, dtype=np.int64),)]
        feats[name] = value.astype(np.float32, copy=False) if upcast and value.dtype.kind == "f" else value
    return feats, attrs
