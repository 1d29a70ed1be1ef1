"""The paper's "Details of learning": the update rule and the learning-rate schedule."""

import dataclasses
from collections.abc import Callable

import jax
import ml_collections
import optax

from supervision import ConfigError


def paper_sgd(
  learning_rate: float | optax.Schedule,
  momentum: float,
  weight_decay: float,
  decay_mask: Callable | None = None,
) -> optax.GradientTransformation:
  """v <- momentum * v - weight_decay * lr * w - lr * grad;  w <- w + v.

  The velocity holds the lr-scaled step, so after a learning-rate drop old momentum keeps its
  size (unlike `optax.sgd(momentum=...)`, which traces the gradient and scales afterwards).
  `decay_mask` (a pytree of bools or a function of the params) selects the decayed parameters.
  """
  return optax.chain(
    optax.add_decayed_weights(weight_decay, mask=decay_mask),
    optax.scale_by_learning_rate(learning_rate),
    optax.trace(decay=momentum),
  )


def weights_only(params: optax.Params) -> optax.Params:
  """Decay mask that decays kernels and leaves biases alone (as cuda-convnet did)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key != "bias", params)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The paper's SGD with the learning rate as an injected hyperparameter.

  The train step sets `opt_state.hyperparams["learning_rate"]` each step from
  `learning_rate_fn` and the plateau factor, so the rate is part of the optimizer state.
  """
  return optax.inject_hyperparams(paper_sgd, static_args="decay_mask")(
    learning_rate=config.learning_rate,
    momentum=config.momentum,
    weight_decay=config.weight_decay,
    decay_mask=None if config.decay_biases else weights_only,
  )


def learning_rate_fn(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate before plateau drops: constant ("plateau", "constant") or "step"."""
  if config.lr_schedule in ("plateau", "constant"):
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == "step":
    boundaries = {int(e * steps_per_epoch): config.lr_drop_factor for e in config.lr_step_epochs}
    return optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  raise ConfigError(
    f"config.lr_schedule={config.lr_schedule!r}; choose 'plateau', 'step' or 'constant'."
  )


@dataclasses.dataclass
class Plateau:
  """Multiply the learning rate by `factor` (the paper's 1/10) when the validation error stops
  improving.

  `scale` multiplies the base learning rate; the whole state is saved with checkpoints.
  """

  patience: int
  min_delta: float
  factor: float
  max_drops: int
  best_error: float = float("inf")
  bad_evals: int = 0
  drops: int = 0
  scale: float = 1.0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Plateau":
    return cls(
      patience=config.plateau_patience,
      min_delta=config.plateau_min_delta,
      factor=config.lr_drop_factor,
      max_drops=config.max_lr_drops if config.lr_schedule == "plateau" else 0,
    )

  def update(self, error: float) -> bool:
    """Records a validation error; returns True when the learning rate was divided."""
    if error < self.best_error - self.min_delta:
      self.best_error, self.bad_evals = error, 0
      return False
    self.best_error = min(self.best_error, error)
    self.bad_evals += 1
    if self.bad_evals >= self.patience and self.drops < self.max_drops:
      self.drops, self.bad_evals, self.scale = self.drops + 1, 0, self.scale * self.factor
      return True
    return False
