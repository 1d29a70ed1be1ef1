"""Reading images ("The Dataset" in the paper): sources, host-side decoding and the Grain loader.

`config.dataset` names the source:

  imagenet2012, cifar10, ...   a TFDS dataset in `config.data_dir` (random access, array_record)
  folder:/path                 image files in /path/<split>/<class>/<file> (`config.classes`
                               selects some of the classes)
  prepared:/path               a dataset prepared once with --mode=prepare (`supervision.prepared`)
  fake                         random images, for throughput benchmarks only

Every image is decoded on the host at each read, or with `config.cache_images` once, before
training: by content (not by file name), to RGB, its shorter side rescaled to
`config.image_size` and the central image_size x image_size patch kept as uint8. Cropping,
flipping, mean subtraction and lighting happen on the device (`supervision.preprocessing`). A
file that cannot be read or decoded is skipped with one warning that names it and counts the
files skipped so far: its row of the batch is masked out. It never stops an epoch or shifts
a label.

Batches are numpy dicts of the process's share of a global batch (batch_size // process_count):
"image" uint8 [b, S, S, 3], "label" int32 [b] and "mask" bool [b], False for skipped files and
for the padding that completes the last evaluation batch.
"""

import functools
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tqdm
from absl import flags, logging
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
  JPEGs are decoded at the smallest DCT scale that keeps both sides >= size.
  """
  with Image.open(io.BytesIO(data)) as image:
    image.draft("RGB", (size, size))
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


class CachedSource:
  """Every example of `source` decoded once, up front (threads, a progress bar), into memory: for
  datasets that fit (CIFAR-10 is 184 MB), so that training never waits for or competes with
  decoding. Unreadable files stay errors, named again at each read."""

  def __init__(self, source: Any, config: ml_collections.ConfigDict, name: str):
    size, count, batch_size = source.image_size, len(source), config.batch_size
    steps = -(-count // batch_size)
    try:
      images = np.empty((steps * batch_size, size, size, 3), np.uint8)
    except MemoryError:
      raise DataError(
        f"config.cache_images: {name} decoded is {count * size * size * 3 / 1e9:.1f} GB, more"
        " than this machine's memory; set --config.cache_images=False."
      ) from None
    labels, self.errors = np.zeros(steps * batch_size, np.int32), {}
    indices = functools.partial(eval_indices, count, 0, 1, batch_size)
    read = functools.partial(_read, read_batch, source, indices)
    batches = grain.MapDataset.range(steps).map(read)
    progress = tqdm.tqdm(total=steps, desc=f"decoding {name}", unit="batch")
    for k, batch in enumerate(_read_ahead(batches, *loader_settings(config, source))):
      rows = slice(k * batch_size, (k + 1) * batch_size)
      images[rows], labels[rows] = batch["image"], batch["label"]
      self.errors.update(batch["errors"])
      progress.update()
    progress.close()
    self.image_size, self.images, self.labels = size, images[:count], labels[:count]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    if index in self.errors:
      return {"error": self.errors[index]}
    return {"image": self.images[index], "label": self.labels[index]}


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
  files, labels, loose = [], [], []
  for folder in _visible(split_dir):
    if not folder.is_dir():
      loose.append(folder.name)
      continue
    if folder.name not in index:  # a class that config.classes leaves out
      continue
    paths = [e.path for e in _visible(folder) if e.is_file()]
    files += paths
    labels += [index[folder.name]] * len(paths)
  if loose:
    logging.warning("Ignoring files outside class folders in %s: %s", split_dir, loose)
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


def cached(source: Any, config: ml_collections.ConfigDict, split: str) -> Any:
  """`source` as training and evaluation read it: with `config.cache_images` every image is
  decoded here, once (`CachedSource`)."""
  if config.cache_images:
    return CachedSource(source, config, f"{config.dataset}/{split}")
  return source


def make_source(config: ml_collections.ConfigDict, split: str) -> Any:
  """`cached(decoding_source(...))` of `split`."""
  return cached(decoding_source(config, split), config, split)


def read_batch(source: Any, indices: np.ndarray) -> dict:
  """source[i] for each index, stacked: "image", "label", and "mask", which is False for
  padding (index -1) and for unreadable files, whose messages are in "errors" {index: message}."""
  size = source.image_size
  batch = dict(
    image=np.zeros((len(indices), size, size, 3), np.uint8),
    label=np.zeros(len(indices), np.int32),
    mask=np.zeros(len(indices), bool),
    errors={},
  )
  for row, index in enumerate(indices):
    example = source[int(index)] if index >= 0 else {}
    if "error" in example:
      batch["errors"][int(index)] = example["error"]
    elif example:
      batch["image"][row] = example["image"]
      batch["label"][row] = example["label"]
      batch["mask"][row] = True
  return batch


class _BadFiles(grain.IterDataset):
  """Logs the unreadable files of each batch (masked in it) with a running count.

  Runs in the main process, so its warnings count every bad file read by any worker.
  """

  def __iter__(self) -> grain.DatasetIterator:
    return _BadFilesIterator(self._parent.__iter__())


class _BadFilesIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self.skipped = 0

  def __next__(self) -> dict:
    batch = dict(next(self._parent))
    for error in batch.pop("errors").values():
      self.skipped += 1
      logging.warning("Skipped bad image %s (%d skipped so far)", error, self.skipped)
    return batch

  def get_state(self) -> dict:
    return {"parent": self._parent.get_state(), "skipped": self.skipped}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self.skipped = state["skipped"]


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  return index, count


def host_batch_size(config: ml_collections.ConfigDict, process_count: int) -> int:
  """This process's share of `config.batch_size`."""
  if config.batch_size % process_count:
    raise DataError(
      f"config.batch_size={config.batch_size} is not divisible by {process_count} processes."
    )
  return config.batch_size // process_count


def _read(read: Callable, source: Any, indices: Callable[[int], np.ndarray], k: int) -> dict:
  return read(source, indices(k))


def _loader(
  source: Any,
  indices: Callable[[int], np.ndarray],
  num_batches: int,
  config: ml_collections.ConfigDict,
) -> grain.IterDataset:
  """Batches k = 0 ... num_batches - 1, each read_batch(source, indices(k)), read ahead by the
  threads and worker processes of `loader_settings`; bad files are logged in this process.

  Grain rather than tf.data: random access gives an exact global shuffle per epoch and a small
  resumable state (the batch number). A whole batch is one Grain element, so that Grain's cost
  per element (about 0.6 ms on these CPUs) is paid per batch, not per image.
  """
  batches = grain.MapDataset.range(num_batches)
  if config.decoder == "host":
    ds = batches.map(functools.partial(_read, read_batch, source, indices))
    return _BadFiles(_read_ahead(ds, *loader_settings(config, source)))
  if config.decoder != "dali":
    raise ConfigError(f"config.decoder={config.decoder!r}; choose 'host' or 'dali'.")
  if not isinstance(source, prepared.PreparedSource):
    raise ConfigError(
      f"config.decoder='dali' decodes prepared datasets, not {config.dataset!r} (with"
      " cache_images=False); prepare it with --mode=prepare first."
    )
  from supervision import dali  # an optional install, imported only when selected

  ds = batches.map(functools.partial(_read, prepared.read_encoded, source, indices))
  decoder = dali.Decoder(len(indices(0)))
  return _BadFiles(_read_ahead(ds, *loader_settings(config, source))).map(decoder)


MIN_CORES_FOR_WORKERS = 4
THREADS_PER_WORKER = 2


def host_cores() -> int:
  """The CPU cores this process may run on."""
  return len(os.sched_getaffinity(0))


def loader_settings(config: ml_collections.ConfigDict, source: Any) -> tuple[int, int]:
  """(worker processes, threads in each process) reading `source`: `config.num_workers` and
  `config.num_threads`, or where they are -1, what the host's cores give.

  Decoding sources get one worker process per core from MIN_CORES_FOR_WORKERS cores up, with
  THREADS_PER_WORKER threads each: threads share one GIL (on an H200 host, 16 threads read
  1,300 ImageNet photos/s, 16 processes 3,000). Below that, and for images in memory
  (`CachedSource`, which workers would each copy), threads of this process read: on 2 cores
  4 threads read 520 photos/s, 2 processes of 2 threads 537.
  """
  cores = host_cores()
  workers = config.num_workers
  if workers < 0:
    decodes = not isinstance(source, CachedSource)
    workers = cores if decodes and cores >= MIN_CORES_FOR_WORKERS else 0
  threads = config.num_threads
  if threads < 0:
    threads = THREADS_PER_WORKER if workers else max(4, cores)
  return workers, threads


def _read_ahead(ds: grain.MapDataset, workers: int, threads: int) -> grain.IterDataset:
  """`ds` in order, its elements read ahead by `threads` threads in each of `workers` worker
  processes (none: in this process)."""
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads + 1))
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return ds


@functools.lru_cache(maxsize=4)
def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
  """The permutation of range(size) that is epoch `epoch` of the training stream."""
  return np.random.default_rng([seed, epoch]).permutation(size)


def train_indices(
  size: int, seed: int, process_index: int, process_count: int, batch_size: int, step: int
) -> np.ndarray:
  """The examples of the process's rows of global batch `step` of the training stream.

  The stream is the epochs' permutations one after another; global batch k is its positions
  k * B ... (k + 1) * B - 1, of which process p holds rows p * b ... (p + 1) * b - 1.
  """
  first = (step * process_count + process_index) * batch_size
  epochs, offsets = np.divmod(np.arange(first, first + batch_size), size)
  return np.array([epoch_order(size, seed, e)[o] for e, o in zip(epochs, offsets, strict=True)])


def train_dataset(
  config: ml_collections.ConfigDict,
  process_index: int | None = None,
  process_count: int | None = None,
  source: Any = None,
) -> grain.IterDataset:
  """Endless training batches; every epoch is a new global shuffle of `config.train_split`.

  All processes shuffle alike (`config.seed`) and each reads its own rows of every global batch,
  so the global batches (the processes' batches in process order) are the same for any number
  of processes. Unreadable files are masked out ("mask" False). `iter()` gives a grain
  DatasetIterator whose `get_state()`/`set_state()` resume the stream exactly. `source` is
  the split's `decoding_source`, listed here when not given.
  """
  index, count = _processes(process_index, process_count)
  batch_size = host_batch_size(config, count)
  if source is None:
    source = decoding_source(config, config.train_split)
  source = cached(source, config, config.train_split)
  indices = functools.partial(train_indices, len(source), config.seed, index, count, batch_size)
  return _loader(source, indices, sys.maxsize, config)


def eval_indices(
  size: int, process_index: int, process_count: int, batch_size: int, step: int
) -> np.ndarray:
  """Process p reads examples p, p + count, p + 2 count, ... in batches; -1 pads past the end."""
  indices = process_index + process_count * (step * batch_size + np.arange(batch_size))
  return np.where(indices < size, indices, -1)


def ordered_batches(
  source: Any, config: ml_collections.ConfigDict, process_index: int, process_count: int
) -> grain.IterDataset:
  """One pass over `source` in order: every example exactly once over all processes.

  The end is padded with masked examples ("mask" False) so that all processes yield the same
  number of full batches; unreadable files are masked too.
  """
  batch_size = host_batch_size(config, process_count)
  steps = -(-len(source) // (batch_size * process_count))
  indices = functools.partial(eval_indices, len(source), process_index, process_count, batch_size)
  return _loader(source, indices, steps, config)


def eval_dataset(
  config: ml_collections.ConfigDict,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """`ordered_batches` of `config.eval_split`, with "mask" marking the real examples."""
  source = make_source(config, config.eval_split)
  return ordered_batches(source, config, *_processes(process_index, process_count))
