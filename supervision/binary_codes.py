"""Short binary codes for feature vectors: the auto-encoder that "Qualitative Evaluations" proposes.

The encoder maps a feature vector through ReLU layers (`config.retrieval.hidden`) to B logistic
code units; the decoder mirrors it back to the D inputs (linear output), trained with Adam to
reconstruct the training features (squared error). As in semantic hashing (Salakhutdinov &
Hinton) and the auto-encoders for image retrieval of Krizhevsky & Hinton (2011), Gaussian noise
(std `config.retrieval.code_noise`) is added to the code units' inputs in training: a unit can
only carry information through it by driving its input far from 0, so the sigmoids end up near
0 or 1. A vector's code is its noise-free code units > 0.5 (inputs > 0).

The features are divided by one number, their root-mean-square over the training split, so
that the same learning rate fits any feature scale. Training batches are drawn on the device
from the training features with replacement.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax.training import train_state

ENCODE_CHUNK = 8192  # vectors encoded at a time
BINARY_MARGIN = 0.1  # a code unit within this of 0 or 1 counts as binary in `Codec.summary`
STEPS_PER_CALL = 100  # training steps run by one call of the compiled loop


class Autoencoder(nn.Module):
  """D -> hidden (ReLU) -> B logistic code units -> hidden reversed (ReLU) -> D (linear)."""

  features: int
  bits: int
  hidden: Sequence[int]
  code_noise: float = 0.0

  def setup(self):
    self.encoder = [nn.Dense(n) for n in self.hidden] + [nn.Dense(self.bits)]
    self.decoder = [nn.Dense(n) for n in reversed(self.hidden)] + [nn.Dense(self.features)]

  def code_inputs(self, x: jax.Array) -> jax.Array:
    """The inputs (logits) of the code units."""
    for layer in self.encoder[:-1]:
      x = nn.relu(layer(x))
    return self.encoder[-1](x)

  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """(reconstruction, code units in (0, 1)); in training with noise (rng "noise")."""
    logits = self.code_inputs(x)
    if train:
      logits += self.code_noise * jax.random.normal(self.make_rng("noise"), logits.shape)
    code = nn.sigmoid(logits)
    y = code
    for layer in self.decoder[:-1]:
      y = nn.relu(layer(y))
    return self.decoder[-1](y), code


@dataclasses.dataclass(frozen=True)
class Codec:
  """A trained auto-encoder, the scale of its inputs and its training loss over the last
  STEPS_PER_CALL steps."""

  model: Autoencoder
  params: Any
  scale: float
  final_loss: float

  def summary(self, features: jax.Array | np.ndarray) -> dict:
    """Final training loss (on features / scale) and the fraction of the noise-free code units
    of `features` within BINARY_MARGIN of 0 or 1."""
    units = np.concatenate([np.asarray(u) for u in _code_units(self, features)])
    binary = np.minimum(units, 1 - units) < BINARY_MARGIN
    return dict(final_loss=self.final_loss, binary_fraction=float(binary.mean()))


def _train_steps(state, features, scale, key, *, steps, batch_size):
  """`steps` Adam steps on batches drawn from `features`; returns the state and their losses."""

  def step(state, _):
    batch_key, noise_key = jax.random.split(jax.random.fold_in(key, state.step))
    x = features[jax.random.randint(batch_key, (batch_size,), 0, len(features))] / scale

    def loss_fn(params):
      reconstruction, _ = state.apply_fn(
        {"params": params}, x, train=True, rngs={"noise": noise_key}
      )
      return jnp.mean(jnp.square(reconstruction - x))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  return jax.lax.scan(step, state, length=steps)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _start(model: Autoencoder, tx: optax.GradientTransformation, seed: int, features: jax.Array):
  """(initial train state, the features' root-mean-square, the key of the training batches)."""
  init_key, key = jax.random.split(jax.random.fold_in(jax.random.key(seed), model.bits))
  params = model.init(init_key, features[:1])["params"]
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  return state, jnp.sqrt(jnp.mean(jnp.square(features))), key


def train(features: jax.Array | np.ndarray, bits: int, config: ml_collections.ConfigDict) -> Codec:
  """Trains the auto-encoder of `bits` code units on `features` [N, D] for `config.steps` steps
  (`config` is config.retrieval), STEPS_PER_CALL steps per call of the compiled loop."""
  model = Autoencoder(features.shape[1], bits, tuple(config.hidden), config.code_noise)
  tx = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps))
  features = jax.device_put(features)
  state, scale, key = _start(model, tx, config.seed, features)
  run = jax.jit(_train_steps, static_argnames=("steps", "batch_size"), donate_argnums=0)
  bar = tqdm.tqdm(total=config.steps, desc=f"auto-encoder, {bits} bits", unit="step")
  for start in range(0, config.steps, STEPS_PER_CALL):
    steps = min(STEPS_PER_CALL, config.steps - start)
    state, losses = run(state, features, scale, key, steps=steps, batch_size=config.batch_size)
    bar.update(steps)
  bar.close()
  return Codec(model, state.params, float(scale), float(np.mean(losses)))


@functools.partial(jax.jit, static_argnums=0)
def _units(model: Autoencoder, params: Any, x: jax.Array, scale: float) -> jax.Array:
  return nn.sigmoid(model.apply({"params": params}, x / scale, method=Autoencoder.code_inputs))


def _code_units(codec: Codec, features: jax.Array | np.ndarray) -> list[jax.Array]:
  """The noise-free code units of `features`, in chunks of ENCODE_CHUNK vectors."""
  return [
    _units(codec.model, codec.params, features[i : i + ENCODE_CHUNK], codec.scale)
    for i in range(0, len(features), ENCODE_CHUNK)
  ]


def encode(codec: Codec, features: jax.Array | np.ndarray) -> jax.Array:
  """The binary codes of `features` [N, D]: bool [N, B] on the device, code units > 0.5."""
  return jnp.concatenate([units > 0.5 for units in _code_units(codec, features)])
