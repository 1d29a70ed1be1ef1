"""The maths of the train and eval steps: metrics, masked means, the learning rate that reaches
the update and the 10-view average, against hand-worked values and numpy, with a stub network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import alexnet
from supervision import optim, steps

S, C, K = 12, 8, 10  # image size, crop size, classes


class PixelLinear:
  """A stand-in for the network: logits[n, k] = sum of x[n, h, w, c] kernel[h, w, c, k], + bias."""

  def apply(self, variables, x, **kwargs):
    p = variables["params"]["fc"]
    return jnp.einsum("nhwc,hwck->nk", x, p["kernel"]) + p["bias"]


def log_softmax(logits):
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.fixture
def config():
  config = alexnet.get_config()
  config.image_size, config.crop_size, config.num_classes = S, C, K
  return config


@pytest.fixture
def params():
  rng = np.random.default_rng(0)
  kernel = rng.normal(0, 0.002, (C, C, 3, K)).astype(np.float32)
  return {"fc": {"kernel": kernel, "bias": rng.normal(0, 0.5, K).astype(np.float32)}}


def test_metrics_of_hand_made_log_probabilities():
  log_probs = jnp.array(
    [
      [-0.1, -3, -4, -5, -6, -7, -8],  # label 0 ranks first
      [-1, -2, -3, -0.5, -4, -6, -7],  # label 2 ranks fourth: a top-5 hit, a top-1 error
      [-1, -2, -3, -4, -5, -6, -0.5],  # label 5 ranks seventh
    ]
  )
  got = steps.classification_metrics(log_probs, jnp.array([0, 2, 5]))
  np.testing.assert_allclose(got["loss"], [0.1, 3, 6], rtol=1e-6)
  assert got["top1_error"].tolist() == [0, 1, 1]
  assert got["top5_error"].tolist() == [0, 0, 1], "top-5 error: the label is not among the top 5"


def test_example_weights_average_over_the_unmasked_examples():
  weights = steps.example_weights(jnp.array([True, False, True, True, False]))
  np.testing.assert_allclose(weights, [1 / 3, 0, 1 / 3, 1 / 3, 0], err_msg="not / unmasked count")
  assert steps.example_weights(jnp.zeros(4, bool)).tolist() == [0.0] * 4  # no NaN


@pytest.fixture
def flat_batch():
  """8 images, each of one colour (so every crop and reflection is the same), 6 unmasked; the
  masked rows have other colours and labels, as padding or unreadable files might."""
  rng = np.random.default_rng(1)
  colours = rng.integers(0, 256, (8, 3))
  image = np.broadcast_to(colours[:, None, None, :], (8, S, S, 3)).astype(np.uint8)
  mask = np.array([True, True, False, True, True, True, False, True])
  return dict(image=image, label=rng.integers(0, K, 8).astype(np.int32), mask=mask)


def test_train_step_takes_the_masked_mean_and_the_papers_update(config, params, flat_batch):
  """With one-colour images and no lighting noise (eigenvalues 0) the views are known exactly:
  the reported loss and error are the means over the unmasked examples, and the update is
  w - lr (gradient of that mean + 0.0005 w), biases not decayed (no momentum yet)."""
  mean = np.array([100.0, 120.0, 140.0], np.float32)
  stats = dict(mean=np.broadcast_to(mean, (S, S, 3)), eigvals=np.zeros(3, np.float32))
  stats["eigvecs"] = np.eye(3, dtype=np.float32)
  tx = optim.create_optimizer(config)
  state = steps.state_from_params(params, tx, jax.random.key(0))
  step = jax.jit(
    functools.partial(
      steps.train_step, model=PixelLinear(), tx=tx, lr_fn=optim.learning_rate_fn(config, 10),
      config=config,
    )
  )  # fmt: skip
  new, metrics = jax.device_get(step(state, flat_batch, stats, 1.0))

  views = flat_batch["image"][:, 0, 0].astype(np.float64) - mean  # [8, 3]
  kernel = params["fc"]["kernel"].astype(np.float64)
  logits = views @ kernel.sum(axis=(0, 1)) + params["fc"]["bias"]
  log_probs = log_softmax(logits)
  labels, mask = flat_batch["label"], flat_batch["mask"]
  losses = -log_probs[np.arange(8), labels]
  np.testing.assert_allclose(
    metrics["loss"], losses[mask].mean(), rtol=1e-5,
    err_msg="the reported loss is not the mean over the 6 unmasked examples",
  )  # fmt: skip
  errors = log_probs.argmax(axis=-1) != labels
  np.testing.assert_allclose(metrics["top1_error"], errors[mask].mean(), rtol=1e-6)

  weights = mask / mask.sum()
  dlogits = weights[:, None] * (np.exp(log_probs) - np.eye(K)[labels])  # [8, K]
  grad = np.broadcast_to(views.T @ dlogits, kernel.shape)  # the same at every pixel
  want = dict(kernel=-0.01 * (grad + 5e-4 * kernel), bias=-0.01 * dlogits.sum(axis=0))
  moved = {name: new.params["fc"][name] - params["fc"][name] for name in want}
  for name, what in (("kernel", "w - lr (gradient + 0.0005 w)"), ("bias", "b - lr gradient")):
    np.testing.assert_allclose(
      moved[name], want[name], rtol=1e-3, atol=float32_eps(params, name),
      err_msg=f"the {name}'s update is not {what}, the gradient of the masked mean",
    )  # fmt: skip
  assert metrics["learning_rate"] == pytest.approx(0.01)

  # A plateau drop (lr_scale 0.1) from the same state: 0.1x the step, and lr 0.001 reported.
  dropped, metrics = jax.device_get(step(state, flat_batch, stats, 0.1))
  for name in want:
    np.testing.assert_allclose(
      dropped.params["fc"][name] - params["fc"][name], 0.1 * moved[name], rtol=1e-4,
      atol=float32_eps(params, name),
      err_msg=f"with lr_scale 0.1 the {name} does not move 0.1x as far: the optimizer's"
      " learning rate does not follow the plateau scale",
    )  # fmt: skip
  assert metrics["learning_rate"] == pytest.approx(0.001), "reported learning rate"


def float32_eps(params, name):
  """What float32 rounding leaves of a difference of parameters `name` and the updated ones."""
  return 4 * np.finfo(np.float32).eps * np.abs(params["fc"][name]).max()


def ten_views_reference(images, mean):
  """The corner and centre C x C patches of each image and their reflections: [B, 10, C, C, 3]."""
  x = images.astype(np.float64) - mean
  far = S - C
  corners = [(0, 0), (0, far), (far, 0), (far, far), (far // 2, far // 2)]
  patches = np.stack([x[:, r : r + C, c : c + C] for r, c in corners], axis=1)
  return np.concatenate([patches, patches[:, :, :, ::-1]], axis=1)


def metric_sums(log_probs, labels, mask):
  ranks = (log_probs > log_probs[np.arange(len(labels)), labels][:, None]).sum(axis=-1)
  metrics = dict(
    loss=-log_probs[np.arange(len(labels)), labels], top1_error=ranks > 0, top5_error=ranks >= 5
  )
  return {k: float(v[mask].sum()) for k, v in metrics.items()} | {"count": float(mask.sum())}


@pytest.mark.parametrize("ten_views", [False, True])
def test_eval_step_sums_over_unmasked_images(config, params, ten_views):
  """Sums over the 3 unmasked of 5 images (the padded rows hold images and labels too); with
  ten_views each image's 10 views' softmaxes averaged (the stub sees where and which way each
  view was cut)."""
  rng = np.random.default_rng(2)
  batch = dict(
    image=rng.integers(0, 256, (5, S, S, 3)).astype(np.uint8),
    label=rng.integers(0, K, 5).astype(np.int32),
    mask=np.array([True, False, True, True, False]),
  )
  stats = dict(mean=rng.uniform(0, 255, (S, S, 3)).astype(np.float32))
  stats |= dict(eigvals=np.ones(3, np.float32), eigvecs=np.eye(3, dtype=np.float32))
  got = steps.eval_step(
    params, batch, stats, model=PixelLinear(), config=config, ten_views=ten_views
  )
  views = ten_views_reference(batch["image"], stats["mean"])  # [5, 10, C, C, 3]
  if not ten_views:
    views = views[:, 4:5]  # the centre patch
  kernel, bias = params["fc"]["kernel"], params["fc"]["bias"]
  logits = np.einsum("bvhwc,hwck->bvk", views, kernel) + bias
  probs = np.exp(log_softmax(logits)).mean(axis=1)  # per image, over its own views
  want = metric_sums(np.log(probs), batch["label"], batch["mask"])
  what = "10-view softmax average per image" if ten_views else "central view"
  assert got["count"] == 3, "padded rows counted"
  np.testing.assert_allclose(
    [float(got[k]) for k in want], list(want.values()), rtol=1e-5,
    err_msg=f"eval sums of loss, top-1, top-5, count ({what}) over the unmasked images",
  )  # fmt: skip
