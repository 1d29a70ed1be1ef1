"""Orbax checkpoints: what is kept, and what comes back."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import smoke
from supervision import checkpoint

ROOT = Path(__file__).resolve().parents[1]


@flax.struct.dataclass
class State:
  step: jnp.ndarray
  w: jnp.ndarray


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: dict
  opt_state: tuple


def test_keeps_the_last_k_and_the_best_by_validation_error(tmp_path):
  config = smoke.get_config()
  config.keep_checkpoints = 2
  manager = checkpoint.create_manager(str(tmp_path), config)
  errors = {1: 0.5, 2: 0.3, 3: 0.6, 4: None, 5: 0.7}
  for step, error in errors.items():
    state = State(step=jnp.int32(step), w=jnp.full(3, step, jnp.float32))
    checkpoint.save(manager, state, {"position": step}, {"note": step}, config, error)
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [2, 4, 5]
  abstract = State(step=jnp.int32(0), w=jnp.zeros(3, jnp.float32))
  iterator = type("It", (), {"set_state": lambda self, s: setattr(self, "state", s)})()
  state, meta = checkpoint.restore(manager, abstract, iterator, config, step=2)
  np.testing.assert_array_equal(state.w, 2.0)
  assert meta["note"] == 2 and iterator.state == {"position": 2}
  assert meta["config"]["model"]["columns"] == 2  # the smoke config's, stored with it


def test_restore_params_reads_any_run_without_its_config(tmp_path, caplog):
  """Params, the stored config and the step, with no target shapes and no config from the
  caller (an ensemble member or a fine-tuning source of another model); no warning, which
  users would take for a damaged checkpoint, and no file written into the run's folder."""
  config = smoke.get_config()
  manager = checkpoint.create_manager(str(tmp_path), config)
  for step in (3, 7):
    params = {"fc": {"kernel": np.full((2, 3), step, np.float32)}}
    state = TrainState(step=jnp.int32(step), params=params, opt_state=(jnp.zeros(2),))
    checkpoint.save(manager, state, {}, {}, config)
  manager.wait_until_finished()
  before = sorted(tmp_path.rglob("*"))
  with caplog.at_level(logging.WARNING):
    params, stored, step = checkpoint.restore_params(str(tmp_path))
  assert not caplog.records, caplog.text
  assert sorted(tmp_path.rglob("*")) == before
  assert step == 7 and stored.model.columns == 2 and stored.model.conv[2]["reads"] == "all"
  np.testing.assert_array_equal(params["fc"]["kernel"], np.full((2, 3), 7.0))
  params, _, step = checkpoint.restore_params(str(tmp_path), step=3)
  assert step == 3 and float(params["fc"]["kernel"][0, 0]) == 3.0
  with pytest.raises(FileNotFoundError, match="step 5"):
    checkpoint.restore_params(str(tmp_path), step=5)
  with pytest.raises(FileNotFoundError, match="train first"):
    checkpoint.restore_params(str(tmp_path / "nothing"))


def test_a_checkpoint_without_a_stream_position_leaves_the_iterator_at_its_start(tmp_path):
  """An imported checkpoint (step 0, saved before any batch was read): training from it reads
  the stream from its start instead of failing on the missing position."""
  config = smoke.get_config()
  manager = checkpoint.create_manager(str(tmp_path), config)
  checkpoint.save(manager, State(step=jnp.int32(0), w=jnp.ones(3)), None, {"note": 0}, config)
  manager.wait_until_finished()
  iterator = type("It", (), {"set_state": lambda self, s: pytest.fail(f"set_state({s!r})")})()
  abstract = State(step=jnp.int32(0), w=jnp.zeros(3, jnp.float32))
  state, meta = checkpoint.restore(manager, abstract, iterator, config)
  np.testing.assert_array_equal(state.w, 1.0)
  assert meta["note"] == 0


def test_restore_params_reads_a_checkpoint_of_other_devices(tmp_path):
  """Saved from a mesh of the 4 (simulated) devices, with column c on model-device c; read back as
  numpy arrays by a process that has one device."""
  config = smoke.get_config()
  mesh = jax.make_mesh((2, 2), ("data", "model"))
  kernel = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
  params = {"fc": {"kernel": jax.device_put(kernel, NamedSharding(mesh, P("model")))}}
  state = TrainState(step=jnp.int32(5), params=params, opt_state=(jnp.zeros(2),))
  with checkpoint.create_manager(str(tmp_path), config) as manager:
    checkpoint.save(manager, state, {}, {}, config)
    manager.wait_until_finished()
  read = (
    "import sys; from supervision import checkpoint;"
    f" params, _, step = checkpoint.restore_params({str(tmp_path)!r});"
    " print(type(params['fc']['kernel']).__name__, step, params['fc']['kernel'].sum())"
  )
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  result = subprocess.run(
    [sys.executable, "-c", read], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert result.stdout.split() == ["ndarray", "5", "66.0"], result.stderr


def test_the_requested_step_0_is_step_0_and_minus_1_the_latest():
  """Step 0 is a checkpoint like any other (`--mode=import_caffe` writes it), not the latest."""
  config = smoke.get_config()
  for step, requested in ((-1, None), (0, 0), (20, 20)):
    config.eval_checkpoint_step = step
    assert checkpoint.requested_step(config) == requested, step


def test_a_checkpoint_without_its_config_is_named(tmp_path):
  """An early version stored no config: restore_params says so instead of a KeyError."""
  manager = checkpoint.create_manager(str(tmp_path), smoke.get_config())
  state = TrainState(step=jnp.int32(5), params={"w": jnp.zeros(2)}, opt_state=(jnp.zeros(2),))
  args = checkpoint.ocp.args.Composite(
    state=checkpoint.ocp.args.StandardSave(state),
    data=checkpoint.ocp.args.JsonSave({"dict": None}),
    meta=checkpoint.ocp.args.JsonSave({}),
  )
  manager.save(5, args=args)
  manager.wait_until_finished()
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/5 stores no config"):
    checkpoint.restore_params(str(tmp_path))
