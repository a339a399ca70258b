"""Pieces shared by the benchmark scripts of this folder.

The benchmarks are scripts, not a package: ``python bench/<name>.py`` puts this folder first on
``sys.path``, so they ``import _common``. Importing it puts the repository first on ``sys.path``
too, so that ``hspreid`` is this checkout's.

* :class:`Size`, :func:`make_features`, :func:`save_arrays`, :func:`load_labels` -- synthetic
  features with identity + camera structure (so that mAP is non-trivial) and their labels;
* :class:`Measurement` -- seconds and peak RSS increase of one call in a worker process (Linux:
  the kernel's peak counter is reset through ``/proc/self/clear_refs``, then ``VmHWM`` minus the
  RSS at the reset; elsewhere ``ru_maxrss``, where earlier peaks can hide part of the increase);
* :func:`run_in_subprocess` / :func:`emit` -- the worker protocol: the parent runs
  ``python <script> <worker args>`` in a fresh process and reads the JSON dict that the worker
  printed as its last line of stdout;
* :func:`runtime_line` -- torch / numpy versions, device and threads, a report's first line.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LABEL_KEYS = ("q_pids", "g_pids", "q_camids", "g_camids")


# ----------------------------------------------------------------------------- synthetic data
@dataclass(frozen=True)
class Size:
    name: str
    num_q: int
    num_g: int
    num_ids: int
    num_cams: int = 6
    distractor_frac: float = 0.0

    def describe(self) -> str:
        """``"<name>: Q queries x G gallery, N ids"``, the start of a result table's title."""
        return f"{self.name}: {self.num_q} queries x {self.num_g} gallery, {self.num_ids} ids"


def make_features(size: Size, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 ``qf``, ``gf`` (identity centre + camera offset + noise; distractors, pid 0, a
    ``distractor_frac`` of the gallery, get a centre of their own) and the labels (``LABEL_KEYS``)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((size.num_ids + 1, dim)).astype(np.float32)
    cam_offsets = rng.standard_normal((size.num_cams, dim)).astype(np.float32)

    def sample(pids: np.ndarray, cams: np.ndarray) -> np.ndarray:
        base = centers[pids]
        base[pids == 0] = rng.standard_normal((int((pids == 0).sum()), dim))
        noise = rng.standard_normal((len(pids), dim)).astype(np.float32)
        return (base + 0.6 * cam_offsets[cams] + 2.0 * noise).astype(np.float32)

    g_pids = rng.integers(1, size.num_ids + 1, size=size.num_g)
    g_pids[rng.random(size.num_g) < size.distractor_frac] = 0  # pid 0: distractors
    g_camids = rng.integers(0, size.num_cams, size=size.num_g)
    q_pids = rng.integers(1, size.num_ids + 1, size=size.num_q)
    q_camids = rng.integers(0, size.num_cams, size=size.num_q)
    qf = sample(q_pids, q_camids)
    gf = sample(g_pids, g_camids)
    return {"qf": qf, "gf": gf, "q_pids": q_pids, "g_pids": g_pids, "q_camids": q_camids, "g_camids": g_camids}


def save_arrays(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array as ``out/<key>.npy``, for the worker processes to load."""
    for key, value in arrays.items():
        np.save(out / f"{key}.npy", value)


def load_labels(data: Path) -> list[np.ndarray]:
    """``[q_pids, g_pids, q_camids, g_camids]`` as written by :func:`save_arrays`."""
    return [np.load(data / f"{key}.npy") for key in LABEL_KEYS]


# ----------------------------------------------------------------------------- peak RSS, time
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5) and return the current RSS in MB;
    falls back to ``ru_maxrss`` (then earlier peaks can hide part of the increase)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mb() -> float:
    """Peak RSS in MB: ``VmHWM`` (follows the reset; ``ru_maxrss`` of a forked-then-exec'd child
    also carries the parent's size at fork time), else ``ru_maxrss``."""
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class Measurement:
    """Made right before the measured call: resets the peak-RSS counter, then starts the clock."""

    def __init__(self) -> None:
        self.base_mb = reset_peak_rss()
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.t0

    def peak_mb(self) -> float:
        """The process's peak RSS (MB) since the start."""
        return peak_rss_mb()

    def peak_increase_mb(self) -> float:
        """Peak RSS since the start minus the RSS at the start (MB)."""
        return peak_rss_mb() - self.base_mb


# ----------------------------------------------------------------------------- worker protocol
def run_in_subprocess(script: str, *args: str) -> dict:
    """Run ``python script *args`` in a fresh process; return the JSON dict of its last stdout line.
    A failed worker raises ``subprocess.CalledProcessError`` (its ``stderr`` attached)."""
    proc = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_worker(script: str, kind: str, *args: str) -> dict:
    """:func:`run_in_subprocess`, but a failed worker prints its stderr and stops the benchmark
    naming ``kind``."""
    try:
        return run_in_subprocess(script, *args)
    except subprocess.CalledProcessError as failed:
        sys.stderr.write(failed.stderr)
        raise SystemExit(f"worker {kind} failed") from None


def emit(result: dict) -> None:
    """The worker's side: print ``result`` as the JSON line :func:`run_in_subprocess` reads."""
    print(json.dumps(result))


# ----------------------------------------------------------------------------- devices
def add_device_option(ap) -> None:
    """``--device cpu|cuda|all`` (default all: the CPU, and CUDA when available)."""
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"],
                    help="all: the CPU, and CUDA when available")


def chosen_devices(choice: str) -> list[str]:
    """The devices ``--device choice`` names that this machine has; ``cuda`` without CUDA stops the run."""
    import torch

    if choice != "all":
        if choice == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available")
        return [choice]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


# ----------------------------------------------------------------------------- report
def runtime_line(device: str, threads: int) -> str:
    """``"torch V, numpy V; ours on DEVICE with N torch thread(s)"`` (``threads`` 0: torch's default)."""
    import torch

    threads = threads or torch.get_num_threads()
    return f"torch {torch.__version__}, numpy {np.__version__}; ours on {device} with {threads} torch thread(s)"
