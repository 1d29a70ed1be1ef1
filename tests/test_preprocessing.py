"""Device-side preprocessing ("The Dataset", "Data Augmentation") against numpy computations."""

import functools

import jax
import numpy as np
import pytest

from configs import alexnet
from supervision import preprocessing as pp

S, C, B = 12, 8, 5


@pytest.fixture
def config():
  config = alexnet.get_config()
  config.image_size, config.crop_size = S, C
  return config


@pytest.fixture
def images():
  return np.random.default_rng(0).integers(0, 256, (B, S, S, 3), np.uint8)


@pytest.fixture
def stats():
  rng = np.random.default_rng(1)
  eigvecs, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  return dict(
    mean=rng.uniform(0, 255, (S, S, 3)).astype(np.float32),
    eigvals=np.array([9000.0, 900.0, 90.0], np.float32),
    eigvecs=eigvecs.astype(np.float32),
  )


def expected_lighting(alphas, stats, scale):
  s = np.sqrt(stats["eigvals"]) if scale == "std" else stats["eigvals"] / 255
  return np.stack([stats["eigvecs"] @ (a * s) for a in alphas])


@pytest.mark.parametrize("scale", pp.LIGHTING_SCALES)
def test_lighting_adds_the_formula_for_given_alphas(stats, scale):
  alphas = np.array([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0], [-1.0, 2.0, 3.0]], np.float32)
  np.testing.assert_allclose(
    pp.lighting(alphas, stats, scale), expected_lighting(alphas, stats, scale), rtol=1e-6
  )


def test_lighting_scale_is_checked(stats):
  with pytest.raises(ValueError, match="lighting_scale='std_dev'"):
    pp.lighting(np.zeros((1, 3)), stats, "std_dev")


@pytest.mark.parametrize("off", [(), ("random_crop",), ("flip",), ("lighting",)])
def test_train_views_crop_flip_and_light_as_drawn(config, images, stats, off):
  rng = jax.random.key(3)
  aug = jax.tree.map(np.asarray, pp.augmentation(rng, B, config))  # all switches on
  assert aug["flips"].any() and (aug["offsets"] != (S - C) // 2).any()
  for name in off:
    config.augmentation[name] = False
  views = np.asarray(jax.jit(functools.partial(pp.train_views, config=config))(rng, images, stats))
  assert views.shape == (B, C, C, 3) and views.dtype == np.float32
  assert aug["offsets"].min() >= 0 and aug["offsets"].max() <= S - C
  added = expected_lighting(aug["alphas"], stats, config.lighting_scale)
  for i in range(B):
    r, c = ((S - C) // 2,) * 2 if "random_crop" in off else aug["offsets"][i]
    view = (images[i].astype(np.float32) - stats["mean"])[r : r + C, c : c + C]
    view = view[:, ::-1] if aug["flips"][i] and "flip" not in off else view
    view = view if "lighting" in off else view + added[i]
    np.testing.assert_allclose(views[i], view, rtol=1e-5, atol=1e-3)


def test_train_views_without_augmentation_are_the_central_crop(config, images, stats):
  config.augmentation.update(random_crop=False, flip=False, lighting=False)
  views = pp.train_views(jax.random.key(3), images, stats, config)
  np.testing.assert_array_equal(views, pp.center_view(images, stats, config))


def test_augmentation_is_deterministic_given_the_key(config):
  def draw(seed):
    return jax.tree.map(np.asarray, pp.augmentation(jax.random.key(seed), 256, config))

  first, again, other = draw(0), draw(0), draw(1)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert (first["offsets"] != other["offsets"]).any()
  assert set(np.unique(first["offsets"])) == set(range(S - C + 1))  # every position is drawn
  assert 0.3 < first["flips"].mean() < 0.7
  assert 0.07 < first["alphas"].std() < 0.13  # config.pca_lighting_std = 0.1


def test_center_and_ten_views_are_the_papers_patches(config, images, stats):
  x = images.astype(np.float32) - stats["mean"]
  far, mid = S - C, (S - C) // 2
  corners = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
  patches = np.stack([x[:, r : r + C, c : c + C] for r, c in corners], axis=1)
  expected = np.concatenate([patches, patches[:, :, :, ::-1]], axis=1)
  np.testing.assert_allclose(pp.ten_views(images, stats, config), expected, rtol=1e-6)
  np.testing.assert_allclose(pp.center_view(images, stats, config), patches[:, 4], rtol=1e-6)
  assert pp.ten_views(images, stats, config).shape == (B, 10, C, C, 3)


def test_bgr_views_are_the_rgb_views_with_the_channels_reversed(config, images, stats):
  """For weights trained in Caffe: the central patch, the 10 views and the training views (their
  RGB lighting added before the channels are reversed) in BGR order."""
  x = images.astype(np.float32) - stats["mean"]
  mid = (S - C) // 2
  config.channel_order = "bgr"
  want = x[:, mid : mid + C, mid : mid + C, ::-1]
  np.testing.assert_allclose(pp.center_view(images, stats, config), want, rtol=1e-6)
  ten = pp.ten_views(images, stats, config)
  np.testing.assert_allclose(ten[:, 4], want, rtol=1e-6)
  np.testing.assert_allclose(ten[:, 9], want[:, :, ::-1], rtol=1e-6)
  config.augmentation.update(random_crop=False, flip=False)
  rng = jax.random.key(3)
  added = expected_lighting(pp.augmentation(rng, B, config)["alphas"], stats, "std")
  views = pp.train_views(rng, images, stats, config)
  np.testing.assert_allclose(views, want + added[:, None, None, ::-1], rtol=1e-5, atol=1e-3)
  config.channel_order = "brg"
  with pytest.raises(ValueError, match="channel_order='brg'"):
    pp.center_view(images, stats, config)


def test_standardized_views_divide_each_channel_by_its_std(config, images, stats):
  """config.standardize_inputs: the central patch, the 10 views and the training views (their
  lighting noise added first, on the 0-255 scale) divided per channel by the square root of the
  covariance's diagonal; the covariance rebuilt in numpy from its eigenvectors and values."""
  cov = stats["eigvecs"] @ np.diag(stats["eigvals"]) @ stats["eigvecs"].T
  std = np.sqrt(np.diag(cov))
  x = images.astype(np.float32) - stats["mean"]
  mid = (S - C) // 2
  config.standardize_inputs = True
  want = x[:, mid : mid + C, mid : mid + C] / std
  np.testing.assert_allclose(pp.center_view(images, stats, config), want, rtol=1e-5)
  np.testing.assert_allclose(pp.ten_views(images, stats, config)[:, 9], want[:, :, ::-1], rtol=1e-5)
  config.augmentation.update(random_crop=False, flip=False)
  rng = jax.random.key(3)
  added = expected_lighting(pp.augmentation(rng, B, config)["alphas"], stats, "std")
  views = pp.train_views(rng, images, stats, config)
  want = (x[:, mid : mid + C, mid : mid + C] + added[:, None, None, :]) / std
  np.testing.assert_allclose(views, want, rtol=1e-5, atol=1e-5)
