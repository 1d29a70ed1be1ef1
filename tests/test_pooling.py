"""Max and average pooling ("Overlapping Pooling"), checked against plain numpy loops."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from supervision import pooling


def numpy_pool(kind, x, window, stride, outputs, g):
  """Values and input gradient (for output gradient `g`) of pooling over the axes -3 and -2,
  one window at a time; numpy's slices end at the map's edge, so partial windows hold only the
  pixels inside. A window's maximum takes its gradient at its first maximum in row-major
  order, its mean spreads it evenly."""
  y, dx = np.zeros(g.shape, np.float32), np.zeros(x.shape, np.float32)
  for a, b in itertools.product(range(outputs[0]), range(outputs[1])):
    rows, cols = slice(stride * a, stride * a + window), slice(stride * b, stride * b + window)
    patch = x[..., rows, cols, :]  # (..., h, w, C)
    flat = np.moveaxis(patch, -1, -3).reshape(*patch.shape[:-3], patch.shape[-1], -1)
    grad = g[..., a : a + 1, b : b + 1, :]
    if kind == "max":
      y[..., a, b, :] = flat.max(-1)
      first = np.moveaxis(np.eye(flat.shape[-1], dtype=bool)[flat.argmax(-1)], -2, -1)
      dx[..., rows, cols, :] += np.where(first.reshape(patch.shape), grad, 0)
    else:
      y[..., a, b, :] = flat.mean(-1)
      dx[..., rows, cols, :] += grad / flat.shape[-1]
  return y, dx


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize(
  "shape,window,stride,after",
  [
    ((2, 3, 11, 11, 5), 3, 2, (0, 0)),  # overlapping
    ((1, 2, 10, 10, 3), 2, 2, (0, 0)),  # non-overlapping
    ((2, 10, 9, 2), 2, 3, (0, 0)),  # gapped, a row left out at the end
    ((1, 2, 12, 13, 3), 3, 2, (1, 0)),  # partial windows in the last row only
    ((2, 6, 6, 4), 3, 2, (1, 1)),  # cuda-convnet's pooled sizes: 6 -> 3
    ((1, 2, 2, 3), 3, 2, (1, 1)),  # a map smaller than the window
  ],
)
def test_pooling_and_its_gradient_equal_numpy(
  kind, separable, shape, window, stride, after, monkeypatch
):
  """Both implementations (separable: the CPU's; not: XLA's own two-dimensional pooling), on
  values rounded to one decimal after a ReLU, so that windows hold ties."""
  x = jnp.round(jax.nn.relu(jax.random.normal(jax.random.key(0), shape)), 1)
  sizes = [(n + pad - window) // stride + 1 for n, pad in zip(shape[-3:-1], after, strict=True)]
  g = jax.random.normal(jax.random.key(1), (*shape[:-3], *sizes, shape[-1]))
  want, want_dx = numpy_pool(kind, np.asarray(x), window, stride, sizes, np.asarray(g))
  monkeypatch.setattr(pooling, "separable", lambda: separable)
  got, vjp = jax.vjp(lambda x: pooling.pool(kind, x, window, stride, after), x)
  (got_dx,) = vjp(g)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got_dx, want_dx, rtol=1e-5, atol=1e-6)
