"""Pictures to look at after a run: CMC curves, ranked lists (with part-parsing overlays), label colours.

* :data:`PART_PALETTE` -- RGB colours for part label maps (0 background black, 1..5 head, upper
  body, lower body, shoes, belongings, 255 "ignore" grey, other labels cycling through 12 colours);
* :func:`plot_cmc` -- CMC curve(s) as a fixed-size PNG (matplotlib, Agg canvas, no pyplot state);
* :func:`plot_training` -- a model's training curves (loss terms, accuracy, learning rate per epoch);
* :func:`pick_queries` -- a deterministic, difficulty-spread choice of queries to draw;
* :func:`top_ranked` -- the top of each chosen query's ranking (stable sort, junk handled as the
  metric does), ready for :func:`ranked_list_image`;
* :func:`ranked_list_image` -- one row per query: its representative frame, then its top-k gallery
  items framed green (same id, other camera), red (other id) or grey (junk: same id, same camera);
  a second row overlays part maps (ground truth ``frames.masks`` or a predicting callable);
* :func:`store_frames_image` / :func:`label_maps_image` -- frames of a frame store (its visible key points
  dotted; ground-truth masks and limb maps below), and the same frames under the maps of one or more label
  stores (e.g. every round of ISP);
* :func:`save_png` -- atomic PNG write.

Typical use in the rank stage (``q_idx``/``g_idx`` from ``split_query_gallery``, ``per_query``
from ``evaluate_features(..., return_per_query=True)``)::

    sel = pick_queries(per_query, 8)                       # positions into q_idx
    dist = pairwise_distance(qf[sel], gf, metric)           # [8, G]
    ranked, matches, junk = top_ranked(dist, q_pids[sel], g_pids, q_camids[sel], g_camids, top=10)
    image = ranked_list_image(FrameStore(frames), tracklet_table(index),
                              feats["tracklet"][q_idx[sel]], feats["tracklet"][g_idx],
                              ranked, matches, junk, captions=query_captions(per_query, sel))
    save_png(out / "ranked_lists.png", image)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from hspreid.io import atomic_file
from hspreid.partmaps import IGNORE as IGNORE_LABEL

# ----------------------------------------------------------------------------- colours
PART_NAMES = ("background", "head", "upper body", "lower body", "shoes", "belongings")
"""Legend names of the ground-truth codes (:data:`hspreid.partmaps.GROUND_TRUTH_NAMES`)."""

_PART_COLOURS = [(0, 0, 0), (255, 200, 0), (220, 0, 0), (0, 0, 220), (0, 180, 0), (200, 0, 200)]
_CYCLE = [(0, 200, 200), (255, 128, 0), (128, 64, 0), (255, 120, 180), (120, 200, 60), (90, 60, 200),
          (200, 200, 120), (0, 110, 110), (180, 0, 90), (150, 150, 255), (255, 255, 80), (80, 40, 40)]


def _build_palette() -> np.ndarray:
    pal = np.zeros((256, 3), np.uint8)
    pal[: len(_PART_COLOURS)] = _PART_COLOURS
    for label in range(len(_PART_COLOURS), 256):
        pal[label] = _CYCLE[(label - len(_PART_COLOURS)) % len(_CYCLE)]
    pal[IGNORE_LABEL] = (128, 128, 128)
    pal.flags.writeable = False
    return pal


PART_PALETTE: np.ndarray = _build_palette()

LIMB_PALETTE = np.array([(0, 0, 0), (255, 200, 0), (220, 0, 0), (0, 0, 220), (255, 128, 0), (150, 75, 0),
                         (255, 120, 180), (180, 0, 90), (0, 200, 200), (0, 110, 110), (150, 150, 255), (90, 60, 200),
                         (0, 180, 0), (120, 200, 60), (200, 0, 200)], np.uint8)
"""RGB colours of the limb codes (:data:`hspreid.partmaps.LIMB_NAMES`): head, torso, pelvis and belongings as
their ground-truth regions; the left arm orange/brown, the right arm pink/crimson, the left leg cyan/teal, the
right leg blue/violet, the shoes greens."""
"""uint8 [256, 3] RGB: label -> colour (index it with a label map: ``PART_PALETTE[mask]``)."""

MATCH_RGB = (0, 190, 0)       # same id, other camera (a true match)
WRONG_RGB = (220, 0, 0)       # other id (distractors included)
JUNK_RGB = (150, 150, 150)    # same id, same camera: removed from the ranking by the metric
QUERY_RGB = (30, 90, 230)
_BACKGROUND = 255
_TEXT_RGB = (20, 20, 20)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


# ----------------------------------------------------------------------------- files
def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 picture as PNG, atomically (temp sibling, then rename)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] not in (3, 4)):
        raise ValueError(f"save_png: expected uint8 [H, W] or [H, W, 3|4], got {rgb.dtype} {rgb.shape}")
    bgr = rgb if rgb.ndim == 2 else (rgb[..., ::-1] if rgb.shape[2] == 3 else rgb[..., [2, 1, 0, 3]])
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_file(path) as tmp:
        tmp.write_bytes(buf.tobytes())


# ----------------------------------------------------------------------------- CMC
CMC_FIGSIZE = (7.2, 4.5)  # inches; at CMC_DPI the PNG is 720 x 450 px
CMC_DPI = 100
_ANNOTATED_RANKS = (1, 5, 10, 20)


def plot_cmc(cmc: np.ndarray | Mapping[str, np.ndarray], path: str | Path, *, title: str,
             max_rank: int = 50) -> None:
    """CMC curve, ranks 1..max_rank in %, as a 720 x 450 PNG written atomically.

    ``cmc`` is a 1-D array of fractions (as ``evaluate_features`` returns; values above 1 are taken
    as already in %), or a mapping name -> array to compare several runs on one plot. Ranks 1, 5,
    10 and 20 are marked and their values written (for one curve; in the legend for several).
    Uses a bare matplotlib Agg canvas: no display, no global pyplot state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = dict(cmc) if isinstance(cmc, Mapping) else {"": cmc}
    if not curves:
        raise ValueError("plot_cmc: no curve to draw")
    fig = Figure(figsize=CMC_FIGSIZE, dpi=CMC_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    single = len(curves) == 1
    lowest = 100.0
    for name, values in curves.items():
        pct = _as_percent(values)[:max_rank]
        if pct.size == 0:
            raise ValueError(f"plot_cmc: empty CMC {name!r}")
        ranks = np.arange(1, len(pct) + 1)
        marks = [r for r in _ANNOTATED_RANKS if r <= len(pct)]
        label = name or None
        if not single:
            label = f"{name}  (" + ", ".join(f"R{r} {pct[r - 1]:.1f}" for r in marks[:3]) + ")"
        line, = ax.plot(ranks, pct, lw=2, label=label)
        ax.plot(marks, [pct[r - 1] for r in marks], "o", color=line.get_color(), ms=5)
        if single:
            for r in marks:
                ax.annotate(f"R{r}: {pct[r - 1]:.1f}%", (r, pct[r - 1]), xytext=(6, -14),
                            textcoords="offset points", fontsize=9)
        lowest = min(lowest, float(pct.min()))
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(max(0.0, np.floor(lowest / 10) * 10 - 5), 101)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if not single:
        ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=CMC_DPI)


TRAINING_KEYS = ("epoch", "lr", "seconds", "acc", "loss")
"""Keys of a training-history record that are not loss terms."""


def plot_training(history: Sequence[Mapping[str, float]], path: str | Path, *, title: str) -> None:
    """Training curves from a model's per-epoch history (``model.pt``'s ``history``): the total loss and each
    loss term on the left, the batch identity accuracy and the learning rate on the right; a 720 x 450 PNG
    written atomically. Epochs are counted over the whole history (rounds continue one another)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not history:
        raise ValueError("plot_training: empty history")
    epochs = np.arange(1, len(history) + 1)
    terms = [k for k in history[0] if k not in TRAINING_KEYS]
    fig = Figure(figsize=CMC_FIGSIZE, dpi=CMC_DPI)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for key in ["loss", *terms]:
        if all(key in r for r in history):
            loss_ax.plot(epochs, [r[key] for r in history], lw=2.2 if key == "loss" else 1.2, label=key)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss (mean over the epoch)")
    loss_ax.legend(fontsize=8)
    loss_ax.grid(True, alpha=0.3)
    if all("acc" in r for r in history):
        acc_ax.plot(epochs, [100 * r["acc"] for r in history], color="tab:green", lw=2, label="identity accuracy")
    acc_ax.set_ylim(0, 101)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("training accuracy (%)")
    acc_ax.grid(True, alpha=0.3)
    if all("lr" in r for r in history):
        lr_ax = acc_ax.twinx()
        lr_ax.plot(epochs, [r["lr"] for r in history], color="tab:gray", lw=1, ls="--")
        lr_ax.set_ylabel("learning rate (dashed)")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=CMC_DPI)


def _as_percent(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    return a if a.size and np.nanmax(a) > 1.0 + 1e-9 else a * 100.0


# ----------------------------------------------------------------------------- choosing queries
def pick_queries(per_query: pd.DataFrame, count: int = 8) -> np.ndarray:
    """``count`` query numbers (values of ``per_query["query"]``), hardest first, easiest last.

    Valid queries (finite AP) are ordered by difficulty: AP ascending, then first-match rank
    descending, then query number (so ties are deterministic); the picks are the two ends of that
    order and evenly spaced ones in between. Fewer than ``count`` valid queries: all of them.
    """
    if count <= 0:
        return np.zeros(0, np.int64)
    ok = per_query["valid"].to_numpy(bool) & np.isfinite(per_query["AP"].to_numpy(np.float64))
    sub = per_query.loc[ok]
    if sub.empty:
        return np.zeros(0, np.int64)
    order = np.lexsort((sub["query"].to_numpy(np.int64), -sub["first_match_rank"].to_numpy(np.int64),
                        sub["AP"].to_numpy(np.float64)))
    if len(order) > count:
        order = order[np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(np.int64))]
    return sub["query"].to_numpy(np.int64)[order]


def query_captions(per_query: pd.DataFrame, queries: np.ndarray) -> list[str]:
    """Short per-query captions ("AP 41.2%, first match at rank 3") for :func:`ranked_list_image`."""
    rows = per_query.set_index("query").loc[np.asarray(queries)]
    return [f"AP {100 * ap:.1f}%, first match at rank {int(r)}" if v else "no true match in the gallery"
            for v, ap, r in zip(rows["valid"], rows["AP"], rows["first_match_rank"])]


def top_ranked(dist: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, top: int = 10, *,
               drop_junk: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top of each query's ranking as the metric sees it: ``(ranked, matches, junk)``, each [n, top].

    ``dist`` [n, G] (numpy or torch) is sorted per row with a stable ascending sort, as
    ``hspreid.eval.rank`` does. ``ranked`` holds gallery positions (columns of ``dist``), -1 where
    the gallery runs out; ``matches`` = same pid, other camera; ``junk`` = same pid, same camera.
    With ``drop_junk`` (default) junk is removed before taking the top, so the drawn rank k is
    the metric's rank k and ``junk`` is all False; otherwise junk items stay in place.
    """
    if hasattr(dist, "detach"):
        dist = dist.detach().float().cpu().numpy()
    dist = np.asarray(dist)
    if dist.ndim != 2:
        raise ValueError(f"top_ranked: dist must be 2-D, got shape {dist.shape}")
    qp, qc = np.asarray(q_pids).reshape(-1, 1), np.asarray(q_camids).reshape(-1, 1)
    gp, gc = np.asarray(g_pids).reshape(-1), np.asarray(g_camids).reshape(-1)
    n = dist.shape[0]
    order = np.argsort(dist, axis=1, kind="stable")
    same = gp[order] == qp
    is_junk = same & (gc[order] == qc)
    ranked = np.full((n, top), -1, np.int64)
    junk = np.zeros((n, top), bool)
    for i in range(n):
        keep = order[i][~is_junk[i]] if drop_junk else order[i]
        k = min(top, len(keep))
        ranked[i, :k] = keep[:k]
        if not drop_junk:
            junk[i, :k] = is_junk[i, :k]
    valid = ranked >= 0
    pos = np.where(valid, ranked, 0)
    matches = valid & (gp[pos] == qp) & ~junk
    if drop_junk:
        matches &= gc[pos] != qc
    return ranked, matches, junk


# ----------------------------------------------------------------------------- ranked lists
@dataclass(frozen=True)
class RankedListLayout:
    """Geometry of :func:`ranked_list_image` (pixels). A *cell* is a tile plus its coloured border."""

    n_queries: int
    top: int
    tile_h: int
    tile_w: int
    overlay: bool
    border: int = 3
    margin: int = 8
    query_gap: int = 16      # extra space between the query column and the gallery columns
    spacing: int = 4         # between gallery columns, and between image and overlay rows
    caption_h: int = 20
    text_h: int = 28         # two text lines under each column
    row_gap: int = 10
    legend_line_h: int = 18  # legend: border colours; a second line with the part colours under overlays

    @property
    def cell_h(self) -> int:
        return self.tile_h + 2 * self.border

    @property
    def cell_w(self) -> int:
        return self.tile_w + 2 * self.border

    @property
    def block_h(self) -> int:
        """Height of one query's block (caption, images, overlay, text)."""
        cells = self.cell_h * (2 if self.overlay else 1) + (self.spacing if self.overlay else 0)
        return self.caption_h + cells + self.text_h

    @property
    def width(self) -> int:
        return 2 * self.margin + self.cell_w * (self.top + 1) + self.query_gap + self.spacing * max(self.top - 1, 0)

    @property
    def height(self) -> int:
        blocks = self.n_queries * self.block_h + max(self.n_queries - 1, 0) * self.row_gap
        return 2 * self.margin + blocks + self.legend_h

    @property
    def legend_h(self) -> int:
        return 6 + self.legend_line_h * (2 if self.overlay else 1)

    def cell_box(self, query: int, col: int, overlay: bool = False) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of a cell, border included; ``col`` 0 is the query, 1..top the ranks."""
        y0 = self.margin + query * (self.block_h + self.row_gap) + self.caption_h
        if overlay:
            y0 += self.cell_h + self.spacing
        x0 = self.margin if col == 0 else (self.margin + self.cell_w + self.query_gap
                                           + (col - 1) * (self.cell_w + self.spacing))
        return y0, x0, y0 + self.cell_h, x0 + self.cell_w

    def text_y(self, query: int) -> int:
        """Top of the text lines under the cells of ``query``'s block."""
        return self.margin + query * (self.block_h + self.row_gap) + self.block_h - self.text_h


def ranked_list_layout(frame_hw: tuple[int, int], n_queries: int, top: int, overlay: bool, *,
                       tile_height: int = 128, max_width: int = 2000) -> RankedListLayout:
    """Layout for frames of ``frame_hw``: tiles ``tile_height`` high (aspect kept), shrunk so that
    the picture stays within ``max_width`` pixels."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    tile_h = int(tile_height)
    while True:
        lay = RankedListLayout(n_queries, top, tile_h, max(1, round(w * tile_h / h)), overlay)
        if lay.width <= max_width or tile_h <= 16:
            return lay
        tile_h = max(16, int(tile_h * max_width / lay.width))


def ranked_list_image(frames: Any, tracks: pd.DataFrame, q_rows: np.ndarray, g_rows: np.ndarray,
                      ranked: np.ndarray, matches: np.ndarray, junk: np.ndarray | None = None, *,
                      top: int = 10, parsing: Callable[[np.ndarray], np.ndarray] | None = None,
                      captions: Sequence[str] | None = None, overlay: bool = True,
                      tile_height: int = 128, max_width: int = 2000) -> np.ndarray:
    """RGB uint8 picture of ranked lists, one block per drawn query.

    * ``frames``: a :class:`~hspreid.data.frames.FrameStore`; ``tracks``: ``tracklet_table(index)``
      (indexed by tracklet number, columns ``start, length, pid, camid``).
    * ``q_rows`` [n]: tracklet numbers of the queries to draw; ``g_rows`` [G]: tracklet numbers of
      the whole gallery (``feats["tracklet"][g_idx]``).
    * ``ranked`` [n, >=top]: gallery positions (into ``g_rows``) in rank order, -1 for an empty slot;
      ``matches`` [n, >=top] bool: true match; ``junk`` [n, >=top] bool or None. Junk may be already
      removed (``junk=None``, as :func:`top_ranked` does by default: column k is then rank k) or
      left in place and flagged: junk cells are framed grey, labelled "junk" and not counted in the
      rank numbers written under the others.

    Each tracklet is drawn by its middle frame (``start + length // 2``; the image itself for image
    data sets), scaled to ``tile_height`` (linear). Gallery cells are framed green (match) / red /
    grey (junk); the query cell blue. Under each cell: rank (or "query") and camera, then the pid.
    ``captions[i]`` is appended to query ``i``'s title line. When ``overlay`` and part maps exist --
    ``parsing(frame_rows) -> uint8 [len(rows), h, w]`` (predicted; resized nearest) if given, else
    ``frames.masks`` (ground truth) -- a second row of cells blends them in with
    :data:`PART_PALETTE`. A legend closes the picture.
    """
    q_rows = np.asarray(q_rows, np.int64).reshape(-1)
    g_rows = np.asarray(g_rows, np.int64).reshape(-1)
    ranked = np.asarray(ranked, np.int64)
    matches = np.asarray(matches, bool)
    n = len(q_rows)
    if ranked.ndim != 2 or ranked.shape[0] != n or matches.shape != ranked.shape:
        raise ValueError(f"ranked_list_image: ranked {ranked.shape} / matches {matches.shape} do not fit {n} queries")
    if junk is not None:
        junk = np.asarray(junk, bool)
        if junk.shape != ranked.shape:
            raise ValueError(f"ranked_list_image: junk {junk.shape} does not match ranked {ranked.shape}")
    if captions is not None and len(captions) != n:
        raise ValueError(f"ranked_list_image: {len(captions)} captions for {n} queries")
    if ranked.size and ranked.max() >= len(g_rows):
        raise ValueError(f"ranked_list_image: gallery position {int(ranked.max())} beyond {len(g_rows)} gallery items")

    def pad(a: np.ndarray, fill: Any) -> np.ndarray:
        a = a[:, :top]
        return np.concatenate([a, np.full((n, top - a.shape[1]), fill, a.dtype)], axis=1) if a.shape[1] < top else a

    ranked, matches = pad(ranked, -1), pad(matches, False)
    junk = np.zeros_like(matches) if junk is None else pad(junk, False)

    # tracklet numbers of every cell: [n, top + 1], column 0 the query, -1 empty
    cells = np.full((n, top + 1), -1, np.int64)
    cells[:, 0] = q_rows
    cells[:, 1:] = np.where(ranked >= 0, g_rows[np.maximum(ranked, 0)], -1) if len(g_rows) else -1
    used = np.unique(cells[cells >= 0])
    start = tracks.loc[used, "start"].to_numpy(np.int64)
    length = tracks.loc[used, "length"].to_numpy(np.int64)
    frame_rows = start + length // 2
    pids = dict(zip(used.tolist(), tracks.loc[used, "pid"].to_numpy(np.int64).tolist()))
    cams = dict(zip(used.tolist(), tracks.loc[used, "camid"].to_numpy(np.int64).tolist()))
    images = frames.read(frame_rows)
    slot = {int(t): i for i, t in enumerate(used)}

    maps, maps_kind = None, ""
    if overlay and len(used):
        if parsing is not None:
            maps, maps_kind = np.asarray(parsing(frame_rows)), "predicted parts"
            if maps.ndim != 3 or len(maps) != len(frame_rows):
                raise ValueError(f"parsing returned shape {maps.shape}, expected [{len(frame_rows)}, h, w]")
        elif getattr(frames, "masks", None) is not None:
            maps, maps_kind = frames.read(frame_rows, "masks"), "ground-truth parts"

    fh, fw = images.shape[1:3] if len(images) else (128, 64)
    lay = ranked_list_layout((fh, fw), n, top, maps is not None, tile_height=tile_height, max_width=max_width)
    canvas = np.full((lay.height, lay.width, 3), _BACKGROUND, np.uint8)
    tiles = {t: _resize(images[i], lay.tile_h, lay.tile_w, cv2.INTER_LINEAR) for t, i in slot.items()}
    blended = ({t: blend_labels(tiles[t], _resize(maps[i], lay.tile_h, lay.tile_w, cv2.INTER_NEAREST))
                for t, i in slot.items()} if maps is not None else {})

    for qi in range(n):
        q = int(q_rows[qi])
        title = f"query {qi + 1}: tracklet {q}, pid {pids[q]}, camera {cams[q]}"
        if captions is not None and captions[qi]:
            title += f"  -  {captions[qi]}"
        _text(canvas, title, lay.margin, lay.cell_box(qi, 0)[0] - 6, lay.width - 2 * lay.margin, 0.45, _TEXT_RGB)
        rank = 0
        ty = lay.text_y(qi)
        for col in range(top + 1):
            t = int(cells[qi, col])
            y0, x0, y1, x1 = lay.cell_box(qi, col)
            if t < 0:
                canvas[y0:y1, x0:x1] = 235
                continue
            if col == 0:
                colour, line1 = QUERY_RGB, f"query c{cams[t]}"
            elif junk[qi, col - 1]:
                colour, line1 = JUNK_RGB, f"junk c{cams[t]}"
            else:
                rank += 1
                colour = MATCH_RGB if matches[qi, col - 1] else WRONG_RGB
                line1 = f"#{rank} c{cams[t]}"
            _cell(canvas, (y0, x0, y1, x1), tiles[t], colour, lay.border)
            if t in blended:
                _cell(canvas, lay.cell_box(qi, col, overlay=True), blended[t], colour, lay.border)
            text_colour = tuple(int(c * 0.75) for c in colour) if col else QUERY_RGB
            _text(canvas, line1, x0, ty + 11, lay.cell_w + lay.spacing, 0.4, text_colour)
            _text(canvas, f"pid {pids[t]}", x0, ty + 24, lay.cell_w + lay.spacing, 0.4, _TEXT_RGB)
    _legend(canvas, lay, maps_kind, show_junk=bool(junk.any()))
    return canvas


def _resize(img: np.ndarray, h: int, w: int, interp: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    if interp == cv2.INTER_LINEAR and (img.shape[0] > h or img.shape[1] > w):
        interp = cv2.INTER_AREA
    return cv2.resize(img, (w, h), interpolation=interp)


def blend_labels(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Label colours (:data:`PART_PALETTE`) over ``rgb`` where the label is not background (background
    dimmed a little); ``labels`` at the picture's size."""
    colour = PART_PALETTE[labels].astype(np.float32)
    img = rgb.astype(np.float32)
    fg = (labels != 0)[..., None]
    out = np.where(fg, (1 - alpha) * img + alpha * colour, 0.6 * img)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _cell(canvas: np.ndarray, box: tuple[int, int, int, int], tile: np.ndarray, colour: tuple, border: int) -> None:
    y0, x0, y1, x1 = box
    canvas[y0:y1, x0:x1] = colour
    canvas[y0 + border:y1 - border, x0 + border:x1 - border] = tile


def _text(canvas: np.ndarray, s: str, x: int, y: int, max_w: int, scale: float, colour: tuple) -> None:
    """Put ``s`` with its baseline at ``y``, shrinking (then truncating) it to fit ``max_w`` pixels."""
    colour = tuple(int(c) for c in colour)
    while scale > 0.3 and cv2.getTextSize(s, _FONT, scale, 1)[0][0] > max_w:
        scale -= 0.025
    while len(s) > 1 and cv2.getTextSize(s, _FONT, scale, 1)[0][0] > max_w:
        s = s[:-1]
    cv2.putText(canvas, s, (int(x), int(y)), _FONT, scale, colour, 1, cv2.LINE_AA)


def _legend(canvas: np.ndarray, lay: RankedListLayout, maps_kind: str, show_junk: bool) -> None:
    """Colour keys at the bottom: border colours on one line, part colours (if drawn) on the next;
    a line that does not fit the picture's width is cut short."""
    borders: list[tuple[tuple, str]] = [(MATCH_RGB, "same id"), (WRONG_RGB, "other id")]
    if show_junk:
        borders.append((JUNK_RGB, "junk (same id + camera)"))
    lines = [borders]
    if maps_kind and lay.overlay:
        parts = [(tuple(int(c) for c in PART_PALETTE[k]), PART_NAMES[k]) for k in range(1, len(PART_NAMES))]
        lines.append(parts + [(None, f"({maps_kind})")])
    y = lay.height - lay.margin - lay.legend_h + 6 + lay.legend_line_h - 5
    for items in lines:
        x = lay.margin
        for colour, name in items:
            key = 14 if colour is not None else 0
            w = cv2.getTextSize(name, _FONT, 0.4, 1)[0][0]
            if x + key + w > lay.width - lay.margin:
                break
            if colour is not None:
                canvas[y - 10:y, x:x + 10] = colour
            _text(canvas, name, x + key, y, w + 2, 0.4, _TEXT_RGB if colour is not None else (90, 90, 90))
            x += key + w + 14
        y += lay.legend_line_h


# ----------------------------------------------------------------------------- store pictures
MIN_TILE_HEIGHT = 128
"""Frames smaller than this are scaled up (nearest neighbour, whole factors) so that a person can see them."""


def _upscale(images: np.ndarray, min_height: int = MIN_TILE_HEIGHT) -> np.ndarray:
    """Images [n, h, w, ...] repeated by the smallest whole factor that brings h to ``min_height``."""
    factor = max(1, -(-min_height // images.shape[1]))
    return images if factor == 1 else images.repeat(factor, axis=1).repeat(factor, axis=2)


def _row(tiles: np.ndarray) -> np.ndarray:
    return np.concatenate(list(tiles), axis=1)


def store_frames_image(store: Any, count: int = 16, seed: int = 0) -> np.ndarray:
    """RGB picture of ``count`` random frames of a :class:`~hspreid.data.frames.FrameStore`, with its visible
    key points dotted and its ground-truth masks and limb maps below, where it has them; small frames scaled up."""
    rows = np.sort(np.random.default_rng(seed).choice(len(store), size=min(count, len(store)), replace=False))
    frames = _upscale(store.read(rows))
    if getattr(store, "keypoints", None) is not None:
        frames = np.ascontiguousarray(frames)
        h, w = frames.shape[1:3]
        for tile, points in zip(frames, store.read(rows, "keypoints")):
            for x, y, v in points:
                if v > 0:
                    cv2.circle(tile, (int(x * w), int(y * h)), 2, (255, 255, 255), -1, cv2.LINE_AA)
    lines = [_row(frames)]
    for name, palette in (("masks", PART_PALETTE), ("limbs", LIMB_PALETTE)):
        if getattr(store, name, None) is not None:
            lines.append(_row(_upscale(palette[store.read(rows, name)])))
    return np.ascontiguousarray(np.concatenate(lines, axis=0))


def label_maps_image(store: Any, label_stores: Sequence[Any], count: int = 12, seed: int = 0) -> np.ndarray:
    """RGB picture: the same ``count`` frames of ``label_stores[0]`` (label-map stores,
    :class:`~hspreid.data.label_maps.LabelMaps`), then one row per label store overlaying its maps
    (nearest-resized to the frame), e.g. the rounds of ISP going from coarse to fine; small frames scaled up."""
    first = label_stores[0]
    rows = np.sort(np.random.default_rng(seed).choice(first.rows, size=min(count, len(first.rows)), replace=False))
    images = _upscale(store.read(rows))
    h, w = images.shape[1:3]
    lines = [_row(images)]
    for labels in label_stores:
        maps = labels.read(rows)
        lines.append(_row([blend_labels(img, _resize(m, h, w, cv2.INTER_NEAREST)) for img, m in zip(images, maps)]))
    return np.ascontiguousarray(np.concatenate(lines, axis=0))
