"""Reading batches: the Grain loader over a source (`supervision.datasets`), host-side.

Every image is decoded on the host at each read, or with `config.cache_images` once, before
training (`CachedSource`); prepared datasets can instead be decoded on the GPU with
`config.decoder="dali"` (`supervision.dali`). Cropping, flipping, mean subtraction and
lighting happen on the device (`supervision.preprocessing`). A file that cannot be read or
decoded is skipped with one warning that names it and counts the files skipped so far: its row
of the batch is masked out. It never stops an epoch or shifts a label.

Batches are numpy dicts of the process's share of a global batch (batch_size // process_count):
"image" uint8 [b, S, S, 3], "label" int32 [b] and "mask" bool [b], False for skipped files and
for the padding that completes the last evaluation batch.
"""

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tqdm
from absl import flags, logging

from supervision import ConfigError, DataError, datasets, prepared


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


def cached(source: Any, config: ml_collections.ConfigDict, split: str) -> Any:
  """`source` as training and evaluation read it: with `config.cache_images` every image is
  decoded here, once (`CachedSource`)."""
  if config.cache_images:
    return CachedSource(source, config, f"{config.dataset}/{split}")
  return source


def make_source(config: ml_collections.ConfigDict, split: str) -> Any:
  """`cached(datasets.decoding_source(...))` of `split`."""
  return cached(datasets.decoding_source(config, split), config, split)


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
  the split's `datasets.decoding_source`, listed here when not given.
  """
  index, count = _processes(process_index, process_count)
  batch_size = host_batch_size(config, count)
  if source is None:
    source = datasets.decoding_source(config, config.train_split)
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
