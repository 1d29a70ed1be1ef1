"""Response normalization ("Local Response Normalization") on CIFAR-10: cuda-convnet's
layers-18pct net with and without its rnorm layers.

`configs/cifar10.py:layers_18pct`: conv1 32 5x5 -> max pool 3/2 -> ReLU -> rnorm; conv2 32 5x5
ReLU -> avg pool 3/2 -> rnorm; conv3 64 5x5 ReLU -> avg pool 3/2 -> fc 10; rnorm across 3 maps
with cuda-convnet's scale 5e-5 divided by the size, plus 1, to the power 0.75 (n=3,
alpha=5e-5, alpha_over_n, k=1, beta=0.75), after the pooling; cuda-convnet's per-layer init
stds. Against `configs/cifar10.py:layers_18pct_no_lrn`, the same net without rnorm. The
training recipe is configs/cifar10.py's (random crops, reflections and lighting noise, weight
decay 0.0005, learning rate 0.01 divided by 10 after epochs 8 and 11 of 12), not cuda-convnet's
schedule; seeds 0 and 1.

Time on 2 CPU cores, measured: 4 runs of 12 epochs, about 11-12 minutes a run (50 s an epoch
with its test evaluation, and the decoding into memory): about 50 minutes.

Command: python -m experiments.run --experiment=lrn --dataset=folder:/data/cifar10
--workdir=/runs/lrn
"""

from collections.abc import Sequence
from pathlib import Path

import ml_collections

from configs import cifar10
from experiments import common

SEEDS = (0, 1)
NETS = dict(lrn="layers_18pct", no_lrn="layers_18pct_no_lrn")  # net -> variant of cifar10.py
PAPER = dict(lrn=0.11, no_lrn=0.13)  # "Local Response Normalization": CIFAR-10 test error
NOTE = (
  "The paper's 13% (without) and 11% (with normalization) are its four-layer net's with its own"
  " schedule; this is cuda-convnet's layers-18pct net trained with configs/cifar10.py's 12-epoch"
  " recipe, so compare the difference, not the levels."
)


def runs(smoke: bool, seeds: Sequence[int]) -> dict[str, ml_collections.ConfigDict]:
  out = {}
  for seed in seeds:
    for net, variant in NETS.items():
      config = cifar10.get_config(variant)
      config.seed = seed
      out[f"{net}_seed{seed}"] = common.smoke(config) if smoke else config
  return out


def net_of(config: ml_collections.ConfigDict) -> str:
  return "lrn" if any(c["lrn"] for c in config.model.conv) else "no_lrn"


def summarize(records: dict[str, common.Record]) -> dict:
  """Per run: the test errors (central crop, 10 views) and the epochs trained; per net: their
  mean and spread over seeds; the effect: without minus with normalization."""
  per_run = {
    name: dict(
      net=net_of(r.config),
      seed=r.config.seed,
      **common.errors(r),
      epochs=common.epochs_trained(r),
    )  # fmt: skip
    for name, r in records.items()
  }
  nets = {}
  for net in NETS:
    members = [run for run in per_run.values() if run["net"] == net]
    nets[net] = {
      view: common.spread([m[view] for m in members]) for view in ("center", "ten_views")
    }
  effect = {
    view: common.difference(nets["no_lrn"][view]["mean"], nets["lrn"][view]["mean"])
    for view in ("center", "ten_views")
  }
  table = [
    dict(net=net, seeds=s["center"]["n"], center=s["center"]["mean"], center_std=s["center"]["std"])
    | dict(ten_views=s["ten_views"]["mean"], paper=PAPER[net])
    for net, s in nets.items()
  ]
  return dict(runs=per_run, nets=nets, no_lrn_minus_lrn=effect, paper=PAPER, note=NOTE, table=table)


def plot(records: dict[str, common.Record], summary: dict, workdir: Path) -> list[Path]:
  """lrn.png: the test error (central crop) over epochs of each run, with normalization solid,
  without dashed, a colour per seed."""
  figure, (axis,) = common.new_figure()
  for name, r in records.items():
    epochs, errors = common.series(r, "eval_top1_error")
    style = "-" if net_of(r.config) == "lrn" else "--"
    axis.plot(
      epochs, [100 * e for e in errors], style, marker="o", color=f"C{r.config.seed}", label=name
    )
  axis.set(xlabel="epochs", ylabel="test error, central crop (%)")
  axis.grid(alpha=0.3)
  common.legend(axis)
  return [common.save(figure, workdir / "lrn.png")]
