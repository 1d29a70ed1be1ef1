"""Training and evaluation end to end on a small real CIFAR-10 subset ("Details of learning")."""

import functools
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_models import ynn_ops

from configs import cifar10, smoke
from supervision import (
  ConfigError,
  DataError,
  checkpoint,
  inference,
  input_pipeline,
  models,
  optim,
  pooling,
  sharding,
  steps,
  train,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(cifar10_small_dir, tmp_path):
  config = smoke.get_config()
  config.dataset = f"folder:{cifar10_small_dir}"
  return config


def final_params(workdir, config):
  trainer = train.Trainer(config, str(workdir))
  manager = checkpoint.create_manager(str(workdir), config)
  state, _ = checkpoint.restore(manager, trainer.abstract_state(), None, config)
  return jax.device_get(state.params)


def read_metrics(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


class LogitsModel:
  """Stands in for the network in `steps.eval_step`: returns fixed logits [B, views, classes]
  as the rows of the B * views input views."""

  def __init__(self, logits):
    self.logits = logits

  def apply(self, variables, x, **kwargs):
    assert x.shape[0] == self.logits.shape[0] * self.logits.shape[1]
    return self.logits.reshape(x.shape[0], -1)


def ten_view_loss(logits, labels):
  """The summed loss of `steps.eval_step` with 10 views that have `logits`."""
  config = smoke.get_config()
  b, size = len(labels), config.image_size
  batch = dict(image=np.zeros((b, size, size, 3), np.uint8), label=labels, mask=np.ones(b, bool))
  data_stats = dict(mean=np.zeros((size, size, 3), np.float32))
  sums = steps.eval_step(
    None, batch, data_stats, model=LogitsModel(logits), config=config, ten_views=True
  )
  return float(sums["loss"])


def test_ten_view_loss_is_the_log_of_the_mean_softmax():
  logits = np.random.default_rng(0).normal(0, 3, (4, 10, 10)).astype(np.float32)
  labels = np.array([0, 3, 9, 3], np.int32)
  softmax = np.exp(logits.astype(np.float64))
  softmax /= softmax.sum(axis=-1, keepdims=True)
  want = -np.log(softmax.mean(axis=1)[np.arange(4), labels]).sum()
  assert ten_view_loss(logits, labels) == pytest.approx(want, rel=1e-6)


def test_ten_view_loss_is_finite_where_the_softmax_underflows():
  # View j: the true class's logit 200 + j below the other 9 classes' (exp(-200) is 0 in float32).
  logits = np.zeros((1, 10, 10), np.float32)
  logits[0, :, 3] = -200 - np.arange(10)
  # -log(mean_j exp(-(200 + j)) / 9) = 200 + log 9 - log(mean_j exp(-j)), about 204.04.
  want = 200 + math.log(9) - math.log(sum(math.exp(-j) for j in range(10)) / 10)
  assert ten_view_loss(logits, np.array([3], np.int32)) == pytest.approx(want, rel=1e-6)


def test_training_learns_and_eval_after_restore_reproduces_it(config, tmp_path):
  config.num_train_steps = 80
  config.eval_every_steps = 40
  final = train.train_and_evaluate(config, str(tmp_path))
  losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
  epochs = {m["step"]: m["epoch"] for m in read_metrics(tmp_path)}  # 1000 images // 32 a step
  assert epochs == {step: step / 31 for step in range(5, 81, 5)}, epochs
  assert final["center"]["top1_error"] < 0.87  # chance is 0.9
  assert final["center"]["count"] == final["ten_views"]["count"] == 1000
  written = json.loads((tmp_path / "eval_results.json").read_text())
  restored = inference.evaluate_checkpoint(config, str(tmp_path))  # --mode=eval
  assert restored.keys() == final.keys()
  for view in final:  # float32 sums over batches here, float64 means of the examples there
    assert restored[view] == pytest.approx(final[view], rel=1e-6), view
  assert written["step"] == 80 and written["center"] == pytest.approx(final["center"])
  assert (tmp_path / "checkpoints").is_dir()
  assert list(tmp_path.glob("events.out.tfevents*")), "no TensorBoard event file"


def assert_resume_is_exact(config, tmp_path, steps):
  """Trains `steps` steps at once and in two halves, resuming from the checkpoint of the first;
  the final parameters must be bitwise equal."""
  config.eval_every_steps = config.checkpoint_every_steps = 100
  for workdir, num_steps in (("once", steps), ("twice", steps // 2), ("twice", steps)):
    config.num_train_steps = num_steps
    train.train_and_evaluate(config, str(tmp_path / workdir))
  once, twice = final_params(tmp_path / "once", config), final_params(tmp_path / "twice", config)
  jax.tree.map(np.testing.assert_array_equal, once, twice)


def test_plateau_drops_reach_training_and_survive_a_resume(config, tmp_path):
  """No evaluation after the first improves by min_delta 1.0: with an evaluation after every
  step and patience 2 the learning rate is divided after steps 3 and 5 (2 drops at most), so
  steps 1-3 train at 0.02, 4-5 at 0.002 and 6 at 0.0002. A run stopped at step 4 (one bad
  evaluation into the new patience) and resumed trains at the same rates, to bitwise the same
  parameters."""
  config.update(
    dict(learning_rate=0.02, lr_schedule="plateau", plateau_min_delta=1.0, plateau_patience=2)
    | dict(max_lr_drops=2, eval_every_steps=1, log_every_steps=1, num_eval_batches=1)
  )
  for workdir, num_steps in (("once", 6), ("twice", 4), ("twice", 6)):
    config.num_train_steps = num_steps
    train.train_and_evaluate(config, str(tmp_path / workdir))
  for workdir in ("once", "twice"):
    rates = [m["learning_rate"] for m in read_metrics(tmp_path / workdir) if "loss" in m]
    np.testing.assert_allclose(
      rates, [0.02] * 3 + [0.002] * 2 + [0.0002], rtol=1e-6,
      err_msg=f"the learning rate of each step ({workdir})",
    )  # fmt: skip
  once, twice = final_params(tmp_path / "once", config), final_params(tmp_path / "twice", config)
  jax.tree.map(np.testing.assert_array_equal, once, twice)


def test_the_steps_keep_the_convolutions_from_ynnpack_on_cpus(cifar10_small_dir, tmp_path):
  """The trainer compiles its train and eval steps with `sharding.compiler_options()`: the
  CIFAR-10 net's convolutions, which XLA's defaults give YNNPACK (test_models), stay with XLA."""
  config = cifar10.get_config()
  config.dataset, config.batch_size = f"folder:{cifar10_small_dir}", 8
  trainer = train.Trainer(config, str(tmp_path))
  batch = next(iter(input_pipeline.train_dataset(config, 0, 1)))
  state = trainer.abstract_state()
  with jax.set_mesh(trainer.mesh):
    batch = sharding.to_global(trainer.mesh, batch)
    steps = {
      "train": trainer.train_step.lower(state, batch, trainer.data_stats, 1.0),
      "eval": trainer.eval_steps[True].lower(state.params, batch, trainer.data_stats),
    }
    ynn = {name: ynn_ops(step.compile().as_text()) for name, step in steps.items()}
  assert all("dot_general" in ops and "conv_general_dilated" not in ops for ops in ynn.values()), (
    ynn
  )


def test_masked_examples_do_not_change_the_step(config, tmp_path):
  trainer = train.Trainer(config, str(tmp_path))
  batch = next(iter(input_pipeline.train_dataset(config, 0, 1)))
  batch["mask"][:3] = False  # as for three unreadable files

  def step(batch):
    state = trainer.init_state()
    with jax.set_mesh(trainer.mesh):
      state, metrics = trainer.train_step(
        state, sharding.to_global(trainer.mesh, batch), trainer.data_stats, 1.0
      )
    return jax.device_get((state.params, metrics))

  params, metrics = step(batch)
  changed = dict(batch, image=batch["image"].copy(), label=batch["label"].copy())
  changed["image"][:3], changed["label"][:3] = 255 - changed["image"][:3], 9 - changed["label"][:3]
  params_changed, metrics_changed = step(changed)
  jax.tree.map(np.testing.assert_array_equal, params, params_changed)
  assert metrics == metrics_changed and 0 < metrics["loss"] < 10


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(config, tmp_path):
  config.num_train_steps = 4
  config.eval_every_steps = 1000
  train.train_and_evaluate(config, str(tmp_path))
  config.num_train_steps = 40
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1
  config.learning_rate = 1e12
  with pytest.raises(FloatingPointError, match="Non-finite training loss or parameters"):
    train.train_and_evaluate(config, str(tmp_path))
  params = final_params(tmp_path, config)
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_sigterm_saves_exits_and_resumes_after_its_step(cifar10_small_dir, tmp_path):
  """No checkpoint is due on its own: the one of the step printed is the signal's."""
  args = [
      sys.executable, "main.py", "--config=configs/smoke.py", f"--workdir={tmp_path}",
      f"--config.dataset=folder:{cifar10_small_dir}", "--config.log_every_steps=1",
      "--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000",
  ]  # fmt: skip
  proc = subprocess.Popen(
    [*args, "--config.num_train_steps=100000"],
    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
  )  # fmt: skip
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
    assert proc.poll() is None, proc.stdout.read().decode()
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0].decode()
  assert proc.returncode == 128 + signal.SIGTERM, out  # train.Stopped's exit_status
  stopped = re.search(r"Stopped by SIGTERM after step (\d+)", out)
  assert stopped, out
  step = int(stopped.group(1))
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and max(steps) == step, f"stopped after step {step}; checkpoints {sorted(steps)}"
  args += [f"--config.num_train_steps={step + 1}", "--config.num_eval_batches=1"]
  resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resumed at step {step}" in resumed.stdout, resumed.stdout
  logged = [m["step"] for m in read_metrics(tmp_path) if "loss" in m]
  assert logged == list(range(1, step + 2)), f"steps logged, stopped after {step}: {logged}"


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("crop_size", 40, "config.crop_size=40"),
    ("batch_size", 0, "config.batch_size=0"),
    ("lr_schedule", "cosine", "config.lr_schedule='cosine'"),
    ("batch_size", 30, "config.batch_size=30 is not divisible by the data-parallel size 4"),
    ("stop_at_train_error", 0.0, "config.stop_at_train_error=0.0"),
  ],
)
def test_config_errors_stop_before_compilation(config, tmp_path, key, value, match):
  config[key] = value
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(config, str(tmp_path))


def test_training_ends_at_the_first_logged_error_below_stop_at_train_error(config, tmp_path):
  """Figure 1's "time to 25% training error": the run ends, evaluated and saved, at the first
  logged interval whose mean training error is at most the threshold, and stays ended."""
  config.num_train_steps, config.eval_every_steps, config.stop_at_train_error = 80, 100, 0.89
  train.train_and_evaluate(config, str(tmp_path))
  rows = [m for m in read_metrics(tmp_path) if "loss" in m]
  errors = [m["top1_error"] for m in rows]
  assert errors[-1] <= 0.89 < min(errors[:-1]), errors
  end = rows[-1]["step"]
  assert end < 80 and json.loads((tmp_path / "eval_results.json").read_text())["step"] == end
  train.train_and_evaluate(config, str(tmp_path))  # started again: nothing more to train
  assert [m for m in read_metrics(tmp_path) if "loss" in m] == rows


def test_no_regularization_of_any_kind_is_accepted():
  """--config.weight_decay=0 --config.model.dropout_rate=0 (with the augmentations off): no
  weight decay and no dropout."""
  config = smoke.get_config()
  config.weight_decay, config.model.dropout_rate = 0.0, 0.0
  config.augmentation.update(random_crop=False, flip=False, lighting=False)
  train.validate_config(config)
  model, tx = models.create_model(config), optim.create_optimizer(config)
  images = np.random.default_rng(0).normal(size=(2, 24, 24, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), images)["params"]
  trained = model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(trained, model.apply({"params": params}, images))
  zero_grads = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert not any(np.any(u) for u in jax.tree.leaves(updates))  # nothing pulls the weights to 0


def test_unknown_dataset_is_named(config, tmp_path):
  config.dataset = "no_such_dataset"
  with pytest.raises(DataError, match="no_such_dataset"):
    train.train_and_evaluate(config, str(tmp_path))


def test_config_errors_from_the_command_line(cifar10_small_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/smoke.py", f"--workdir={tmp_path}",
       f"--config.dataset=folder:{cifar10_small_dir}", "--config.crop_size=64"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode != 0
  assert "config.crop_size=64" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("separable", [True, False])
def test_bfloat16_train_step_keeps_float32_state_and_loss(separable, monkeypatch):
  """Mixed precision in the real step, with the CPU's pooling and with XLA's (GPUs', TPUs'):
  parameters, optimizer state, loss and metrics stay float32. Against float32: the loss
  within 1%, each layer's first update (the gradient) within 35% in relative norm and the fc
  layers' within 5% (bfloat16 keeps 8 bits, and at initialisation the lower layers' small
  gradients are differences of larger terms)."""
  monkeypatch.setattr(pooling, "separable", lambda: separable)
  config = smoke.get_config()
  batch = dict(
    image=np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), np.uint8),
    label=np.arange(32) % 10,
    mask=np.ones(32, bool),
  )
  data_stats = dict(mean=np.full((32, 32, 3), 128.0), eigvals=np.ones(3), eigvecs=np.eye(3))
  results = {}
  for dtype in ("float32", "bfloat16"):
    config.model.dtype = dtype
    model, tx = models.create_model(config), optim.create_optimizer(config)
    step = jax.jit(
      functools.partial(
        steps.train_step, model=model, tx=tx, lr_fn=optim.learning_rate_fn(config, 10),
        config=config,
      )
    )  # fmt: skip
    state = steps.create_train_state(config, model, tx)
    new, metrics = step(state, batch, data_stats, 1.0)
    for leaf in jax.tree.leaves((new.params, new.opt_state, metrics)):
      assert leaf.dtype in (jnp.float32, jnp.int32), (dtype, leaf.dtype)
    results[dtype] = float(metrics["loss"]), jax.tree.map(jnp.subtract, new.params, state.params)
  (want, want_delta), (got, got_delta) = results.values()
  assert got == pytest.approx(want, rel=0.01)
  for name in want_delta:
    d, r = got_delta[name]["kernel"], want_delta[name]["kernel"]
    error = float(jnp.linalg.norm(d - r) / jnp.linalg.norm(r))
    assert error <= (0.05 if name.startswith("fc") else 0.35), (name, error)
