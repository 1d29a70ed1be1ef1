"""Entry point: `python main.py --config=configs/alexnet.py [--config.x=y] --mode=M --workdir=D`."""

import ast
import sys

from absl import app, flags
from ml_collections import config_flags

from supervision import input_pipeline, stats, summary

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, statistics and logs.")
flags.DEFINE_enum("mode", "summary", ["summary", "stats"], "What to do.")
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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  try:
    if FLAGS.mode == "summary":
      print(summary.format_table(summary.layer_table(config)))
    elif FLAGS.mode == "stats":
      if not FLAGS.workdir:
        raise app.UsageError("--mode=stats needs --workdir for the statistics file.")
      stats.run_stats(config, FLAGS.workdir)
  except input_pipeline.DataError as e:
    sys.exit(f"Error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
