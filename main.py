"""Entry point: `python main.py --config=configs/alexnet.py [--config.x=y] --mode=M --workdir=D`."""

import ast
import contextlib
import os
import sys
from pathlib import Path

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from supervision import (
  ConfigError,
  DataError,
  prepare,
  retrieval,
  sharding,
  stats,
  summary,
  train,
  workdirs,
)
from supervision.checkpoint import CheckpointError
from supervision.workdirs import WorkdirError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no INFO lines from TensorFlow (TFDS)
FLAGS = flags.FLAGS
# A run stopped by a signal saves its checkpoint and exits with 128 + the signal's number (143
# for SIGTERM, 130 for SIGINT), the shell's status for a process ended by that signal: not 0,
# so that a scheduler requeues a preempted job rather than taking it as finished.
STOPPED_EXIT_STATUS = 128
# Errors whose message says what is wrong and what to do: one line, no traceback.
ERRORS = (
  ConfigError,
  DataError,
  CheckpointError,
  WorkdirError,
  FileNotFoundError,
  FloatingPointError,
)
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, statistics and logs.")
flags.DEFINE_enum(
  "mode",
  "train",
  ["train", "eval", "stats", "prepare", "summary", "retrieval"],
  "train: train (resuming from the workdir's latest checkpoint); eval: evaluate a checkpoint "
  "of the workdir (central crop and 10 views); stats: compute the dataset statistics (mean "
  "image, RGB covariance) into the workdir; prepare: decode every split once into 256x256 "
  "JPEG records in the workdir, to train from with --config.dataset=prepared:WORKDIR; "
  "summary: print the layer table; retrieval: nearest training images of the eval split's "
  "feature vectors (WORKDIR/features/, from --mode=features) by Euclidean distance and by the "
  "Hamming distance of auto-encoder binary codes: precision@k, time per query, "
  "WORKDIR/retrieval.json and WORKDIR/figures/figure4_right.png.",
)
flags.mark_flags_as_required(["config"])


def _unquote(text: str) -> str:
  """ml_collections nests the repr of a KeyError in its message; show the plain text."""
  while text[:1] in "'\"":
    try:
      text = ast.literal_eval(text)
    except (SyntaxError, ValueError):
      break
  return text


def parse_flags(argv: list[str]) -> list[str]:
  """Parses the flags; a bad flag or config override exits with a one-line message."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"Error: {e}\nSee --helpfull.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"Error in --config: {_unquote(str(e))}")


def print_summary(config: ml_collections.ConfigDict, workdir: str | None) -> None:
  """The layer table with its sharding over the configured mesh."""
  mesh = sharding.create_mesh(config)
  print(summary.format_table(summary.layer_table(config, mesh), mesh))


def gpu_visible() -> bool:
  """Whether the machine has an NVIDIA GPU (its driver lists one), whatever JAX uses."""
  gpus = Path("/proc/driver/nvidia/gpus")
  return gpus.is_dir() and any(gpus.iterdir())


def describe_devices() -> None:
  """One line on the backend and devices JAX uses; a warning when it leaves a GPU unused."""
  print(
    f"JAX {jax.__version__} on {jax.device_count()} {jax.default_backend()} device(s)"
    f" ({jax.devices()[0].device_kind}), {jax.process_count()} process(es)."
  )
  if jax.default_backend() == "cpu" and gpu_visible():
    logging.warning(
      "This machine has an NVIDIA GPU but JAX runs on the CPU: install JAX's GPU build with"
      " pip install -r requirements-gpu.txt (see the README)."
    )


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # warnings and the project's own lines; -v 0 shows all
    logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  if FLAGS.mode != "summary" and not FLAGS.workdir:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir.")
  modes = dict(
    train=train.train_and_evaluate,
    eval=train.evaluate_checkpoint,
    stats=stats.run_stats,
    prepare=prepare.run_prepare,
    summary=print_summary,
    retrieval=retrieval.run_retrieval,
  )
  try:
    sharding.initialize_distributed(config)
    describe_devices()
    writes = FLAGS.mode in ("train", "prepare") and jax.process_index() == 0
    with workdirs.locked(FLAGS.workdir) if writes else contextlib.nullcontext():
      modes[FLAGS.mode](config, FLAGS.workdir)
  except train.Stopped as e:
    sys.exit(STOPPED_EXIT_STATUS + e.signal)
  except ERRORS as e:
    sys.exit(f"Error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
