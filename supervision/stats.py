"""Training-set statistics for preprocessing: the mean image (Section 2) and the principal
components of the RGB pixel values (Section 4.1), from one streaming pass over the training split.

`python main.py --mode=stats --config=... --workdir=D` computes them into
D/stats_<dataset>_<image_size>.npz; training calls `load_or_compute_stats`, which reuses that file.
"""

import os
import re
from pathlib import Path

import jax
import ml_collections
import numpy as np
import tqdm

from supervision import input_pipeline

DEVICE_KEYS = ("mean", "eigvals", "eigvecs")


def stats_path(config: ml_collections.ConfigDict, workdir: str) -> Path:
  name = re.sub(r"[^A-Za-z0-9.-]+", "_", config.dataset).strip("_")
  return Path(workdir) / f"stats_{name}_{config.image_size}.npz"


def compute_stats(config: ml_collections.ConfigDict) -> dict:
  """Mean image [S, S, 3], RGB covariance [3, 3] and its eigenvalues (descending) and
  eigenvectors (columns) over the decodable images of `config.train_split`, on 0-255 values.

  Sums are float64 in a fixed order, so the result is deterministic (and exact sums of
  integers for up to 2**53 / 255**2 pixels, over 10**6 full ImageNets).
  """
  source = input_pipeline.decoding_source(config, config.train_split)
  batches = input_pipeline.ordered_batches(source, config, process_index=0, process_count=1)
  size = config.image_size
  pixel_sum, rgb_products, count = np.zeros((size, size, 3)), np.zeros((3, 3)), 0
  steps = -(-len(source) // config.batch_size)
  for batch in tqdm.tqdm(batches, total=steps, desc=f"stats of {config.dataset}", unit="batch"):
    images = batch["image"][batch["mask"]].astype(np.float64)
    pixel_sum += images.sum(axis=0)
    rgb = images.reshape(-1, 3)
    rgb_products += rgb.T @ rgb
    count += len(images)
  if not count:
    split = config.train_split
    raise input_pipeline.DataError(f"No decodable images in split {split!r} of {config.dataset}.")
  mean = pixel_sum / count
  rgb_mean = mean.mean(axis=(0, 1))
  cov = rgb_products / (count * size * size) - np.outer(rgb_mean, rgb_mean)
  eigvals, eigvecs = np.linalg.eigh(cov)
  return dict(
    dataset=config.dataset,
    image_size=size,
    count=count,
    skipped=len(source) - count,
    mean=mean,
    cov=cov,
    eigvals=eigvals[::-1],
    eigvecs=eigvecs[:, ::-1],
  )


def save_stats(stats: dict, path: Path) -> None:
  """Writes `stats` to `path` atomically (a partial file is never read back)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_suffix(".partial.npz")
  np.savez(partial, **stats)
  os.replace(partial, path)


def run_stats(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=stats`: computes the statistics, writes them into `workdir` and prints them."""
  stats = compute_stats(config)
  path = stats_path(config, workdir)
  if jax.process_index() == 0:
    save_stats(stats, path)
  print(f"{config.dataset} split {config.train_split!r}: {stats['count']} images,")
  print(f"{stats['skipped']} bad files skipped; RGB eigenvalues {np.round(stats['eigvals'], 2)}")
  print(f"(0-255 values, {config.image_size}x{config.image_size}) written to {path}")
  return stats


def load_or_compute_stats(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The statistics that preprocessing uses ("mean", "eigvals", "eigvecs", float32), from
  `workdir`, computed and saved there first when missing."""
  path = stats_path(config, workdir)
  if path.exists():
    with np.load(path) as f:
      stats = dict(f)
    found = (str(stats["dataset"]), int(stats["image_size"]))
    if found != (config.dataset, config.image_size):
      raise input_pipeline.DataError(
        f"{path} holds statistics of dataset {found[0]!r} at image size {found[1]}, but the config"
        f" asks for dataset {config.dataset!r} at image size {config.image_size}."
      )
  else:
    stats = run_stats(config, workdir)
  return {key: np.asarray(stats[key], np.float32) for key in DEVICE_KEYS}
