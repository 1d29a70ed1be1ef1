"""Images per second of the training input pipeline against the training step's consumption.

  python -m benchmarks.input_pipeline --config=configs/alexnet.py \
    --config.dataset=folder:/path/to/images --config.num_classes=N [--config.train_split=...]

The pipeline is measured as the trainer will run it: host batches from `train_dataset`
(read, decode, rescale, central crop) followed by the jitted device preprocessing of
`train_views` (mean subtraction, random crop, reflection, PCA lighting). `measure_step` gives the
images per second that the training step consumes: until the trainer exists it is a stand-in,
the model's jitted forward and backward pass on device-resident synthetic input.
"""

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import app, flags
from ml_collections import config_flags

from configs import alexnet
from supervision import input_pipeline, models, preprocessing

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
flags.DEFINE_integer("batches", 10, "Batches measured after one batch of warm-up.")
flags.DEFINE_integer("steps", 3, "Training steps measured after one step of warm-up.")
flags.mark_flags_as_required(["config"])


def placeholder_stats(config: ml_collections.ConfigDict) -> dict:
  """Statistics of the right shapes: the cost of preprocessing does not depend on their values."""
  size = config.image_size
  return dict(mean=jnp.full((size, size, 3), 128.0), eigvals=jnp.ones(3), eigvecs=jnp.eye(3))


def timed(run: Callable[[], int], repeats: int) -> float:
  """Images per second of `run` (which returns its number of images), after one warm-up call."""
  run()
  start, images = time.perf_counter(), 0
  for _ in range(repeats):
    images += run()
  return images / (time.perf_counter() - start)


def pipeline_images_per_second(config: ml_collections.ConfigDict, batches: int) -> dict:
  """Host batches alone, and host batches with the device preprocessing of training."""
  stats = placeholder_stats(config)
  views = jax.jit(functools.partial(preprocessing.train_views, config=config))
  keys = iter(jax.random.split(jax.random.key(0), 2 * batches + 2))
  host = iter(input_pipeline.train_dataset(config))

  def host_only():
    return len(next(host)["label"])

  def host_and_device():
    batch = next(host)
    views(next(keys), batch["image"], stats).block_until_ready()
    return len(batch["label"])

  return {
    "host": timed(host_only, batches),
    "host + device preprocessing": timed(host_and_device, batches),
  }


def forward_backward_images_per_second(config: ml_collections.ConfigDict, steps: int) -> float:
  """STAND-IN for the training step: jitted value_and_grad of the softmax cross-entropy of the
  model on a device-resident synthetic batch (no optimizer update, no input pipeline).

  The model is the `no_lrn` variant: reverse-mode differentiation of
  `models.local_response_norm` fails under jit (its reduce_window has an array init value).
  """
  model = models.create_model(alexnet.apply_variant(config.copy_and_resolve_references(), "no_lrn"))
  size, batch = config.crop_size, config.batch_size
  images = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, config.num_classes)
  params = model.init(jax.random.key(0), images[:1])["params"]

  def loss(params, images, labels, rng):
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  grad = jax.jit(jax.value_and_grad(loss))

  def step():
    jax.block_until_ready(grad(params, images, labels, jax.random.key(3)))
    return batch

  return timed(step, steps)


def report(
  config: ml_collections.ConfigDict,
  measure_step: Callable[[ml_collections.ConfigDict, int], float],
  step_name: str,
) -> None:
  """Prints the pipeline's images/s, the step's, and their ratio (the target is >= 1.5)."""
  pipeline = pipeline_images_per_second(config, FLAGS.batches)
  step = measure_step(config, FLAGS.steps)
  print(
    f"dataset {config.dataset}, batch {config.batch_size}, image {config.image_size},"
    f" {config.num_threads} threads, {config.num_workers} worker processes,"
    f" devices {jax.devices()}"
  )
  for name, rate in pipeline.items():
    print(f"pipeline, {name}: {rate:8.1f} images/s")
  print(f"{step_name}: {step:8.1f} images/s")
  ratio = pipeline["host + device preprocessing"] / step
  print(f"ratio pipeline / step: {ratio:.2f} (target >= 1.5)")


def main(argv: list[str]) -> None:
  del argv
  step_name = "training step STAND-IN (model forward + backward, synthetic input)"
  report(FLAGS.config, forward_backward_images_per_second, step_name)


if __name__ == "__main__":
  app.run(main)
