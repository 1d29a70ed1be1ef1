"""`--mode=prepare`: every split of a folder or TFDS dataset decoded once, by the decoding that
training uses, into the paper's 256x256 images, and written as a prepared dataset
(`supervision.prepared`) with the class names, the counts, the training split's statistics and
a report of the files that could not be decoded.

Worker processes write shards of `config.prepare.shard_size` consecutive examples, each under a
temporary name renamed when complete; then a marker in OUT/.prepare records the shard's counts,
bad files and statistics sums. A killed prepare started again writes only the shards without a
marker. dataset.json comes last, after the records of every split are counted against the
source; a second run on a finished dataset only counts them again.
"""

import concurrent.futures
import dataclasses
import io
import json
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import tqdm
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from PIL import Image

from supervision import DataError, datasets, input_pipeline, prepared, stats

WORK = ".prepare"  # the markers of finished shards and the settings they were written with
READ_BATCH = 32  # examples a worker decodes together


@dataclasses.dataclass(frozen=True)
class Shard:
  """Examples start ... stop - 1 of `split`, written as shard `index` of `count`."""

  split: str
  index: int
  count: int
  start: int
  stop: int

  @property
  def name(self) -> str:
    return prepared.shard_name(self.split, self.index, self.count)


def plan(sizes: dict[str, int], shard_size: int) -> list[Shard]:
  """The shards of every split, `shard_size` examples each (the last one of a split fewer)."""
  shards = []
  for split, size in sizes.items():
    count = max(1, -(-size // shard_size))
    for i in range(count):
      shards.append(Shard(split, i, count, i * shard_size, min((i + 1) * shard_size, size)))
  return shards


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def write_shard(source: Any, shard: Shard, out: Path, quality: int) -> None:
  """Decodes the examples of `shard` and writes them as JPEG records, then its marker."""
  partial = out / WORK / f"{shard.name}.{os.getpid()}.partial"
  writer = ArrayRecordWriter(str(partial), prepared.WRITER_OPTIONS)
  size = source.image_size
  sums, bad = stats.image_sums(np.zeros((0, size, size, 3), np.uint8)), []
  for start in range(shard.start, shard.stop, READ_BATCH):
    batch = input_pipeline.read_batch(source, np.arange(start, min(start + READ_BATCH, shard.stop)))
    images, labels = batch["image"][batch["mask"]], batch["label"][batch["mask"]]
    for image, label in zip(images, labels, strict=True):
      writer.write(prepared.encode_record(int(label), encode_jpeg(image, quality)))
    sums = stats.add_sums(sums, stats.image_sums(images))
    bad += batch["errors"].values()
  writer.close()
  os.replace(partial, out / shard.name)
  stats.save_stats(dict(sums, bad=np.array(bad, dtype=str)), _marker(out, shard))


def _marker(out: Path, shard: Shard) -> Path:
  return out / WORK / f"{shard.name}.npz"


_SOURCES: dict[str, Any] = {}  # the sources of a worker process, by split


def _init_worker(sources: dict[str, Any]) -> None:
  _SOURCES.update(sources)


def _write_in_worker(shard: Shard, out: Path, quality: int) -> Shard:
  write_shard(_SOURCES[shard.split], shard, out, quality)
  return shard


def num_processes(config: ml_collections.ConfigDict) -> int:
  """`config.num_workers`, or for -1 the cores this process may run on (0: no workers)."""
  return config.num_workers if config.num_workers >= 0 else input_pipeline.host_cores()


def write_shards(
  sources: dict[str, Any], shards: list[Shard], out: Path, config: ml_collections.ConfigDict
) -> None:
  """Writes `shards` in worker processes (in this one for num_workers=0), with a progress bar."""
  quality, workers = config.prepare.jpeg_quality, num_processes(config)
  progress = tqdm.tqdm(
    total=sum(s.stop - s.start for s in shards), desc=f"preparing {out}", unit="image"
  )
  if workers == 0:
    for shard in shards:
      write_shard(sources[shard.split], shard, out, quality)
      progress.update(shard.stop - shard.start)
  else:
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, context, _init_worker, (sources,))
    try:
      jobs = [pool.submit(_write_in_worker, shard, out, quality) for shard in shards]
      for job in concurrent.futures.as_completed(jobs):
        shard = job.result()
        progress.update(shard.stop - shard.start)
    finally:  # on an error or Ctrl-C, the shards not started are not started
      pool.shutdown(cancel_futures=True)
  progress.close()


def _settings(config: ml_collections.ConfigDict, classes: list[str]) -> dict:
  """What the records depend on; a prepare resumes only with the same settings."""
  return dict(
    format=prepared.FORMAT,
    source=config.dataset,
    image_size=config.image_size,
    jpeg_quality=config.prepare.jpeg_quality,
    shard_size=config.prepare.shard_size,
    classes=classes,
  )


def _check_settings(path: Path, settings: dict, keys: tuple) -> None:
  found = json.loads(path.read_text())
  differ = [
    f"{k}: {found.get(k)!r} there, {settings[k]!r} now" for k in keys if found.get(k) != settings[k]
  ]
  if differ:
    raise DataError(
      f"{path.parent} was prepared with other settings ({'; '.join(differ)}); prepare into"
      " another folder, or delete it."
    )


def count_records(out: Path, metadata: dict, sizes: dict[str, int]) -> list[str]:
  """Counts the records in the shard files of every split against dataset.json and against the
  source's examples (`sizes`); one line per split, or a DataError naming what differs."""
  lines = []
  for split, entry in metadata["splits"].items():
    records = sum(ArrayRecordReader(str(out / name)).num_records() for name in entry["shards"])
    bad = entry["bad_files"]
    if records != entry["examples"] or records + bad != sizes[split]:
      raise DataError(
        f"{out}, split {split!r}: {records} records in its shards and {bad} bad files, but"
        f" {entry['examples']} examples in {prepared.METADATA} and {sizes[split]} in the source"
        f" {metadata['source']}; prepare it again into a new folder."
      )
    lines.append(f"{split}: {records} records + {bad} bad files = {sizes[split]} source examples")
  return lines


def _gather(out: Path, shards: list[Shard], settings: dict, stats_split: str, config) -> dict:
  """The metadata of the written `shards`; writes stats.npz and bad_files.tsv from their markers."""
  splits: dict[str, dict] = {}
  sums, report = None, []
  for shard in shards:
    with np.load(_marker(out, shard)) as marker:
      entry = splits.setdefault(shard.split, dict(examples=0, bad_files=0, shards=[]))
      entry["examples"] += int(marker["count"])
      entry["bad_files"] += len(marker["bad"])
      entry["shards"].append(shard.name)
      report += [f"{shard.split}\t{message}\n" for message in marker["bad"]]
      if shard.split == stats_split:
        sums = stats.add_sums(sums, {k: marker[k] for k in ("pixels", "rgb_products", "count")})
  skipped = splits[stats_split]["bad_files"]
  stats.save_stats(stats.stats_from_sums(sums, config, skipped), out / prepared.STATS)
  (out / prepared.BAD_FILES).write_text("".join(report))
  return dict(settings, stats_split=stats_split, splits=splits)


def _write_dataset(out: Path, sources: dict, sizes: dict, settings: dict, config) -> dict:
  """Writes the shards not written yet and gathers them all; returns the metadata."""
  stats_split = datasets.split_alias(config.train_split, sources)
  if stats_split not in sources:
    raise DataError(
      f"config.train_split={config.train_split!r} is not a split of {config.dataset}"
      f" ({list(sources)}); its statistics are computed while preparing."
    )
  (out / WORK).mkdir(parents=True, exist_ok=True)
  if (out / WORK / "settings.json").exists():
    _check_settings(out / WORK / "settings.json", settings, tuple(settings))
  else:
    (out / WORK / "settings.json").write_text(json.dumps(settings) + "\n")
  shards = plan(sizes, config.prepare.shard_size)
  todo = [s for s in shards if not _marker(out, s).exists()]
  if len(todo) < len(shards):
    print(f"Resuming: {len(shards) - len(todo)} of {len(shards)} shards are written already.")
  write_shards(sources, todo, out, config)
  return _gather(out, shards, settings, stats_split, config)


def run_prepare(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=prepare`: prepares `config.dataset` into `workdir`, or counts a finished one."""
  out = Path(workdir)
  if config.dataset == "fake" or config.dataset.startswith(prepared.PREFIX):
    raise DataError(f"--mode=prepare reads a folder or TFDS dataset, not {config.dataset!r}.")
  classes, split_names = datasets.source_classes_and_splits(config)
  split_names = list(config.prepare.splits) or split_names
  settings = _settings(config, classes)
  finished = (out / prepared.METADATA).exists()
  if finished:
    _check_settings(out / prepared.METADATA, settings, ("source", "image_size", "jpeg_quality"))
    metadata = prepared.read_metadata(out, config)
    split_names = list(metadata["splits"])  # to count them again
  sources = {split: datasets.decoding_source(config, split) for split in split_names}
  sizes = {split: len(source) for split, source in sources.items()}
  if not finished:
    metadata = _write_dataset(out, sources, sizes, settings, config)
    metadata["class_names"] = datasets.display_names(config, classes)  # shown by --mode=predict
  lines = count_records(out, metadata, sizes)
  if not finished:
    partial = out / f"{prepared.METADATA}.partial"
    partial.write_text(json.dumps(metadata, indent=1) + "\n")
    os.replace(partial, out / prepared.METADATA)
    shutil.rmtree(out / WORK)
  print(f"{out} was prepared already:" if finished else f"Prepared {out}:")
  for line in lines:
    print(f"  {line}")
  return metadata
