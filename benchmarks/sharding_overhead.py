"""Train-step time of one config on several meshes, interleaved (A B A B ...).

    python -m benchmarks.sharding_overhead --config=configs/alexnet.py --batch=32 --rounds=5

On a CPU the devices are simulated (4 of them, sharing the cores), so the difference between
meshes is the cost of the split itself, not a speed-up. The step is `supervision.steps`':
augmentation, forward, backward and the paper's SGD update, with keys from (seed, step).
"""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import functools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from supervision import models, optim, sharding, steps  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/alexnet.py", "Model config.")
flags.DEFINE_integer("batch", 32, "Images per step.")
flags.DEFINE_integer("rounds", 5, "Timed steps per mesh, interleaved; the median is reported.")
flags.DEFINE_list("meshes", ["1x1", "1x2"], "data x model mesh shapes to compare.")
FLAGS = flags.FLAGS


def make_step(config, mesh):
  """(compiled step, state, step inputs) of `supervision.steps.train_step` on `mesh`.

  The inputs are random uint8 images of config.image_size and synthetic dataset statistics.
  """
  model, tx = models.create_model(config), optim.create_optimizer(config)
  rng = np.random.default_rng(0)
  size = config.image_size
  batch = dict(
    image=rng.integers(0, 256, (FLAGS.batch, size, size, 3), np.uint8),
    label=np.arange(FLAGS.batch, dtype=np.int32) % config.num_classes,
    mask=np.ones(FLAGS.batch, bool),
  )
  data_stats = dict(mean=np.full((size, size, 3), 120, "f"), eigvals=np.ones(3, "f"))
  data_stats = dict(data_stats, eigvecs=np.eye(3, dtype="f"))
  images = np.zeros((1, config.crop_size, config.crop_size, 3), "f")
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  # numpy draws: compiling JAX's RNG for every parameter shape costs minutes on CPU.
  params = jax.tree.map(lambda x: config.model.init_std * rng.standard_normal(x.shape, "f"), shapes)
  state = steps.state_from_params(params, tx, jax.random.key(config.seed))
  state = jax.device_put(state, sharding.state_shardings(mesh, state))
  inputs = (sharding.to_global(mesh, batch), sharding.replicate(mesh, data_stats), 1.0)
  step = functools.partial(
    steps.train_step, model=model, tx=tx, lr_fn=optim.learning_rate_fn(config, 1), config=config
  )
  with jax.set_mesh(mesh):
    jitted = jax.jit(step, compiler_options=sharding.compiler_options())
    compiled = jitted.lower(state, *inputs).compile()
  return compiled, state, inputs


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
      run[1], _ = jax.block_until_ready(run[0](run[1], *run[2]))
      run[3].append(time.perf_counter() - t0)
  base = statistics.median(next(iter(runs.values()))[3][1:])
  for name, (_, state, _, times) in runs.items():
    med = statistics.median(times[1:])
    params = sum(x.size for x in jax.tree.leaves(state.params))
    print(
      f"RESULT params={params} crop={config.crop_size} batch={FLAGS.batch} mesh={name} "
      f"median_ms={med * 1e3:.1f} min_ms={min(times[1:]) * 1e3:.1f} "
      f"vs_first={med / base:.3f} load1={os.getloadavg()[0]:.2f}",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
