"""The paper's network ("The Architecture", Figure 2) as a Flax linen module.

The two GPU "columns" are explicit: every parameter has a leading column axis of size
`columns` (column 0 holds the first half of a layer's kernels or neurons), and activations
have the layout (column, batch, ...). A layer that reads "own" maps computes column c from
column c of the layer below only; a layer that reads "all" maps sees both columns. Column
layers run as one ordinary convolution or matmul per column (XLA:CPU runs grouped
convolutions several times slower); under a mesh with a `model` axis they run inside
`jax.shard_map`, so column c is computed on model-device c from its local data, and the only
cross-device traffic is gathering the inputs of the "all" layers (conv3 and the FC layers).
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from supervision import ConfigError, pooling

MODEL_AXIS = "model"
DATA_AXIS = "data"
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}
POOLS = ("max", "avg")
# config.model.init "scaled": the fan-in scaled initialisation suited to each activation.
SCALED_INITS = {"relu": nn.initializers.he_normal, "tanh": nn.initializers.lecun_normal}
INITS = ("normal", "scaled")
DROPOUT_FORMS = ("paper", "inverted")
DTYPES = ("float32", "bfloat16")  # of the computation (config.model.dtype)


def _window_sum(x: jax.Array, before: int, after: int) -> jax.Array:
  """sum_{j=i-before}^{i+after} x_j over the last axis, with zeros beyond the ends."""
  maps = x.shape[-1]
  padded = jnp.pad(x, ((0, 0),) * (x.ndim - 1) + ((before, after),))
  return sum(padded[..., i : i + maps] for i in range(before + after + 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x: jax.Array, k: float, n: int, alpha: float, beta: float) -> jax.Array:
  return _lrn_fwd(x, k, n, alpha, beta)[0]


def _power(d: jax.Array, exponent: float) -> jax.Array:
  """d ** exponent; the paper's -0.75 as rsqrt(d) * rsqrt(sqrt(d)), several times cheaper on
  CPUs than a general power (a logarithm and an exponential) and equal to it within float
  rounding."""
  if exponent == -0.75:
    return jax.lax.rsqrt(d) * jax.lax.rsqrt(jnp.sqrt(d))
  return d**exponent


def _lrn_fwd(x, k, n, alpha, beta):
  denominator = k + alpha * _window_sum(jnp.square(x), n // 2, n - 1 - n // 2)
  scaled = _power(denominator, -beta)
  return x * scaled, (x, denominator, scaled)


def _lrn_bwd(k, n, alpha, beta, residuals, g):
  # d b_i / d a_j = [i == j] d_j^-beta - 2 alpha beta a_i a_j d_i^(-beta-1) for j near i.
  x, denominator, scaled = residuals
  near = _window_sum(g * x * scaled / denominator, n - 1 - n // 2, n // 2)
  return (g * scaled - 2 * alpha * beta * x * near,)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def local_response_norm(
  x: jax.Array,
  k: float,
  n: int,
  alpha: float,
  beta: float,
  alpha_over_n: bool = False,
  across_columns: bool = False,
) -> jax.Array:
  """Local Response Normalization: b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta.

  The sum runs over the n adjacent kernel maps of the last axis, clipped at the first and last
  map. With `alpha_over_n` alpha is divided by n, as in cuda-convnet's released code and Caffe.
  With `across_columns` x has the column layout (column, batch, ..., C) and the maps are those of
  all columns, column 0's first, so that windows cross the column boundary; otherwise each column
  is normalized on its own, as on the paper's two GPUs. The gradient is written out (`_lrn_bwd`):
  XLA:CPU runs the automatic one several times slower.
  """
  alpha = alpha / n if alpha_over_n else alpha
  if not across_columns:
    return _lrn(x, k, n, alpha, beta)
  # Under a mesh with a `model` axis this gathers the maps of all model-devices: simple and
  # correct, though a window needs only the n // 2 maps beyond the boundary.
  merged = _lrn(_merge_columns(x), k, n, alpha, beta)
  return jnp.stack(jnp.split(merged, len(x), axis=-1))


def _conv2d(x: jax.Array, kernel: jax.Array, stride: int, pads: tuple) -> jax.Array:
  return jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _column_map(fn: Callable, x: jax.Array, kernel: jax.Array, bias: jax.Array, reads: str):
  """Applies `fn(x_c, kernel_c, bias_c)` for every column c and stacks the results.

  `reads` is "image" (`x` has no column axis; every column reads all of it), "own" (column c
  reads column c of `x`) or "all" (every column reads the maps of all columns of `x`). Under
  a mesh with a `model` axis each device computes its own columns (shard_map), and "all"
  gathers the other devices' columns: the only cross-device traffic of the network.
  """
  mesh = jax.sharding.get_abstract_mesh()
  sharded = not mesh.empty and MODEL_AXIS in mesh.axis_names

  def per_column(x, kernel, bias):
    if reads == "all":
      x = jax.lax.all_gather(x, MODEL_AXIS, axis=0, tiled=True) if sharded else x
      x = _merge_columns(x)
    own = reads == "own"
    return jnp.stack([fn(x[c] if own else x, kernel[c], bias[c]) for c in range(len(kernel))])

  if not sharded:
    return per_column(x, kernel, bias)
  data, rows = mesh.shape.get(DATA_AXIS), x.shape[0 if reads == "image" else 1]
  batch = DATA_AXIS if data and rows % data == 0 else None  # e.g. not the 1 image of init
  x_spec = P(batch) if reads == "image" else P(MODEL_AXIS, batch)
  return jax.shard_map(
    per_column, in_specs=(x_spec, P(MODEL_AXIS), P(MODEL_AXIS)), out_specs=P(MODEL_AXIS, batch)
  )(x, kernel, bias)


def _merge_columns(x: jax.Array) -> jax.Array:
  """(column, batch, ..., C) -> (batch, ..., column * C): the maps of all columns."""
  return jnp.concatenate(list(x), axis=-1)


class ColumnConv(nn.Module):
  """A convolution whose kernels are split into columns; see the module docstring."""

  features: int  # kernels of all columns together
  kernel_size: int
  stride: int
  padding: Any
  columns: int
  reads: str  # "own" or "all"
  kernel_init: Callable
  bias_init: Callable
  dtype: Any = jnp.float32  # of the computation; parameters are float32

  @nn.compact
  def __call__(self, x: jax.Array, x_columns: bool) -> jax.Array:
    reads = self.reads if x_columns else "image"
    in_features = x.shape[-1] * (len(x) if reads == "all" else 1)
    shape = (self.columns, self.kernel_size, self.kernel_size, in_features)
    kernel = self.param("kernel", self.kernel_init, shape + (self.features // self.columns,))
    bias = self.param("bias", self.bias_init, (self.columns, self.features // self.columns))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)

    def conv(x, kernel, bias):
      pads = self.padding
      if isinstance(pads, str):
        window, strides = kernel.shape[:2], (self.stride, self.stride)
        pads = jax.lax.padtype_to_pads(x.shape[1:3], window, strides, pads)
      pads = tuple(tuple(p) for p in pads)
      return _conv2d(x, kernel, self.stride, pads) + bias

    return _column_map(conv, x, kernel, bias, reads)


class ColumnDense(nn.Module):
  """A fully-connected layer whose neurons are split into columns, each reading all inputs.

  The input has the column layout (column, batch, ...); every column reads the flattened maps
  of all columns.
  """

  features: int
  columns: int
  kernel_init: Callable
  bias_init: Callable
  dtype: Any = jnp.float32  # of the computation; parameters are float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (self.columns, math.prod(x.shape[2:]) * len(x), self.features // self.columns)
    kernel = self.param("kernel", self.kernel_init, shape)
    bias = self.param("bias", self.bias_init, shape[::2])
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    dense = lambda x, w, b: x.reshape(len(x), -1) @ w + b  # noqa: E731
    return _column_map(dense, x, kernel, bias, "all")


class Dropout(nn.Module):
  """Dropout: in training each output is zeroed with probability `rate`.

  form "paper" ("Dropout" in the paper) keeps the other outputs unchanged and multiplies
  all outputs by 1 - rate at test time; "inverted" divides the kept outputs by 1 - rate in
  training and leaves test outputs unchanged.
  """

  rate: float
  form: str

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    keep = 1.0 - self.rate
    if not train:
      return x * keep if self.form == "paper" else x
    kept = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
    return jnp.where(kept, x if self.form == "paper" else x / keep, 0)


class ColumnNet(nn.Module):
  """Conv layers from a layer table, then FC layers; AlexNet with the paper's config.

  Returns float32 logits of shape (batch, num_classes); `Dropout` of form `dropout_form`
  follows fc6 and fc7. With `mutable=["intermediates"]` it also returns the last hidden layer's
  activations, the input of the classifier before dropout, as `["intermediates"]["features"]`
  (a tuple of one [batch, D] array). `dtype` is the dtype of the computation (Flax's
  convention: parameters stay float32); with bfloat16 the convolutions, matmuls and pooling run
  in bfloat16 and LRN in float32. A class count that the columns do not divide (ImageNet Fall
  2011's 21,841) pads the classifier with neurons at its end, up to the next multiple; their
  outputs are cut off the logits, so they are never predicted, take no probability and get no
  gradient.
  """

  conv: Sequence[dict]
  dense: Sequence[int]
  num_classes: int
  columns: int
  activation: str
  lrn: dict
  pool: dict
  dropout_rate: float
  dropout_form: str
  initialization: str  # config.model.init ("init" is a Module's method)
  init_std: float
  layer_init_std: dict
  init_bias_one: Sequence[str]
  dtype: Any = jnp.float32

  def dense_names(self) -> list[str]:
    """Names of the FC layers, numbered after the conv layers (fc6, fc7, fc8 in AlexNet)."""
    return [f"fc{len(self.conv) + 1 + i}" for i in range(len(self.dense) + 1)]

  def layer_reads(self) -> list[tuple[str, str]]:
    """(name, what it reads) for every layer: "image", "own" column or "all" columns."""
    convs = [(c["name"], "image" if i == 0 else c["reads"]) for i, c in enumerate(self.conv)]
    return convs + [(name, "all") for name in self.dense_names()]

  def _layer_args(self, name: str) -> dict:
    bias = 1.0 if name in self.init_bias_one else 0.0
    if self.initialization == "scaled":  # fan-in scaled: He for ReLUs, LeCun for tanh units
      kernel_init = SCALED_INITS[self.activation](in_axis=-2, out_axis=-1, batch_axis=(0,))
    else:
      kernel_init = nn.initializers.normal(self.layer_init_std.get(name, self.init_std))
    return dict(
      kernel_init=kernel_init,
      bias_init=nn.initializers.constant(bias),
      dtype=self.dtype,
      name=name,
    )

  def _lrn(self, x: jax.Array) -> jax.Array:
    """LRN with its sums of squares in float32 (bfloat16 has 8 bits of mantissa)."""
    lrn = {k: v for k, v in self.lrn.items() if k != "after_pool"}
    return local_response_norm(x.astype(jnp.float32), **lrn).astype(self.dtype)

  def _pool(self, kind: str, x: jax.Array) -> jax.Array:
    window, stride = self.pool["window"], self.pool["stride"]
    after = (0, 0)
    if self.pool["partial_windows"]:
      after = tuple(pooling.partial_window_pad(n, window, stride) for n in x.shape[-3:-1])
    return pooling.pool(kind, x, window, stride, after)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    x, x_columns = images.astype(self.dtype), False
    for layer in self.conv:
      x = ColumnConv(
        layer["features"],
        layer["kernel"],
        layer["stride"],
        layer["padding"],
        self.columns,
        layer["reads"],
        **self._layer_args(layer["name"]),
      )(x, x_columns)
      x, x_columns = act(x), True
      lrn = self._lrn if layer["lrn"] else lambda x: x
      pool = functools.partial(self._pool, layer["pool"]) if layer["pool"] else lambda x: x
      x = lrn(pool(x)) if self.lrn["after_pool"] else pool(lrn(x))
    *hidden, classifier = self.dense_names()
    features = x  # the last hidden layer's output: the last conv layer's, or an FC layer's
    for name, size in zip(hidden, self.dense, strict=True):
      features = act(ColumnDense(size, self.columns, **self._layer_args(name))(x))
      x = Dropout(self.dropout_rate, self.dropout_form)(features, train)
    # The feature vectors of "Qualitative Evaluations" (fc7's 4096 outputs in AlexNet): the
    # classifier's input flattened as it reads it, before dropout.
    self.sow("intermediates", "features", _merge_columns(features).reshape(features.shape[1], -1))
    padded = -(-self.num_classes // self.columns) * self.columns
    x = ColumnDense(padded, self.columns, **self._layer_args(classifier))(x)
    return _merge_columns(x)[:, : self.num_classes].astype(jnp.float32)


def check_params(params: Any, crop_size: int) -> None:
  """A ConfigError naming the first layer of `params` (or their shapes) that has an empty kernel:
  the maps reaching it shrank to nothing, as each conv layer of stride > 1 and each pooling
  shrinks them, at inputs of `crop_size`."""
  for name, layer in params.items():
    if any(leaf.size == 0 for leaf in jax.tree.leaves(layer)):
      raise ConfigError(
        f"config.crop_size={crop_size} is too small for the network: the maps reaching layer"
        f" {name} are empty. Give a larger crop (and config.image_size)."
      )


def create_model(config: ml_collections.ConfigDict) -> ColumnNet:
  """Builds the network described by `config.model` for `config.num_classes` classes."""
  m = config.model
  for layer in (*m.conv, *m.dense):  # the classifier is padded (`ColumnNet`)
    features = layer["features"] if isinstance(layer, dict) else layer
    if features % m.columns:
      raise ConfigError(
        f"config.model.columns={m.columns} does not divide a layer's {features} kernels/neurons"
        f" (layer {layer!r}); use a multiple of {m.columns}."
      )
  for layer in m.conv:
    if layer["pool"] and layer["pool"] not in POOLS:
      raise ConfigError(
        f"config.model.conv {layer['name']}: pool={layer['pool']!r}; use {list(POOLS)}."
      )
  if m.activation not in ACTIVATIONS:
    raise ConfigError(f"config.model.activation={m.activation!r}; choose from {list(ACTIVATIONS)}.")
  if m.dropout_form not in DROPOUT_FORMS:
    raise ConfigError(f"config.model.dropout_form={m.dropout_form!r}; choose from {DROPOUT_FORMS}.")
  if not 0 <= m.dropout_rate < 1:
    raise ConfigError(f"config.model.dropout_rate={m.dropout_rate} must be >= 0 and < 1.")
  if m.init not in INITS:
    raise ConfigError(f"config.model.init={m.init!r}; choose from {list(INITS)}.")
  if m.dtype not in DTYPES:
    raise ConfigError(f"config.model.dtype={m.dtype!r}; choose from {list(DTYPES)}.")
  net = ColumnNet(
    conv=tuple(m.conv),
    dense=tuple(m.dense),
    num_classes=config.num_classes,
    columns=m.columns,
    activation=m.activation,
    lrn=m.lrn.to_dict(),
    pool=m.pool.to_dict(),
    dropout_rate=m.dropout_rate,
    dropout_form=m.dropout_form,
    initialization=m.init,
    init_std=m.init_std,
    layer_init_std=dict(m.layer_init_std),
    init_bias_one=tuple(m.init_bias_one),
    dtype=jnp.dtype(m.dtype),
  )
  names = [layer["name"] for layer in m.conv] + net.dense_names()
  if unknown := sorted(set(m.layer_init_std) - set(names)):
    raise ConfigError(
      f"config.model.layer_init_std names no layer of the net: {unknown}; its layers are {names}."
    )
  return net
