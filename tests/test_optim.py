"""The paper's update rule and learning-rate schedules ("Details of learning")."""

import jax.numpy as jnp
import numpy as np
import optax

from configs import alexnet
from supervision import optim


def test_paper_sgd_equals_the_two_equations_across_an_lr_drop():
  rng = np.random.default_rng(0)
  w0 = {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=(4,))}
  grads = [{k: rng.normal(size=v.shape) for k, v in w0.items()} for _ in range(6)]
  lrs = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
  schedule = optax.piecewise_constant_schedule(0.01, {3: 0.1})
  tx = optim.paper_sgd(schedule, momentum=0.9, weight_decay=5e-4)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in w0.items()}  # as trained
  state = tx.init(params)
  w = {k: v.copy() for k, v in w0.items()}
  v = {k: np.zeros_like(x) for k, x in w0.items()}
  for g, lr in zip(grads, lrs, strict=True):
    updates, state = tx.update({k: jnp.asarray(x) for k, x in g.items()}, state, params)
    params = optax.apply_updates(params, updates)
    for k in w:
      v[k] = 0.9 * v[k] - 0.0005 * lr * w[k] - lr * g[k]
      w[k] = w[k] + v[k]
  for k in w:
    np.testing.assert_allclose(params[k], w[k], rtol=1e-6)


def test_biases_are_not_decayed_by_default():
  config = alexnet.get_config()
  config.momentum = 0.0
  tx = optim.create_optimizer(config)
  params = {"fc": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
  zeros = {"fc": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}}
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["fc"]["kernel"], -0.01 * 5e-4)
  np.testing.assert_allclose(updates["fc"]["bias"], 0.0)
  config.decay_biases = True
  tx = optim.create_optimizer(config)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["fc"]["bias"], -0.01 * 5e-4)


def test_step_schedule_divides_at_the_given_epochs():
  config = alexnet.get_config()
  config.lr_schedule = "step"
  config.lr_step_epochs = (2, 3)
  lr = optim.learning_rate_fn(config, steps_per_epoch=10)
  got = [lr(s) for s in (0, 19, 20, 29, 30)]
  np.testing.assert_allclose(got, [0.01, 0.01, 0.001, 0.001, 0.0001], rtol=1e-6)


def test_plateau_divides_by_ten_when_the_validation_error_stops_improving():
  config = alexnet.get_config()
  config.plateau_patience = 2
  config.max_lr_drops = 1
  plateau = optim.Plateau.from_config(config)
  drops = [plateau.update(e) for e in (0.9, 0.8, 0.8, 0.7999, 0.8, 0.8, 0.8)]
  assert drops == [False, False, False, True, False, False, False]
  assert plateau.scale == 0.1 and plateau.drops == 1
  assert optim.Plateau(**vars(plateau)) == plateau  # its state round-trips through checkpoints


def test_plateau_restarts_its_patience_after_each_drop():
  plateau = optim.Plateau(patience=2, min_delta=0.01, factor=0.1, max_drops=2)
  errors = [0.50, 0.495, 0.49, 0.49, 0.40, 0.40, 0.41, 0.41, 0.41, 0.41]
  # 0.495 and 0.49 improve by less than min_delta: the second divides; patience starts again
  # (no drop at the next 0.49); 0.40 improves; two evaluations later the second drop, the last.
  drops, scales = [], []
  for error in errors:
    drops.append(plateau.update(error))
    scales.append(plateau.scale)
  assert drops == [False, False, True, False, False, False, True, False, False, False], drops
  np.testing.assert_allclose(scales, [1] * 2 + [0.1] * 4 + [0.01] * 4, err_msg="lr scale")
  assert plateau.drops == 2
