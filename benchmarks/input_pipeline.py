"""Images per second of the training input pipeline against the training step's consumption.

  python -m benchmarks.input_pipeline --config=configs/cifar10.py \
    --config.dataset=folder:/path/to/cifar10 --workdir=/tmp/bench

Three numbers, for the same config: the pipeline as the trainer runs it (host batches from
`train_dataset`: read, decode, rescale, central crop, or with `config.cache_images` read from
the images decoded before training; then the jitted `train_views`: mean subtraction, random
crop, reflection, PCA lighting); the real train step on one batch kept on the device
(synthetic input: no input cost); and the train step fed by the real pipeline.
Targets: pipeline >= 1.5x the step, and the real-input step within 5% of the synthetic one.
The statistics are computed into (or read from) --workdir.
"""

import functools
import statistics
import time
from collections.abc import Callable

import grain
import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from supervision import input_pipeline, preprocessing, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
flags.DEFINE_string("workdir", "/tmp/supervision_benchmark", "Where the statistics are cached.")
flags.DEFINE_integer("batches", 10, "Batches per measurement of the pipeline.")
flags.DEFINE_integer("steps", 5, "Train steps per measurement.")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds (synthetic, real, synthetic, real, ...).")
flags.mark_flags_as_required(["config"])


def timed(run: Callable[[], int], repeats: int) -> float:
  """Images per second of `run` (which returns its number of images), after one warm-up call."""
  run()
  start, images = time.perf_counter(), 0
  for _ in range(repeats):
    images += run()
  return images / (time.perf_counter() - start)


def pipeline_images_per_second(
  trainer: train.Trainer, dataset: grain.IterDataset, batches: int
) -> dict:
  """Host batches of `dataset` alone, and with the device preprocessing of training; each from
  a new iterator, so that neither reads batches that the other's threads read ahead."""
  views = jax.jit(functools.partial(preprocessing.train_views, config=trainer.config))
  keys = iter(jax.random.split(jax.random.key(0), batches + 1))
  host, host_for_device = iter(dataset), iter(dataset)

  def host_only():
    return len(next(host)["label"])

  def host_and_device():
    batch = next(host_for_device)
    views(next(keys), batch["image"], trainer.data_stats).block_until_ready()
    return len(batch["label"])

  return {
    "host": timed(host_only, batches),
    "host + device preprocessing": timed(host_and_device, batches),
  }


def step_images_per_second(
  trainer: train.Trainer, dataset: grain.IterDataset, steps: int, rounds: int
) -> dict:
  """Medians over interleaved rounds of the train step on a device-resident batch and on the
  batches of `dataset` (prefetched as in training)."""
  config = trainer.config
  batches = train.device_batches(trainer, iter(dataset))
  resident, _ = next(batches)
  state = [trainer.init_state()]

  def step(batch):
    with jax.set_mesh(trainer.mesh):
      state[0], metrics = trainer.train_step(state[0], batch, trainer.data_stats, 1.0)
    jax.block_until_ready(metrics)
    return config.batch_size

  rates = {"synthetic": [], "real": []}
  for _ in range(rounds):
    rates["synthetic"].append(timed(lambda: step(resident), steps))
    rates["real"].append(timed(lambda: step(next(batches)[0]), steps))
  return {name: statistics.median(r) for name, r in rates.items()}


def report(config: ml_collections.ConfigDict) -> None:
  trainer = train.Trainer(config, FLAGS.workdir)
  dataset = input_pipeline.train_dataset(config, source=trainer.train_source)
  pipeline = pipeline_images_per_second(trainer, dataset, FLAGS.batches)
  if config.cache_images:  # the images are decoded before training; how fast is that?
    decoding = config.copy_and_resolve_references()
    decoding.cache_images = False
    uncached = input_pipeline.train_dataset(decoding, source=trainer.train_source)
    rate = pipeline_images_per_second(trainer, uncached, FLAGS.batches)["host"]
    pipeline["host, decoding at each read (cache_images=False)"] = rate
  steps = step_images_per_second(trainer, dataset, FLAGS.steps, FLAGS.rounds)
  print(
    f"dataset {config.dataset}, batch {config.batch_size}, image {config.image_size},"
    f" crop {config.crop_size}, {config.num_threads} threads, {config.num_workers} worker"
    f" processes, mesh {dict(trainer.mesh.shape)} on {jax.devices()[0].platform}"
  )
  for name, rate in pipeline.items():
    print(f"pipeline, {name}: {rate:8.1f} images/s")
  print(f"train step, device-resident synthetic batch: {steps['synthetic']:8.1f} images/s")
  print(f"train step, real pipeline:                   {steps['real']:8.1f} images/s")
  ratio = pipeline["host + device preprocessing"] / steps["synthetic"]
  print(f"ratio pipeline / step: {ratio:.2f} (target >= 1.5)")
  slowdown = steps["synthetic"] / steps["real"] - 1
  print(f"step time with the real pipeline: {slowdown:+.1%} against synthetic (target <= 5%)")


def main(argv: list[str]) -> None:
  del argv
  report(FLAGS.config)


if __name__ == "__main__":
  app.run(main)
