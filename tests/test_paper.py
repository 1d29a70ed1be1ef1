"""The paper's constants, pinned: every reference value below is a literal from Krizhevsky,
Sutskever & Hinton (2012) (or, for CIFAR-10, cuda-convnet's layers-18pct net), never read from
the config under test, and the networks are checked against numpy forward passes written out
from those literals."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_models import lrn_reference
from test_sharding import random_params

from configs import alexnet, cifar10
from supervision import models, optim

# Figure 2: (layer, kernels of both columns, kernel size, stride, padding ((top, bottom), (left,
# right)), what each column reads, LRN after its ReLU, pooling after that). 224 -> 55 -> 27 -> 13
# -> 13 -> 13 -> 6: conv1 pads 3 after (cuda-convnet's 1 + ceil((224 - 11) / 4) = 55 outputs).
ALEXNET_CONV = (
  ("conv1", 96, 11, 4, ((0, 3), (0, 3)), "image", True, "max"),
  ("conv2", 256, 5, 1, ((2, 2), (2, 2)), "own", True, "max"),
  ("conv3", 384, 3, 1, ((1, 1), (1, 1)), "all", False, ""),
  ("conv4", 384, 3, 1, ((1, 1), (1, 1)), "own", False, ""),
  ("conv5", 256, 3, 1, ((1, 1), (1, 1)), "own", False, "max"),
)
ALEXNET_DENSE = (("fc6", 4096), ("fc7", 4096), ("fc8", 1000))  # each reads both columns
ALEXNET_SHAPES = {  # per column: (columns, ..., kernels of one column)
  "conv1": (2, 11, 11, 3, 48),
  "conv2": (2, 5, 5, 48, 128),
  "conv3": (2, 3, 3, 256, 192),
  "conv4": (2, 3, 3, 192, 192),
  "conv5": (2, 3, 3, 192, 128),
  "fc6": (2, 6 * 6 * 256, 2048),
  "fc7": (2, 4096, 2048),
  "fc8": (2, 4096, 500),
}
LRN = dict(k=2.0, n=5, alpha=1e-4, beta=0.75)  # "Local Response Normalization"; alpha not / n
POOL = dict(window=3, stride=2)  # "Overlapping Pooling": z = 3, s = 2
DROPOUT_RATE = 0.5  # on the outputs of fc6 and fc7
# At test time the paper multiplies the outputs of the dropout layers by 0.5 (the default
# config.model.dropout_form "paper"; "inverted" scales in training instead).
TEST_TIME_DROPOUT_SCALE = 0.5
INIT_STD = 0.01
BIAS_ONE = {"conv2", "conv4", "conv5", "fc6", "fc7"}  # biases 1 here, 0 elsewhere

# cuda-convnet's layers-18pct CIFAR-10 net: three 5x5 conv layers, one column, then softmax.
CIFAR10_CONV = (
  ("conv1", 32, 5, 1, ((2, 2), (2, 2)), "image", True, "max"),
  ("conv2", 32, 5, 1, ((2, 2), (2, 2)), "own", True, "avg"),
  ("conv3", 64, 5, 1, ((2, 2), (2, 2)), "own", False, "avg"),
)
CIFAR10_DENSE = (("fc4", 10),)
# Its pooling gives ceil((size - 3) / 2) + 1 outputs (the last window runs past the edge).
CIFAR10_POOL = dict(window=3, stride=2, partial_windows=True)
CIFAR10_SHAPES = {  # 24 -> 24 -> 12 -> 12 -> 6 -> 6 -> 3
  "conv1": (1, 5, 5, 3, 32),
  "conv2": (1, 5, 5, 32, 32),
  "conv3": (1, 5, 5, 32, 64),
  "fc4": (1, 3 * 3 * 64, 10),
}


FIELDS = ("kernels", "size", "stride", "padding", "reads", "lrn", "pool")


def flat_table(table):
  """{"<layer>.<field>": value} of a layer table in the form of ALEXNET_CONV."""
  return {f"{r[0]}.{key}": value for r in table for key, value in zip(FIELDS, r[1:], strict=True)}


def layer_table(config):
  """The config's conv layers as `flat_table` gives the literal ones (what a layer reads as the
  model declares it; "SAME" at stride 1 pads (k - 1) / 2 on each side, as the forward pass
  checks)."""
  reads = dict(models.create_model(config).layer_reads())

  def pads(c):
    same = ((c["kernel"] // 2,) * 2,) * 2
    return same if c["padding"] == "SAME" else tuple(tuple(p) for p in c["padding"])

  return flat_table(
    (c["name"], c["features"], c["kernel"], c["stride"], pads(c), reads[c["name"]], c["lrn"])
    + (c["pool"],)
    for c in config.model.conv
  )


def param_shapes(config, size):
  images = jnp.zeros((1, size, size, 3))
  shapes = jax.eval_shape(models.create_model(config).init, jax.random.key(0), images)["params"]
  return {name: p["kernel"].shape for name, p in shapes.items()}


def test_alexnet_layers_are_the_papers():
  """Figure 2's layer table, the FC layers reading both columns, LRN, pooling, dropout, init."""
  config = alexnet.get_config()
  m = config.model
  fc_reads = {f"{name}.reads": r for name, r in models.create_model(config).layer_reads()[5:]}
  got = layer_table(config) | fc_reads | {"fc.features": (*m.dense, config.num_classes)}
  got |= {"columns": m.columns, "activation": m.activation, "dropout_rate": m.dropout_rate}
  got |= {f"lrn.{k}": m.lrn[k] for k in ("k", "n", "alpha", "beta", "alpha_over_n")}
  got |= {f"pool.{k}": v for k, v in m.pool.items()}
  got |= {"init_std": m.init_std, "init_bias_one": set(m.init_bias_one)}
  want = flat_table(ALEXNET_CONV) | {f"{name}.reads": "all" for name, _ in ALEXNET_DENSE}
  want |= {"fc.features": tuple(n for _, n in ALEXNET_DENSE)}
  want |= {"columns": 2, "activation": "relu", "dropout_rate": DROPOUT_RATE}
  want |= {f"lrn.{k}": v for k, v in LRN.items()} | {"lrn.alpha_over_n": False}
  want |= {f"pool.{k}": v for k, v in POOL.items()} | {"pool.partial_windows": False}
  want |= {"init_std": INIT_STD, "init_bias_one": BIAS_ONE}
  assert got == want


def test_alexnet_parameters_per_column():
  got = param_shapes(alexnet.get_config(), 224)
  assert got == ALEXNET_SHAPES


def test_training_recipe_is_the_papers():
  """ "Details of learning" and "Data Augmentation": batch 128, 90 epochs, lr 0.01 divided by 10
  on a plateau (3 times), momentum 0.9, weight decay 0.0005, 224 crops of 256 images, PCA
  lighting std 0.1."""
  want = dict(batch_size=128, num_epochs=90, image_size=256, crop_size=224)
  want |= dict(learning_rate=0.01, momentum=0.9, weight_decay=5e-4, lr_schedule="plateau")
  want |= dict(lr_drop_factor=0.1, max_lr_drops=3, pca_lighting_std=0.1)
  config = alexnet.get_config()
  assert {k: config[k] for k in want} == want


def test_optimizer_is_the_papers_update_rule():
  """Two steps of the configured optimizer against v <- 0.9 v - 0.0005 lr w - lr g, w <- w + v."""
  tx = optim.create_optimizer(alexnet.get_config())
  w = np.array([1.0, -2.0, 3.0])
  grads = [np.array([0.5, 0.25, -1.0]), np.array([-0.3, 0.7, 0.2])]
  params = {"fc": {"kernel": jnp.asarray(w, jnp.float32)}}
  state, v = tx.init(params), np.zeros(3)
  for g in grads:
    updates, state = tx.update({"fc": {"kernel": jnp.asarray(g, jnp.float32)}}, state, params)
    params = optax.apply_updates(params, updates)
    v = 0.9 * v - 0.0005 * 0.01 * w - 0.01 * g
    w = w + v
  np.testing.assert_allclose(params["fc"]["kernel"], w, rtol=1e-6, err_msg="momentum 0.9, lr 0.01")


def test_lrn_default_is_the_papers_formula():
  a = np.random.default_rng(0).uniform(0, 40, (2, 3, 9)).astype(np.float32)
  got = models.local_response_norm(jnp.asarray(a), **LRN)
  want = lrn_reference(a, **LRN, alpha_over_n=False)
  np.testing.assert_allclose(got, want, rtol=1e-6, err_msg="LRN's default divides alpha by n?")


# The numpy forward pass.


def conv_reference(x, kernel, bias, stride, pads):
  """x [B, H, W, C] convolved with kernel [k, k, C, K] (im2col and einsum), plus bias."""
  x = np.pad(x, ((0, 0), *pads, (0, 0)))
  k = kernel.shape[0]
  rows, cols = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
  patches = np.stack(
    [
      x[:, i : i + stride * (rows - 1) + 1 : stride, j : j + stride * (cols - 1) + 1 : stride]
      for i in range(k)
      for j in range(k)
    ],
    axis=3,
  )  # [B, rows, cols, k * k, C]
  return np.einsum("bhwpc,pck->bhwk", patches, kernel.reshape(k * k, *kernel.shape[2:])) + bias


def pool_reference(x, kind, window, stride, partial_windows=False):
  """Max or average over window x window patches, one starting every `stride` pixels while it
  ends inside the map (no padding); with `partial_windows` (cuda-convnet's), also the one whose
  end first passes the edge, reduced over its pixels inside the map."""
  end = x.shape[1] - window + (stride if partial_windows else 1)
  starts = range(0, end, stride)
  reduce = np.max if kind == "max" else np.mean
  out = np.empty((x.shape[0], len(starts), len(starts), x.shape[-1]))
  for i, top in enumerate(starts):
    for j, left in enumerate(starts):
      out[:, i, j] = reduce(x[:, top : top + window, left : left + window], axis=(1, 2))
  return out


def relu(x):
  return np.maximum(x, 0)


def forward_reference(
  images, params, conv, dense, columns, act=relu, pool=POOL, dropout_scale=1.0, lrn=True,
  lrn_constants=LRN, lrn_after_pool=False,
):  # fmt: skip
  """The net of the layer tables `conv` and `dense` in float64 numpy: returns {layer: output
  before its activation, [column, batch, ...]} and the logits. LRN (the paper's form, alpha not
  divided by n) with `lrn_constants`, after the pooling with `lrn_after_pool`.

  Column c of a layer reading "own" maps sees column c of the layer below; "image" and "all"
  layers see everything, the maps of column 0 first. The FC layers read the flattened [H, W,
  maps] of both columns; the dropout layers after all but the last multiply by
  `dropout_scale`.
  """
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  outputs, x = {}, None
  for name, _, _, stride, pads, reads, has_lrn, pooling in conv:
    w, b = p[name]["kernel"], p[name]["bias"]
    if reads == "image":
      inputs = [images] * columns
    elif reads == "own":
      inputs = x
    else:
      inputs = [np.concatenate(x, axis=-1)] * columns
    y = [conv_reference(inputs[c], w[c], b[c], stride, pads) for c in range(columns)]
    outputs[name] = np.stack(y)
    x = [act(v) for v in y]
    for stage in ("pool", "lrn") if lrn_after_pool else ("lrn", "pool"):
      if stage == "lrn" and has_lrn and lrn:
        x = [lrn_reference(v, **lrn_constants, alpha_over_n=False) for v in x]
      if stage == "pool" and pooling:
        x = [pool_reference(v, pooling, **pool) for v in x]
  x = np.concatenate(x, axis=-1).reshape(len(images), -1)
  for i, (name, _) in enumerate(dense):
    w, b = p[name]["kernel"], p[name]["bias"]
    y = [x @ w[c] + b[c] for c in range(columns)]
    outputs[name] = np.stack(y)
    x = np.concatenate(y, axis=-1)
    if i < len(dense) - 1:
      x = dropout_scale * act(x)
  return outputs, x


def model_outputs(model, params, images):
  """{layer: output before its activation} and the logits of `model` in eval mode."""

  def apply(params, images):
    logits, state = model.apply(
      {"params": params}, images, capture_intermediates=True, mutable=["intermediates"]
    )
    found = state["intermediates"].items()  # the layers', the net's own output and features
    layers = {k: v["__call__"][0] for k, v in found if isinstance(v, dict)}
    return layers, logits

  return jax.device_get(jax.jit(apply)(params, jnp.asarray(images, jnp.float32)))


def assert_layers_equal(got, want, names, what):
  for name in names:
    assert got[name].shape == want[name].shape, f"{what}: {name} has shape {got[name].shape}"
    np.testing.assert_allclose(
      got[name], want[name], rtol=1e-4, atol=1e-4 * np.abs(want[name]).max(),
      err_msg=f"{what}: the output of {name} (before its activation) is not the paper's",
    )  # fmt: skip


def pixels(shape, seed=0):
  """Random mean-subtracted pixel values on the 0-255 scale."""
  rng = np.random.default_rng(seed)
  return rng.normal(0, 60, shape).astype(np.float32)


@pytest.fixture(scope="module")
def alexnet_forward(alexnet_params):
  """The model's layers and logits on one 224x224 image next to the numpy forward pass's;
  conv1's kernels are scaled by 5, so that LRN's alpha term weighs (k + alpha sum ~ 2 + 4)."""
  model, params = alexnet_params
  params = dict(params, conv1=dict(params["conv1"], kernel=params["conv1"]["kernel"] * 5))
  images = pixels((1, 224, 224, 3))
  got = model_outputs(model, params, images)
  want = forward_reference(
    images, params, ALEXNET_CONV, ALEXNET_DENSE, 2, dropout_scale=TEST_TIME_DROPOUT_SCALE
  )
  return got, want


def test_alexnet_equals_a_numpy_forward_pass_up_to_dropout(alexnet_forward):
  (got, _), (want, _) = alexnet_forward
  assert_layers_equal(got, want, ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"], "AlexNet")


def test_alexnet_logits_halve_fc6_and_fc7_at_test_time(alexnet_forward):
  """fc7 and fc8 read the outputs of fc6 and fc7 times 0.5."""
  (_, logits), (_, want) = alexnet_forward
  np.testing.assert_allclose(
    logits, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
    err_msg="AlexNet's logits: at test time fc6 and fc7 outputs are multiplied by 0.5",
  )  # fmt: skip


def test_cifar10_is_cuda_convnets_18pct_net():
  config = cifar10.get_config()
  got = layer_table(config) | dict(dense=config.model.dense, num_classes=config.num_classes)
  got |= dict(columns=config.model.columns, image_size=config.image_size, crop=config.crop_size)
  want = flat_table(CIFAR10_CONV) | dict(dense=(), num_classes=10, columns=1)
  assert got == want | dict(image_size=32, crop=24)
  assert param_shapes(config, 24) == CIFAR10_SHAPES
  params = random_params(config)
  images = pixels((2, 24, 24, 3))
  got, logits = model_outputs(models.create_model(config), params, images)
  want, want_logits = forward_reference(
    images, params, CIFAR10_CONV, CIFAR10_DENSE, 1, pool=CIFAR10_POOL
  )
  assert_layers_equal(got, want, ["conv1", "conv2", "conv3", "fc4"], "CIFAR-10 net")
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-5)


def test_lrn_after_pool_normalizes_the_pooled_maps():
  """config.model.lrn.after_pool with cuda-convnet's CIFAR-10 rnorm (3 maps, scale 5e-5 divided by
  the size, plus 1): LRN follows each layer's pooling, against numpy. conv1's kernels are scaled
  by 20, so that the alpha term weighs."""
  config = cifar10.get_config()
  config.model.lrn.update(k=1.0, n=3, alpha=5e-5, alpha_over_n=True, after_pool=True)
  params = random_params(config)
  params = dict(params, conv1=dict(params["conv1"], kernel=params["conv1"]["kernel"] * 20))
  images = pixels((2, 24, 24, 3))
  got, logits = model_outputs(models.create_model(config), params, images)
  rnorm = dict(k=1.0, n=3, alpha=5e-5 / 3, beta=0.75)
  want, want_logits = forward_reference(
    images, params, CIFAR10_CONV, CIFAR10_DENSE, 1, pool=CIFAR10_POOL, lrn_constants=rnorm,
    lrn_after_pool=True,
  )  # fmt: skip
  assert_layers_equal(got, want, ["conv1", "conv2", "conv3", "fc4"], "LRN after pooling")
  np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-5)


def flat_config(config):
  """{"a.b": value} for every leaf of `config`; conv layers as "model.conv.<name>.<key>"."""
  d = config.to_dict()
  convs = d["model"].pop("conv")
  out = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for key, v in value.items():
        walk(f"{prefix}{key}.", v)
    else:
      out[prefix[:-1]] = value

  walk("", d)
  for c in convs:
    out |= {f"model.conv.{c['name']}.{k}": v for k, v in c.items()}
  return out


PAPER_CONV6 = dict(
  name="conv6", features=256, kernel=3, stride=1, padding="SAME", reads="own", lrn=False, pool=""
)
VARIANT_CHANGES = {  # (the paper's value, the variant's)
  "one_column": {
    "model.columns": (2, 1),
    "model.conv.conv1.features": (96, 48),
    "model.conv.conv2.features": (256, 128),
    "model.conv.conv3.features": (384, 192),
    "model.conv.conv4.features": (384, 192),
  },
  "no_lrn": {"model.conv.conv1.lrn": (True, False), "model.conv.conv2.lrn": (True, False)},
  "non_overlapping_pool": {"model.pool.window": (3, 2)},
  "six_conv": {f"model.conv.conv6.{k}": (None, v) for k, v in PAPER_CONV6.items()}
  | {  # its FC layers are fc7-fc9: the hidden ones are fc7 and fc8
    "model.init_bias_one": (
      tuple(sorted(BIAS_ONE)),
      ("conv2", "conv4", "conv5", "conv6", "fc7", "fc8"),
    )
  },
  "tanh": {"model.activation": ("relu", "tanh")},
  "caffe": {  # bvlc_alexnet: 227 crops give 55 unpadded; Caffe's LRN and dropout; BGR input
    "crop_size": (224, 227),
    "channel_order": ("rgb", "bgr"),
    "model.conv.conv1.padding": (((0, 3), (0, 3)), ((0, 0), (0, 0))),
    "model.lrn.k": (2.0, 1.0),
    "model.lrn.alpha_over_n": (False, True),
    "model.lrn.across_columns": (False, True),
    "model.dropout_form": ("paper", "inverted"),
  },
}


@pytest.mark.parametrize("variant", alexnet.VARIANTS)
def test_variants_change_only_what_they_name(variant):
  base, other = flat_config(alexnet.get_config()), flat_config(alexnet.get_config(variant))
  changed = {k: (base.get(k), other.get(k)) for k in base | other if base.get(k) != other.get(k)}
  if "model.init_bias_one" in changed:
    changed["model.init_bias_one"] = tuple(tuple(sorted(v)) for v in changed["model.init_bias_one"])
  assert changed == VARIANT_CHANGES[variant]


def test_variants_parameters_per_column():
  one_column = {
    "conv1": (1, 11, 11, 3, 48),
    "conv2": (1, 5, 5, 48, 128),
    "conv3": (1, 3, 3, 128, 192),
    "conv4": (1, 3, 3, 192, 192),
    "conv5": (1, 3, 3, 192, 256),
    "fc6": (1, 6 * 6 * 256, 4096),
    "fc7": (1, 4096, 4096),
    "fc8": (1, 4096, 1000),
  }
  assert param_shapes(alexnet.get_config("one_column"), 224) == one_column
  # The FC layers are numbered after the conv layers: fc7, fc8, fc9 after conv6.
  six_conv = {k: v for k, v in ALEXNET_SHAPES.items() if k.startswith("conv")}
  six_conv |= {"conv6": (2, 3, 3, 128, 128), "fc7": (2, 6 * 6 * 256, 2048)}
  six_conv |= {"fc8": (2, 4096, 2048), "fc9": (2, 4096, 500)}
  assert param_shapes(alexnet.get_config("six_conv"), 224) == six_conv
  for variant in ("no_lrn", "non_overlapping_pool", "tanh"):
    assert param_shapes(alexnet.get_config(variant), 224) == ALEXNET_SHAPES, variant
  # bvlc_alexnet's 227 crops, unpadded, give the paper's 55 x 55 conv1 and 6 x 6 x 256 fc6 inputs.
  assert param_shapes(alexnet.get_config("caffe"), 227) == ALEXNET_SHAPES


@pytest.mark.parametrize("variant", ["", *alexnet.VARIANTS])
def test_hidden_fc_layers_start_with_bias_one(variant):
  """The paper: biases 1 "in the fully-connected hidden layers"."""
  config = alexnet.get_config(variant)
  hidden = models.create_model(config).dense_names()[:-1]
  assert set(hidden) <= set(config.model.init_bias_one), (hidden, config.model.init_bias_one)


def test_variant_settings_equal_a_numpy_forward_pass():
  """The variants' settings all at once (one compilation: each variant's config is the paper's
  with exactly its changes, above): one column of half the kernels in conv1-conv4, no LRN, 2x2
  pooling of stride 2, a sixth conv layer and tanh units, against the numpy net changed alike;
  the conv layers and fc7 (the first FC layer) on a 67x67 crop (conv1 15, pooled 7, conv2 7,
  pooled 3, conv3-6 3, pooled 1)."""
  config = alexnet.get_config("one_column")
  for variant in ("no_lrn", "non_overlapping_pool", "six_conv", "tanh"):
    alexnet.apply_variant(config, variant)
  features = (48, 128, 192, 192, 256)
  conv = [(c[0], f, *c[2:]) for c, f in zip(ALEXNET_CONV, features, strict=True)]
  conv.append(("conv6", 256, 3, 1, ((1, 1), (1, 1)), "own", False, ""))
  dense = (("fc7", 4096), ("fc8", 4096), ("fc9", 1000))
  config.image_size, config.crop_size = 72, 67
  params = random_params(config)
  images = pixels((1, 67, 67, 3))
  got, _ = model_outputs(models.create_model(config), params, images)
  want, _ = forward_reference(
    images, params, conv, dense, columns=1, act=np.tanh, pool=dict(window=2, stride=2), lrn=False
  )
  assert_layers_equal(got, want, [c[0] for c in conv] + ["fc7"], "the variants' settings")


# configs/cifar10.py's variants against its net: cuda-convnet's CIFAR-10 configs (layers-80sec,
# layers-18pct: initW 0.0001 for conv1, 0.01 for the others; rnorm size 3, scale 0.00005, pow
# 0.75, scale divided by the size plus 1, after the pooling) and Figure 1's "no regularization".
CUDA_CONVNET_INIT = {
  "model.layer_init_std.conv1": (None, 1e-4),
  "model.layer_init_std.conv2": (None, 1e-2),
  "model.layer_init_std.conv3": (None, 1e-2),
  "model.layer_init_std.fc4": (None, 1e-2),
}
CIFAR10_NO_LRN = {"model.conv.conv1.lrn": (True, False), "model.conv.conv2.lrn": (True, False)}
CIFAR10_VARIANT_CHANGES = {  # (cifar10.py's value, the variant's)
  "no_lrn": CIFAR10_NO_LRN,
  "figure1": CIFAR10_NO_LRN
  | CUDA_CONVNET_INIT
  | {
    "model.dropout_rate": (0.5, 0.0),
    "weight_decay": (5e-4, 0.0),
    "augmentation.random_crop": (True, False),
    "augmentation.flip": (True, False),
    "augmentation.lighting": (True, False),
    "lr_schedule": ("step", "constant"),
    "num_epochs": (12, 10),
    "stop_at_train_error": (-1.0, 0.25),
    "log_every_steps": (50, 39),  # 0.1 epoch of 390 steps of 128
  },
  "layers_18pct": CUDA_CONVNET_INIT
  | {
    "model.lrn.k": (2.0, 1.0),
    "model.lrn.n": (5, 3),
    "model.lrn.alpha": (1e-4, 5e-5),
    "model.lrn.alpha_over_n": (False, True),
    "model.lrn.after_pool": (False, True),
  },
  "layers_18pct_no_lrn": CIFAR10_NO_LRN | CUDA_CONVNET_INIT,
  "hidden_fc": {"model.dense": ((), (256,))},
}


@pytest.mark.parametrize("variant", cifar10.VARIANTS)
def test_cifar10_variants_change_only_what_they_name(variant):
  base, other = flat_config(cifar10.get_config()), flat_config(cifar10.get_config(variant))
  changed = {k: (base.get(k), other.get(k)) for k in base | other if base.get(k) != other.get(k)}
  assert changed == CIFAR10_VARIANT_CHANGES[variant]


def test_cifar10_recipe_the_variants_keep():
  """Batch 128, momentum 0.9, lr 0.01, LRN's beta 0.75, dropout 0.5 (hidden_fc's fc4), biases 0."""
  config = cifar10.get_config()
  assert (config.batch_size, config.momentum, config.learning_rate) == (128, 0.9, 0.01)
  assert (config.model.lrn.beta, config.model.dropout_rate, config.model.init_bias_one) == (
    0.75, 0.5, (),
  )  # fmt: skip


def test_cifar10_hidden_fc_shapes():
  """fc4: 256 ReLUs on the 3 x 3 x 64 pooled conv3 maps; fc5 the classifier."""
  shapes = dict(CIFAR10_SHAPES, fc4=(1, 3 * 3 * 64, 256), fc5=(1, 256, 10))
  assert param_shapes(cifar10.get_config("hidden_fc"), 24) == shapes
