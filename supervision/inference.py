"""Trained networks at work: the checkpoint of any run on the configured mesh and its outputs over
a split, for `--mode=ensemble` (the "5 CNNs" and "7 CNNs" of Table 2: the softmax outputs of
several networks averaged), `--mode=features` (the last hidden layer's activations of
"Qualitative Evaluations") and `--mode=predict` (`supervision.predict`).

A network is what its checkpoint was trained with (NETWORK_KEYS of the stored config, and the
mean image in its workdir); the data, mesh, batch size and loader settings are the run's, so
networks of different configs read the same data, each preparing its own inputs.
"""

import dataclasses
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from supervision import (
  ConfigError,
  DataError,
  checkpoint,
  datasets,
  input_pipeline,
  models,
  preprocessing,
  sharding,
  stats,
  steps,
  train,
  workdirs,
)

# The keys of the stored config that make the network: its parameters' shapes and its inputs.
NETWORK_KEYS = (*checkpoint.STATE_KEYS, "image_size", "channel_order", "standardize_inputs")
VIEWS = ("center", "ten_views")


def features(
  params: Any,
  images: jax.Array,
  data_stats: dict[str, jax.Array],
  *,
  model: models.ColumnNet,
  config: ml_collections.ConfigDict,
) -> jax.Array:
  """The last hidden layer's activations for the central crops of uint8 images (the input of
  the classifier before dropout, `models.ColumnNet`'s "features"): float32 [B, D]."""
  views = preprocessing.center_view(images, data_stats, config)
  _, state = model.apply({"params": params}, views, mutable=["intermediates"])
  return state["intermediates"]["features"][0].astype(jnp.float32)


# What `Network.batches` computes from uint8 images, by name: log-probabilities of the central
# crop or of the 10 views (`steps.log_probabilities`), or the features.
OUTPUTS = dict(
  center=functools.partial(steps.log_probabilities, ten_views=False),
  ten_views=functools.partial(steps.log_probabilities, ten_views=True),
  features=features,
)


def _outputs(params, batch, data_stats, *, names, model, config) -> dict:
  """The `OUTPUTS` of `names` for a batch, with its labels and mask."""
  images = batch["image"]
  values = {n: OUTPUTS[n](params, images, data_stats, model=model, config=config) for n in names}
  return dict(values=values, label=batch["label"], mask=batch["mask"])


@dataclasses.dataclass(frozen=True)
class Network:
  """A trained network on a mesh. `config` is the run's, with NETWORK_KEYS from the config that
  the network was trained with; `data_stats` are its training statistics."""

  workdir: str
  step: int
  config: ml_collections.ConfigDict
  mesh: Mesh
  model: models.ColumnNet
  params: Any
  data_stats: dict

  def batches(
    self, source: Any, names: tuple[str, ...], num_batches: int = -1
  ) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """(indices into `source`, labels, {name: `OUTPUTS[name]`}) of the unmasked examples of each
    batch of `input_pipeline.ordered_batches`, in the split's order: the first `num_batches`
    batches (-1: all). Every process gets the outputs of all processes' examples."""
    count = jax.process_count()
    batch_size = input_pipeline.host_batch_size(self.config, count)
    fn = functools.partial(_outputs, names=names, model=self.model, config=self.config)
    step = jax.jit(
      fn,
      out_shardings=NamedSharding(self.mesh, P()),
      compiler_options=sharding.compiler_options(),
    )
    batches = input_pipeline.ordered_batches(source, self.config, jax.process_index(), count)
    for k, batch in enumerate(batches):
      if k == num_batches:
        break
      with jax.set_mesh(self.mesh):
        out = step(self.params, sharding.to_global(self.mesh, batch), self.data_stats)
      out = jax.device_get(out)
      # The global batch is the processes' rows in process order (`sharding.to_global`).
      indices = np.concatenate(
        [input_pipeline.eval_indices(len(source), p, count, batch_size, k) for p in range(count)]
      )
      rows = np.flatnonzero(out["mask"])
      rows = rows[np.argsort(indices[rows])]
      yield indices[rows], out["label"][rows], {n: v[rows] for n, v in out["values"].items()}

  def outputs(
    self, source: Any, names: tuple[str, ...], num_batches: int = -1
  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`batches` of one pass together: (indices, labels, {name: outputs}) in the split's order."""
    seen, labels, values = np.zeros(len(source), bool), np.zeros(len(source), np.int32), {}
    for indices, batch_labels, batch_values in self.batches(source, names, num_batches):
      seen[indices], labels[indices] = True, batch_labels
      for name, value in batch_values.items():
        if name not in values:  # once: a whole split's features can fill most of the memory
          values[name] = np.empty((len(source), *value.shape[1:]), value.dtype)
        values[name][indices] = value
    kept = np.flatnonzero(seen)
    if not len(kept):
      raise DataError(f"No readable image in the {len(source)} examples of {self.config.dataset}.")
    whole = len(kept) == len(source)
    return kept, labels[kept], {n: v if whole else v[kept] for n, v in values.items()}


def network_config(
  config: ml_collections.ConfigDict, trained: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """`config` with the network of `trained` (the config a checkpoint was trained with, as
  `checkpoint.restore_params` reads it): its NETWORK_KEYS; the data, mesh, batch size and
  loader settings stay `config`'s."""
  merged = ml_collections.ConfigDict(config.to_dict())
  for key in NETWORK_KEYS:
    merged[key] = trained[key]
  return merged


def training_stats(trained: ml_collections.ConfigDict, workdir: str) -> dict:
  """The statistics (mean image, RGB principal components) that the network of `workdir` was
  trained with: those of its training dataset, in its workdir."""
  path = stats.stats_path(trained, workdir)
  if not path.exists():
    raise FileNotFoundError(
      f"No statistics {path} (of {trained.dataset} at image size {trained.image_size}, which"
      f" the network of {workdir} was trained on): run --mode=stats with its config and"
      f" --workdir={workdir}."
    )
  return stats.load_or_compute_stats(trained, workdir)


def load(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> Network:
  """The network of the checkpoint of `step` in `workdir` (None: the newest intact one), of any
  config, placed on the mesh of `config`."""
  params, trained, step = checkpoint.restore_params(workdir, step)
  net_config = network_config(config, trained)
  mesh = sharding.create_mesh(net_config)
  train.validate_config(net_config)
  params = jax.device_put(params, sharding.state_shardings(mesh, params))
  data_stats = sharding.replicate(mesh, training_stats(trained, workdir))
  model = models.create_model(net_config)
  return Network(workdir, step, net_config, mesh, model, params, data_stats)


def dataset_classes(net: Network) -> list[str]:
  """The class names of the run's dataset (`datasets.class_names`), as many as the
  network has outputs."""
  names = datasets.class_names(net.config)
  if len(names) != net.config.num_classes:
    raise DataError(
      f"{net.config.dataset} has {len(names)} classes but the network of {net.workdir} has"
      f" {net.config.num_classes}: give the dataset it was trained on (--config.dataset,"
      " --config.class_list)."
    )
  return names


def metrics(log_probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Mean loss, top-1 and top-5 error (`steps.classification_metrics`), and the count."""
  per_example = steps.classification_metrics(jnp.asarray(log_probs), jnp.asarray(labels))
  means = {k: float(np.asarray(v, np.float64).mean()) for k, v in per_example.items()}
  return means | {"count": len(labels)}


def _member(config: ml_collections.ConfigDict, i: int, workdir: str) -> Network:
  """Member i of the ensemble; a missing or damaged checkpoint names the config key."""
  try:
    return load(config, workdir)
  except (FileNotFoundError, checkpoint.CheckpointError) as e:
    raise type(e)(f"config.ensemble.workdirs[{i}]={workdir!r}: {e}") from None


def ensemble_outputs(
  config: ml_collections.ConfigDict,
) -> tuple[list[dict], np.ndarray, dict[str, np.ndarray]]:
  """Evaluates the networks of `config.ensemble.workdirs` on `config.eval_split` of the run's
  dataset, with the central crop and the 10 views.

  Returns [{"workdir", "step", "center": `metrics`, "ten_views": `metrics`}] of the members,
  the labels, and per view the log of the members' mean softmax output. The members may differ
  in config: each prepares its inputs with its own image and crop sizes and mean image (members
  of one image size share the split's source, with `config.cache_images` its decoded images).
  The first `config.num_eval_batches` batches are read (-1: all); every member must see the
  same examples with the same labels (`check_same_examples`).
  """
  if not config.ensemble.workdirs:
    raise ConfigError(
      "config.ensemble.workdirs is empty: give the workdirs of the trained networks, e.g."
      " --config.ensemble.workdirs=\"('/runs/a', '/runs/b')\"."
    )
  nets = [_member(config, i, workdir) for i, workdir in enumerate(config.ensemble.workdirs)]
  for net in nets:
    dataset_classes(net)
  sources, first, members, total = {}, None, [], {}
  for net in nets:
    size = net.config.image_size
    if size not in sources:
      sources[size] = input_pipeline.make_source(net.config, config.eval_split)
    indices, labels, log_probs = net.outputs(sources[size], VIEWS, config.num_eval_batches)
    first = first or (net.workdir, indices, labels)
    check_same_examples(config.eval_split, first, (net.workdir, indices, labels))
    metrics_of = {view: metrics(log_probs[view], labels) for view in VIEWS}
    members.append(dict(workdir=net.workdir, step=net.step, **metrics_of))
    total = {v: np.logaddexp(total[v], log_probs[v]) if total else log_probs[v] for v in VIEWS}
  mean = {v: total[v] - np.log(len(members)) for v in VIEWS}
  return members, first[2], mean


def check_same_examples(split: str, first: tuple, other: tuple) -> None:
  """A DataError unless two members' (workdir, example indices, labels) agree."""
  (workdir, indices, labels), (other_workdir, other_indices, other_labels) = first, other
  if not (np.array_equal(indices, other_indices) and np.array_equal(labels, other_labels)):
    raise DataError(
      f"The ensemble's members do not see the same examples of split {split!r}: {workdir} read"
      f" {len(indices)} examples, {other_workdir} {len(other_indices)}, or their labels differ."
      " Members must read the same dataset in the same order."
    )


def _errors(results: dict) -> str:
  return ", ".join(
    f"{name} top-1 {results[view]['top1_error']:.4f} top-5 {results[view]['top5_error']:.4f}"
    for view, name in zip(VIEWS, ("central crop", "10 views"), strict=True)
  )


def evaluate_ensemble(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=ensemble`: each member's and the ensemble's top-1/top-5 error (`ensemble_outputs`),
  printed and written to `workdir/ensemble_results.json`."""
  members, labels, log_probs = ensemble_outputs(config)
  ensemble = {view: metrics(log_probs[view], labels) for view in VIEWS}
  results = dict(split=config.eval_split, members=members, ensemble=ensemble)
  for member in members:
    train.say(f"{member['workdir']} (step {member['step']}): {_errors(member)}")
  count = ensemble["center"]["count"]
  train.say(f"Ensemble of {len(members)} on {count} images: {_errors(ensemble)}")
  if jax.process_index() == 0:
    path = workdirs.create(workdir) / "ensemble_results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
  return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """`--mode=eval`: the network of `workdir`'s checkpoint of `config.eval_checkpoint_step`
  (`load`: its own config and training statistics) on `config.eval_split` of the run's dataset
  (the first `config.num_eval_batches` batches; -1: all), with the central crop and the 10
  views; written to `workdir/eval_results.json` (`train.write_eval_results`)."""
  net = load(config, workdir, checkpoint.requested_step(config))
  dataset_classes(net)
  source = input_pipeline.make_source(net.config, config.eval_split)
  _, labels, log_probs = net.outputs(source, VIEWS, config.num_eval_batches)
  results = {view: metrics(log_probs[view], labels) for view in VIEWS}
  return train.write_eval_results(results, workdir, net.step)


def write_features(config: ml_collections.ConfigDict, workdir: str) -> Path:
  """`--mode=features`: the last hidden layer's activations (`features`) of the central crops of
  `config.features.split` ("": the eval split), every example, to
  `workdir/features/<split>.npz`: "features" float32 [N, D], "labels" int32 [N] and "indices"
  int64 [N], row i example indices[i] of the split: its readable examples in order."""
  net = load(config, workdir, checkpoint.requested_step(config))
  dataset_classes(net)
  split = config.features.split or config.eval_split
  source = input_pipeline.make_source(net.config, split)
  indices, labels, values = net.outputs(source, ("features",))
  path = Path(workdir) / "features" / f"{split}.npz"
  if jax.process_index() == 0:  # atomically, as the statistics are written
    arrays = dict(features=values["features"], labels=labels.astype(np.int32), indices=indices)
    stats.save_stats(arrays, path)
  shape = values["features"].shape
  train.say(f"Features [{shape[0]}, {shape[1]}] of split {split!r} at step {net.step} in {path}.")
  return path
