"""The paper's "Details of learning" as the main job: train, evaluate, checkpoint, resume. The
jitted steps are `supervision.steps`'; this module runs them over the data."""

import functools
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from supervision import (
  ConfigError,
  checkpoint,
  datasets,
  input_pipeline,
  models,
  optim,
  sharding,
  stats,
  steps,
  workdirs,
)


class Trainer:
  """The model, optimizer, mesh, statistics and compiled steps of one configuration."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    self.config = config
    self.mesh = sharding.create_mesh(config)
    # The training split is listed here once; train_and_evaluate decodes it.
    self.train_source = datasets.decoding_source(config, config.train_split)
    self.steps_per_epoch = len(self.train_source) // config.batch_size
    if not self.steps_per_epoch:
      raise ConfigError(
        f"config.batch_size={config.batch_size} is larger than the {len(self.train_source)}"
        f" examples of split {config.train_split!r} of {config.dataset}: not one batch an epoch."
      )
    if config.num_train_steps > 0:
      self.num_steps = config.num_train_steps
    else:
      self.num_steps = config.num_epochs * self.steps_per_epoch
    self.model = models.create_model(config)
    self.tx = optim.create_optimizer(config)
    self.lr_fn = optim.learning_rate_fn(config, self.steps_per_epoch)
    init = functools.partial(steps.create_train_state, config, self.model, self.tx)
    abstract = jax.eval_shape(init)
    models.check_params(abstract.params, config.crop_size)
    self.state_shardings = sharding.state_shardings(self.mesh, abstract)
    self.eval_source = input_pipeline.make_source(config, config.eval_split)
    self.data_stats = sharding.replicate(self.mesh, stats.load_or_compute_stats(config, workdir))
    options = sharding.compiler_options()
    with jax.set_mesh(self.mesh):
      self.init_state = jax.jit(init, out_shardings=self.state_shardings)
      self.train_step = jax.jit(
        functools.partial(
          steps.train_step, model=self.model, tx=self.tx, lr_fn=self.lr_fn, config=config
        ),
        donate_argnums=0,
        compiler_options=options,
      )
      self.eval_steps = {
        ten: jax.jit(
          functools.partial(steps.eval_step, model=self.model, config=config, ten_views=ten),
          compiler_options=options,
        )
        for ten in (False, True)
      }

  def abstract_state(self) -> steps.TrainState:
    """Shapes, dtypes and shardings of the train state, for restoring checkpoints."""
    return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      jax.eval_shape(self.init_state),
      self.state_shardings,
    )

  def init_from_layers(self) -> dict:
    """The layers of the run `config.init_from` (its checkpoint of `config.init_from_step`, -1:
    the latest) that this model starts from: those of the same name and shapes but the
    classifiers of both nets (`checkpoint.matching_layers`). Says what is restored and what
    starts anew."""
    config = self.config
    step = config.init_from_step if config.init_from_step >= 0 else None
    try:
      source, source_config, step = checkpoint.restore_params(config.init_from, step)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"config.init_from={config.init_from!r}: {e}") from None
    params = self.abstract_state().params
    nets = (self.model, models.create_model(source_config))
    classifiers = {net.dense_names()[-1] for net in nets}
    layers = checkpoint.matching_layers(params, source, classifiers)
    new, unused = [n for n in params if n not in layers], [n for n in source if n not in params]
    line = (
      f"Fine-tuning from {config.init_from}, step {step} ({source_config.num_classes} classes):"
      f" restored {', '.join(layers) or 'no layer'}; new: {', '.join(new)}"
      f" ({config.num_classes} classes)"
    )
    say(line + (f"; not used: {', '.join(unused)}." if unused else "."))
    return layers

  def evaluate(self, params: Any, ten_views: bool = False) -> dict[str, float]:
    """Top-1/top-5 error and loss over the whole eval split (each example exactly once)."""
    totals: dict[str, float] = {}
    batches = input_pipeline.ordered_batches(
      self.eval_source, self.config, jax.process_index(), jax.process_count()
    )
    for i, batch in enumerate(batches):
      if i == self.config.num_eval_batches:
        break
      with jax.set_mesh(self.mesh):
        sums = self.eval_steps[ten_views](
          params, sharding.to_global(self.mesh, batch), self.data_stats
        )
      for k, v in jax.device_get(sums).items():
        totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count")
    return {k: v / count for k, v in totals.items()} | {"count": count}


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Errors a run would otherwise meet after compilation, naming the key and value."""
  if config.crop_size > config.image_size:
    raise ConfigError(
      f"config.crop_size={config.crop_size} is larger than config.image_size={config.image_size}."
    )
  for key in ("batch_size", "log_every_steps", "checkpoint_every_steps", "num_epochs"):
    if config[key] <= 0:
      raise ConfigError(f"config.{key}={config[key]} must be positive.")
  if config.num_classes < 2:
    raise ConfigError(
      f"config.num_classes={config.num_classes}: a softmax over fewer than 2 classes learns"
      " nothing (its loss is 0); give a dataset of 2 classes or more."
    )
  if config.num_eval_batches == 0 or config.num_eval_batches < -1:
    raise ConfigError(
      f"config.num_eval_batches={config.num_eval_batches}: give a positive number of batches, or"
      " -1 for the whole eval split."
    )
  if config.num_train_steps == 0 or config.num_train_steps < -1:
    raise ConfigError(
      f"config.num_train_steps={config.num_train_steps}: give a positive number of steps, or -1"
      f" for config.num_epochs={config.num_epochs} epochs."
    )
  for key in ("learning_rate", "momentum", "weight_decay"):
    if not math.isfinite(config[key]) or config[key] < 0:
      raise ConfigError(f"config.{key}={config[key]} must be a finite number >= 0.")
  if config.stop_at_train_error != -1 and not 0 < config.stop_at_train_error <= 1:
    raise ConfigError(
      f"config.stop_at_train_error={config.stop_at_train_error}: give an error in (0, 1], or -1"
      " to train all the steps."
    )
  if config.learning_rate == 0 or config.momentum >= 1:
    raise ConfigError(
      f"config.learning_rate={config.learning_rate} must be > 0 and config.momentum="
      f"{config.momentum} < 1."
    )


class _Stop:
  """While entered, remembers a SIGTERM/SIGINT so that the loop can finish its step and save."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __enter__(self) -> "_Stop":
    self.signal = None
    self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    self.signal = signal.Signals(signum)


class Stopped(Exception):
  """Training was stopped by `signal` (SIGTERM or SIGINT) after saving its checkpoint.

  `exit_status` is 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the shell's
  status for a process ended by that signal: not 0, so that a scheduler requeues a preempted
  job rather than taking it as finished.
  """

  def __init__(self, signal: signal.Signals):
    super().__init__(f"stopped by {signal.name}")
    self.signal = signal
    self.exit_status = 128 + signal


def device_batches(trainer: Trainer, it: Iterator, prefetch: int = 2) -> Iterator[tuple[dict, Any]]:
  """Global device batches with the iterator state after each, a few batches ahead."""
  queue = []
  for batch in it:
    queue.append((sharding.to_global(trainer.mesh, batch), it.get_state()))
    if len(queue) > prefetch:
      yield queue.pop(0)
  yield from queue


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains from scratch or from the latest checkpoint in `workdir`; returns the final eval, or
  raises `Stopped` after saving when a SIGTERM or SIGINT arrives."""
  workdirs.create(workdir)
  with checkpoint.create_manager(workdir, config) as manager:  # closed also on errors
    checkpoint.check_config(manager, config)
    return _train(config, workdir, manager)


def _train(config: ml_collections.ConfigDict, workdir: str, manager: Any) -> dict[str, float]:
  """The body of `train_and_evaluate`, checkpointing with `manager`."""
  trainer = Trainer(config, workdir)
  writer = SummaryWriter(workdir) if jax.process_index() == 0 else None  # TensorBoard events
  metrics_file = Path(workdir) / workdirs.METRICS
  plateau = optim.Plateau.from_config(config)
  train_iter = iter(input_pipeline.train_dataset(config, source=trainer.train_source))

  restored = checkpoint.restore(
    manager, trainer.abstract_state(), train_iter, config, set_aside=True
  )
  num_steps = trainer.num_steps
  if restored is None:  # a fresh start, or fine-tuning; a resumed run ignores config.init_from
    state = trainer.init_state(trainer.init_from_layers() if config.init_from else None)
  else:
    state, meta = restored
    plateau = optim.Plateau(**meta["plateau"])
    if meta.get("reached_train_error"):  # ended at config.stop_at_train_error: stays there
      num_steps = int(state.step)
  start = int(state.step)
  if jax.process_index() == 0:
    _drop_rows_after(metrics_file, start)
  say(
    f"Mesh {dict(trainer.mesh.shape)} on {jax.device_count()} device(s);"
    f" {len(trainer.train_source)} train / {len(trainer.eval_source)} eval images,"
    f" {config.num_classes} classes; {num_steps} steps of {config.batch_size};"
    f" checkpoints in {manager.directory}{f', resumed at step {start}' if start else ''}."
  )

  def log(step, metrics):
    if writer:
      for name, value in metrics.items():
        writer.add_scalar(name, value, step)
      writer.flush()
      with metrics_file.open("a") as f:  # the epoch too, for figures drawn without the data
        row = dict(step=step, epoch=step / trainer.steps_per_epoch, **metrics)
        f.write(json.dumps(row) + "\n")

  def save(iter_state, eval_error):
    meta = dict(plateau=vars(plateau), reached_train_error=reached)
    checkpoint.save(manager, state, iter_state, meta, config, eval_error)

  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else trainer.steps_per_epoch
  batches = device_batches(trainer, train_iter)
  pending, bar, t0, reached = [], None, time.perf_counter(), False
  with _Stop() as stop:
    for step in range(start + 1, num_steps + 1):
      if bar is None:
        epoch = (step - 1) // trainer.steps_per_epoch + 1
        bar = tqdm.tqdm(total=trainer.steps_per_epoch, desc=f"epoch {epoch}", unit="step")
        bar.update((step - 1) % trainer.steps_per_epoch)
      batch, iter_state = next(batches)
      with jax.set_mesh(trainer.mesh):
        state, metrics = trainer.train_step(state, batch, trainer.data_stats, plateau.scale)
      pending.append(metrics)
      bar.update()
      last = step == num_steps
      stopping = stop.signal  # read once: a signal arriving later is seen after the next step
      eval_now = step % eval_every == 0 or last
      save_now = step % config.checkpoint_every_steps == 0 or last or eval_now or stopping
      if step % config.log_every_steps == 0 or save_now:  # never save unchecked parameters
        summary = _mean(jax.device_get(pending))
        if not all(np.isfinite(v) for v in summary.values()):
          raise FloatingPointError(
            f"Non-finite training loss or parameters at step {step} ({summary}); stopping."
            f" {_kept(manager)} Lower the learning rate?"
          )
        elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
        summary["images_per_second"] = len(pending) * config.batch_size / elapsed
        bar.set_postfix(loss=summary["loss"], error=summary["top1_error"], refresh=False)
        log(step, summary)
        pending = []
        if summary["top1_error"] <= config.stop_at_train_error:  # never when it is -1
          say(f"Training error {summary['top1_error']:.4f} reached at step {step}: the run ends.")
          reached = last = eval_now = save_now = True
      eval_error = None
      if eval_now:
        results = trainer.evaluate(state.params)
        eval_error = results["top1_error"]
        if plateau.update(eval_error):
          say(f"Validation error stopped improving: learning rate x{plateau.scale:g}.")
        say(f"Eval at step {step}: {_format(results)}")
        log(step, {f"eval_{k}": v for k, v in results.items()})
        t0 = time.perf_counter()
      if save_now:
        save(iter_state, eval_error)
      if step % trainer.steps_per_epoch == 0 or last:
        bar.close()
        bar = None
      if stopping:
        manager.wait_until_finished()
        say(f"Stopped by {stopping.name} after step {step}; checkpoint saved in {workdir}.")
        raise Stopped(stopping)
      if reached:
        break
  manager.wait_until_finished()
  final = evaluate_views(trainer, state.params, workdir, step=int(state.step))
  if writer:
    writer.close()
  return final


def evaluate_views(trainer: Trainer, params: Any, workdir: str, step: int) -> dict[str, dict]:
  """Central-crop and 10-view evaluation (`write_eval_results`)."""
  results = {
    name: trainer.evaluate(params, ten_views=ten_views)
    for ten_views, name in ((False, "center"), (True, "ten_views"))
  }
  return write_eval_results(results, workdir, step)


def write_eval_results(results: dict[str, dict], workdir: str, step: int) -> dict[str, dict]:
  """Says the metrics of each view ({"center": ..., "ten_views": ...}) of the network of `step`
  and writes them to `workdir/eval_results.json`; returns them."""
  for name, metrics in results.items():
    say(f"Eval ({name}) at step {step}: {_format(metrics)}")
  if jax.process_index() == 0:
    path = Path(workdir) / workdirs.EVAL_RESULTS
    path.write_text(json.dumps(dict(step=step, **results), indent=2) + "\n")
  return results


def _drop_rows_after(path: Path, step: int) -> None:
  """Drops the rows of the metrics file `path` logged after `step` (a run killed after them
  resumes from `step`, and logs those steps again), and a row cut short."""
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  keep = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
  if len(keep) < len(lines):
    partial = path.with_suffix(".partial")
    partial.write_text("".join(keep))
    os.replace(partial, path)


def _kept(manager: Any) -> str:
  """What a run that stops on bad numbers leaves behind."""
  if manager.latest_step() is None:
    return "No checkpoint was saved."
  return f"The last good checkpoint, step {manager.latest_step()}, is kept in {manager.directory}."


def say(message: str) -> None:
  """A line for the user (process 0), printed above any progress bar; shown at any verbosity."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message)


def _mean(metrics: list[dict[str, Any]]) -> dict[str, float]:
  return {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


def _format(results: dict[str, float]) -> str:
  return ", ".join(f"{k} {v:.4f}" if k != "count" else f"{k} {int(v)}" for k, v in results.items())
