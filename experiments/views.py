"""The 10 test views ("Data Augmentation"): one central crop against the average of the softmax
outputs of the four corner and central crops and their reflections.

configs/cifar10.py's default net and recipe (random crops and reflections, lighting noise, 12
epochs), seeds 0 and 1; both errors come from each run's final evaluation (eval_results.json).

Time on 2 CPU cores, measured: 2 runs of 12 epochs, 10.5 minutes a run on a quiet machine (14
while the test suite also ran): about 22 minutes.

Command: python -m experiments.run --experiment=views --dataset=folder:/data/cifar10
--workdir=/runs/views
"""

from collections.abc import Sequence
from pathlib import Path

import ml_collections

from configs import cifar10
from experiments import common

SEEDS = (0, 1)


def runs(smoke: bool, seeds: Sequence[int]) -> dict[str, ml_collections.ConfigDict]:
  out = {}
  for seed in seeds:
    config = cifar10.get_config()
    config.seed = seed
    out[f"seed{seed}"] = common.smoke(config) if smoke else config
  return out


def summarize(records: dict[str, common.Record]) -> dict:
  """Per seed: the central crop's and the 10 views' test errors and the central minus the 10
  views'; their means over the seeds."""
  per_run = {}
  for name, r in records.items():
    run = dict(seed=r.config.seed, **common.errors(r))
    run["center_minus_ten_views"] = common.difference(run["center"], run["ten_views"])
    per_run[name] = run
  mean = {
    key: common.spread([run[key] for run in per_run.values()])["mean"]
    for key in ("center", "ten_views", "center_minus_ten_views")
  }
  table = [
    dict(run=name) | {k: v for k, v in run.items() if k != "seed"} for name, run in per_run.items()
  ]
  return dict(runs=per_run, mean=mean, table=table + [dict(run="mean", status="") | mean])


def plot(records: dict[str, common.Record], summary: dict, workdir: Path) -> list[Path]:
  """views.png: bars of both errors per seed and their means."""
  figure, (axis,) = common.new_figure()
  columns = {**summary["runs"], "mean": summary["mean"]}
  groups = {
    "central crop": [common.percent(c["center"]) for c in columns.values()],
    "10 views": [common.percent(c["ten_views"]) for c in columns.values()],
  }
  common.bars(axis, list(columns), groups)
  axis.set(ylabel="test error (%)")
  return [common.save(figure, workdir / "views.png")]
