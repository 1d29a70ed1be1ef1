"""What a user meets when something goes wrong: each case runs main.py in a subprocess and
checks the message, the exit status and that nothing on disk was lost."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
