"""Runs one of the paper's CIFAR-10 experiments: trains its runs, then writes results.json and
PNG plots into the workdir and prints a table.

    python -m experiments.run --experiment=figure1 --dataset=folder:/data/cifar10 \
      --workdir=/runs/figure1 [--smoke] [--seeds=0,1] [--runs='scaled_*'] [--notrain]

Each run trains in WORKDIR/<run name>/. Started again (after a kill, say), it skips the runs
that finished or diverged and resumes the others from their checkpoints; SIGTERM or SIGINT
saves and exits with 128 + the signal, like main.py. --notrain only collects the runs that
exist, naming those missing; --runs trains only the runs whose names match one of its shell
patterns (and collects the others that exist). --smoke runs the same code at a tiny size (a few
steps of 8 images, one seed, the smallest sweep), seconds an experiment, for CI.
"""

import importlib
import os
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from experiments import common
from supervision import USER_ERRORS, train

EXPERIMENTS = ("figure1", "lrn", "pooling", "precision", "views")
FLAGS = flags.FLAGS


def execute(
  experiment: str,
  dataset: str,
  workdir: str,
  smoke: bool = False,
  seeds: Sequence[int] | None = None,
  train_runs: bool = True,
  only: Sequence[str] = (),
) -> dict:
  """`common.run_experiment` of experiments/<experiment>.py; a run stopped by a signal exits
  with its exit status (128 + the signal), an error of USER_ERRORS with its message."""
  module = importlib.import_module(f"experiments.{experiment}")
  try:
    return common.run_experiment(module, dataset, workdir, smoke, seeds, train_runs, only)
  except train.Stopped as e:
    sys.exit(e.exit_status)
  except USER_ERRORS as e:
    sys.exit(f"Error: {e}")


def define_flags() -> None:
  """The command line's flags (defined only when run as a program: main.py, which tests import,
  defines --workdir too)."""
  flags.DEFINE_enum("experiment", None, EXPERIMENTS, "The experiment (experiments/<name>.py).")
  flags.DEFINE_string("dataset", None, "config.dataset of its runs: folder:/path/to/cifar10.")
  flags.DEFINE_string("workdir", None, "The experiment's folder: one per run, results, plots.")
  flags.DEFINE_bool("smoke", False, "A tiny size: a few steps of a small batch, one seed.")
  flags.DEFINE_list("seeds", None, "Seeds of the runs (default: the experiment's SEEDS).")
  flags.DEFINE_list("runs", [], "Train only the runs whose names match one of these patterns.")
  flags.DEFINE_bool("train", True, "Train the runs not done; --notrain collects what exists.")
  flags.mark_flags_as_required(["experiment", "dataset", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # warnings and the project's own lines, as main.py
    logging.set_verbosity(logging.WARNING)
  seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else None
  execute(
    FLAGS.experiment, FLAGS.dataset, FLAGS.workdir, FLAGS.smoke, seeds, FLAGS.train, FLAGS.runs
  )


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no INFO lines from TensorFlow (TFDS)
  define_flags()
  app.run(main)
