"""Orbax checkpoints: train state, data-iterator position, schedule state and config."""

import copy
import functools
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorstore
from absl import logging
from flax import traverse_util
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from supervision import CheckpointError, ConfigError

EVAL_ERROR = "eval_top1_error"
# The config keys that the train state's shapes depend on; a checkpoint restores only with them.
STATE_KEYS = ("model", "num_classes", "crop_size")
# Network keys added to the config since checkpoints began storing theirs (2026-11-28), each with
# the value that builds the network such a checkpoint was trained as: what the code did before.
ADDED_KEYS = {
  "channel_order": "rgb",
  "standardize_inputs": False,
  "model.lrn.across_columns": False,
  "model.lrn.after_pool": False,
  "model.pool.partial_windows": False,
  "model.dropout_form": "inverted",
  "model.init": "normal",
  "model.layer_init_std": {},
}


def create_manager(
  workdir: str, config: ml_collections.ConfigDict, create: bool = True
) -> ocp.CheckpointManager:
  """Keeps the last `config.keep_checkpoints` checkpoints and the best by validation error;
  `create` makes WORKDIR/checkpoints when missing."""
  keep = policies.AnyPreservationPolicy(
    [
      policies.LatestN(config.keep_checkpoints),
      policies.BestN(
        get_metric_fn=lambda metrics: metrics[EVAL_ERROR],
        reverse=True,
        n=1,
        keep_checkpoints_without_metrics=False,
      ),
    ]
  )
  options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=create)
  return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(
  manager: ocp.CheckpointManager,
  state: Any,
  iterator_state: Any,
  meta: dict,
  config: ml_collections.ConfigDict,
  eval_error: float | None = None,
) -> None:
  """Saves `state` (asynchronously) with the iterator position (None: the start of the stream),
  JSON metadata and the config."""
  args = ocp.args.Composite(
    state=ocp.args.StandardSave(state),
    data=ocp.args.JsonSave(_to_json(iterator_state)),
    meta=ocp.args.JsonSave(dict(meta, config=_plain(config))),
  )
  metrics = None if eval_error is None else {EVAL_ERROR: eval_error}
  manager.save(int(state.step), args=args, metrics=metrics, force=True)


def restore(
  manager: ocp.CheckpointManager,
  abstract_state: Any,
  iterator: Any,
  config: ml_collections.ConfigDict,
  step: int | None = None,
  set_aside: bool = False,
) -> tuple[Any, dict] | None:
  """Restores (state, meta) of `step`, or of the newest checkpoint that restores, and moves
  `iterator` to its position. Returns None when there is no checkpoint.

  A checkpoint of another model config is an error naming the keys that differ. A damaged one
  (missing or truncated files) is an error when `step` names it; otherwise a warning names it
  and the one before is tried. With `set_aside` (the run that owns the workdir) the damaged one
  is renamed <step>.damaged-<time>, kept on disk and out of the way of the steps to come.
  `abstract_state` gives the shapes and shardings to restore into, so a checkpoint saved on one
  mesh restores onto another.
  """
  if step is not None and step not in manager.all_steps():
    raise FileNotFoundError(
      f"No checkpoint of step {step} in {manager.directory}; it has steps {manager.all_steps()}."
    )
  damaged = []
  for candidate in [step] if step is not None else sorted(manager.all_steps(), reverse=True):
    path = Path(manager.directory) / str(candidate)
    try:
      restored = _restore_step(manager, candidate, abstract_state, config)
    except ConfigError:
      raise
    except Exception as e:  # Orbax and TensorStore raise many kinds for damaged files.
      if step is not None:
        raise CheckpointError(
          f"Checkpoint {path} is damaged ({_short(e)}); evaluate another step"
          f" ({manager.all_steps()}) or the latest, which falls back to an intact one."
        ) from None
      aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
      logging.warning(
        "Checkpoint %s is damaged (%s); using the one before. It is left on disk%s.",
        path, _short(e), f" as {aside}" if set_aside else "",
      )  # fmt: skip
      if set_aside:
        path.rename(aside)
        manager.reload()
      damaged.append(str(path))
      continue
    position = _from_json(restored.data)
    if iterator is not None and position is not None:  # None: saved before any step (an import)
      iterator.set_state(position)
    return restored.state, restored.meta
  if damaged:
    raise CheckpointError(
      f"No checkpoint in {manager.directory} restores: {', '.join(damaged)} are damaged."
      + (" They are set aside; run again to start from scratch." if set_aside else "")
    )
  return None


def requested_step(config: ml_collections.ConfigDict) -> int | None:
  """The step that `config.eval_checkpoint_step` asks for (eval, predict, features, figures);
  None: the latest."""
  return config.eval_checkpoint_step if config.eval_checkpoint_step >= 0 else None


def restore_params(
  workdir: str, step: int | None = None
) -> tuple[Any, ml_collections.ConfigDict, int]:
  """(params as numpy arrays, the config they were trained with, step) of the checkpoint of
  `step` in `workdir` (None: the newest intact one), whatever the config of the run asking:
  for inference, ensembles, figures and fine-tuning from another run."""
  directory = Path(workdir).absolute() / "checkpoints"
  # Read without a CheckpointManager, which could tidy up another run's folder (and warns
  # that it may not, when read-only).
  steps = sorted(ocp.utils.checkpoint_steps(directory), reverse=True) if directory.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {directory}: train first (--workdir={workdir}).")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"No checkpoint of step {step} in {directory}; it has {steps}.")
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
    for candidate in [step] if step is not None else steps:
      try:
        _read_all_arrays(directory / str(candidate))
        state = ocp.args.StandardRestore(_numpy_target(directory / str(candidate)))
        args = ocp.args.Composite(state=state, meta=ocp.args.JsonRestore())
        restored = checkpointer.restore(directory / str(candidate), args=args)
      except Exception as e:  # Orbax and TensorStore raise many kinds for damaged files.
        if step is not None:
          raise CheckpointError(
            f"Checkpoint {directory / str(step)} is damaged ({_short(e)})."
          ) from None
        logging.warning(
          "Checkpoint %s is damaged (%s); using the one before.",
          directory / str(candidate), _short(e),
        )  # fmt: skip
        continue
      if "config" not in restored.meta:
        raise CheckpointError(
          f"Checkpoint {directory / str(candidate)} stores no config (an early version wrote"
          " it), so its network cannot be rebuilt from it; train the run again."
        )
      config = ml_collections.ConfigDict(_with_added_keys(restored.meta["config"]))
      return restored.state["params"], config, int(candidate)
  raise CheckpointError(f"No checkpoint in {directory} restores (steps {steps}).")


def _numpy_target(path: Path) -> Any:
  """numpy arrays of the shapes and dtypes of the state of the checkpoint at `path`: restored
  into them, a checkpoint saved on any devices (a mesh of two GPUs, say) reads on any others."""
  tree = ocp.StandardCheckpointHandler().metadata(path / "state").tree
  return jax.tree.map(lambda leaf: np.empty(leaf.shape, leaf.dtype), tree)


def matching_layers(params: Any, source: Any, classifiers: Collection[str]) -> dict:
  """The layers of `source` (another run's params) that a model with `params` (arrays or shapes)
  starts from: every layer of the same name and shapes but the `classifiers` (the two nets'),
  which start anew, as do the layers that `source` lacks. A layer of the same name with other
  shapes is a ConfigError naming it and both shapes."""
  shapes = lambda layer: {k: tuple(v.shape) for k, v in sorted(layer.items())}  # noqa: E731
  matching = {}
  for name, layer in params.items():
    if name in classifiers or name not in source:
      continue
    if shapes(layer) != shapes(source[name]):
      raise ConfigError(
        f"config.init_from: layer {name} has shapes {shapes(source[name])} there and"
        f" {shapes(layer)} here; fine-tuning restores only layers of the same shapes (the"
        f" classifiers, {' and '.join(sorted(classifiers))}, start anew)."
      )
    matching[name] = source[name]
  return matching


def check_config(manager: ocp.CheckpointManager, config: ml_collections.ConfigDict) -> None:
  """The config check of `restore` on the latest checkpoint, before any data is read (a damaged
  one is left to `restore`); the other settings that differ from the checkpoint's (a longer
  run, another learning rate) are named in a warning."""
  step = manager.latest_step()
  try:
    meta = _read_meta(manager, step) if step is not None else {}
  except Exception:  # damaged: `restore` says so and falls back
    return
  path = Path(manager.directory) / str(step)
  _check_config(meta.get("config"), config, path)
  other = _differences(meta.get("config") or {}, config, model=False)
  if other and jax.process_index() == 0:
    logging.warning("Resuming from %s with settings of its own: %s.", path, "; ".join(other))


def _read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def _read_all_arrays(path: Path) -> None:
  """Reads every stored byte of the arrays of the checkpoint at `path` (an OCDBT database in
  its "state" folder), so that a missing or truncated file raises here, at once, and not from
  inside Orbax's asynchronous restore, whose other reads then fail noisily at exit."""
  if (path / "state" / "manifest.ocdbt").exists():
    spec = {"driver": "ocdbt", "base": f"file://{path / 'state'}/"}
    store = tensorstore.KvStore.open(spec).result()
    for key in store.list().result():
      store.read(key).result()


def _restore_step(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, config: ml_collections.ConfigDict
) -> Any:
  """The checkpoint of `step`, once its config is known to fit `config` and its arrays to be
  readable."""
  path = Path(manager.directory) / str(step)
  _check_config(_read_meta(manager, step).get("config"), config, path)
  _read_all_arrays(path)
  return manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=ocp.args.JsonRestore(),
      meta=ocp.args.JsonRestore(),
    ),
  )


def _short(error: Exception) -> str:
  """The error's type and the start of its message (TensorStore's run to kilobytes)."""
  message = str(error).splitlines()[0] if str(error) else ""
  return f"{type(error).__name__}: {message[:200]}{'...' if len(message) > 200 else ''}"


def _plain(config: ml_collections.ConfigDict) -> dict:
  """The config as JSON values (tuples become lists), as stored and read back."""
  return json.loads(config.to_json())


def _with_added_keys(stored: dict) -> dict:
  """A stored config with the ADDED_KEYS it lacks (those of a checkpoint older than them)."""
  stored = copy.deepcopy(stored)
  for key, value in ADDED_KEYS.items():
    *parents, name = key.split(".")
    node = stored
    for parent in parents:
      node = node.setdefault(parent, {})
    node.setdefault(name, value)
  return stored


def _check_config(stored: dict | None, config: ml_collections.ConfigDict, path: Path) -> None:
  """A ConfigError naming the keys of the model (and what its shapes depend on) that differ
  between the checkpoint's config and `config`. Checkpoints without a config pass."""
  if stored is None:
    return
  if differ := _differences(stored, config, model=True):
    raise ConfigError(
      f"Checkpoint {path} is of another model: {'; '.join(differ)}. Use the same settings, or"
      " another --workdir."
    )


def _differences(stored: dict, config: ml_collections.ConfigDict, model: bool) -> list[str]:
  """The keys of STATE_KEYS (with `model`) that differ between a checkpoint's stored config and
  `config`, each as "config.KEY: A there, B now"; without `model`, the other keys that both
  have, but for `distributed` (each process's own)."""
  flat = functools.partial(traverse_util.flatten_dict, sep=".")
  before, now = flat(_with_added_keys(stored)), flat(_plain(config))
  if model:
    keys = [k for k in set(before) | set(now) if k.split(".")[0] in STATE_KEYS]
  else:
    shared = set(before) & set(now)
    keys = [k for k in shared if k.split(".")[0] not in (*STATE_KEYS, "distributed")]
  return [
    f"config.{k}: {before.get(k)!r} there, {now.get(k)!r} now"
    for k in sorted(keys)
    if before.get(k) != now.get(k)
  ]


def _to_json(iterator_state: Any) -> dict:
  """Grain iterator states are dicts or JSON bytes; both are stored as JSON."""
  if isinstance(iterator_state, bytes):
    return {"bytes": json.loads(iterator_state.decode())}
  return {"dict": iterator_state}


def _from_json(data: dict) -> Any:
  if "bytes" in data:
    return json.dumps(data["bytes"]).encode()
  return data["dict"]
