"""The two GPUs of "Training on Multiple GPUs" as a ("data", "model") mesh of 4 CPU devices."""

import functools
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import multihost_utils
from test_train import final_params

from configs import alexnet, smoke
from supervision import ConfigError, inference, models, optim, sharding, steps, train

ROOT = Path(__file__).resolve().parents[1]
CREATE_MESH = sharding.create_mesh
COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")
MESHES = [(1, 1), (1, 2), (2, 1), (2, 2)]


def small_config(data=1, model=1):
  """AlexNet's layer structure with 1/8 of the kernels and neurons, on 67x67 images."""
  config = alexnet.get_config()
  config.image_size = 72
  config.crop_size = 67  # conv1 15x15, conv2 7x7, conv3-5 3x3, pooled to 1x1
  config.model.conv = tuple(dict(c, features=c["features"] // 8) for c in config.model.conv)
  config.model.dense = (64, 64)
  config.num_classes = 10
  config.batch_size = 4
  config.mesh.data, config.mesh.model = data, model
  return config


def mesh_for(config):
  return sharding.create_mesh(config, jax.devices()[: config.mesh.data * config.mesh.model])


def batch(config, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(config.batch_size, config.crop_size, config.crop_size, 3))
  labels = rng.integers(0, config.num_classes, config.batch_size)
  return images.astype(np.float32), labels.astype(np.int32)


def random_params(config):
  """Random parameters for `config` (numpy draws: compiling JAX's RNG costs seconds)."""
  images = jnp.zeros((1, config.crop_size, config.crop_size, 3))
  shapes = jax.eval_shape(models.create_model(config).init, jax.random.key(0), images)["params"]
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: 0.05 * rng.standard_normal(x.shape, np.float32), shapes)


@pytest.fixture(scope="module")
def initial_params():
  return random_params(small_config())  # the shapes do not depend on the mesh


def place(mesh, params):
  return jax.device_put(params, sharding.state_shardings(mesh, params))


@pytest.fixture(scope="module")
def two_columns(initial_params):
  """The small config on a (1, 2) mesh, and its parameters placed there."""
  config = small_config(1, 2)
  mesh = mesh_for(config)
  return config, mesh, place(mesh, initial_params)


def test_column_c_lives_on_model_device_c(two_columns):
  _, mesh, params = two_columns
  for path, param in jax.tree.leaves_with_path(params):
    assert len(param.addressable_shards) == 2, path
    for shard in param.addressable_shards:
      column = shard.index[0]
      assert column.stop - column.start == 1, path
      assert shard.device == mesh.devices[0, column.start], (path, column, shard.device)


def test_each_model_device_holds_half_of_alexnet():
  config = alexnet.get_config()
  config.mesh.model = 2
  mesh = sharding.create_mesh(config, jax.devices()[:2])
  model = models.create_model(config)
  images = jnp.zeros((1, 224, 224, 3))
  optimizer = optax.sgd(0.01, momentum=0.9)

  def init(rng):
    params = model.init(rng, images)["params"]
    return dict(params=params, opt_state=optimizer.init(params))

  state = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.state_shardings(mesh, state)
  for name in state:
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state[name]))
    per_device = sharding.bytes_per_device(state[name], shardings[name])
    assert len(per_device) == 2 and total > 2e8, name  # 61M float32 parameters
    assert max(per_device.values()) <= 0.55 * total, (name, per_device, total)


def test_bytes_per_device_of_real_arrays(two_columns):
  params = two_columns[2]
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  assert sorted(sharding.bytes_per_device(params).values()) == [total // 2] * 2


@pytest.mark.parametrize(
  "change,devices,match",
  [
    (dict(model=3), 4, r"config.mesh.data=-1 x config.mesh.model=3 .* 4 devices"),
    (dict(data=3, model=1), 4, r"config.mesh.data=3 .* 4 devices"),
    (dict(model=0), 4, r"config.mesh.model=0"),
    (dict(batch_size=6), 4, r"config.batch_size=6 .* data-parallel size 4"),
    (dict(columns=1, model=2), 2, r"config.model.columns=1 .* config.mesh.model=2"),
  ],
)
def test_impossible_meshes_are_config_errors(change, devices, match):
  config = alexnet.get_config("one_column" if change.get("columns") == 1 else "")
  config.batch_size = change.get("batch_size", config.batch_size)
  config.mesh.data = change.get("data", -1)
  config.mesh.model = change.get("model", 1)
  with pytest.raises(ConfigError, match=match):
    sharding.create_mesh(config, jax.devices()[:devices])


def test_every_process_needs_its_own_batch_rows():
  config = small_config(1, 2)
  with pytest.raises(ConfigError, match=r"config.mesh.data=1 .* 2 processes"):
    sharding.mesh_shape(config, num_devices=2, num_processes=2)
  assert sharding.mesh_shape(small_config(2, 2), num_devices=4, num_processes=2) == (2, 2)


def collectives(hlo: str) -> list[str]:
  """'op shape <- origin' for every cross-device collective in compiled HLO text."""
  found = []
  for line in hlo.splitlines():
    op = re.search(r" = (.+?) (" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
    if op and crosses_devices(line):
      name = re.search(r'op_name="([^"]*)"', line)
      found.append(f"{op.group(2)} {op.group(1)} <- {name.group(1) if name else '?'}")
  return found


def crosses_devices(line: str) -> bool:
  """False for a collective within single devices (e.g. a sum over a mesh axis of size 1)."""
  groups = re.search(r"replica_groups=(\{\{[\d,{}]*\}\}|\[\d+,(\d+)\]<=)", line)
  if groups is None:
    return True  # collective-permute: source-target pairs
  if groups.group(2):
    return int(groups.group(2)) > 1  # iota form [groups,size]<=[devices]
  return "," in groups.group(1).strip("{}").split("},{")[0]


def layer_of(collective: str) -> str:
  """The layer a collective was traced in ("ColumnNet/<layer>/..."), "" for the top level."""
  match = re.search(r"ColumnNet\)*/(\w+)/", collective)
  return match.group(1) if match else ""


@pytest.mark.parametrize("mode", ["eval", "train", "gradient"])
def test_columns_talk_only_at_conv3_and_the_fc_layers(mode, two_columns):
  """Compiled for a (1, 2) mesh, the forward pass (and its gradient) of the net communicates
  only to gather or scatter the inputs of conv3 and the FC layers, and for the logits."""
  config, mesh, params = two_columns
  model = models.create_model(config)
  images, labels = sharding.to_global(mesh, batch(config))

  def forward(params, images, labels):
    rngs = {"dropout": jax.random.key(1)}
    logits = model.apply({"params": params}, images, train=mode != "eval", rngs=rngs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  fn = jax.grad(forward) if mode == "gradient" else forward
  with jax.set_mesh(mesh):
    hlo = jax.jit(fn).lower(params, images, labels).compile().as_text()
  found = collectives(hlo)
  report = "collectives found:\n  " + "\n  ".join(found)
  layers = [layer_of(c) for c in found]
  assert not {"conv1", "conv2", "conv4", "conv5"} & set(layers), report
  assert set(layers) <= {"conv3", "fc6", "fc7", "fc8", ""}, report
  gathers = [layer_of(c) for c in found if c.startswith("all-gather")]
  assert sorted(gathers) == ["conv3", "fc6", "fc7", "fc8"], report
  scatters = [layer_of(c) for c in found if c.startswith("reduce-scatter")]
  assert sorted(scatters) == (gathers if mode == "gradient" else []), report


def test_lrn_across_columns_on_the_mesh(initial_params):
  """LRN over the maps of both columns reads the other model-device's maps: on the (1, 2) mesh
  conv2 (over conv1's LRN) computes what it does on one device, unlike LRN within each column."""

  def conv2(model_devices, across_columns):
    config = small_config(1, model_devices)
    config.model.lrn.across_columns = across_columns
    mesh = mesh_for(config)
    images = sharding.to_global(mesh, 60 * batch(config)[0])  # about the 0-255 pixel scale
    apply = functools.partial(
      models.create_model(config).apply, capture_intermediates=True, mutable="intermediates"
    )
    with jax.set_mesh(mesh):
      _, found = jax.jit(apply)({"params": place(mesh, initial_params)}, images)
    return np.asarray(jax.device_get(found["intermediates"]["conv2"]["__call__"][0]))

  across = conv2(1, True)
  np.testing.assert_allclose(conv2(2, True), across, rtol=1e-5, atol=1e-4)
  assert np.abs(conv2(1, False) - across).max() > 1e-2 * np.abs(across).max()


def train_run(config, params, num_steps=3):
  """Metrics of the first train step and of an evaluation, and the parameters after `num_steps`
  train steps (`supervision.steps`: augmentation, dropout, the paper's SGD) on fixed images.

  With several processes each feeds its share of the batch rows and gets the results of all.
  """
  mesh = mesh_for(config)
  model, tx = models.create_model(config), optim.create_optimizer(config)
  rng = np.random.default_rng(1)
  size, rows = config.image_size, config.batch_size // jax.process_count()
  batch = dict(
    image=rng.integers(0, 256, (config.batch_size, size, size, 3), np.uint8),
    label=rng.integers(0, config.num_classes, config.batch_size).astype(np.int32),
    mask=np.ones(config.batch_size, bool),
  )
  batch = sharding.to_global(
    mesh, {k: v[jax.process_index() * rows :][:rows] for k, v in batch.items()}
  )
  data_stats = dict(mean=np.full((size, size, 3), 120, np.float32), eigvals=np.ones(3, np.float32))
  data_stats = sharding.replicate(mesh, dict(data_stats, eigvecs=np.eye(3, dtype=np.float32)))
  state = steps.state_from_params(params, tx, jax.random.key(config.seed))
  state = jax.device_put(state, sharding.state_shardings(mesh, state))
  step_fn = functools.partial(
    steps.train_step, model=model, tx=tx, lr_fn=optim.learning_rate_fn(config, 1), config=config
  )
  eval_fn = functools.partial(steps.eval_step, model=model, config=config, ten_views=False)
  with jax.set_mesh(mesh):
    step_fn = jax.jit(step_fn)
    evaluation = jax.jit(eval_fn)(state.params, batch, data_stats)
    state, metrics = step_fn(state, batch, data_stats, 1.0)
    for _ in range(1, num_steps):
      state, _ = step_fn(state, batch, data_stats, 1.0)
  return multihost_utils.process_allgather((evaluation, metrics, state.params), tiled=True)


@pytest.fixture(scope="module")
def unsharded_run(initial_params):
  return train_run(small_config(1, 1), initial_params)


@pytest.mark.parametrize("data,model", MESHES[1:])
def test_meshes_compute_the_same(data, model, unsharded_run, initial_params):
  assert jax.config.jax_threefry_partitionable  # dropout masks independent of the mesh
  assert_same_run(unsharded_run, train_run(small_config(data, model), initial_params))


def assert_same_run(want, got):
  names = dict(enumerate(["evaluation", "first train step", "params after 3 steps"]))

  def check(path, a, b):
    where = f"{names[path[0].idx]}{jax.tree_util.keystr(path[1:])}"
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=where)

  jax.tree.map_with_path(check, want, got)


def test_two_processes_compute_the_same(unsharded_run, tmp_path):
  """Two processes of 2 CPU devices each, a (2, 2) mesh: "data" across processes."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
  env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("device_count=4", "device_count=2")
  workers = [
    subprocess.Popen(
      [sys.executable, str(ROOT / "tests" / "distributed_worker.py"), address, str(i), tmp_path],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [w.communicate(timeout=240)[0] for w in workers]
  for w, out in zip(workers, outputs, strict=True):
    assert w.returncode == 0, out[-3000:]
  for i in range(2):
    with np.load(tmp_path / f"process{i}.npz") as f:
      got = jax.tree.unflatten(jax.tree.structure(unsharded_run), list(f.values()))
    assert_same_run(unsharded_run, got)


def use_mesh(monkeypatch, config, data, model):
  """Makes the trainer build a (data, model) mesh over the first data * model devices."""
  config.mesh.data, config.mesh.model = data, model
  devices = jax.devices()[: data * model]
  monkeypatch.setattr(sharding, "create_mesh", functools.partial(CREATE_MESH, devices=devices))


def assert_same_eval(evaluated, trained):
  """--mode=eval's metrics (float64 means of the examples) and training's final ones (float32
  sums over the batches): equal to float32 rounding."""
  assert evaluated.keys() == trained.keys()
  for view in trained:
    assert evaluated[view] == pytest.approx(trained[view], rel=1e-6), view


def test_checkpoints_move_between_meshes(cifar10_small_dir, tmp_path, monkeypatch):
  """Trained on the paper's two model-devices, restored, evaluated and trained on one device,
  and back: the same metrics and parameters on either mesh."""
  config = smoke.get_config()
  config.dataset = f"folder:{cifar10_small_dir}"
  config.num_train_steps, config.eval_every_steps, config.num_eval_batches = 2, 1000, 2
  use_mesh(monkeypatch, config, 1, 2)
  two = train.train_and_evaluate(config, str(tmp_path))
  use_mesh(monkeypatch, config, 1, 1)
  assert_same_eval(inference.evaluate_checkpoint(config, str(tmp_path)), two)
  config.num_train_steps = 4  # resumes the (1, 2) run's checkpoint on one device
  one = train.train_and_evaluate(config, str(tmp_path))
  params = final_params(tmp_path, config)
  use_mesh(monkeypatch, config, 1, 2)
  assert_same_eval(inference.evaluate_checkpoint(config, str(tmp_path)), one)
  jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path, config), params)
