"""The input pipeline against the training step: per-core decoding rates of full-size and
prepared data, where a batch's time goes, the cores needed to feed a step rate, and the train
step fed by the pipeline against the same step on a device-resident batch.

  python -m benchmarks.input_pipeline --config=configs/alexnet.py \
    --config.dataset=folder:/data/imagenet --prepared=/data/imagenet_prepared --workdir=/tmp/bench

--config.dataset is the full-size source (folder or TFDS); --prepared is the same dataset after
`main.py --mode=prepare` (prepared into WORKDIR/prepared when not given). Rates are medians of
interleaved rounds. Targets (issue: prepared data): prepared >= 5x full-size per core, and on a
GPU host the step fed by prepared data >= 90% of the resident-batch step. With --trainer_steps,
`main.py`'s own training loop (train_and_evaluate) also runs on the prepared data, and its logged
rate is reported. The statistics are computed into (or read from) --workdir.
"""

import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import grain
import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from supervision import datasets, input_pipeline, prepare, prepared, sharding, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
flags.DEFINE_string("workdir", "/tmp/supervision_benchmark", "Statistics and prepared data.")
flags.DEFINE_string("prepared", "", "The prepared copy of --config.dataset (default: make one).")
flags.DEFINE_integer("batches", 16, "Batches per measurement.")
flags.DEFINE_integer("steps", 5, "Train steps per measurement.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds; medians are reported.")
flags.DEFINE_list("step_rates", ["14000", "25000"], "Images/s to project the needed cores for.")
flags.DEFINE_integer("trainer_steps", 0, "Steps of main.py's training loop on prepared data.")
flags.mark_flags_as_required(["config"])


def rate(run: Callable[[], int], repeats: int) -> float:
  """Images per second of `run` (which returns its number of images), after one warm-up call."""
  run()
  start, images = time.perf_counter(), 0
  for _ in range(repeats):
    images += run()
  return images / (time.perf_counter() - start)


def medians(measurements: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
  """Each measurement `rounds` times, interleaved (A B A B ...); the medians."""
  values = {name: [] for name in measurements}
  for _ in range(rounds):
    for name, measure in measurements.items():
      values[name].append(measure())
  return {name: statistics.median(v) for name, v in values.items()}


def per_core(sources: dict, config: ml_collections.ConfigDict) -> dict[str, Callable]:
  """In this thread: the decoding of each source alone (`source[i]`, file read included), and
  with the batching (`read_batch`), over batches of the training order."""
  measurements = {}
  for name, source in sources.items():
    order = np.random.default_rng(0).permutation(len(source))
    batches = np.resize(order, (FLAGS.batches, config.batch_size))
    cycle = iter(range(10**9))

    def decode(source=source, batches=batches, cycle=cycle):
      for index in batches[next(cycle) % len(batches)]:
        source[int(index)]
      return len(batches[0])

    def batch(source=source, batches=batches, cycle=cycle):
      return len(input_pipeline.read_batch(source, batches[next(cycle) % len(batches)])["label"])

    measurements[f"{name}: decode"] = functools.partial(rate, decode, FLAGS.batches)
    measurements[f"{name}: decode + batch"] = functools.partial(rate, batch, FLAGS.batches)
  return measurements


def transfers(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> dict[str, Callable]:
  """The cost of moving a ready batch: through a worker process of Grain (shared memory), and
  from the host to the devices."""
  size, b = config.image_size, config.batch_size
  batch = dict(
    image=np.zeros((b, size, size, 3), np.uint8),
    label=np.zeros(b, np.int32),
    mask=np.ones(b, bool),
  )
  through_worker = grain.MapDataset.range(10**9).map(lambda k: batch).to_iter_dataset()
  through_worker = iter(through_worker.mp_prefetch(grain.MultiprocessingOptions(num_workers=1)))

  def ipc():
    return len(next(through_worker)["label"])

  def host_to_device():
    jax.block_until_ready(sharding.to_global(mesh, batch))
    return b

  return {
    "Grain worker -> main process": functools.partial(rate, ipc, FLAGS.batches),
    "host -> device": functools.partial(rate, host_to_device, FLAGS.batches),
  }


def loaders(configs: dict, trainer: train.Trainer) -> dict[str, Callable]:
  """The training loader as configured (`loader_settings`): host batches alone and with their
  transfer to the devices. Each measurement starts a new iterator and skips twice its read-ahead
  (threads + 1 batches per process), so that batches read ahead are not counted."""

  def sustained(config, to_device):
    dataset = input_pipeline.train_dataset(config)
    workers, threads = input_pipeline.loader_settings(config, trainer.train_source)
    batches = iter(dataset)
    for _ in range(2 * (threads + 1) * max(workers, 1)):
      next(batches)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
      batch = next(batches)
      if to_device:
        jax.block_until_ready(sharding.to_global(trainer.mesh, batch))
    return FLAGS.batches * config.batch_size / (time.perf_counter() - start)

  measurements = {}
  for name, config in configs.items():
    measurements[f"{name}: loader"] = functools.partial(sustained, config, False)
    measurements[f"{name}: loader + host -> device"] = functools.partial(sustained, config, True)
  return measurements


def steps(trainer: train.Trainer, config: ml_collections.ConfigDict) -> dict[str, Callable]:
  """The real train step on a device-resident batch, and fed by the pipeline of `config`
  (prefetched as in training)."""
  batches = train.device_batches(trainer, iter(input_pipeline.train_dataset(config)))
  resident, _ = next(batches)
  state = [trainer.init_state()]

  def step(batch):
    with jax.set_mesh(trainer.mesh):
      state[0], metrics = trainer.train_step(state[0], batch, trainer.data_stats, 1.0)
    jax.block_until_ready(metrics)
    return config.batch_size

  return {
    "train step, resident batch": functools.partial(rate, lambda: step(resident), FLAGS.steps),
    "train step, prepared data": functools.partial(
      rate, lambda: step(next(batches)[0]), FLAGS.steps
    ),
  }


def trainer_rate(config: ml_collections.ConfigDict) -> float:
  """Median logged images/s of `train_and_evaluate` (main.py's loop) after its first interval."""
  config = config.copy_and_resolve_references()
  workdir = Path(FLAGS.workdir) / f"trainer_{time.time_ns()}"
  config.num_train_steps = FLAGS.trainer_steps
  config.log_every_steps = max(1, FLAGS.trainer_steps // 5)
  config.eval_every_steps = config.checkpoint_every_steps = 10**9
  config.num_eval_batches = 1
  train.train_and_evaluate(config, str(workdir))
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  logged = [json.loads(line).get("images_per_second") for line in lines]
  return statistics.median([r for r in logged if r is not None][1:])


def report(config: ml_collections.ConfigDict) -> None:
  out = Path(FLAGS.prepared or Path(FLAGS.workdir) / "prepared")
  if not FLAGS.prepared:
    prepare.run_prepare(config, str(out))
  ready = config.copy_and_resolve_references()
  ready.dataset = f"{prepared.PREFIX}{out}"
  config = config.copy_and_resolve_references()
  config.decoder = "host"  # config.decoder applies to the prepared data
  full_source = datasets.decoding_source(config, config.train_split)
  ready_source = datasets.decoding_source(ready, ready.train_split)
  sources = {"full-size": full_source, "prepared": ready_source}
  trainer = train.Trainer(ready, FLAGS.workdir)
  workers, threads = input_pipeline.loader_settings(ready, sources["prepared"])
  print(
    f"dataset {config.dataset} and {ready.dataset}, batch {config.batch_size}, image"
    f" {config.image_size}, {input_pipeline.host_cores()} cores; loader: {workers} worker"
    f" processes x {threads} threads, decoder {ready.decoder}; mesh {dict(trainer.mesh.shape)} on"
    f" {jax.devices()[0].device_kind}"
  )
  results = medians(per_core(sources, config), FLAGS.rounds)
  results |= medians(transfers(config, trainer.mesh), FLAGS.rounds)
  results |= medians(loaders({"full-size": config, "prepared": ready}, trainer), FLAGS.rounds)
  results |= medians(steps(trainer, ready), FLAGS.rounds)
  if FLAGS.trainer_steps:
    results["main.py's training loop, prepared data"] = trainer_rate(ready)
  for name, value in results.items():
    print(f"{name:45s} {value:10.1f} images/s")

  print("\nMilliseconds per batch of", config.batch_size, "(one core; the worker transfer in the")
  print("worker, host -> device in the main process):")
  ms = {name: 1e3 * config.batch_size / value for name, value in results.items()}
  for name in ("full-size", "prepared"):
    decode, batch = ms[f"{name}: decode"], ms[f"{name}: decode + batch"]
    print(f"  {name:10s} decode {decode:7.1f}, batching {batch - decode:6.1f},", end="")
    print(f" worker transfer {ms['Grain worker -> main process']:5.1f},", end="")
    print(f" host -> device {ms['host -> device']:5.1f}")
  ratio = results["prepared: decode + batch"] / results["full-size: decode + batch"]
  print(f"\nprepared / full-size, decode + batch per core: {ratio:.2f}x (target >= 5)")
  for name in ("full-size", "prepared"):
    per_image = 1 / results[f"{name}: decode + batch"] + 1 / results["Grain worker -> main process"]
    for step_rate in map(float, FLAGS.step_rates):
      print(f"cores to feed {step_rate:,.0f} images/s, {name}: {step_rate * per_image:.1f}", end="")
      print(f" ({1 / per_image:,.0f} images/s per core through worker processes)")
  fed = results["train step, prepared data"] / results["train step, resident batch"]
  print(f"train step fed by prepared data / resident batch: {fed:.1%} (target >= 90% on a GPU)")


def main(argv: list[str]) -> None:
  del argv
  report(FLAGS.config)


if __name__ == "__main__":
  app.run(main)
