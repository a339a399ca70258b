"""Part quality of SS-HSP's co-part segmenter against training steps, one line per run (e.g. per seed).

    python bench/plot_segmentation_curve.py RUN_DIR [RUN_DIR ...] --out bench/results/ss_hsp_part_curve.png

Each ``RUN_DIR`` holds a ``segmentation.json`` written by the pretrain_segmentation stage with
``quality_every`` set (its ``curve``: the test frames' scores every that many steps, step 0 included). The
figure draws foreground IoU, many-to-one IoU (five regions) and key-point error against steps for every run,
beside the two fixed partitions measured on the same frames: K horizontal stripes and the training frames'
mean layout. The numbers go to a JSON file beside the PNG, and a table of them to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common  # noqa: F401  (puts the repository first on sys.path)

from hspreid.io import write_json

PANELS = (("foreground_iou", "foreground IoU"), ("many_to_one_iou", "many-to-one IoU (regions)"),
          ("keypoint_error", "key-point error (/ height)"))
REFERENCES = (("stripes_", "stripes", "--"), ("layout_", "mean layout", ":"))


def read_run(path: Path) -> dict:
    """A run's curve, seed and fixed-partition scores from its ``segmentation.json``."""
    summary = json.loads((path / "segmentation.json").read_text())
    if not summary.get("curve"):
        raise SystemExit(f"{path / 'segmentation.json'}: no curve (run the stage with quality_every set)")
    return {"run": path.name, "seed": summary.get("seed"), "params": summary["params"], "curve": summary["curve"],
            "references": {label: {key: summary.get(prefix + key) for key, _ in PANELS}
                           for prefix, label, _ in REFERENCES}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="folders holding a segmentation.json with a curve")
    ap.add_argument("--out", type=Path, default=Path("bench/results/ss_hsp_part_curve.png"))
    ap.add_argument("--title", default="SS-HSP stage 1 on synth_mars: part quality of the test frames")
    args = ap.parse_args(argv)
    runs = [read_run(path) for path in args.runs]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), constrained_layout=True)
    for ax, (key, label) in zip(axes, PANELS):
        for run in runs:
            steps = [point["step"] for point in run["curve"]]
            ax.plot(steps, [point[key] for point in run["curve"]], marker="o", ms=3, label=run["run"])
        for prefix, name, style in REFERENCES:
            value = runs[0]["references"][name][key]
            if value is not None:
                ax.axhline(value, color="grey", ls=style, lw=1, label=name)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(args.title, fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    write_json(args.out.with_suffix(".json"), {"runs": runs})

    header = ["step"] + [f"{run['run']} {key}" for key, _ in PANELS for run in runs]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for i, point in enumerate(runs[0]["curve"]):
        cells = [str(point["step"])] + [
            "" if i >= len(run["curve"]) or run["curve"][i][key] is None else f"{run['curve'][i][key]:.3f}"
            for key, _ in PANELS for run in runs]
        print("| " + " | ".join(cells) + " |")
    for _, name, _ in REFERENCES:
        print(name, {key: runs[0]["references"][name][key] for key, _ in PANELS})
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
