"""What a user meets when something goes wrong: each case runs main.py in a subprocess and
checks the message, the exit status and that nothing on disk was lost."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from test_train import final_params

from configs import smoke
from supervision import workdirs

ROOT = Path(__file__).resolve().parents[1]


def main_args(workdir, dataset, *overrides):
  return [
    sys.executable, "main.py", "--config=configs/smoke.py", f"--workdir={workdir}",
    f"--config.dataset=folder:{dataset}", *overrides,
  ]  # fmt: skip


def run_main(*args, timeout=300):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start_training(workdir, dataset, *overrides):
  """A long training in the background, returned once it has logged a step."""
  args = main_args(
    workdir, dataset, "--config.num_train_steps=100000", "--config.log_every_steps=1",
    "--config.eval_every_steps=100000", *overrides,
  )  # fmt: skip
  proc = subprocess.Popen(
    args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  metrics, deadline = Path(workdir) / "metrics.jsonl", time.time() + 240
  while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(0.2)
  return proc


def test_a_second_run_on_a_workdir_stops_at_once_naming_the_first(cifar10_small_dir, tmp_path):
  first = start_training(tmp_path, cifar10_small_dir)
  try:
    start = time.time()
    second = run_main(*main_args(tmp_path, cifar10_small_dir), timeout=120)
    assert time.time() - start < 60
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"is in use by process {first.pid} on " in second.stderr
  finally:
    first.send_signal(signal.SIGTERM)
    out = first.communicate(timeout=120)[0]
  assert "Stopped by SIGTERM" in out  # the first run went on and saved
  steps = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps, "the first run's checkpoint is missing"


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
  (tmp_path / workdirs.LOCK).write_text("process 999999 on elsewhere (since long ago)\n")
  with workdirs.locked(str(tmp_path)):
    with pytest.raises(workdirs.WorkdirError, match="in use by process"):
      with workdirs.locked(str(tmp_path)):
        pass


def test_a_workdir_under_a_file_is_named(cifar10_small_dir, tmp_path):
  (tmp_path / "file").write_text("not a folder")
  result = run_main(*main_args(tmp_path / "file" / "run", cifar10_small_dir))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert f"{tmp_path / 'file'} is a file" in result.stderr
  assert (tmp_path / "file").read_text() == "not a folder"


@pytest.fixture(scope="module")
def trained(cifar10_small_dir, tmp_path_factory):
  """A workdir of the smoke config after 20 steps, with checkpoints of steps 10 and 20."""
  workdir = tmp_path_factory.mktemp("trained")
  result = run_main(*main_args(workdir, cifar10_small_dir, "--config.num_eval_batches=1"))
  assert result.returncode == 0, result.stderr
  return workdir


@pytest.fixture
def workdir(trained, tmp_path):
  """A copy of `trained`, to damage."""
  return Path(shutil.copytree(trained, tmp_path / "work"))


def files(path):
  """The files under `path`, but for the lock, which names the last run."""
  return sorted(
    str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != workdirs.LOCK
  )


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(workdir, cifar10_small_dir):
  manifest = workdir / "checkpoints" / "20" / "state" / "manifest.ocdbt"
  manifest.write_bytes(manifest.read_bytes()[:10])  # truncated
  before = files(workdir)
  evaluated = run_main(
    *main_args(workdir, cifar10_small_dir, "--mode=eval", "--config.num_eval_batches=1")
  )
  assert evaluated.returncode == 0, evaluated.stderr
  assert f"Checkpoint {workdir / 'checkpoints' / '20'} is damaged" in evaluated.stderr
  assert "at step 10:" in evaluated.stdout
  assert set(before) <= set(files(workdir)) and manifest.stat().st_size == 10  # left as it was

  named = run_main(
    *main_args(workdir, cifar10_small_dir, "--mode=eval", "--config.eval_checkpoint_step=20")
  )
  assert named.returncode == 1 and "Traceback" not in named.stderr
  assert f"Checkpoint {workdir / 'checkpoints' / '20'} is damaged" in named.stderr

  resumed = run_main(
    *main_args(
      workdir, cifar10_small_dir, "--config.num_train_steps=30", "--config.num_eval_batches=1"
    )
  )
  assert resumed.returncode == 0, resumed.stderr
  assert "resumed at step 10" in resumed.stdout
  (aside,) = (workdir / "checkpoints").glob("20.damaged-*")
  assert (aside / "state" / "manifest.ocdbt").stat().st_size == 10  # kept on disk
  assert {"10", "20", "30"} <= {p.name for p in (workdir / "checkpoints").iterdir()}
  steps = [
    json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
  ]
  assert steps == sorted(steps) and len([s for s in steps if s == 20]) == 2  # loss, eval rows


def test_eval_restores_the_step_it_is_given(workdir, cifar10_small_dir):
  given = run_main(
    *main_args(
      workdir, cifar10_small_dir, "--mode=eval", "--config.eval_checkpoint_step=10",
      "--config.num_eval_batches=1",
    )
  )  # fmt: skip
  assert given.returncode == 0, given.stderr
  assert json.loads((workdir / "eval_results.json").read_text())["step"] == 10, "not step 10"
  assert "Eval (ten_views) at step 10:" in given.stdout, given.stdout
  missing = run_main(
    *main_args(workdir, cifar10_small_dir, "--mode=eval", "--config.eval_checkpoint_step=7")
  )
  errors = [line for line in missing.stderr.splitlines() if line.startswith("Error:")]
  assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
  assert len(errors) == 1 and "step 7" in errors[0], missing.stderr


def test_eval_uses_the_networks_own_statistics_on_a_dataset_without_a_train_split(
  workdir, cifar10_small_dir, tmp_path
):
  """--mode=eval of the network on a folder holding only the test split: the statistics it
  was trained with, the same errors as on the dataset it was trained on, and no new file."""
  test_only = tmp_path / "test_only"
  shutil.copytree(cifar10_small_dir / "test", test_only / "test")
  results = []
  for dataset in (cifar10_small_dir, test_only):
    before = files(workdir)
    result = run_main(
      *main_args(workdir, dataset, "--mode=eval", "--config.num_eval_batches=2")
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(files(workdir)) - set(before) <= {"eval_results.json"}, "statistics computed"
    results.append(json.loads((workdir / "eval_results.json").read_text()))
  assert results[0]["center"]["count"] == 64 and results[1] == results[0]


def test_resuming_with_another_model_names_the_keys(workdir, cifar10_small_dir):
  before = {f: (workdir / f).read_bytes() for f in files(workdir)}
  for override, message in [
    ("--config.model.dense=(64,)", "config.model.dense: [32] there, [64] now"),
    ("--config.model.columns=1", "config.model.columns: 2 there, 1 now"),
  ]:
    result = run_main(*main_args(workdir, cifar10_small_dir, override))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 5
  assert {f: (workdir / f).read_bytes() for f in files(workdir)} == before


def test_resuming_with_other_settings_names_them(workdir, cifar10_small_dir):
  result = run_main(
    *main_args(
      workdir, cifar10_small_dir, "--config.num_train_steps=22", "--config.learning_rate=0.03",
      "--config.num_eval_batches=1",
    )
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  assert "resumed at step 20" in result.stdout
  (line,) = [line for line in result.stderr.splitlines() if "with settings of its own" in line]
  assert "config.learning_rate: 0.02 there, 0.03 now" in line
  assert "config.num_train_steps: 20 there, 22 now" in line and "config.model" not in line


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.learning_rate=nan", "config.learning_rate=nan must be a finite number"),
    ("--config.num_train_steps=0", "config.num_train_steps=0: give a positive number of steps"),
    ("--config.momentum=1.0", "config.momentum=1.0 < 1"),
    ("--config.num_eval_batches=0", "config.num_eval_batches=0: give a positive number"),
    ("--config.num_classes=1", "config.num_classes=1: a softmax over fewer than 2 classes"),
    # 1,000 training images (cifar10_small_dir): no batch of 1,008 in an epoch.
    ("--config.batch_size=1008", "config.batch_size=1008 is larger than the 1000 examples"),
    # The smoke net pools 4x4 inputs to 2x2, 1x1 and 0x0: fc4 reads nothing.
    ("--config.crop_size=4", "config.crop_size=4 is too small for the network: the maps reaching"),
  ],
)
def test_unusable_values_are_named_before_anything_is_written(
  cifar10_small_dir, tmp_path, override, message
):
  result = run_main(*main_args(tmp_path, cifar10_small_dir, override))
  assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
  assert not list(tmp_path.glob("checkpoints/*")) and not list(tmp_path.glob("stats_*"))


def test_eval_on_an_empty_workdir_says_so_at_once(cifar10_small_dir, tmp_path):
  result = run_main(*main_args(tmp_path, cifar10_small_dir, "--mode=eval"))
  assert (
    result.returncode == 1
    and "No checkpoint in" in result.stderr
    and "train first" in result.stderr
  )
  assert not list(tmp_path.glob("stats_*")), "statistics were computed for nothing"


def test_class_folders_that_differ_between_splits_are_named(cifar10_small_dir, tmp_path):
  data = Path(shutil.copytree(cifar10_small_dir, tmp_path / "data"))
  (data / "test" / "truck").rename(data / "test" / "lorry")
  result = run_main(*main_args(tmp_path / "work", data))
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert (
    "['lorry']" in result.stderr and "train lacks ['lorry']; test lacks ['truck']" in result.stderr
  )
  assert (data / "train" / "truck").is_dir() and (data / "test" / "lorry").is_dir()


KILLED_RUN = ["--config.num_train_steps=15", "--config.checkpoint_every_steps=3",
              "--config.log_every_steps=1", "--config.num_eval_batches=1"]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(cifar10_small_dir, tmp_path_factory):
  """The final parameters of the run that the killed runs repeat, trained without a stop."""
  workdir = tmp_path_factory.mktemp("whole")
  assert run_main(*main_args(workdir, cifar10_small_dir, *KILLED_RUN)).returncode == 0
  return workdir


@pytest.mark.parametrize("moment", ["during a save", "between saves"])
def test_a_killed_run_resumes_to_the_parameters_of_an_uninterrupted_one(
  cifar10_small_dir, tmp_path, moment, uninterrupted
):
  killed = tmp_path / "killed"
  args = main_args(killed, cifar10_small_dir, *KILLED_RUN)
  proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL, start_new_session=True)
  rows = random.Random(moment).randint(4, 11)  # a step of the run, chosen at random

  def now():
    if moment == "during a save":
      return any(p.name.startswith("6.orbax-checkpoint-tmp") for p in killed.glob("checkpoints/*"))
    metrics = killed / "metrics.jsonl"
    return metrics.exists() and len(metrics.read_text().splitlines()) >= rows

  deadline = time.time() + 240
  while not now() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.002)
  os.killpg(proc.pid, signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed"
  assert run_main(*args).returncode == 0
  config = smoke.get_config()
  config.dataset = f"folder:{cifar10_small_dir}"
  whole, resumed = final_params(uninterrupted, config), final_params(killed, config)
  jax.tree.map(np.testing.assert_array_equal, whole, resumed)
  steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(steps)  # no step logged twice
