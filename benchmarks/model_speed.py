"""Train-step and inference speed of the model on fixed random input (no data loading).

Prints RESULT lines in the format of ../shared/peers/torch_alexnet.py, so both can be run
interleaved on the same machine:
    python -m benchmarks.model_speed --config=configs/alexnet.py --batch=128,512 --steps=5
The train step is forward, softmax cross-entropy, backward and the paper's SGD update (the
optimizer that training uses, `optim.create_optimizer`).
`--dtype=bfloat16` computes in bfloat16 with float32 parameters (config.model.dtype).
Both are compiled with the project's `sharding.compiler_options()`; `--xla_defaults` compiles
them with XLA's defaults instead, the baseline of those options.
"""

import functools
import os
import statistics
import time
from typing import Any

import jax
import ml_collections
import optax
from absl import app, flags
from ml_collections import config_flags

from supervision import models, optim, sharding

config_flags.DEFINE_config_file("config", "configs/alexnet.py", "Model config.")
flags.DEFINE_list("batch", ["128"], "Images per step; several sizes are timed one after another.")
flags.DEFINE_enum("dtype", None, models.DTYPES, "config.model.dtype (default: the config's).")
flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed calls; the first (compilation) is printed.")
flags.DEFINE_enum("mode", "both", ["train", "infer", "both"], "What to time.")
flags.DEFINE_bool("xla_defaults", False, "Compile without `sharding.compiler_options()`.")
FLAGS = flags.FLAGS


def timed(fn, warmup: int, steps: int) -> tuple[float, list[float]]:
  """Seconds of the first call and of each timed call (each waits for its result)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, times


def report(net: str, mode: str, batch: int, first: float, times: list[float], dtype: str) -> None:
  med = statistics.median(times)
  print(
    f"RESULT fw=jax net={net} mode={mode} dtype={dtype} batch={batch} steps={len(times)} "
    f"median_ms={med * 1e3:.1f} min_ms={min(times) * 1e3:.1f} img_s={batch / med:.1f} "
    f"first_call_s={first:.2f} load1={os.getloadavg()[0]:.2f} xla_defaults={FLAGS.xla_defaults}",
    flush=True,
  )


def main(_):
  config = FLAGS.config
  if FLAGS.dtype:
    config.model.dtype = FLAGS.dtype
  model = models.create_model(config)
  key = jax.random.key(0)
  shape = (1, config.crop_size, config.crop_size, 3)
  params = jax.jit(model.init)(key, jax.numpy.zeros(shape))["params"]
  net = f"{config.model.name}:{config.dataset}"
  print(
    f"PARAMS net={net} count={sum(p.size for p in jax.tree.leaves(params))} jax={jax.__version__}"
  )
  for batch in map(int, FLAGS.batch):
    time_model(model, params, config, batch, net)


def time_model(
  model: models.ColumnNet, params: Any, config: ml_collections.ConfigDict, batch: int, net: str
) -> None:
  """Times the train step and inference of `model` on a random batch of `batch` images."""
  key = jax.random.key(batch)
  x = jax.random.normal(key, (batch, config.crop_size, config.crop_size, 3))
  y = jax.random.randint(key, (batch,), 0, config.num_classes)
  tx = optim.create_optimizer(config)  # the training's: biases not decayed by default
  dtype = config.model.dtype

  def loss_fn(params, step):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(step)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  options = None if FLAGS.xla_defaults else sharding.compiler_options()

  @functools.partial(jax.jit, compiler_options=options)
  def train_step(params, opt_state, step):
    grads = jax.grad(loss_fn)(params, step)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  infer = jax.jit(lambda params: model.apply({"params": params}, x), compiler_options=options)
  if FLAGS.mode in ("train", "both"):
    carry = [params, tx.init(params), 0]

    def step():
      carry[0], carry[1] = train_step(carry[0], carry[1], carry[2])
      carry[2] += 1
      return carry[0]

    report(net, "train", batch, *timed(step, FLAGS.warmup, FLAGS.steps), dtype)
  if FLAGS.mode in ("infer", "both"):
    report(net, "infer", batch, *timed(lambda: infer(params), FLAGS.warmup, FLAGS.steps), dtype)


if __name__ == "__main__":
  app.run(main)
