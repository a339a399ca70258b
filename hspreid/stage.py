"""What every CLI stage shares: the argument parser skeleton, parameter loading and a run wrapper.

A stage module in ``stages/`` exposes ``main(argv=None) -> int``; it builds its parser with
:func:`stage_parser`, and wraps its body in :func:`run_stage` so that an expected error (bad input,
a config typo) ends in one clear log line and exit status 1 instead of a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

from hspreid.errors import UserError
from hspreid.io import setup_logging

log = logging.getLogger("hspreid")


def stage_parser(description: str, torch_threads: bool = False) -> argparse.ArgumentParser:
    """The shared options; ``torch_threads`` adds ``--torch-threads`` for stages that compute with torch."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", default="{}",
                   help="the stage's parameters as a JSON object (Snakemake passes the rule's params)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    if torch_threads:
        p.add_argument("--torch-threads", type=int, default=2,
                       help="torch's CPU threads; CPU results are bitwise reproducible for a fixed value "
                            "(reductions split by thread count), so it is set explicitly, not from --cores")
    p.add_argument("--log-file", default=None, help="also append log lines to this file")
    return p


def parse_params(text: str) -> dict[str, Any]:
    """Parse ``--params``: a JSON object, or ``@path`` to a JSON file."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--params is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise UserError("--params must be a JSON object")
    return params


def use_torch_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (``None``: leave torch's default); a value below 1 is a user error."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--torch-threads must be a positive integer, got {threads}")
    import torch  # noqa: PLC0415  (heavy)

    torch.set_num_threads(threads)


def run_stage(name: str, args: argparse.Namespace, body: Callable[[], dict | None]) -> int:
    """Set up logging and torch's threads, run ``body`` and turn user errors into one line and exit status 1.

    Under torchrun only rank 0 logs progress (to stderr and the rule's log); the other ranks log warnings to
    stderr."""
    if int(os.environ.get("RANK", "0")) == 0:
        setup_logging(args.log_file)
    else:
        setup_logging(None, logging.WARNING)
    import torch  # noqa: PLC0415  (heavy; only here to log its version)

    t0 = time.monotonic()
    try:
        use_torch_threads(getattr(args, "torch_threads", None))
        log.info("stage %s starting (python %s, torch %s, seed %s, %d torch threads)", name,
                 platform.python_version(), torch.__version__, getattr(args, "seed", None), torch.get_num_threads())
        body()
    except (UserError, FileNotFoundError) as e:
        log.error("%s failed: %s", name, e)
        return 1
    log.info("stage %s done in %.1f s", name, time.monotonic() - t0)
    return 0
