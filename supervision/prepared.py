"""Prepared datasets: the paper's 256x256 images ("The Dataset") decoded once from any source and
stored as JPEG records in sharded ArrayRecord files, so that training decodes small JPEGs only.

`python main.py --mode=prepare ... --workdir=OUT` writes them (`supervision.prepare`);
`--config.dataset=prepared:OUT` reads them. OUT holds:

  dataset.json                           what was prepared: the source, the image size, the JPEG
                                         quality, the class names and, per split, its shards and
                                         counts (written last: a dataset without it is unfinished)
  <split>-NNNNN-of-MMMMM.array_record    records label (int32, little-endian) + JPEG bytes, in the
                                         source's order, unreadable files left out
  stats.npz                              the training split's statistics (`supervision.stats`),
                                         computed from the images before JPEG encoding
  bad_files.tsv                          split and message of every file that could not be decoded
"""

import json
import struct
from pathlib import Path
from typing import Any

import grain
import ml_collections
import numpy as np
import simplejpeg

from supervision import DataError

PREFIX = "prepared:"
METADATA = "dataset.json"
STATS = "stats.npz"
BAD_FILES = "bad_files.tsv"
FORMAT = 1
WRITER_OPTIONS = (
  "group_size:1,uncompressed"  # one record per chunk: random access, no recompression
)
_LABEL = struct.Struct("<i")


def encode_record(label: int, jpeg: bytes) -> bytes:
  return _LABEL.pack(label) + jpeg


def decode_record(record: bytes) -> tuple[int, memoryview]:
  """(label, JPEG bytes) of a record."""
  return _LABEL.unpack_from(record)[0], memoryview(record)[_LABEL.size :]


def shard_name(split: str, shard: int, shards: int) -> str:
  return f"{split}-{shard:05d}-of-{shards:05d}.array_record"


def root(config: ml_collections.ConfigDict) -> Path:
  """The folder of a `prepared:` dataset."""
  return Path(config.dataset.removeprefix(PREFIX))


def read_metadata(path: Path, config: ml_collections.ConfigDict) -> dict:
  """dataset.json of the prepared dataset in `path`, checked against the image size and class
  count of `config`; an unfinished or missing dataset says so."""
  if not (path / METADATA).is_file():
    state = "is unfinished" if path.is_dir() and any(path.iterdir()) else "does not exist"
    raise DataError(
      f"Prepared dataset {path} {state} (no {METADATA}): run --mode=prepare with"
      f" --workdir={path} and the source dataset first."
    )
  metadata = json.loads((path / METADATA).read_text())
  size, classes = metadata["image_size"], len(metadata["classes"])
  if size != config.image_size:
    raise DataError(
      f"Prepared dataset {path} holds {size}x{size} images but config.image_size="
      f"{config.image_size}; set --config.image_size={size} or prepare it again."
    )
  if classes != config.num_classes:
    raise DataError(
      f"Prepared dataset {path} has {classes} classes but config.num_classes="
      f"{config.num_classes}; set --config.num_classes={classes}."
    )
  return metadata


class PreparedSource:
  """Random access to a split of a prepared dataset (a Grain data source): index -> example,
  the JPEG decoded straight to a uint8 array."""

  def __init__(self, path: Path, metadata: dict, split: str):
    if split not in metadata["splits"]:
      raise DataError(
        f"Prepared dataset {path} has no split {split!r}: {list(metadata['splits'])}."
      )
    entry = metadata["splits"][split]
    self.name, self.image_size = f"{path}/{split}", metadata["image_size"]
    self.records = grain.sources.ArrayRecordDataSource([str(path / s) for s in entry["shards"]])
    if len(self.records) != entry["examples"]:
      raise DataError(
        f"{self.name}: {len(self.records)} records in its shards but {entry['examples']} in"
        f" {path / METADATA}; prepare it again."
      )

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict:
    label, jpeg = decode_record(self.records[index])
    try:
      image = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    except ValueError as e:
      return {"error": f"{self.name}[{index}]: {e}"}
    return {"image": image, "label": np.int32(label)}


def read_encoded(source: PreparedSource, indices: np.ndarray) -> dict:
  """The records of `indices` undecoded: "jpeg" (uint8 arrays), "label" and "mask", which is
  False for padding (index -1); padding rows hold record 0's JPEG."""
  labels, jpegs = np.zeros(len(indices), np.int32), []
  for row, index in enumerate(indices):
    label, jpeg = decode_record(source.records[max(int(index), 0)])
    labels[row] = label if index >= 0 else 0
    jpegs.append(np.frombuffer(jpeg, np.uint8))
  return dict(jpeg=jpegs, label=labels, mask=np.asarray(indices) >= 0, errors={})


def read_stats(config: ml_collections.ConfigDict) -> dict:
  """The training split's statistics stored with the prepared dataset of `config`, as
  `supervision.stats.compute_stats` gives them."""
  path = root(config)
  read_metadata(path, config)
  with np.load(path / STATS) as f:
    stats: dict[str, Any] = dict(f)
  return dict(stats, dataset=config.dataset)
