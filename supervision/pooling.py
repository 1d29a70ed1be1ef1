"""Max and average pooling ("Overlapping Pooling"), with cuda-convnet's partial windows.

Pooling reduces windows of `window` x `window` pixels, `stride` apart, over the rows and
columns of maps laid out (..., rows, columns, channels). `after` is the pixels past the end of
the rows and of the columns that the last windows may cover (`partial_window_pad`): never a
window's maximum, and not counted in its mean.

On CPUs pooling runs separably, over each window's columns and then over its rows: the same
values, and for the maximum the same gradient, as XLA's own two-dimensional pooling, which
XLA:CPU runs several times slower, gradients above all.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def partial_window_pad(size: int, window: int, stride: int) -> int:
  """Pixels past the edge of a map of `size` that cuda-convnet's last pooling window covers: it
  gives ceil((size - window) / stride) + 1 outputs, where no padding gives floor(...) + 1."""
  outputs = -(-(size - window) // stride) + 1
  return (outputs - 1) * stride + window - size


def separable() -> bool:
  """Whether pooling runs separably: on CPUs."""
  return jax.default_backend() == "cpu"


def pool(kind: str, x: jax.Array, window: int, stride: int, after: tuple[int, int]) -> jax.Array:
  """Max ("max") or average ("avg") pooling of `x` over its axes -3 and -2 (rows, columns)."""
  by_axis = separable()
  if kind == "max" and by_axis:
    return max_pool_separable(x, window, stride, after)
  op = lax.max if kind == "max" else lax.add

  def reduce(x: jax.Array) -> jax.Array:
    if by_axis:
      x = _windows(x, op, window, stride, {-2: after[1]})
      return _windows(x, op, window, stride, {-3: after[0]})
    return _windows(x, op, window, stride, {-3: after[0], -2: after[1]})

  if kind == "max":
    return reduce(x)
  return reduce(x) / reduce(jnp.ones((*x.shape[-3:-1], 1), x.dtype))  # the pixels inside


def _windows(
  x: jax.Array, op: Callable, window: int, stride: int, after: dict[int, int]
) -> jax.Array:
  """Reduces `x` with `op` (lax.max or lax.add) over the windows along the axes of `after`,
  each axis padded at its end by its value (-inf for a maximum, 0 for a sum)."""
  dims, strides, pads = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
  for axis, pad in after.items():
    dims[axis], strides[axis], pads[axis] = window, stride, (0, pad)
  init = -jnp.inf if op is lax.max else 0.0
  return lax.reduce_window(x, init, op, dims, strides, pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_separable(x: jax.Array, window: int, stride: int, after: tuple[int, int]) -> jax.Array:
  """Max pooling as the maximum over each window's columns, then over its rows. Its gradient
  goes to the first maximum of each window in row-major order, as XLA's does: to the first of
  the window's rows that holds the maximum (the first maximum of the second reduction), and in
  that row to the first column that holds it (of the first)."""
  return _max_pool_separable_fwd(x, window, stride, after)[0]


def _max_pool_separable_fwd(x, window, stride, after):
  row_maxima = _windows(x, lax.max, window, stride, {-2: after[1]})  # over each window's columns
  y = _windows(row_maxima, lax.max, window, stride, {-3: after[0]})
  return y, (x, row_maxima, y)


def _max_pool_separable_bwd(window, stride, after, residuals, g):
  x, row_maxima, y = residuals
  g = _max_gradient(row_maxima, y, g, -3, window, stride)
  return (_max_gradient(x, row_maxima, g, -2, window, stride),)


max_pool_separable.defvjp(_max_pool_separable_fwd, _max_pool_separable_bwd)


def _max_gradient(x, y, g, axis: int, window: int, stride: int) -> jax.Array:
  """The gradient for `x` of `y`, its maxima over windows along `axis`, given `g`, that of `y`:
  each window's to its first maximum. Position k of window a reads x at stride * a + k: phase
  k % stride of x (the positions congruent to it), at a + k // stride. The phases are computed
  at the pooled resolution, one masked copy per window position, and interleaved at the end."""
  axis = axis % x.ndim
  size, outputs = x.shape[axis], y.shape[axis]
  phase_size = -(-max(size, stride * (outputs - 1) + window) // stride)
  phases = [jnp.zeros((*g.shape[:axis], phase_size, *g.shape[axis + 1 :]), g.dtype)] * stride
  taken = jnp.zeros(y.shape, bool)
  for k in range(window):
    inside = min(outputs, -(-(size - k) // stride))  # the windows whose position k is in x
    if inside <= 0:  # a map smaller than the window
      continue
    at_k = lax.slice_in_dim(x, k, k + stride * (inside - 1) + 1, stride, axis)
    at_k = _pad(at_k, axis, 0, outputs - inside, -jnp.inf)  # past the end: never a maximum
    hit = (at_k == y) & ~taken
    taken = taken | hit
    shift = k // stride
    phases[k % stride] += _pad(jnp.where(hit, g, 0), axis, shift, phase_size - shift - outputs, 0)
  dx = jnp.stack(phases, axis=axis + 1).reshape(*x.shape[:axis], -1, *x.shape[axis + 1 :])
  return lax.slice_in_dim(dx, 0, size, axis=axis)


def _pad(x: jax.Array, axis: int, before: int, after: int, value: float) -> jax.Array:
  pads = [(0, 0)] * x.ndim
  pads[axis] = (before, after)
  return jnp.pad(x, pads, constant_values=value)
