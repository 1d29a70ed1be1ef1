"""Entry point: `python main.py --config=configs/alexnet.py [--config.x=y] --mode=M --workdir=D`."""

import ast
import contextlib
import importlib
import os
import sys
from pathlib import Path

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from supervision import USER_ERRORS, sharding, workdirs
from supervision.train import Stopped

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no INFO lines from TensorFlow (TFDS)
FLAGS = flags.FLAGS
# Errors whose message says what is wrong and what to do: one line, no traceback (a run's
# non-finite loss too).
ERRORS = (*USER_ERRORS, FloatingPointError)
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, statistics and logs.")
# Each mode: the function "module.function" of supervision that runs it, whether it holds the
# workdir's lock (the modes that write checkpoints or a prepared dataset), and what it does. A
# mode's module is imported only when the mode runs (the figures' matplotlib, for one, costs
# seconds).
MODES = {
  "train": (
    "train.train_and_evaluate", True, "train (resuming from the workdir's latest checkpoint)",
  ),
  "eval": (
    "inference.evaluate_checkpoint", False,
    "evaluate a checkpoint of the workdir (central crop and 10 views)",
  ),
  "predict": (
    "predict.predict", False,
    "print the top-5 classes of the images of --config.predict.path (with"
    " --config.predict.figure, also drawn as in the paper's Figure 4 into WORKDIR/predictions/)",
  ),
  "ensemble": (
    "inference.evaluate_ensemble", False,
    "evaluate the networks of --config.ensemble.workdirs together, averaging their softmax"
    " outputs (central crop and 10 views), into WORKDIR/ensemble_results.json",
  ),
  "features": (
    "inference.write_features", False,
    "write the last hidden layer's activations of --config.features.split (default: the eval"
    " split) of a checkpoint of the workdir to WORKDIR/features/<split>.npz",
  ),
  "retrieval": (
    "retrieval.run_retrieval", False,
    "from the features of the train and eval splits (--mode=features), train binary-code"
    " auto-encoders and report Euclidean and Hamming retrieval (precision@k, time per query)"
    " into WORKDIR/retrieval.json, with the paper's Figure 4 (right) in WORKDIR/figures/",
  ),
  "stats": (
    "stats.run_stats", False,
    "compute the dataset statistics (mean image, RGB covariance) into the workdir",
  ),
  "prepare": (
    "prepare.run_prepare", True,
    "decode every split once into 256x256 JPEG records in the workdir, to train from with"
    " --config.dataset=prepared:WORKDIR",
  ),
  "import_caffe": (
    "caffe.run_import", True,
    "import --config.caffe.model (a .caffemodel, with configs/alexnet.py:caffe) and"
    " --config.caffe.mean into the workdir's first checkpoint and statistics",
  ),
  "summary": ("summary.run_summary", False, "print the layer table"),
  "figures": (
    "figures.run_figures", False,
    "draw the first layer's kernels by column (the paper's Figure 3) of a checkpoint of the"
    " workdir (any model's) and its training curves into WORKDIR/figures/",
  ),
}  # fmt: skip
flags.DEFINE_enum(
  "mode", "train", list(MODES), "; ".join(f"{m}: {help}" for m, (_, _, help) in MODES.items())
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
  """Parses the flags and loads the config file; a bad flag or override, a missing config file
  or an error the config file raises itself (an unknown variant: its last line) exits with a
  one-line message."""
  try:
    rest = FLAGS(argv)
    if FLAGS.config is not None:
      FLAGS.config.dataset  # noqa: B018 (a config file that failed to load raises here)
    return rest
  except flags.Error as e:
    sys.exit(f"Error: {_without_traceback(str(e))}\nSee --helpfull.")
  except OSError as e:  # the config file could not be read; its last line says why
    sys.exit(f"Error in --config: {str(e).splitlines()[-1].strip()}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"Error in --config: {_unquote(str(e))}")


def _without_traceback(message: str) -> str:
  """A message's first line and, where a traceback follows, the last line of its text."""
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


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
  target, writes, _ = MODES[FLAGS.mode]
  module, function = target.split(".")
  try:
    sharding.initialize_distributed(config)
    describe_devices()
    run = getattr(importlib.import_module(f"supervision.{module}"), function)
    writes = writes and jax.process_index() == 0
    with workdirs.locked(FLAGS.workdir) if writes else contextlib.nullcontext():
      run(config, FLAGS.workdir)
  except Stopped as e:
    sys.exit(e.exit_status)  # a run stopped by a signal saved its checkpoint
  except ERRORS as e:
    sys.exit(f"Error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
