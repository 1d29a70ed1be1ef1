"""The command line of main.py."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_main(*args):
  return subprocess.run(
    [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
  )


def test_summary_shows_the_totals():
  result = run_main("--mode=summary", "--config=configs/alexnet.py")
  assert result.returncode == 0, result.stderr
  assert "60,965,224" in result.stdout and "290,400" in result.stdout


def test_misspelled_override_names_the_key():
  result = run_main("--mode=summary", "--config=configs/alexnet.py", "--config.lernig_rate=1")
  assert result.returncode != 0
  assert "lernig_rate" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_config_file_or_variant_is_one_line():
  for config, message in [
    (
      "configs/cifar.py",
      "Error in --config: [Errno 2] No such file or directory: 'configs/cifar.py'",
    ),
    ("configs/cifar10.py:nolrn", "ValueError: Unknown variant 'nolrn' of configs/cifar10.py"),
  ]:
    result = run_main("--mode=summary", f"--config={config}")
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 2, result.stderr


def test_summary_shows_the_two_gpu_split():
  result = run_main("--mode=summary", "--config=configs/alexnet.py", "--config.mesh.model=2")
  assert result.returncode == 0, result.stderr
  assert "mesh data=2, model=2 (4 devices of cpu)" in result.stdout  # conftest's 4 devices
  assert result.stdout.count("P('model',): column c on model-device c") == 8
  assert "121,930,448" in result.stdout  # half of the 4-byte parameters on each device


def test_the_devices_are_named_and_an_unused_gpu_is_warned_of(monkeypatch, capsys, caplog):
  import main

  main.describe_devices()
  assert "cpu device(s)" in capsys.readouterr().out and "GPU" not in caplog.text
  monkeypatch.setattr(main, "gpu_visible", lambda: True)
  main.describe_devices()
  assert "requirements-gpu.txt" in caplog.text


def test_import_caffe_without_a_model_says_what_to_pass(tmp_path):
  result = run_main(
    "--mode=import_caffe", "--config=configs/alexnet.py:caffe", f"--workdir={tmp_path}"
  )
  assert result.returncode == 1, result.stderr
  assert "needs --config.caffe.model=PATH" in result.stderr and "Traceback" not in result.stderr
