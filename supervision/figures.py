"""Figures of a run: the first layer's kernels by column (the paper's Figure 3) and the
training curves, drawn by `--mode=figures` into WORKDIR/figures/.

They come from a checkpoint of WORKDIR (any run's: the layer's name and the split's come from
the config stored with it) and from WORKDIR/metrics.jsonl, whose rows carry the step and the
epoch (step / steps per epoch), so that no data is needed to draw them.
"""

import json
import math
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from matplotlib.figure import Figure
from PIL import Image

from supervision import DataError, checkpoint, workdirs

# The kernel grid: each kernel magnified by whole pixels to at least KERNEL_PIXELS, in rows of
# PER_ROW, GAP pixels apart, and the blocks of the columns COLUMN_GAP apart, on white.
KERNEL_PIXELS = 40
PER_ROW = 16
GAP = 2
COLUMN_GAP = 12
BACKGROUND = 1.0
# The curves: one PNG of CURVES_INCHES at CURVES_DPI.
CURVES_INCHES = (8, 6)
CURVES_DPI = 100
SERIES = ("top1_error", "eval_top1_error", "learning_rate")  # keys of metrics.jsonl's rows
MAX_CHROMA = math.sqrt(2 / 3)  # of an RGB vector in [0, 1]^3: pure red, green, blue or their mixes


def first_layer_kernels(params: Any, config: ml_collections.ConfigDict) -> np.ndarray:
  """The first conv layer's kernels as an array (column, kernel, height, width, RGB).

  `models.ColumnConv` stores them as (column, height, width, RGB, kernel of the column): kernel
  j of column c is [c, ..., j], and it makes map c * n + j of the layer (n kernels a column).
  """
  kernel = np.asarray(params[config.model.conv[0]["name"]]["kernel"], np.float32)
  return np.moveaxis(kernel, -1, 1)


def normalise(kernels: np.ndarray) -> np.ndarray:
  """Each kernel (the last three axes: height, width, RGB) mapped on its own to [0, 1] by its
  minimum and maximum over all its pixels and channels together, so that the map is the same
  for R, G and B (a grey kernel stays grey); a constant kernel becomes 0.5."""
  low = kernels.min(axis=(-3, -2, -1), keepdims=True)
  span = kernels.max(axis=(-3, -2, -1), keepdims=True) - low
  return np.where(span > 0, (kernels - low) / np.where(span > 0, span, 1), 0.5)


def mean_chroma(kernels: np.ndarray) -> np.ndarray:
  """The mean chroma of each column's kernels: (column, kernel, height, width, RGB) -> (column,).

  A pixel's chroma is the distance of its RGB vector v, after `normalise`, from the grey axis:
  |v - m (1, 1, 1)| with m the mean of v's three values. A kernel's chroma is the mean over its
  pixels, a column's the mean over its kernels: 0 for grey kernels, at most MAX_CHROMA (0.816,
  every pixel pure red, green, blue or a mix of two of them at full range). The normalisation
  makes it independent of a kernel's scale.
  """
  v = normalise(kernels)
  return np.linalg.norm(v - v.mean(axis=-1, keepdims=True), axis=-1).mean(axis=(1, 2, 3))


def kernel_grid(kernels: np.ndarray, per_row: int = PER_ROW) -> np.ndarray:
  """The kernels (column, kernel, height, width, RGB), each normalised on its own, as one RGB
  image in [0, 1]: each column's kernels in order in rows of `per_row`, column 0's block on top,
  then column 1's (the paper's GPU 1 and GPU 2), and so on."""
  columns, n, size = kernels.shape[:3]
  scale = math.ceil(KERNEL_PIXELS / size)
  per_row = min(per_row, n)
  cell = size * scale + GAP
  block = math.ceil(n / per_row) * cell - GAP
  image = np.full(
    (columns * (block + COLUMN_GAP) - COLUMN_GAP, per_row * cell - GAP, 3), BACKGROUND, np.float32
  )
  big = normalise(kernels).repeat(scale, axis=2).repeat(scale, axis=3)
  for c in range(columns):
    for j in range(n):
      y, x = c * (block + COLUMN_GAP) + j // per_row * cell, j % per_row * cell
      image[y : y + size * scale, x : x + size * scale] = big[c, j]
  return image


def read_metrics(path: Path) -> list[dict]:
  """The rows of a metrics.jsonl. A last row cut short (a run killed while writing it) is left
  out; any other row that is not JSON is a DataError naming the file and line."""
  lines = path.read_text().splitlines(keepends=True)
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if number == len(lines) and not line.endswith("\n"):
        break
      raise DataError(f"{path}, line {number}: not a JSON row: {line.strip()[:80]!r}") from None
  return rows


def curves(rows: list[dict]) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """(x axis, {key: (x, values)}) of the keys of SERIES in the rows that have them, over epochs
  (or steps where a row has no epoch: files written before epochs were logged).

  Where a series logs a step again (a run resumed from an earlier checkpoint whose file was not
  cleaned), the later rows win and the earlier ones of that step and after are dropped, as the
  trainer drops them on resuming.
  """
  axis = "epoch" if all("epoch" in row for row in rows) else "step"
  series = {}
  for key in SERIES:
    points = []
    for row in rows:
      if key in row:
        while points and points[-1][0] >= row["step"]:
          points.pop()
        points.append((row["step"], row[axis], row[key]))
    if points:
      series[key] = tuple(np.array(p, np.float64) for p in list(zip(*points, strict=True))[1:])
  return axis, series


def draw_curves(
  axis: str, series: dict[str, tuple[np.ndarray, np.ndarray]], eval_split: str, path: Path
) -> None:
  """Top-1 error of training (mean over each logging interval, on the augmented crops, with
  dropout) and of the eval split (central crop) over `axis`, and below it the learning rate on
  a log scale, as one PNG of CURVES_INCHES at CURVES_DPI."""
  figure = Figure(figsize=CURVES_INCHES, dpi=CURVES_DPI, layout="constrained")
  errors, rates = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
  labels = dict(top1_error="training", eval_top1_error=f"{eval_split} (central crop)")
  for key, label in labels.items():
    if key in series:
      x, values = series[key]
      errors.plot(x, 100 * values, label=label, marker="o" if key.startswith("eval") else None)
  errors.set(ylabel="top-1 error (%)")
  errors.grid(alpha=0.3)
  errors.legend()
  if "learning_rate" in series:
    rates.plot(*series["learning_rate"], color="tab:green")
  rates.set(yscale="log", ylabel="learning rate", xlabel=axis)
  rates.grid(alpha=0.3, which="both")
  figure.savefig(path)


def run_figures(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=figures`: the checkpoint of `config.eval_checkpoint_step` (-1: the latest) of
  `workdir`, whatever its model, and WORKDIR/metrics.jsonl drawn into WORKDIR/figures/; the
  paths and the mean chroma of each column's first-layer kernels printed and written to
  WORKDIR/figures/figures.json, which this returns."""
  step = checkpoint.requested_step(config)
  params, trained, step = checkpoint.restore_params(workdir, step)
  out = Path(workdir) / "figures"
  out.mkdir(exist_ok=True)
  layer = trained.model.conv[0]["name"]
  kernels = first_layer_kernels(params, trained)
  grid = out / f"{layer}_kernels.png"
  Image.fromarray(np.round(255 * kernel_grid(kernels)).astype(np.uint8)).save(grid)
  figures = [grid]
  metrics = Path(workdir) / workdirs.METRICS
  axis, series = curves(read_metrics(metrics)) if metrics.exists() else ("", {})
  if series:
    figures.append(out / "curves.png")
    draw_curves(axis, series, trained.eval_split, figures[-1])
  else:
    logging.warning("No training curves: no rows of %s in %s.", ", ".join(SERIES), metrics)
  chroma = [round(float(c), 4) for c in mean_chroma(kernels)]
  results = dict(
    step=step,
    figures=[str(f) for f in figures],
    normalisation="min-max per kernel",
    **{f"{layer}_mean_chroma": chroma},
  )
  (out / "figures.json").write_text(json.dumps(results, indent=2) + "\n")
  print(f"Figures of the checkpoint of step {step}: " + ", ".join(results["figures"]))
  print(
    f"{layer} mean chroma by column (0 grey, {MAX_CHROMA:.3f} pure colour): "
    + ", ".join(f"column {c} {value:.4f}" for c, value in enumerate(chroma))
  )
  return results
