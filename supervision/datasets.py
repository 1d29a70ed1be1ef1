"""The data sources ("The Dataset" in the paper): what `config.dataset` names, each a
random-access list of examples decoded at each read.

  imagenet2012, cifar10, ...   a TFDS dataset in `config.data_dir` (random access, array_record)
  folder:/path                 image files in /path/<split>/<class>/<file> (`config.classes`
                               selects some of the classes)
  prepared:/path               a dataset prepared once with --mode=prepare (`supervision.prepared`)
  fake                         random images, for throughput benchmarks only

source[i] is {"image": uint8 [S, S, 3], "label": int32}, decoded by content (not by file name),
to RGB, its shorter side rescaled to `config.image_size` and the central image_size x image_size
patch kept; or {"error": message} for a file that cannot be read or decoded
(`supervision.input_pipeline` masks it out of its batch).
"""

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from supervision import ConfigError, DataError, prepared

FOLDER_PREFIX = "folder:"
FOLDER_SPLITS = ("train", "val", "validation", "test")
SPLIT_ALIASES = {"validation": "val", "val": "validation"}
FAKE_SIZES = {"train": 1_281_167}  # other splits: FAKE_EVAL_SIZE
FAKE_EVAL_SIZE = 50_000

# Full-size photos may exceed PIL's decompression-bomb limit; JPEGs are decoded at reduced size.
Image.MAX_IMAGE_PIXELS = None


def decode_image(data: bytes, size: int) -> np.ndarray:
  """Decodes an encoded image by its content into the central size x size RGB patch (uint8).

  The shorter side is rescaled to `size` (bilinear, antialiased), also for smaller images.
  JPEGs are decoded at the smallest DCT scale that keeps both sides >= size. 16-bit grey
  levels (PNG, PGM) are scaled to 8 bits (65535 -> 255); pixels of no fixed range (32-bit
  integers or floats, as TIFFs may hold) are a ValueError.
  """
  with Image.open(io.BytesIO(data)) as image:
    image.draft("RGB", (size, size))
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N") or (
      image.format in ("PNG", "PPM") and image.mode == "I"
    ):
      # 16 bits a pixel, which PIL's conversion would clip at 255
      image = Image.fromarray(np.round(np.asarray(image, np.float32) / 257).astype(np.uint8))
    elif image.mode in ("I", "F") or image.mode.startswith("I;"):
      raise ValueError(f"its {image.mode} pixels have no fixed range")
    image = image.convert("RGB")
  width, height = image.size
  side = min(width, height)
  box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
  return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))


def _example(name: str, read: Callable[[], bytes], label: int, size: int) -> dict:
  """{"image", "label"}, or {"error"} naming the file when it cannot be read or decoded."""
  try:
    image = decode_image(read(), size)
  except UnidentifiedImageError:  # its message holds the address of a buffer
    return {"error": f"{name}: not an image that PIL can identify"}
  except Exception as e:  # PIL raises many kinds of errors for broken files.
    return {"error": f"{name}: {type(e).__name__}: {e}"}
  return {"image": image, "label": np.int32(label)}


class FolderSource:
  """Random access to image files with their labels (a Grain data source)."""

  def __init__(self, files: list[str], labels: list[int], image_size: int):
    self.files, self.labels, self.image_size = files, labels, image_size

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    path = self.files[index]
    return _example(path, Path(path).read_bytes, self.labels[index], self.image_size)


class TfdsSource:
  """Random access to a TFDS data source whose images are left encoded."""

  def __init__(self, source: Any, name: str, image_size: int):
    self.source, self.name, self.image_size = source, name, image_size

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    record = self.source[index]
    name = f"{self.name}[{index}]"
    return _example(name, lambda: record["image"], record["label"], self.image_size)


class FakeSource:
  """Random images with labels, a different image for each index; for benchmarks only."""

  def __init__(self, size: int, num_classes: int, image_size: int):
    self.size, self.num_classes, self.image_size = size, num_classes, image_size

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict:
    image = np.random.default_rng(index).integers(0, 256, (self.image_size,) * 2 + (3,), np.uint8)
    return {"image": image, "label": np.int32(index % self.num_classes)}


def read_class_list(path: str) -> list[str]:
  """Class names (the synsets) in index order from a file of lines `index<TAB>synset<TAB>name`."""
  return [synset for synset, _ in read_class_table(path)]


def read_class_table(path: str) -> list[tuple[str, str]]:
  """(synset, name) of every class in index order from a file of lines
  `index<TAB>synset<TAB>name`; a line without a name gives the synset as its name."""
  if not Path(path).is_file():
    raise DataError(f"config.class_list={path!r}: no such file.")
  lines = Path(path).read_text().splitlines()
  table = []
  for number, line in enumerate(lines, start=1):
    fields = line.split("\t")
    if not line.strip() or (number == 1 and fields[0] == "index"):
      continue
    if len(fields) < 2 or fields[0] != str(len(table)):
      raise DataError(
        f"{path}, line {number}: expected 'index<TAB>synset<TAB>name' with index {len(table)},"
        f" got {line!r}."
      )
    table.append((fields[1], fields[2] if len(fields) > 2 else fields[1]))
  return table


def split_alias(split: str, available: Any) -> str:
  """`split`, or the name standing in for it ("validation" and "val") that is in `available`."""
  alias = SPLIT_ALIASES.get(split)
  return alias if split not in available and alias in available else split


def _split_dir(root: Path, split: str) -> Path:
  """ROOT/<split>, with "validation" and "val" standing in for each other."""
  found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
  if split_alias(split, found) not in found:
    raise DataError(f"No folder for split {split!r} in {root}; found folders {found}.")
  return root / split_alias(split, found)


def _visible(path: Path) -> list[os.DirEntry]:
  """The entries of `path` not starting with ".", by name; their types come with the listing
  (no stat per file, which counts for ImageNet's 1.28 million)."""
  with os.scandir(path) as entries:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def folder_classes(root: Path, class_list: str) -> list[str]:
  """Class names in label order: from the class list file, or the sorted class folders of all
  splits, where no split may have a class that the training split lacks (a renamed folder)."""
  if not root.is_dir():
    raise DataError(f"Dataset folder {root} does not exist.")
  per_split = {s: {e.name for e in _visible(root / s) if e.is_dir()} for s in folder_splits(root)}
  folders = set().union(*per_split.values())
  if not class_list:
    train = per_split.get("train", folders)
    if folders != train:
      missing = [f"{s} lacks {sorted(folders - names)[:5]}" for s, names in per_split.items()]
      raise DataError(
        f"Class folders {sorted(folders - train)[:5]} of {root} are not in its train split:"
        f" {'; '.join(missing)}. Rename them to match, or give the classes with"
        " --config.class_list."
      )
    return sorted(folders)
  names = read_class_list(class_list)
  unknown = sorted(folders - set(names))
  if unknown:
    raise DataError(f"Class folder(s) {unknown[:5]} under {root} are not in {class_list}.")
  return names


def _folder_dataset(config: ml_collections.ConfigDict) -> tuple[Path, list[str]]:
  """The root of a folder dataset and its class names in label order (`_chosen_classes`), as
  many as `config.num_classes`."""
  root = Path(config.dataset.removeprefix(FOLDER_PREFIX))
  where = config.class_list or root
  classes = _chosen_classes(folder_classes(root, config.class_list), config, where)
  _check_num_classes(len(classes), "config.classes" if config.classes else where, config)
  return root, classes


def _chosen_classes(classes: list[str], config: ml_collections.ConfigDict, where: Any) -> list[str]:
  """`config.classes`, which must be distinct names of `classes` (those of `where`), or where it
  is empty all of `classes`."""
  if not config.classes:
    return classes
  unknown = [name for name in config.classes if name not in classes]
  if unknown or len(set(config.classes)) < len(config.classes):
    raise DataError(
      f"config.classes={tuple(config.classes)}: {unknown[:5] or 'a class named twice'}; give"
      f" distinct classes of {where} ({', '.join(classes[:4])}, ...) as a tuple, e.g."
      f' --config.classes="{tuple(classes[:2])}".'
    )
  return list(config.classes)


def _no_class_subset(config: ml_collections.ConfigDict) -> None:
  """`config.classes` is only for folder datasets."""
  if config.classes and not config.dataset.startswith(FOLDER_PREFIX):
    raise ConfigError(
      f"config.classes selects class folders of a folder:/path dataset, not of"
      f" {config.dataset!r}; leave it empty."
    )


def folder_splits(root: Path) -> list[str]:
  """The split folders (of `FOLDER_SPLITS`) in `root`."""
  return [split for split in FOLDER_SPLITS if (root / split).is_dir()]


def folder_source(root: Path, split: str, classes: list[str], image_size: int) -> FolderSource:
  """All files in ROOT/<split>/<class>/ for the classes of `classes` (decoded by content, so any
  extension), sorted; the label of a class folder is its index in `classes`."""
  index = {name: i for i, name in enumerate(classes)}
  split_dir = _split_dir(root, split)
  files, labels, loose, not_files, empty = [], [], [], [], []
  for folder in _visible(split_dir):
    if not folder.is_dir():
      loose.append(folder.name)
      continue
    if folder.name not in index:  # a class that config.classes leaves out
      continue
    entries = _visible(folder)
    paths = [e.path for e in entries if e.is_file()]
    not_files += [f"{folder.name}/{e.name}" for e in entries if not e.is_file()]
    empty += [] if paths else [folder.name]
    files += paths
    labels += [index[folder.name]] * len(paths)
  if loose:
    logging.warning("Ignoring files outside class folders in %s: %s", split_dir, loose)
  if not_files:  # folders inside class folders, broken links
    logging.warning(
      "Ignoring %d entries of class folders in %s that are not files: %s",
      len(not_files), split_dir, not_files[:10],
    )  # fmt: skip
  if empty:
    logging.warning("Class folders without a file in %s: %s", split_dir, empty)
  if not files:
    raise DataError(f"No image files in the class folders of {split_dir}.")
  return FolderSource(files, labels, image_size)


def _tfds(config: ml_collections.ConfigDict) -> Any:
  """The tensorflow_datasets module, imported only for TFDS sources: it loads TensorFlow, an
  optional install (requirements-tfds.txt)."""
  try:
    import tensorflow_datasets
  except ImportError:
    raise DataError(
      f"config.dataset={config.dataset!r} is not 'fake', 'folder:/path' or 'prepared:/path', so"
      " it is read through TFDS, which is not installed: pip install -r requirements-tfds.txt."
    ) from None
  return tensorflow_datasets


def _tfds_builder(config: ml_collections.ConfigDict) -> Any:
  """The TFDS builder; a dataset that must be downloaded by hand and is not says where to put it."""
  tfds = _tfds(config)
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(
      f"config.dataset={config.dataset!r} is not 'fake', 'folder:/path' or a TFDS dataset ({e})."
    ) from None
  manual_dir = builder.data_dir_root / "downloads" / "manual"
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if instructions and not builder.is_prepared() and not any(manual_dir.glob("*")):
    raise DataError(
      f"Dataset {config.dataset!r} is not prepared in {builder.data_dir_root} and must be"
      f" downloaded by hand: put its files in {manual_dir} (TFDS prepares it from there on the"
      f" first run), or use --config.dataset=folder:/path/to/images with"
      f" /path/to/images/<split>/<class>/<files>. TFDS says:\n{instructions.strip()}"
    )
  return builder


def tfds_source(config: ml_collections.ConfigDict, split: str) -> TfdsSource:
  tfds = _tfds(config)
  builder = _tfds_builder(config)
  _check_num_classes(builder.info.features["label"].num_classes, config.dataset, config)
  source = tfds.data_source(
    config.dataset,
    split=split,
    data_dir=config.data_dir or None,
    decoders={"image": tfds.decode.SkipDecoding()},
  )
  return TfdsSource(source, f"{config.dataset}/{split}", config.image_size)


def _check_num_classes(found: int, where: Any, config: ml_collections.ConfigDict) -> None:
  if found != config.num_classes:
    raise DataError(
      f"{where} has {found} classes but config.num_classes={config.num_classes};"
      f" set --config.num_classes={found}."
    )


def decoding_source(config: ml_collections.ConfigDict, split: str) -> Any:
  """The random-access source of `config.dataset` for `split`: index -> example, decoded at
  each read. Listing it decodes nothing."""
  _no_class_subset(config)
  if config.dataset == "fake":
    logging.warning("Dataset 'fake': random images, for throughput benchmarks only.")
    size = FAKE_SIZES.get(split, FAKE_EVAL_SIZE)
    return FakeSource(size, config.num_classes, config.image_size)
  if config.dataset.startswith(prepared.PREFIX):
    path = prepared.root(config)
    metadata = prepared.read_metadata(path, config)
    return prepared.PreparedSource(path, metadata, split_alias(split, metadata["splits"]))
  if config.dataset.startswith(FOLDER_PREFIX):
    root, classes = _folder_dataset(config)
    return folder_source(root, split, classes, config.image_size)
  return tfds_source(config, split)


def source_classes_and_splits(config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """The class names (in label order) and the split names of a folder or TFDS dataset (TFDS
  prepares it first, as reading it would)."""
  _no_class_subset(config)
  if config.dataset.startswith(FOLDER_PREFIX):
    root, classes = _folder_dataset(config)
    return classes, folder_splits(root)
  builder = _tfds_builder(config)
  builder.download_and_prepare()
  labels = builder.info.features["label"]
  _check_num_classes(labels.num_classes, config.dataset, config)
  return list(labels.names), list(builder.info.splits)


def display_names(config: ml_collections.ConfigDict, classes: list[str]) -> list[str]:
  """The class names to show: those of `config.class_list` ("tench" for n01440764), those a
  prepared dataset was prepared with, else `classes`, the dataset's."""
  if config.class_list:
    return [name for _, name in read_class_table(config.class_list)]
  if config.dataset.startswith(prepared.PREFIX):
    return prepared.read_metadata(prepared.root(config), config).get("class_names", classes)
  return classes


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  """The class names of `config.dataset` in label order, reading no image: a folder dataset's
  (`folder_classes`, or `config.classes`), those of `config.class_list`, a prepared dataset's,
  or TFDS's label names."""
  _no_class_subset(config)
  if config.dataset.startswith(FOLDER_PREFIX):
    root = Path(config.dataset.removeprefix(FOLDER_PREFIX))
    where = config.class_list or root
    return _chosen_classes(folder_classes(root, config.class_list), config, where)
  if config.class_list:
    return read_class_list(config.class_list)
  if config.dataset.startswith(prepared.PREFIX):
    return prepared.read_metadata(prepared.root(config), config)["classes"]
  if config.dataset == "fake":
    return [f"class {i}" for i in range(config.num_classes)]
  return list(_tfds_builder(config).info.features["label"].names)
