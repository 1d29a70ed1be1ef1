"""Runs one of the paper's CIFAR-10 experiments: trains its runs, then writes results.json and
PNG plots into the workdir and prints a table.

    python -m experiments.run --experiment=figure1 --dataset=folder:/data/cifar10 \
      --workdir=/runs/figure1 [--smoke] [--seeds=0,1] [--notrain]

Each run trains in WORKDIR/<run name>/. Started again (after a kill, say), it skips the runs
that finished or diverged and resumes the others from their checkpoints; SIGTERM or SIGINT
saves and exits with 128 + the signal, like main.py. --notrain only collects the runs that
exist, naming those missing. --smoke runs the same code at a tiny size (a few steps of 8
images, one seed, the smallest sweep), seconds an experiment, for CI.
"""

import importlib
import os
import sys

from absl import app, flags, logging

from experiments import common
from supervision import ConfigError, DataError, train
from supervision.checkpoint import CheckpointError
from supervision.workdirs import WorkdirError

EXPERIMENTS = ("figure1", "lrn", "pooling", "views")
STOPPED_EXIT_STATUS = 128  # as main.py: 128 + the signal's number
ERRORS = (ConfigError, DataError, CheckpointError, WorkdirError, FileNotFoundError)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
flags.DEFINE_enum("experiment", None, EXPERIMENTS, "The experiment (a module of experiments/).")
flags.DEFINE_string(
  "dataset", None, "config.dataset of every run: folder:/path/to/cifar10 or cifar10."
)
flags.DEFINE_string("workdir", None, "The experiment's folder: a folder per run, results, plots.")
flags.DEFINE_bool("smoke", False, "A tiny size: a few steps of a small batch, one seed.")
flags.DEFINE_list("seeds", None, "Seeds of the runs (default: the experiment's SEEDS).")
flags.DEFINE_bool("train", True, "Train the runs not done; --notrain only collects what exists.")
flags.mark_flags_as_required(["experiment", "dataset", "workdir"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  module = importlib.import_module(f"experiments.{FLAGS.experiment}")
  seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else None
  try:
    common.run_experiment(module, FLAGS.dataset, FLAGS.workdir, FLAGS.smoke, seeds, FLAGS.train)
  except train.Stopped as e:
    sys.exit(STOPPED_EXIT_STATUS + e.signal)
  except ERRORS as e:
    sys.exit(f"Error: {e}")


if __name__ == "__main__":
  app.run(main)
