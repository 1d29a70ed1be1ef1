"""bfloat16 against float32: the CIFAR-10 test error of the same net, recipe and seeds computed
in bfloat16 (`config.model.dtype`: float32 parameters, optimizer state, loss and LRN sums) and
in float32.

configs/cifar10.py's default net and recipe (12 epochs), seeds 0 to 3; both errors (central
crop, 10 views) from each run's final evaluation. A seed's difference is bfloat16's error minus
float32's; over the seeds, the mean difference gets a 95% confidence interval (Student's t:
the mean plus or minus T_95[seeds - 1] standard errors, its standard deviation over the seeds
/ sqrt(seeds)). Where the interval holds 0, no difference is detected: bfloat16 is equal to
float32 within seed noise, to the interval's width.

Time on 2 CPU cores, measured: 9 minutes a float32 run, 15 a bfloat16 one (XLA:CPU runs
bfloat16 slower, docs/performance.md), on a quiet machine: about 1 hour 40 minutes for the 8.

Command: python -m experiments.run --experiment=precision --dataset=folder:/data/cifar10
--workdir=/runs/precision
"""

import math
from collections.abc import Sequence
from pathlib import Path

import ml_collections

from configs import cifar10
from experiments import common
from supervision.inference import VIEWS
from supervision.models import DTYPES

SEEDS = (0, 1, 2, 3)
# Two-sided 95% quantiles of Student's t by degrees of freedom (statistics tables); more
# degrees than listed take the last, a slightly wider interval.
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


def runs(smoke: bool, seeds: Sequence[int]) -> dict[str, ml_collections.ConfigDict]:
  out = {}
  for seed in seeds:
    for dtype in DTYPES:
      config = cifar10.get_config()
      config.seed, config.model.dtype = seed, dtype
      out[f"{dtype}_seed{seed}"] = common.smoke(config) if smoke else config
  return out


def summarize(records: dict[str, common.Record]) -> dict:
  """Per run its test errors; per dtype their spread over the seeds; per seed with both runs
  finished bfloat16's error minus float32's, and over those seeds the differences' spread,
  standard error and 95% confidence interval (`paired`)."""
  per_run = {
    name: dict(dtype=r.config.model.dtype, seed=r.config.seed, **common.errors(r))
    for name, r in records.items()
  }
  by_seed: dict[int, dict] = {}
  for run in per_run.values():
    if run["status"] == "finished":
      by_seed.setdefault(run["seed"], {})[run["dtype"]] = run
  dtypes = {
    dtype: {
      view: common.spread([s[dtype][view] for s in by_seed.values() if dtype in s])
      for view in VIEWS
    }
    for dtype in DTYPES
  }
  differences = {
    seed: {view: common.difference(s[DTYPES[1]][view], s[DTYPES[0]][view]) for view in VIEWS}
    for seed, s in by_seed.items()
    if len(s) == len(DTYPES)
  }
  effect = {view: paired([d[view] for d in differences.values()]) for view in VIEWS}
  table = [
    dict(seed=seed)
    | {
      f"{dtype}_{view}": s[dtype][view] if dtype in s else None
      for view in VIEWS
      for dtype in DTYPES
    }
    | {f"difference_{view}": differences.get(seed, {}).get(view) for view in VIEWS}
    for seed, s in by_seed.items()
  ]
  return dict(runs=per_run, dtypes=dtypes, differences=differences, effect=effect, table=table)


def paired(values: Sequence[float | None]) -> dict:
  """`common.spread` of paired differences, with the standard error of their mean, its 95%
  confidence interval [low, high] and whether that holds 0 (None for fewer than 2 values)."""
  out = common.spread(values) | dict(standard_error=None, ci95=None, no_difference=None)
  if out["std"] is not None:
    error = out["std"] / math.sqrt(out["n"])
    half = T_95[min(out["n"] - 1, max(T_95))] * error
    low, high = out["mean"] - half, out["mean"] + half
    out.update(standard_error=error, ci95=[low, high], no_difference=low <= 0 <= high)
  return out


def plot(records: dict[str, common.Record], summary: dict, workdir: Path) -> list[Path]:
  """precision.png: bars of float32's and bfloat16's test errors per seed, one panel a view."""
  figure, axes = common.new_figure(panels=len(VIEWS))
  seeds = sorted({run["seed"] for run in summary["runs"].values()})
  for axis, view in zip(axes, VIEWS, strict=True):
    groups = {
      dtype: [common.percent(summary["runs"].get(f"{dtype}_seed{s}", {}).get(view)) for s in seeds]
      for dtype in DTYPES
    }
    common.bars(axis, [f"seed {s}" for s in seeds], groups)
    axis.set(ylabel=f"test error, {view.replace('_', ' ')} (%)")
  return [common.save(figure, workdir / "precision.png")]
