"""The pure functions of training and evaluation ("Details of learning"): the train state, one
SGD step on a batch, the metrics, and the log-probabilities of the central crop or 10 views."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from supervision import models, preprocessing


@flax.struct.dataclass
class TrainState:
  """Everything a train step changes. `rng` is the key data of the run's base key."""

  step: jax.Array
  params: Any
  opt_state: optax.OptState
  rng: jax.Array


def step_keys(state: TrainState) -> tuple[jax.Array, jax.Array]:
  """The (augmentation, dropout) keys of this step, derived from (seed, step)."""
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  return tuple(jax.random.split(key))


def create_train_state(
  config: ml_collections.ConfigDict,
  model: models.ColumnNet,
  tx: optax.GradientTransformation,
  layers: dict | None = None,
) -> TrainState:
  """Initial state from `config.seed` (the paper's initialization is in the model); `layers`
  (fine-tuning: `Trainer.init_from_layers`) replace the initial parameters of those layers."""
  init_key, key = jax.random.split(jax.random.key(config.seed))
  images = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)
  return state_from_params(model.init(init_key, images)["params"] | (layers or {}), tx, key)


def state_from_params(params: Any, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
  """Step 0 of training from `params`, with fresh optimizer state and base key `key`."""
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    rng=jax.random.key_data(key),
  )


def classification_metrics(log_probs: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Per-example loss (multinomial logistic regression), top-1 and top-5 errors."""
  loss = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  top5 = jax.lax.top_k(log_probs, min(5, log_probs.shape[-1]))[1]
  return dict(
    loss=loss,
    top1_error=(top5[:, 0] != labels).astype(jnp.float32),
    top5_error=jnp.all(top5 != labels[:, None], axis=-1).astype(jnp.float32),
  )


def example_weights(mask: jax.Array) -> jax.Array:
  """Weights of the mean over the unmasked examples: 1 / (their count) for each, 0 for masked
  ones (all 0 when every example is masked)."""
  return mask / jnp.maximum(mask.sum(), 1)


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  data_stats: dict[str, jax.Array],
  lr_scale: jax.Array,
  *,
  model: models.ColumnNet,
  tx: optax.GradientTransformation,
  lr_fn: optax.Schedule,
  config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a batch of uint8 images: augment, forward, backward, update.

  The loss is the mean over the examples of `batch["mask"]` (an unreadable file is masked).
  """
  aug_key, dropout_key = step_keys(state)
  images = preprocessing.train_views(aug_key, batch["image"], data_stats, config)
  weights = example_weights(batch["mask"])

  def loss_fn(params):
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": dropout_key})
    metrics = classification_metrics(jax.nn.log_softmax(logits), batch["label"])
    return (metrics["loss"] * weights).sum(), metrics

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  lr = lr_fn(state.step) * lr_scale
  hyperparams = dict(state.opt_state.hyperparams, learning_rate=lr)
  opt_state = state.opt_state._replace(hyperparams=hyperparams)
  updates, opt_state = tx.update(grads, opt_state, state.params)
  state = state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )
  metrics = {k: (v * weights).sum() for k, v in metrics.items()}
  # The norm of the new parameters lets the loop refuse to save a state that is no longer finite.
  return state, dict(metrics, learning_rate=lr, param_norm=optax.tree.norm(state.params))


def log_probabilities(
  params: Any,
  images: jax.Array,
  data_stats: dict[str, jax.Array],
  *,
  model: models.ColumnNet,
  config: ml_collections.ConfigDict,
  ten_views: bool,
) -> jax.Array:
  """Log of the softmax output [B, classes] for uint8 images: of the central crop, or with
  ten_views of the mean softmax of the 10 views.

  The log of that mean is taken as logsumexp over the views' log-softmaxes minus log(10), which
  stays finite where every view's probability of a class underflows.
  """
  if ten_views:
    views = preprocessing.ten_views(images, data_stats, config)
    b, v = views.shape[:2]
    logits = model.apply({"params": params}, views.reshape(b * v, *views.shape[2:]))
    return jax.nn.logsumexp(jax.nn.log_softmax(logits).reshape(b, v, -1), axis=1) - jnp.log(v)
  images = preprocessing.center_view(images, data_stats, config)
  return jax.nn.log_softmax(model.apply({"params": params}, images))


def eval_step(
  params: Any,
  batch: dict[str, jax.Array],
  data_stats: dict[str, jax.Array],
  *,
  model: models.ColumnNet,
  config: ml_collections.ConfigDict,
  ten_views: bool,
) -> dict[str, jax.Array]:
  """Sums of the metrics over the unmasked examples of `log_probabilities`."""
  log_probs = log_probabilities(
    params, batch["image"], data_stats, model=model, config=config, ten_views=ten_views
  )
  metrics = classification_metrics(log_probs, batch["label"])
  mask = batch["mask"].astype(jnp.float32)
  sums = {k: (v * mask).sum() for k, v in metrics.items()}
  return dict(sums, count=mask.sum())
