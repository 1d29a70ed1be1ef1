"""The network of "The Architecture" / Figure 2, checked against the paper's numbers."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import alexnet, cifar10, smoke
from supervision import ConfigError, models, pooling, sharding, steps, summary

PAPER_NEURONS = [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]


def table(variant=""):
  return {row["layer"]: row for row in summary.layer_table(alexnet.get_config(variant))}


def test_parameters_and_neurons_equal_the_paper():
  rows = table()
  assert sum(r["params"] for r in rows.values()) == 60_965_224
  assert [r["neurons"] for r in rows.values()] == PAPER_NEURONS
  assert rows["conv1"]["output"] == (55, 55, 96)
  assert [r["reads"] for r in rows.values()] == ["image", "own", "all", "own", "own"] + ["all"] * 3


def test_one_column_halves_conv1_to_conv4_only():
  two, one = table(), table("one_column")
  for name in ("conv1", "conv2", "conv3", "conv4"):
    assert one[name]["neurons"] * 2 == two[name]["neurons"]
  for name in ("conv5", "fc6", "fc7", "fc8"):
    assert one[name]["neurons"] == two[name]["neurons"]
  # conv5 reads 192 maps instead of 2 columns x 192 split into halves: 3*3*192*256 + 256.
  assert one["conv5"]["params"] == 3 * 3 * 192 * 256 + 256
  assert one["conv2"]["params"] == 5 * 5 * 48 * 128 + 128  # one column reads all 48 maps


@pytest.mark.parametrize("variant", ["no_lrn", "non_overlapping_pool", "tanh"])
def test_variants_keep_the_shapes(variant):
  base, other = table(), table(variant)
  assert [(r["output"], r["params"]) for r in base.values()] == [
    (r["output"], r["params"]) for r in other.values()
  ]


def test_six_conv_adds_a_layer_over_the_last_pooling_layer():
  rows = table("six_conv")
  assert list(rows)[5] == "conv6" and rows["conv6"]["output"] == (6, 6, 256)
  assert sum(r["params"] for r in rows.values()) == 60_965_224 + 2 * (3 * 3 * 128 * 128 + 128)


def test_variants_change_the_model_config():
  assert alexnet.get_config("no_lrn").model.conv[0]["lrn"] is False
  assert alexnet.get_config("non_overlapping_pool").model.pool.window == 2
  assert alexnet.get_config("tanh").model.activation == "tanh"
  with pytest.raises(ValueError, match="bogus"):
    alexnet.get_config("bogus")


def lrn_reference(a, k, n, alpha, beta, alpha_over_n):
  """The formula of "Local Response Normalization" as a direct loop over kernel maps."""
  b = np.zeros_like(a, dtype=np.float64)
  maps = a.shape[-1]
  scale = alpha / n if alpha_over_n else alpha
  for i in range(maps):
    lo, hi = max(0, i - n // 2), min(maps - 1, i + n // 2)
    s = sum(a[..., j].astype(np.float64) ** 2 for j in range(lo, hi + 1))
    b[..., i] = a[..., i] / (k + scale * s) ** beta
  return b


def paper_lrn():
  """The config's LRN constants, the arguments of `lrn_reference`."""
  lrn = alexnet.get_config().model.lrn.to_dict()
  assert lrn.pop("across_columns") is False  # the default: each column on its own
  assert lrn.pop("after_pool") is False  # the default: before the pooling (Figure 2)
  return lrn


@pytest.mark.parametrize("alpha_over_n", [False, True])
def test_lrn_equals_the_formula(alpha_over_n):
  a = np.random.default_rng(0).uniform(0, 30, size=(2, 3, 4, 7)).astype(np.float32)
  lrn = paper_lrn()
  lrn["alpha_over_n"] = alpha_over_n
  got = models.local_response_norm(jnp.asarray(a), **lrn)
  np.testing.assert_allclose(got, lrn_reference(a, **lrn), rtol=1e-6)
  # The two conventions really differ on these values (alpha is not divided by n in the paper).
  other = lrn_reference(a, **{**lrn, "alpha_over_n": not alpha_over_n})
  assert np.abs(np.asarray(got) - other).max() > 1e-3
  # Differentiable, and its gradient is the reference's (central differences, float64).
  grad = jax.grad(lambda a: models.local_response_norm(a, **lrn)[0, 0, 0, 3])(jnp.asarray(a))
  eps, a64 = 1e-3, a.astype(np.float64)
  for j in (1, 3, 5, 6):
    up, down = a64.copy(), a64.copy()
    up[0, 0, 0, j] += eps
    down[0, 0, 0, j] -= eps
    fd = (lrn_reference(up, **lrn) - lrn_reference(down, **lrn))[0, 0, 0, 3] / (2 * eps)
    np.testing.assert_allclose(grad[0, 0, 0, j], fd, rtol=1e-3, atol=1e-7)


def test_lrn_across_columns_runs_over_the_maps_of_all_columns():
  a = np.random.default_rng(1).uniform(0, 30, size=(2, 2, 3, 3, 6)).astype(np.float32)
  lrn = paper_lrn()  # a: (column, batch, row, col, map), 6 maps per column
  whole = lrn_reference(np.concatenate(list(a), axis=-1), **lrn)  # 12 maps, column 0's first
  per_column = np.stack([lrn_reference(column, **lrn) for column in a])
  across = np.asarray(models.local_response_norm(jnp.asarray(a), **lrn, across_columns=True))
  own = np.asarray(models.local_response_norm(jnp.asarray(a), **lrn, across_columns=False))
  np.testing.assert_allclose(np.concatenate(list(across), axis=-1), whole, rtol=1e-6)
  np.testing.assert_allclose(own, per_column, rtol=1e-6)
  # They differ exactly at the n // 2 = 2 maps on either side of the column boundary.
  differ = np.abs(across - own).max(axis=(1, 2, 3)) > 1e-3
  assert differ.tolist() == [[False] * 4 + [True] * 2, [True] * 2 + [False] * 4]


@pytest.mark.parametrize("form,train_scale,test_scale", [("paper", 1, 0.5), ("inverted", 2, 1)])
def test_dropout_forms(form, train_scale, test_scale):
  x = np.random.default_rng(0).uniform(1, 2, (4, 1000)).astype(np.float32)
  dropout = models.Dropout(0.5, form)
  train = np.asarray(dropout.apply({}, jnp.asarray(x), True, rngs={"dropout": jax.random.key(0)}))
  dropped = train == 0
  assert 0.47 < dropped.mean() < 0.53
  np.testing.assert_array_equal(train[~dropped], train_scale * x[~dropped])
  np.testing.assert_array_equal(dropout.apply({}, jnp.asarray(x), False), test_scale * x)


def test_the_net_halves_the_dropout_layers_outputs_at_test_time():
  config = alexnet.get_config()  # dropout_form "paper"
  config.model.conv, config.model.dense, config.num_classes = config.model.conv[:1], (8, 6), 4
  model = models.create_model(config)
  images = jax.random.normal(jax.random.key(1), (2, 35, 35, 3))
  params = model.init(jax.random.key(0), images)
  _, state = model.apply(params, images, capture_intermediates=True, mutable="intermediates")
  found = state["intermediates"]
  for fc, dropout in (("fc2", "Dropout_0"), ("fc3", "Dropout_1")):
    (before,), (after,) = found[fc]["__call__"], found[dropout]["__call__"]
    assert np.abs(before).max() > 0
    np.testing.assert_array_equal(after, 0.5 * np.maximum(before, 0))


@pytest.mark.parametrize(
  "key,value,match",
  [("dropout_form", "scaled", "config.model.dropout_form='scaled'"),
   ("dropout_rate", 1.0, "config.model.dropout_rate=1.0")],
)  # fmt: skip
def test_dropout_config_errors(key, value, match):
  config = alexnet.get_config()
  config.model[key] = value
  with pytest.raises(ConfigError, match=match):
    models.create_model(config)


def column_layer(name):
  """The model's layer `name` as a standalone module (2 columns), with its input shape."""
  config = alexnet.get_config()
  idx = [c["name"] for c in config.model.conv].index(name)
  spec = config.model.conv[idx]
  prev = config.model.conv[idx - 1]["features"] // 2
  layer = models.ColumnConv(
      spec["features"], spec["kernel"], spec["stride"], spec["padding"], 2, spec["reads"],
      kernel_init=jax.nn.initializers.normal(0.01), bias_init=jax.nn.initializers.zeros,
  )  # fmt: skip
  return layer, (2, 1, 7, 7, prev)


@pytest.mark.parametrize("name,isolated", [("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1)])
def test_columns_talk_only_at_conv3(name, isolated):
  layer, shape = column_layer(name)
  x = jax.random.normal(jax.random.key(1), shape)
  params = layer.init(jax.random.key(0), x, True)

  def column0(x):
    return layer.apply(params, x, True)[0].sum()

  grad = jax.grad(column0)(x)
  assert jnp.abs(grad[0]).max() > 0
  if isolated:
    assert jnp.all(grad[1] == 0), f"{name}'s column 0 depends on column 1"
  else:
    assert jnp.abs(grad[1]).max() > 0, f"{name}'s column 0 should read both columns"


def test_fc6_reads_both_columns():
  dense = models.ColumnDense(8, 2, jax.nn.initializers.normal(0.01), jax.nn.initializers.zeros)
  x = jax.random.normal(jax.random.key(1), (2, 3, 8))  # (column, batch, features)
  params = dense.init(jax.random.key(0), x)
  grad = jax.grad(lambda x: dense.apply(params, x)[0].sum())(x)
  assert jnp.abs(grad[0]).max() > 0 and jnp.abs(grad[1]).max() > 0


def test_init_follows_details_of_learning(alexnet_params):
  _, params = alexnet_params
  bias_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}
  for name, layer in params.items():
    assert abs(float(jnp.std(layer["kernel"])) - 0.01) < 5e-4, name
    assert abs(float(jnp.mean(layer["kernel"]))) < 1e-3, name
    expected = 1.0 if name in bias_one else 0.0
    assert jnp.all(layer["bias"] == expected), name
    assert layer["kernel"].shape[0] == 2 and layer["bias"].shape[0] == 2  # column axis


def test_init_bias_is_configurable():
  config = alexnet.get_config()
  config.model.init_bias_one = ()
  config.model.conv = config.model.conv[:1]
  config.model.dense = (8,)
  config.num_classes = 4
  model = models.create_model(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
  assert all(jnp.all(p["bias"] == 0) for p in params.values())


def _init(config):
  model = models.create_model(config)
  size = config.crop_size
  return model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]


@pytest.mark.parametrize("activation, gain", [("relu", 2.0), ("tanh", 1.0)])
def test_scaled_init_has_variance_gain_over_fan_in(activation, gain):
  """config.model.init "scaled": std sqrt(gain / fan-in), He (2) for ReLUs and LeCun (1) for
  tanh units; the fan-in of a column reading its own column counts that column's maps only."""
  config = smoke.get_config()  # two columns: conv2 reads 8 maps, conv3 and fc4 all 16
  config.model.update(init="scaled", activation=activation)
  fan_in = {"conv1": 5 * 5 * 3, "conv2": 5 * 5 * 8, "conv3": 5 * 5 * 16, "fc4": 3 * 3 * 16}
  for name, layer in _init(config).items():
    if name in fan_in:
      std = float(jnp.std(layer["kernel"]))
      assert abs(std / np.sqrt(gain / fan_in[name]) - 1) < 0.1, (name, std)


def test_layer_init_std_overrides_init_std():
  """cuda-convnet's CIFAR-10 stds: conv1 1e-4, the rest the default 0.01."""
  config = alexnet.get_config()
  config.model.conv, config.model.dense, config.num_classes = config.model.conv[:2], (), 10
  config.model.layer_init_std = dict(conv1=1e-4)
  params = _init(config)
  assert abs(float(jnp.std(params["conv1"]["kernel"])) / 1e-4 - 1) < 0.05
  assert abs(float(jnp.std(params["conv2"]["kernel"])) / 0.01 - 1) < 0.05
  config.model.layer_init_std = dict(conv9=0.1)
  with pytest.raises(ConfigError, match="layer_init_std.*conv9"):
    models.create_model(config)


def test_logits_and_dropout(alexnet_params):
  model, params = alexnet_params
  images = jax.random.normal(jax.random.key(3), (2, 224, 224, 3))
  apply = jax.jit(model.apply, static_argnames="train")
  eval1 = apply({"params": params}, images, train=False)
  eval2 = apply({"params": params}, images, train=False)
  assert eval1.shape == (2, 1000) and jnp.all(jnp.isfinite(eval1))
  np.testing.assert_array_equal(eval1, eval2)
  rngs = lambda seed: {"dropout": jax.random.key(seed)}  # noqa: E731
  train1 = apply({"params": params}, images, train=True, rngs=rngs(1))
  train2 = apply({"params": params}, images, train=True, rngs=rngs(2))
  assert jnp.all(jnp.isfinite(train1))
  assert not np.allclose(train1, train2) and not np.allclose(train1, eval1)


def test_indivisible_columns_are_a_config_error():
  config = alexnet.get_config()
  config.model.dense = (4095, 4096)
  with pytest.raises(ConfigError, match="4095"):
    models.create_model(config)


@pytest.mark.parametrize("num_classes", [11, 10])
def test_a_class_count_the_columns_do_not_divide_pads_the_classifier(num_classes):
  """Two columns, one 1x1 conv layer of 2 kernels per column, then the classifier: 11 classes
  give 6 neurons a column, the last of column 1 unused. numpy computes the net by hand: the
  logits are the first 11 neurons, the softmax is over them alone, the unused neuron changes
  nothing however large its bias, and its weights get no gradient from the loss while the
  others get (softmax - onehot) times the inputs. 10 classes: every neuron, as in the paper."""
  config = alexnet.get_config()
  config.model.conv, config.model.dense = (alexnet.conv("conv1", 4, 1, reads="all"),), ()
  config.model.init_bias_one, config.num_classes = (), num_classes
  model, rng = models.create_model(config), np.random.default_rng(0)
  images, labels = rng.normal(size=(5, 3, 3, 3)).astype(np.float32), np.array([0, 3, 9, 10, 1])
  labels = labels % num_classes
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  params = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), shapes)
  per_column = -(-num_classes // 2)
  assert params["fc2"]["kernel"].shape == (2, 3 * 3 * 4, per_column)

  k, b = params["conv1"]["kernel"], params["conv1"]["bias"]
  inputs = np.concatenate([np.maximum(images @ k[c, 0, 0] + b[c], 0) for c in range(2)], -1)
  inputs = inputs.reshape(5, -1)  # both columns' maps, as every FC column reads them
  w, bias = params["fc2"]["kernel"], params["fc2"]["bias"]
  neurons = np.concatenate([inputs @ w[c] + bias[c] for c in range(2)], -1)
  want = neurons[:, :num_classes]
  softmax = np.exp(want - want.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  logits = model.apply({"params": params}, images)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.nn.softmax(logits), softmax, rtol=1e-5, atol=1e-6)

  def loss(params):
    log_probs = jax.nn.log_softmax(model.apply({"params": params}, images))
    return steps.classification_metrics(log_probs, labels)["loss"].mean()

  grads = jax.grad(loss)(params)["fc2"]
  onehot = np.eye(num_classes)[labels]
  d_neurons = np.pad((softmax - onehot) / 5, ((0, 0), (0, 2 * per_column - num_classes)))
  for c in range(2):
    d = d_neurons[:, c * per_column : (c + 1) * per_column]
    np.testing.assert_allclose(grads["kernel"][c], inputs.T @ d, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["bias"][c], d.sum(0), rtol=1e-4, atol=1e-6)
  if num_classes % 2:
    assert not np.any(grads["kernel"][1, :, -1]) and grads["bias"][1, -1] == 0
    big = jax.tree.map(np.copy, params)
    big["fc2"]["bias"][1, -1] = 1e30
    np.testing.assert_array_equal(model.apply({"params": big}, images), logits)


def test_summary_places_half_of_each_layer_on_each_model_device():
  config = alexnet.get_config()
  config.mesh.model = 2
  mesh = sharding.create_mesh(config, jax.devices()[:2])
  for row in summary.layer_table(config, mesh):
    assert row["bytes_per_device"] * 2 == row["params"] * 4, row
    assert row["sharding"] == "P('model',): column c on model-device c", row


def ynn_ops(hlo: str) -> set[str]:
  """The jax primitives whose code an optimized HLO module hands to YNNPACK."""
  return set(re.findall(r'op_name="[^"]*/(\w+)"[^\n]*"__ynn_fusion"', hlo))


def test_cpu_compiler_options_take_the_convolutions_from_ynnpack_and_compute_the_same():
  """On CPUs XLA's defaults give YNNPACK convolutions, matmuls and reductions of the CIFAR-10
  net's loss gradient; `sharding.compiler_options()` keeps the convolutions with XLA's own
  kernels, and the loss and gradients equal those of XLA's defaults to float32 rounding."""
  config = cifar10.get_config()
  model = models.create_model(config)
  images = jax.random.normal(jax.random.key(1), (8, 24, 24, 3)) * 60
  labels = jnp.arange(8) % config.num_classes
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]

  def loss(params):
    logits = model.apply({"params": params}, images)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  grad = jax.value_and_grad(loss)
  compiled = {
    name: jax.jit(grad, compiler_options=options).lower(params).compile()
    for name, options in (("xla", None), ("ours", sharding.compiler_options()))
  }
  ynn = {name: ynn_ops(c.as_text()) for name, c in compiled.items()}
  assert ynn["xla"] == {"conv_general_dilated", "dot_general", "reduce_sum"}, ynn
  assert ynn["ours"] == {"dot_general", "reduce_sum"}, ynn
  (want_loss, want), (got_loss, got) = (c(params) for c in compiled.values())
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


@pytest.mark.parametrize("separable", [True, False])
def test_bfloat16_computes_in_bfloat16_with_float32_parameters(separable, monkeypatch):
  """Mixed precision: bfloat16 convolutions and matmuls; float32 parameters, LRN and logits,
  within 2% of the float32 net's largest logit (the step's gradients: test_train), with the
  CPU's pooling and with XLA's (that of GPUs and TPUs)."""
  monkeypatch.setattr(pooling, "separable", lambda: separable)
  config = smoke.get_config()  # two columns, LRN, max and average pooling, an fc layer
  images = jax.random.normal(jax.random.key(1), (32, 24, 24, 3)) * 60
  nets = {}
  for dtype in ("float32", "bfloat16"):
    config.model.dtype = dtype
    nets[dtype] = models.create_model(config)
  params = jax.jit(nets["float32"].init)(jax.random.key(0), images[:1])["params"]
  want, got = (jax.jit(net.apply)({"params": params}, images) for net in nets.values())
  assert got.dtype == jnp.float32
  assert jnp.abs(got - want).max() <= 0.02 * jnp.abs(want).max()
  jaxpr = str(jax.make_jaxpr(nets["bfloat16"].apply)({"params": params}, images)).splitlines()
  convs = [line for line in jaxpr if "conv_general_dilated" in line]
  assert len(convs) == 3 * 2 and all("bf16[" in line for line in convs), convs  # 3 layers x 2
  assert any("dot_general" in line and "bf16[" in line for line in jaxpr)
  lrn = [line for line in jaxpr if "rsqrt" in line]  # the LRN's denominator ** -0.75
  assert lrn and all("f32[" in line and "bf16[" not in line for line in lrn), lrn


def test_unknown_dtype_is_a_config_error():
  config = alexnet.get_config()
  config.model.dtype = "float16"
  with pytest.raises(ValueError, match="config.model.dtype='float16'"):
    models.create_model(config)


@pytest.mark.parametrize("separable", [True, False])
def test_partial_windows_pool_over_the_pixels_inside_the_map(separable, monkeypatch):
  """cuda-convnet's sizes: a 6x6 map, windows of 3, stride 2: 3x3 outputs (2x2 without partial
  windows), the last row and column of windows holding 2 pixels of each side. On 0..35 in
  row-major order (less 100: negative, so that a padding of zeros would show as a maximum),
  max: [[14, 16, 17], [26, 28, 29], [32, 34, 35]]; the mean of the last window of the first
  column is that of 24, 25, 26, 30, 31, 32: 28 (not 28 x 6/9); of the corner, of 28, 29, 34,
  35: 31.5."""
  monkeypatch.setattr(pooling, "separable", lambda: separable)  # the CPU's pooling, or XLA's
  config = smoke.get_config()
  config.model.pool.update(window=3, stride=2, partial_windows=True)
  model = models.create_model(config)
  x = jnp.arange(36.0).reshape(1, 6, 6, 1) - 100
  pool = lambda kind, x: model.apply({}, x, method=lambda m, x: m._pool(kind, x))  # noqa: E731
  want_max = np.array([[14, 16, 17], [26, 28, 29], [32, 34, 35]])
  np.testing.assert_array_equal(pool("max", x)[0, ..., 0], want_max - 100)
  mean = pool("avg", x)[0, ..., 0]
  assert mean.shape == (3, 3) and mean[0, 0] == -93 and mean[2, 0] == -72 and mean[2, 2] == -68.5
  grad = jax.grad(lambda x: pool("max", x).sum())(x)[0, ..., 0]
  np.testing.assert_array_equal(np.flatnonzero(grad), want_max.ravel())  # 1 at each maximum
  config.model.pool.partial_windows = False
  assert (
    models.create_model(config).apply({}, x, method=lambda m, x: m._pool("max", x)).shape[1] == 2
  )
  assert [pooling.partial_window_pad(n, 3, 2) for n in (55, 27, 13, 24, 12, 6)] == [0] * 3 + [1] * 3
