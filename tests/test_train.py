"""Training and evaluation end to end on a small real CIFAR-10 subset (Section 5)."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import smoke
from supervision import ConfigError, checkpoint, input_pipeline, sharding, train

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


def test_training_learns_and_eval_after_restore_reproduces_it(config, tmp_path):
  config.num_train_steps = 80
  config.eval_every_steps = 40
  final = train.train_and_evaluate(config, str(tmp_path))
  losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
  assert final["center"]["top1_error"] < 0.87  # chance is 0.9
  assert final["center"]["count"] == final["ten_views"]["count"] == 1000
  written = json.loads((tmp_path / "eval_results.json").read_text())
  restored = train.evaluate_checkpoint(config, str(tmp_path))
  assert restored == final
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
  args = [
      sys.executable, "main.py", "--config=configs/smoke.py", f"--workdir={tmp_path}",
      f"--config.dataset=folder:{cifar10_small_dir}", "--config.log_every_steps=1",
      "--config.eval_every_steps=100000",
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
  assert proc.returncode == 128 + signal.SIGTERM, out  # main.STOPPED_EXIT_STATUS
  stopped = re.search(r"Stopped by SIGTERM after step (\d+)", out)
  assert stopped, out
  step = int(stopped.group(1))
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert max(steps) == step, f"stopped after step {step}, latest checkpoint {max(steps)}"
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
  ],
)
def test_config_errors_stop_before_compilation(config, tmp_path, key, value, match):
  config[key] = value
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(config, str(tmp_path))


def test_unknown_dataset_is_named(config, tmp_path):
  config.dataset = "no_such_dataset"
  with pytest.raises(input_pipeline.DataError, match="no_such_dataset"):
    train.train_and_evaluate(config, str(tmp_path))


def test_config_errors_from_the_command_line(cifar10_small_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/smoke.py", f"--workdir={tmp_path}",
       f"--config.dataset=folder:{cifar10_small_dir}", "--config.crop_size=64"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode != 0
  assert "config.crop_size=64" in result.stderr and "Traceback" not in result.stderr
