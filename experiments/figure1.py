"""Figure 1 ("ReLU Nonlinearity"): epochs to 25% training error, ReLU against tanh.

The four-layer net without LRN (`configs/cifar10.py:figure1`, cuda-convnet's layers-80sec) with
"no regularization of any kind": no weight decay, no dropout, central 24x24 crops (no random
crops, reflections or lighting noise), a constant learning rate, momentum 0.9, batches of 128,
training ended at the first logged 0.1 epoch whose mean training error is <= 25%. Two
initializations: "paper" (N(0, std) with cuda-convnet's per-layer stds, biases 0, on the
mean-subtracted 0-255 pixels) and "scaled" (`--config.model.init=scaled`: He normal for the ReLU
net, LeCun normal for the tanh net, with `--config.standardize_inputs`: the unit-variance inputs
these assume; on raw 0-255 pixels their first layer's outputs are some 60 times too large: the
ReLU net diverged at 0.1 and blew its weights up to a norm of 2.6e12 at 0.03).

The paper tuned each net's learning rate for speed; here each (init, activation) tries
LEARNING_RATES, from the largest down: a too large rate diverges within a few steps (cheap, and
recorded as diverged), and once a rate has reached 25% at E epochs the smaller ones, which
would only reach it later, are capped at ceil(E) epochs (`pruned_epochs`). 0.01 is the CIFAR-10
recipe's rate; without weight decay and augmentation larger steps stay stable, so the sweep goes
up from it, 3x apart. If a pair's best rate is 0.01, a smaller one might be better still. Each
run is capped at EPOCH_CAP epochs, the ReLU and the tanh nets alike. Where no rate of
a pair reaches 25% within its cap, the best of them (the lowest last training error) goes on
from its last checkpoint to CONTINUED_EPOCHS in a run of its own (`continues`); a net short of
25% even then gives a lower bound of the ratio (`epochs_at_least`).

Time on 2 CPU cores at 20-40 s an epoch (about 20 on a quiet machine with the code of
2026-12-03): at most 2 x 2 x (3 x 20 + 60) = 480 epochs, 2.7-5.5 hours; the pruning cuts most
of the ReLU runs (and of the tanh runs where a rate reaches 25%), and the continued runs only
train where no rate reached 25%. The paper's init, the setting of the paper's claim, comes
first. Through its conv1's N(0, 1e-4) weights the signal is so small that the ReLU net learns
slowly (at 0.03 it stays at chance), and neither net reaches 25% in 20 epochs: with seed 0 its
two continued runs took 8 and 31 minutes more (ReLU reached 25% after 32 epochs, tanh after
62; with seed 1 after 44 and 66).
The wall time to 25% is the training time of the logged intervals up to it (each interval's
steps x batch / its images per second; the first interval of a run, and of a resumed run,
includes compiling the train step, a few seconds).

Command: python -m experiments.run --experiment=figure1 --dataset=folder:/data/cifar10
--workdir=/runs/figure1
"""

from collections.abc import Sequence
from pathlib import Path

import ml_collections

from configs import cifar10
from experiments import common

SEEDS = (0,)
INITS = ("paper", "scaled")
ACTIVATIONS = ("relu", "tanh")
LEARNING_RATES = (0.1, 0.03, 0.01)  # tried in this order (`pruned_epochs`)
EPOCH_CAP = 20  # the scaled init's ReLU runs needed more than 10
CONTINUED_EPOCHS = 80  # of a pair's best run where none reached 25% within its cap
EVAL_EVERY_EPOCHS = 5  # the test error is not the point here; checkpoints come every 1000 steps
SMOKE_TARGET = 1.0  # --smoke: reached at the first logged step, where the runs end
LEVELS = (0.4, 0.35, 0.3)  # training errors also timed: the ratio where a net falls short of 25%
PAPER_RATIO = 6  # Figure 1: tanh needs about six times the ReLU net's epochs to reach 25%


def run_name(init: str, activation: str, learning_rate: float, seed: int) -> str:
  return f"{init}_{activation}_lr{learning_rate:g}_seed{seed}"


def continued_name(init: str, activation: str, seed: int) -> str:
  return f"{init}_{activation}_continued_seed{seed}"


def group_name(init: str, activation: str, seed: int) -> str:
  """The runs of one (init, activation, seed) that differ in their learning rate."""
  return f"{init}_{activation}_seed{seed}"


def config_for(
  init: str, activation: str, learning_rate: float, seed: int, smoke: bool = False
) -> ml_collections.ConfigDict:
  config = cifar10.get_config("figure1")
  config.model.activation = activation
  if init == "scaled":  # fan-in scaled weights assume unit-variance inputs
    config.model.init, config.standardize_inputs = "scaled", True
    config.model.layer_init_std = {}
  config.learning_rate = learning_rate
  config.num_epochs = EPOCH_CAP
  config.seed = seed
  steps_per_epoch = 50_000 // config.batch_size  # of CIFAR-10's training split
  config.eval_every_steps = EVAL_EVERY_EPOCHS * steps_per_epoch
  if smoke:
    common.smoke(config).stop_at_train_error = SMOKE_TARGET
  return config


def runs(smoke: bool, seeds: Sequence[int]) -> dict[str, ml_collections.ConfigDict]:
  """Every (init, activation, learning rate, seed), learning rates in the order tried, then the
  continued run of each (init, activation, seed); --smoke: one learning rate of each activation
  with the paper's init (the scaled init is a config key; its runs share the code), continued
  for twice its steps."""
  rates = LEARNING_RATES[1:2] if smoke else LEARNING_RATES
  out = {}
  for seed in seeds:
    for init in ("paper",) if smoke else INITS:
      for activation in ACTIVATIONS:
        for lr in rates:
          out[run_name(init, activation, lr, seed)] = config_for(init, activation, lr, seed, smoke)
        continued = config_for(init, activation, rates[0], seed, smoke)  # its rate: `prepare`
        continued.num_epochs = CONTINUED_EPOCHS
        continued.num_train_steps *= 2 if smoke else 1  # -1 (epochs) unless --smoke
        out[continued_name(init, activation, seed)] = continued
  return out


def group_of(config: ml_collections.ConfigDict) -> tuple[str, str, int]:
  """(init, activation, seed) of a run's config."""
  init = "scaled" if config.model.init == "scaled" else "paper"
  return init, config.model.activation, config.seed


def pruned_epochs(cap: int, reached: Sequence[float | None]) -> int:
  """Epochs for the next learning rate of a group whose earlier runs reached the target at
  `reached` epochs (None: not within their cap, or diverged): ceil of the fastest, at most
  `cap`."""
  epochs = [common.ceil_epochs(e) for e in reached if e is not None]
  return min([cap, *epochs])


def members(
  config: ml_collections.ConfigDict, records: dict[str, common.Record]
) -> dict[str, common.Record]:
  """The records of the runs of `config`'s group."""
  return {n: r for n, r in records.items() if group_of(r.config) == group_of(config)}


def prepare(
  name: str, config: ml_collections.ConfigDict, records: dict[str, common.Record]
) -> ml_collections.ConfigDict | None:
  """`config` with its epochs pruned by the earlier runs of its group; a continued run's with the
  learning rate of the run it continues, or None where it has none to continue."""
  if name == continued_name(*group_of(config)):
    source = continues(name, config, records)
    if source is None:
      return None
    config.learning_rate = records[source].config.learning_rate
    return config
  reached = [to_target(r)[0] for r in members(config, records).values()]
  config.num_epochs = pruned_epochs(config.num_epochs, reached)
  return config


def continues(
  name: str, config: ml_collections.ConfigDict, records: dict[str, common.Record]
) -> str | None:
  """The run that a continued run goes on from: its group's best, where none of the group's
  runs reached the target (else, and for the other runs, None)."""
  if name != continued_name(*group_of(config)):
    return None
  group = members(config, records)
  best = best_run(group)
  return best if best is not None and to_target(group[best])[0] is None else None


def to_target(
  record: common.Record, level: float | None = None
) -> tuple[float | None, float | None]:
  """(epochs, training seconds) to the first logged training error <= `level` (default: the
  run's stop_at_train_error), or (None, None) where no row reaches it (a diverged run's do not
  count).

  A row's interval took (its step - the previous row's step) x batch / its images per second.
  """
  if record.status == "diverged":
    return None, None
  level = record.config.stop_at_train_error if level is None else level
  seconds, previous = 0.0, 0
  for row in common.train_rows(record.rows):
    seconds += (row["step"] - previous) * record.config.batch_size / row["images_per_second"]
    previous = row["step"]
    if row["top1_error"] <= level:
      return row["epoch"], seconds
  return None, None


def best_run(records: dict[str, common.Record]) -> str | None:
  """Of the runs of one group, the one with the fewest epochs to the target (ties: the least
  time); where none reaches it, the one trained longest (a continued run), of those the one with
  the lowest last training error (its curve is still drawn); None without training rows."""
  targets = {n: to_target(r) for n, r in records.items()}
  reached = {n: t for n, t in targets.items() if t[0] is not None}
  if reached:
    return min(reached, key=lambda n: reached[n])
  last = {
    n: (-rows[-1]["epoch"], rows[-1]["top1_error"])
    for n, r in records.items()
    if (rows := common.train_rows(r.rows)) and r.status != "diverged"
  }
  return min(last, key=last.get) if last else None


def fastest_to(records: dict[str, common.Record], level: float) -> float | None:
  """The fewest epochs in which a run of `records` (one group) reached `level`, or None."""
  epochs = [e for e, _ in (to_target(r, level) for r in records.values()) if e is not None]
  return min(epochs, default=None)


def summarize(records: dict[str, common.Record]) -> dict:
  """Per run: epochs and seconds to the target; per (init, activation, seed): the best
  learning rate; per (init, seed): tanh / ReLU ratios of the best runs' epochs and seconds, and
  where tanh fell short of the target, epochs_at_least: its best run's epochs trained over
  ReLU's epochs to the target, and at each of LEVELS, each activation's fewest epochs to it (its
  learning rate chosen for that level) and their ratio."""
  per_run, groups = {}, {}
  for name, r in records.items():
    epochs, seconds = to_target(r)
    rows = common.train_rows(r.rows)
    per_run[name] = dict(
      group=group_name(*group_of(r.config)), learning_rate=r.config.learning_rate,
      num_epochs=r.config.num_epochs, status=r.status, epochs_to_target=epochs,
      seconds_to_target=seconds, epochs_trained=common.epochs_trained(r),
      last_train_error=rows[-1]["top1_error"] if rows else None,
    )  # fmt: skip
    groups.setdefault(group_of(r.config), {})[name] = r
  best, to_levels = {}, {}
  for group, members in groups.items():
    to_levels[group] = {f"{level:g}": fastest_to(members, level) for level in LEVELS}
    name = best_run(members)
    epochs, seconds = to_target(members[name]) if name else (None, None)
    lr = members[name].config.learning_rate if name else None
    trained = common.epochs_trained(members[name]) if name else None
    best[group] = dict(
      run=name, learning_rate=lr, epochs_to_target=epochs, seconds_to_target=seconds,
      epochs_trained=trained,
    )  # fmt: skip
  ratios = {}
  for init, activation, seed in best:
    if activation == "relu" and (init, "tanh", seed) in best:
      relu, tanh = best[init, "relu", seed], best[init, "tanh", seed]
      # tanh short of the target: its epochs trained give a lower bound of the epochs' ratio.
      short = tanh["epochs_to_target"] is None
      ratios[f"{init}_seed{seed}"] = dict(
        epochs=common.ratio(tanh["epochs_to_target"], relu["epochs_to_target"]),
        seconds=common.ratio(tanh["seconds_to_target"], relu["seconds_to_target"]),
        epochs_at_least=common.ratio(tanh["epochs_trained"], relu["epochs_to_target"])
        if short
        else None,
        levels={level: level_ratio(*(to_levels[init, a, seed][level] for a in ACTIVATIONS))
                for level in to_levels[init, "relu", seed]},
      )  # fmt: skip
  table = [
    dict(group=group_name(*g), best_lr=b["learning_rate"], epochs=b["epochs_to_target"])
    | dict(seconds=b["seconds_to_target"])
    | {f"epochs_to_{level}": epochs for level, epochs in to_levels[g].items()}
    for g, b in best.items()
  ]
  return dict(
    target=next(iter(records.values())).config.stop_at_train_error if records else None,
    runs=per_run, best={group_name(*g): b for g, b in best.items()}, tanh_over_relu=ratios,
    table=table, paper=f"Figure 1: the ReLU net reaches 25% training error about {PAPER_RATIO}"
    " times faster (in epochs) than the tanh net.",
  )  # fmt: skip


def level_ratio(relu: float | None, tanh: float | None) -> dict:
  """ReLU's and tanh's fewest epochs to a level, and tanh / ReLU."""
  return dict(relu=relu, tanh=tanh, tanh_over_relu=common.ratio(tanh, relu))


def plot(records: dict[str, common.Record], summary: dict, workdir: Path) -> list[Path]:
  """figure1.png: the training error over epochs of the best run of each activation (ReLU
  solid, tanh dashed), one panel per init (and seed) with training rows, and the target as a
  line."""
  trained = [r for r in records.values() if common.train_rows(r.rows)]
  panels = sorted({(r.config.seed, INITS.index(group_of(r.config)[0])) for r in trained})
  figure, axes = common.new_figure(max(len(panels), 1))
  for axis, (seed, init) in zip(axes, panels, strict=False):
    for activation, style in (("relu", "-"), ("tanh", "--")):
      best = summary["best"].get(group_name(INITS[init], activation, seed), {})
      if best.get("run"):
        epochs, errors = common.series(records[best["run"]], "top1_error")
        label = f"{activation}, lr {best['learning_rate']:g}"
        axis.plot(epochs, [100 * e for e in errors], style, color="black", label=label)
    if summary["target"] is not None:
      axis.axhline(100 * summary["target"], color="tab:red", linewidth=0.8)
    title = f"init {INITS[init]}, seed {seed}"
    axis.set(title=title, xlabel="epochs", ylabel="training error rate (%)", ylim=(0, 100))
    axis.grid(alpha=0.3)
    common.legend(axis)
  return [common.save(figure, workdir / "figure1.png")]
