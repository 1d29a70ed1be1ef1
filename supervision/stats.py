"""Training-set statistics for preprocessing: the mean image ("The Dataset") and the
principal components of the RGB pixel values ("Data Augmentation"), from one streaming pass over
the training split.

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

from supervision import DataError, datasets, input_pipeline, prepared

DEVICE_KEYS = ("mean", "eigvals", "eigvecs")


def stats_path(config: ml_collections.ConfigDict, workdir: str) -> Path:
  name = re.sub(r"[^A-Za-z0-9.-]+", "_", config.dataset).strip("_")
  return Path(workdir) / f"stats_{name}_{config.image_size}.npz"


def image_sums(images: np.ndarray) -> dict:
  """Sums over uint8 images [n, S, S, 3]: "pixels" [S, S, 3], "rgb_products" [3, 3] (sums of
  r_i r_j over all pixels) and "count". Float64 holds them exactly (integers below 2**53, over
  10**6 full ImageNets), so sums of sums do not depend on the order."""
  images = images.astype(np.float64)
  rgb = images.reshape(-1, 3)
  return dict(pixels=images.sum(axis=0), rgb_products=rgb.T @ rgb, count=len(images))


def add_sums(a: dict | None, b: dict) -> dict:
  """The sums of `image_sums` over both sets of images (`a` may be None: no images yet)."""
  return b if a is None else {key: a[key] + b[key] for key in b}


def from_moments(
  config: ml_collections.ConfigDict, mean: np.ndarray, cov: np.ndarray, count: int, skipped: int
) -> dict:
  """The statistics file's contents: the mean image [S, S, 3] and RGB covariance [3, 3] on 0-255
  values, with the covariance's eigenvalues (descending) and eigenvectors (columns)."""
  eigvals, eigvecs = np.linalg.eigh(cov)
  return dict(
    dataset=config.dataset,
    image_size=config.image_size,
    count=count,
    skipped=skipped,
    mean=mean,
    cov=cov,
    eigvals=eigvals[::-1],
    eigvecs=eigvecs[:, ::-1],
  )


def stats_from_sums(sums: dict | None, config: ml_collections.ConfigDict, skipped: int) -> dict:
  """`from_moments` of the decodable training images, from their sums."""
  if sums is None or not sums["count"]:
    split = config.train_split
    raise DataError(f"No decodable images in split {split!r} of {config.dataset}.")
  count = int(sums["count"])
  mean = sums["pixels"] / count
  rgb_mean = mean.mean(axis=(0, 1))
  cov = sums["rgb_products"] / (count * mean.shape[0] * mean.shape[1])
  return from_moments(config, mean, cov - np.outer(rgb_mean, rgb_mean), count, skipped)


def fake_stats(config: ml_collections.ConfigDict) -> dict:
  """The statistics of fake data's independent uniform 0-255 pixels, exactly: mean 127.5 and
  covariance (256**2 - 1) / 12 times the identity."""
  size, variance = config.image_size, (256**2 - 1) / 12
  count = len(datasets.decoding_source(config, config.train_split))
  return from_moments(config, np.full((size, size, 3), 127.5), variance * np.eye(3), count, 0)


def compute_stats(config: ml_collections.ConfigDict) -> dict:
  """`stats_from_sums` over the decodable images of `config.train_split`, in one pass (a
  prepared dataset holds them already, and those of fake data are known: no pass)."""
  if config.dataset.startswith(prepared.PREFIX):
    return prepared.read_stats(config)
  if config.dataset == "fake":
    return fake_stats(config)
  source = datasets.decoding_source(config, config.train_split)
  batches = input_pipeline.ordered_batches(source, config, process_index=0, process_count=1)
  sums = None
  steps = -(-len(source) // config.batch_size)
  for batch in tqdm.tqdm(batches, total=steps, desc=f"stats of {config.dataset}", unit="batch"):
    sums = add_sums(sums, image_sums(batch["image"][batch["mask"]]))
  count = 0 if sums is None else sums["count"]
  return stats_from_sums(sums, config, skipped=len(source) - count)


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
      raise DataError(
        f"{path} holds statistics of dataset {found[0]!r} at image size {found[1]}, but the config"
        f" asks for dataset {config.dataset!r} at image size {config.image_size}."
      )
  else:
    stats = run_stats(config, workdir)
  return {key: np.asarray(stats[key], np.float32) for key in DEVICE_KEYS}
