"""Small I/O helpers every stage uses: atomic outputs, logging into the rule's log, progress lines, JSON."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("hspreid")

# Snakemake drops a `.snakemake_timestamp` file into directory() outputs; zarr warns about it when listing.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp")


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log timestamped lines to stderr and, when given, to ``log_file`` (the rule's ``log:``)."""
    root = logging.getLogger("hspreid")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.propagate = False
    return root


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``path`` only if the block succeeds.

    A killed job leaves ``<path>.tmp`` behind, never a ``path`` that looks complete.
    """
    path = Path(path)
    tmp = _tmp_sibling(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling file path; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected a JSON file, found nothing")
    return json.loads(path.read_text())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Progress:
    """Periodic progress lines (done/total, rate, ETA) for logs, where a tqdm bar would be one huge line."""

    def __init__(self, total: int, what: str, every_s: float = 10.0, logger: logging.Logger = log):
        self.total, self.what, self.every_s, self.log = total, what, every_s, logger
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        if n <= 0:
            return
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.log.info("%s: %d/%d (%.1f/s, ETA %.0f s)", self.what, self.done, self.total, rate, eta)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0
