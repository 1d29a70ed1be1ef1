"""What the experiments share: the runner loop, reading a run's files, statistics and plots.

Each run of an experiment trains in WORKDIR/<run name>/ through `train.train_and_evaluate`, one
after the other in this process. A run is finished when its eval_results.json exists (it is
then skipped), diverged when its diverged.json does (train raised FloatingPointError; also
skipped), and otherwise trained, resuming from its checkpoint where it has one. A run that
continues an earlier one starts from a copy of that run's folder: its checkpoints and rows.
"""

import dataclasses
import fnmatch
import json
import math
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections
from matplotlib.figure import Figure

from supervision import ConfigError, checkpoint, figures, train, workdirs

EVAL_RESULTS = workdirs.EVAL_RESULTS  # the eval split's errors at the end of a run
DIVERGED = "diverged.json"  # written here when a run's training raises FloatingPointError
TRAIN_SPLIT_RESULTS = "train_split_results.json"  # `evaluate_train_split`
# --smoke: a few steps of a small batch (a multiple of the tests' 4 simulated devices).
SMOKE = dict(
  batch_size=8,
  num_train_steps=2,
  log_every_steps=1,
  eval_every_steps=2,
  checkpoint_every_steps=2,
  num_eval_batches=1,
)
PLOT_DPI = 100


@dataclasses.dataclass
class Record:
  """What a run left in its folder. `status`: "finished", "diverged", "partial" (rows but no
  final evaluation yet) or "missing" (nothing)."""

  config: ml_collections.ConfigDict
  status: str = "missing"
  rows: list[dict] = dataclasses.field(default_factory=list)  # metrics.jsonl
  results: dict | None = None  # eval_results.json
  train_split: dict | None = None  # train_split_results.json, where written
  error: str = ""  # a diverged run's message


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` at the tiny size of --smoke."""
  config.update(SMOKE)
  return config


def read_record(config: ml_collections.ConfigDict, run_dir: Path) -> Record:
  """The Record of the run of `config` in `run_dir`."""
  record = Record(config)
  if (run_dir / workdirs.METRICS).exists():
    record.rows = figures.read_metrics(run_dir / workdirs.METRICS)
    record.status = "partial"
  if (run_dir / EVAL_RESULTS).exists():
    record.results = json.loads((run_dir / EVAL_RESULTS).read_text())
    record.status = "finished"
  if (run_dir / TRAIN_SPLIT_RESULTS).exists():
    record.train_split = json.loads((run_dir / TRAIN_SPLIT_RESULTS).read_text())
  if (run_dir / DIVERGED).exists():
    record.status = "diverged"
    record.error = json.loads((run_dir / DIVERGED).read_text())["error"]
  return record


def train_run(
  config: ml_collections.ConfigDict, run_dir: Path, continues: Path | None = None
) -> None:
  """Trains the run in `run_dir` (holding its lock) unless it has finished or diverged; a
  FloatingPointError is written to its diverged.json. `train.Stopped` passes through. A run
  that `continues` another folder and has none yet gets a copy of it (`copy_run`)."""
  if (run_dir / EVAL_RESULTS).exists() or (run_dir / DIVERGED).exists():
    train.say(f"{run_dir.name}: done before, skipped.")
    return
  if continues and not run_dir.exists():
    train.say(f"{run_dir.name}: continues {continues.name}.")
    copy_run(continues, run_dir)
  train.say(f"{run_dir.name}: training in {run_dir}.")
  share_stats(run_dir)
  with workdirs.locked(str(run_dir)):
    try:
      train.train_and_evaluate(config, str(run_dir))
    except FloatingPointError as e:
      train.say(f"{run_dir.name} diverged: {e}")
      (run_dir / DIVERGED).write_text(json.dumps(dict(error=str(e))) + "\n")


def copy_run(source: Path, run_dir: Path) -> None:
  """`source`'s folder copied to `run_dir`, less what ends a run (its final evaluations) and its
  lock: training resumes from its last checkpoint, and its rows go on."""
  partial = run_dir.with_name(run_dir.name + ".partial")  # a copy cut short is not a run
  shutil.rmtree(partial, ignore_errors=True)
  ignore = shutil.ignore_patterns(EVAL_RESULTS, TRAIN_SPLIT_RESULTS, workdirs.LOCK)
  shutil.copytree(source, partial, ignore=ignore)
  partial.rename(run_dir)


def share_stats(run_dir: Path) -> None:
  """Copies the statistics files of the experiment's earlier runs into `run_dir`, so that each
  run does not compute them again (a file's name gives its dataset and image size, and training
  checks its contents); an earlier run's are first copied up into the experiment's folder."""
  root = run_dir.parent
  for path in root.glob("*/stats_*.npz"):
    if not (root / path.name).exists():
      shutil.copyfile(path, root / path.name)
  run_dir.mkdir(parents=True, exist_ok=True)
  for path in root.glob("stats_*.npz"):
    if not (run_dir / path.name).exists():
      shutil.copyfile(path, run_dir / path.name)


def evaluate_train_split(config: ml_collections.ConfigDict, run_dir: Path) -> None:
  """The final net of a finished run evaluated on its training split in test mode (central
  crop, no dropout) into run_dir/train_split_results.json (once), so that eval_results.json
  stays the eval split's."""
  path = run_dir / TRAIN_SPLIT_RESULTS
  if path.exists() or not (run_dir / EVAL_RESULTS).exists():
    return
  step = json.loads((run_dir / EVAL_RESULTS).read_text())["step"]
  params, _, step = checkpoint.restore_params(str(run_dir), step)
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval_split = config.train_split
  results = train.Trainer(config, str(run_dir)).evaluate(params)
  train.say(f"{run_dir.name}: {config.train_split} split top-1 error {results['top1_error']:.4f}.")
  path.write_text(json.dumps(dict(step=step, split=config.train_split, center=results)) + "\n")


def run_experiment(
  module: ModuleType,
  dataset: str,
  workdir: str,
  smoke_size: bool = False,
  seeds: Sequence[int] | None = None,
  train_runs: bool = True,
  only: Sequence[str] = (),
) -> dict:
  """Trains the runs of the experiment `module` that are not done (with `train_runs`; with
  `only`, those whose names match one of its shell patterns), then writes WORKDIR/results.json
  and the module's plots from whatever runs exist; returns the results. The module has
  `runs(smoke, seeds)` ({name: config}), `summarize(records)` and
  `plot(records, summary, workdir)`; optionally `prepare(name, config, records)` (a run's
  config from the records of the runs before it, or None: the run is not needed),
  `continues(name, config, records)` (the earlier run it continues, or None) and
  `after_run(config, run_dir)`."""
  seeds = tuple(seeds or module.SEEDS)[: 1 if smoke_size else None]
  runs = module.runs(smoke_size, seeds)
  chosen = selected(list(runs), only)
  root = workdirs.create(workdir)
  records: dict[str, Record] = {}
  continues = getattr(module, "continues", None)
  for name, config in runs.items():
    config.dataset = dataset
    if hasattr(module, "prepare"):
      config = module.prepare(name, config, records)
      if config is None:
        continue
    if train_runs and name in chosen:
      source = continues(name, config, records) if continues else None
      train_run(config, root / name, source and root / source)
      if hasattr(module, "after_run"):
        module.after_run(config, root / name)
    records[name] = read_record(config, root / name)
  summary = module.summarize(records)
  plots = [str(p) for p in module.plot(records, summary, root)]
  results = dict(
    experiment=module.__name__.rsplit(".", 1)[-1],
    smoke=smoke_size,
    seeds=list(seeds),
    runs={name: r.status for name, r in records.items()},
    missing=[name for name, r in records.items() if r.status in ("partial", "missing")],
    diverged={name: r.error for name, r in records.items() if r.status == "diverged"},
    summary=summary,
    plots=plots,
  )
  (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  print_results(results, root)
  return results


def selected(names: Sequence[str], patterns: Sequence[str]) -> set[str]:
  """The names that match one of the shell patterns (all of them without patterns); a pattern
  that matches none is a ConfigError naming it."""
  if not patterns:
    return set(names)
  chosen = set()
  for pattern in patterns:
    matches = fnmatch.filter(names, pattern)
    if not matches:
      raise ConfigError(f"--runs: {pattern!r} matches no run; the runs: {', '.join(names)}.")
    chosen.update(matches)
  return chosen


def print_results(results: dict, root: Path) -> None:
  """The summary's table (a list of rows) as aligned columns, and what is missing."""
  rows = results["summary"]["table"]
  if rows:
    columns = list(rows[0])
    cells = [columns] + [[format_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
      print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
  if results["missing"]:
    print(f"Not finished yet ({len(results['missing'])}): {', '.join(results['missing'])}.")
  print(f"Results in {root / 'results.json'}; plots: {', '.join(results['plots'])}.")


def format_cell(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


# Reading the rows of a run.


def train_rows(rows: list[dict]) -> list[dict]:
  """The training rows of metrics.jsonl (those with a training top-1 error), in step order."""
  return [row for row in rows if "top1_error" in row]


def epochs_trained(record: Record) -> float | None:
  """The epoch of a run's last training row."""
  rows = train_rows(record.rows)
  return rows[-1]["epoch"] if rows else None


def error(record: Record, view: str = "center") -> float | None:
  """A finished run's final top-1 error on the eval split, "center" or "ten_views"."""
  return record.results[view]["top1_error"] if record.status == "finished" else None


def errors(record: Record) -> dict:
  """A run's status and its final top-1 errors of both views (None until it has finished)."""
  return dict(
    status=record.status, center=error(record, "center"), ten_views=error(record, "ten_views")
  )


def spread(values: Sequence[float | None]) -> dict:
  """Mean, sample standard deviation (None for fewer than 2), minimum, maximum and count of
  the values that are not None."""
  values = [v for v in values if v is not None]
  if not values:
    return dict(mean=None, std=None, min=None, max=None, n=0)
  std = statistics.stdev(values) if len(values) > 1 else None
  return dict(
    mean=statistics.fmean(values), std=std, min=min(values), max=max(values), n=len(values)
  )


def difference(a: float | None, b: float | None) -> float | None:
  """a - b, or None when either is missing."""
  return None if a is None or b is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
  """a / b, or None when either is missing or b is 0."""
  return None if a is None or not b else a / b


def ceil_epochs(epochs: float) -> int:
  """Whole epochs covering `epochs` (up to float noise of step / steps per epoch)."""
  return math.ceil(round(epochs, 9))


# Plots.


def new_figure(panels: int = 1, width: float = 6.0) -> tuple[Figure, list]:
  """A figure of `panels` side by side, each `width` inches wide."""
  figure = Figure(figsize=(width * panels, 4.5), dpi=PLOT_DPI, layout="constrained")
  axes = figure.subplots(1, panels, squeeze=False)[0]
  return figure, list(axes)


def save(figure: Figure, path: Path) -> Path:
  figure.savefig(path)
  return path


def legend(axis: Any) -> None:
  """The axis's legend, where it has labelled lines (runs not trained yet draw none)."""
  if axis.get_legend_handles_labels()[0]:
    axis.legend()


def series(record: Record, key: str) -> tuple[list, list]:
  """(epochs, values) of `key` ("top1_error" or "eval_top1_error") of a run's rows."""
  _, found = figures.curves(record.rows) if record.rows else ("", {})
  return tuple(list(a) for a in found[key]) if key in found else ([], [])


def bars(axis: Any, labels: Sequence[str], groups: dict[str, Sequence[float | None]]) -> None:
  """Grouped bars: one group per label, one bar per entry of `groups` ({legend: values in
  percent}); a missing value (None) leaves its bar out."""
  width = 0.8 / max(len(groups), 1)
  for i, (name, values) in enumerate(groups.items()):
    xs = [j + (i - (len(groups) - 1) / 2) * width for j, v in enumerate(values) if v is not None]
    axis.bar(xs, [v for v in values if v is not None], width, label=name)
  axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
  axis.grid(axis="y", alpha=0.3)
  axis.margins(y=0.2)  # room above the bars for the legend
  legend(axis)


def percent(value: float | None) -> float | None:
  return None if value is None else 100 * value
