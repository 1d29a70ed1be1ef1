"""Every config and variant builds and takes a train step; every benchmark runs at a tiny size."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_sharding import random_params

from configs import alexnet, cifar10, fake_data_benchmark, smoke
from supervision import models, optim, steps, train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
  **{f"alexnet.py:{v}": functools.partial(alexnet.get_config, v) for v in ("", *alexnet.VARIANTS)},
  "cifar10.py": cifar10.get_config,
  **{f"cifar10.py:{v}": functools.partial(cifar10.get_config, v) for v in cifar10.VARIANTS},
  "smoke.py": smoke.get_config,
  "fake_data_benchmark.py": fake_data_benchmark.get_config,
}
# For the benchmarks' subprocesses, which run a step or two: XLA:CPU at backend optimization
# level 0 without its expensive LLVM passes compiles about 20% faster than conftest's level 1.
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def train_step_of(config, batch_size):
  """One train step of `config` (a function of the state and a batch of random images), its
  initial state and the batch."""
  train.validate_config(config)
  model, tx = models.create_model(config), optim.create_optimizer(config)
  rng, size = np.random.default_rng(0), config.image_size
  batch = dict(
    image=rng.integers(0, 256, (batch_size, size, size, 3), np.uint8),
    label=np.arange(batch_size, dtype=np.int32) % config.num_classes,
    mask=np.ones(batch_size, bool),
  )
  stats = dict(mean=np.full((size, size, 3), 120, "f"), eigvals=np.ones(3, "f"))
  stats["eigvecs"] = np.eye(3, dtype="f")
  images = np.zeros((1, config.crop_size, config.crop_size, 3), "f")
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  key = jax.random.key(config.seed)
  state = jax.eval_shape(lambda params: steps.state_from_params(params, tx, key), shapes)
  step = functools.partial(
    steps.train_step, model=model, tx=tx, lr_fn=optim.learning_rate_fn(config, 10), config=config
  )
  return functools.partial(step, data_stats=stats, lr_scale=1.0), state, batch


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_its_train_step(name):
  """Traced (not compiled: an AlexNet step takes 15-20 s to compile on a CPU) at the config's own
  sizes: the step returns a state of the same structure and shapes, and scalar metrics."""
  config = CONFIGS[name]()
  step, state, batch = train_step_of(config, config.batch_size)
  new, metrics = jax.eval_shape(step, state, batch)
  assert jax.tree.structure(new) == jax.tree.structure(state), name
  same = jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype), state, new)
  assert all(jax.tree.leaves(same)), f"configs/{name}: the step changes the state's shapes"
  assert all(m.shape == () for m in metrics.values()), metrics


@pytest.mark.parametrize("name", ["cifar10.py"])
def test_a_config_takes_a_real_train_step(name):
  """Compiled and run (test_train and test_sharding run the smoke and AlexNet-shaped nets)."""
  config = CONFIGS[name]()
  step, state, batch = train_step_of(config, 2)
  params = random_params(config)
  state = steps.state_from_params(params, optim.create_optimizer(config), jax.random.key(0))
  new, metrics = jax.device_get(jax.jit(step)(state, batch))
  assert np.isfinite(metrics["loss"]) and int(new.step) == 1, metrics
  moved = jax.tree.map(lambda a, b: bool((a != b).any()), params, new.params)
  assert all(jax.tree.leaves(moved)), f"configs/{name}: a parameter did not change: {moved}"


def run_quietly(args, **kwargs):
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {QUICK_XLA_FLAGS}")
  return subprocess.Popen(
    args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
  )


def test_benchmarks_run_at_a_tiny_size(image_folder, tmp_path):
  """model_speed, input_pipeline and sharding_overhead side by side on the CIFAR-10 and smoke
  nets (about 50 CPU seconds, mostly compiling); gpu.sh, which needs a GPU, is only parsed."""
  image_folder({"train": {"a": 4, "b": 4}, "test": {"a": 2, "b": 2}}, size=(40, 36))
  python = [sys.executable, "-m"]
  commands = {
    "model_speed": python + [
      "benchmarks.model_speed", "--config=configs/cifar10.py", "--batch=2", "--steps=1",
      "--warmup=1",
    ],
    "input_pipeline": python + [
      "benchmarks.input_pipeline", "--config=configs/cifar10.py", f"--workdir={tmp_path / 'b'}",
      f"--config.dataset=folder:{image_folder.root}", "--config.num_classes=2",
      "--config.batch_size=4", "--batches=1", "--steps=1", "--rounds=1", "--step_rates=100",
    ],
    "sharding_overhead": python + [
      "benchmarks.sharding_overhead", "--config=configs/smoke.py", "--batch=4", "--rounds=1",
      "--meshes=1x2",
    ],
    "gpu.sh": ["bash", "-n", "benchmarks/gpu.sh"],
  }  # fmt: skip
  procs = {name: run_quietly(args) for name, args in commands.items()}
  outputs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
  for name, proc in procs.items():
    assert proc.returncode == 0, f"benchmarks/{name} failed:\n{outputs[name][-3000:]}"
  assert outputs["model_speed"].count("RESULT fw=jax") == 2, outputs["model_speed"]
  assert "train step fed by prepared data / resident batch" in outputs["input_pipeline"]
  assert "mesh=1x2 median_ms=" in outputs["sharding_overhead"], outputs["sharding_overhead"]
