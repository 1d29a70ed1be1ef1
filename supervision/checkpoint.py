"""Orbax checkpoints: train state, data-iterator position, schedule state and config."""

import json
from pathlib import Path
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

EVAL_ERROR = "eval_top1_error"


def create_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """Keeps the last `config.keep_checkpoints` checkpoints and the best by validation error."""
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
  options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=True)
  return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(
  manager: ocp.CheckpointManager,
  state: Any,
  iterator_state: Any,
  meta: dict,
  eval_error: float | None = None,
) -> None:
  """Saves `state` (asynchronously) with the iterator position and JSON metadata."""
  args = ocp.args.Composite(
    state=ocp.args.StandardSave(state),
    data=ocp.args.JsonSave(_to_json(iterator_state)),
    meta=ocp.args.JsonSave(meta),
  )
  metrics = None if eval_error is None else {EVAL_ERROR: eval_error}
  manager.save(int(state.step), args=args, metrics=metrics, force=True)


def restore(
  manager: ocp.CheckpointManager, abstract_state: Any, iterator: Any, step: int | None = None
) -> tuple[Any, dict] | None:
  """Restores (state, meta) of `step` (default the latest) and moves `iterator` to its position.

  `abstract_state` gives the shapes and shardings to restore into, so a checkpoint saved on
  one mesh restores onto another. Returns None when there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  if step not in manager.all_steps():
    raise FileNotFoundError(f"No checkpoint of step {step} in {manager.directory}.")
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=ocp.args.JsonRestore(),
      meta=ocp.args.JsonRestore(),
    ),
  )
  if iterator is not None:
    iterator.set_state(_from_json(restored.data))
  return restored.state, restored.meta


def _to_json(iterator_state: Any) -> dict:
  """Grain iterator states are dicts or JSON bytes; both are stored as JSON."""
  if isinstance(iterator_state, bytes):
    return {"bytes": json.loads(iterator_state.decode())}
  return {"dict": iterator_state}


def _from_json(data: dict) -> Any:
  if "bytes" in data:
    return json.dumps(data["bytes"]).encode()
  return data["dict"]
