"""Figure 4 (right) of the paper: evaluation images (first column) and the training images whose
last-hidden-layer vectors are nearest to theirs in Euclidean distance (the other columns).

Feature row i of a split is example indices[i] of the split's source
(`datasets.decoding_source`), read by index with `input_pipeline.read_batch`; each image read
is checked against the label of its feature row.
"""

from pathlib import Path

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from supervision import DataError, datasets, input_pipeline

MIN_CELL = 96  # pixels of the square cell of one image, at least the image's own size
DPI = 100


def example_images(source, indices: np.ndarray, labels: np.ndarray, split: str) -> np.ndarray:
  """The images of examples `indices` of `source` (uint8 [n, S, S, 3]), checked against the
  labels of their feature rows, so that features of another split or order are caught."""
  if (outside := indices[(indices < 0) | (indices >= len(source))]).size:
    raise DataError(
      f"The features of split {split!r} name example {outside[0]}, but the split has"
      f" {len(source)} examples: features of another dataset?"
    )
  batch = input_pipeline.read_batch(source, np.asarray(indices))
  for index, label, read, ok in zip(indices, labels, batch["label"], batch["mask"], strict=True):
    if not ok or read != label:
      found = "unreadable" if not ok else f"of class {read}"
      raise DataError(
        f"Example {index} of split {split!r} is {found} but its feature row has label {label}:"
        " the features file must be of this split, as --mode=features wrote it."
      )
  return batch["image"]


def mosaic(queries: np.ndarray, neighbours: np.ndarray, path: Path) -> Path:
  """Writes the PNG of queries [R, S, S, 3] (first column) and their neighbours [R, n, S, S, 3]:
  R rows of square cells of max(MIN_CELL, S) pixels, with a gap of a quarter cell after the
  first column, so (1 + n + 1/4) cells wide and R cells high."""
  rows, n, size = neighbours.shape[:3]
  cell = max(MIN_CELL, size)
  gap = cell // 4
  width, height = (1 + n) * cell + gap, rows * cell
  figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
  margin = 0.04 * cell
  for r in range(rows):
    for c, image in enumerate([queries[r], *neighbours[r]]):
      left = c * cell + (gap if c else 0) + margin
      bottom = (rows - 1 - r) * cell + margin
      side = cell - 2 * margin
      axes = figure.add_axes((left / width, bottom / height, side / width, side / height))
      axes.imshow(image, interpolation="nearest")
      axes.set_axis_off()
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=DPI)
  return path


def draw(
  config: ml_collections.ConfigDict,
  query_indices: np.ndarray,
  neighbour_indices: np.ndarray,
  labels: tuple[np.ndarray, np.ndarray],
  path: Path,
) -> Path:
  """Figure 4 (right) at `path`: examples `query_indices` of config.eval_split and, in each row,
  examples `neighbour_indices` [R, n] of config.train_split. `labels` are their feature rows'
  labels ([R] and [R, n])."""
  splits = config.eval_split, config.train_split
  sources = [datasets.decoding_source(config, split) for split in splits]
  queries = example_images(sources[0], query_indices, labels[0], splits[0])
  flat = neighbour_indices.reshape(-1)
  neighbours = example_images(sources[1], flat, labels[1].reshape(-1), splits[1])
  return mosaic(queries, neighbours.reshape(*neighbour_indices.shape, *neighbours.shape[1:]), path)
