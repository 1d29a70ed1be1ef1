"""Train-step time of one config on several meshes, interleaved (A B A B ...).

    python -m benchmarks.sharding_overhead --config=configs/alexnet.py --batch=32 --rounds=5

On a CPU the devices are simulated (4 of them, sharing the cores), so the difference between
meshes is the cost of the split itself, not a speed-up. The step is forward, softmax
cross-entropy, backward and the paper's SGD update, with dropout keys from (seed, step).
"""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from supervision import models, optim, sharding  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/alexnet.py", "Model config.")
flags.DEFINE_integer("batch", 32, "Images per step.")
flags.DEFINE_integer("rounds", 5, "Timed steps per mesh, interleaved; the median is reported.")
flags.DEFINE_list("meshes", ["1x1", "1x2"], "data x model mesh shapes to compare.")
FLAGS = flags.FLAGS


def make_step(config, mesh):
  """(compiled step, carry, batch) on `mesh`; the carry is (params, opt_state, step)."""
  model = models.create_model(config)
  size = config.crop_size
  images = np.random.default_rng(1).normal(size=(FLAGS.batch, size, size, 3)).astype(np.float32)
  labels = np.arange(FLAGS.batch, dtype=np.int32) % config.num_classes
  shapes = jax.eval_shape(model.init, jax.random.key(0), images[:1])["params"]
  rng = np.random.default_rng(0)  # numpy draws: compiling JAX's RNG costs seconds on CPU
  params = jax.tree.map(lambda x: config.model.init_std * rng.standard_normal(x.shape, "f"), shapes)
  params = jax.device_put(params, sharding.state_shardings(mesh, params))
  tx = optim.paper_sgd(config.learning_rate, config.momentum, config.weight_decay)
  opt_state = jax.jit(tx.init)(params)  # sharded like params (same key paths)
  batch = sharding.to_global(mesh, (images, labels))

  def loss_fn(params, step, images, labels):
    key = jax.random.fold_in(jax.random.key(config.seed), step)
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step(params, opt_state, i, images, labels):
    grads = jax.grad(loss_fn)(params, i, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, i + 1

  with jax.set_mesh(mesh):
    compiled = step.lower(params, opt_state, 0, *batch).compile()
  return compiled, (params, opt_state, 0), batch


def main(_):
  config = FLAGS.config
  config.batch_size = FLAGS.batch
  runs = {}
  for name in FLAGS.meshes:
    config.mesh.data, config.mesh.model = map(int, name.split("x"))
    devices = jax.devices()[: config.mesh.data * config.mesh.model]
    t0 = time.perf_counter()
    runs[name] = [*make_step(config, sharding.create_mesh(config, devices)), []]
    print(f"mesh {name}: compiled in {time.perf_counter() - t0:.1f} s", flush=True)
  for _ in range(FLAGS.rounds + 1):  # the first round is a warm-up
    for run in runs.values():
      t0 = time.perf_counter()
      run[1] = jax.block_until_ready(run[0](*run[1], *run[2]))
      run[3].append(time.perf_counter() - t0)
  base = statistics.median(next(iter(runs.values()))[3][1:])
  for name, (*_, times) in runs.items():
    med = statistics.median(times[1:])
    print(
      f"RESULT net={config.model.name} crop={config.crop_size} batch={FLAGS.batch} mesh={name} "
      f"median_ms={med * 1e3:.1f} min_ms={min(times[1:]) * 1e3:.1f} "
      f"vs_first={med / base:.3f} load1={os.getloadavg()[0]:.2f}",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
