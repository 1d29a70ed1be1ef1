"""Device-side preprocessing ("The Dataset", "Data Augmentation"), as pure jnp functions for jit.

Inputs are host batches of uint8 [B, S, S, 3] images (S = config.image_size); outputs are
float32 views of size C = config.crop_size with the mean image (S x S x 3, over the training
set) subtracted, on the 0-255 pixel scale (or, with `config.standardize_inputs`, each channel
divided by its standard deviation). `stats` holds "mean" [S, S, 3], "eigvals" [3] and
"eigvecs" [3, 3] (eigenvectors as columns) from `supervision.stats`, all of RGB images; the views
come in `config.channel_order` ("bgr" for weights trained in Caffe, `supervision.caffe`).

  train_views   random C x C patches, horizontal reflections and PCA lighting noise
  center_view   the central patch
  ten_views     the four corner patches and the centre patch, and their reflections
"""

import jax
import jax.numpy as jnp
import ml_collections

from supervision import ConfigError

LIGHTING_SCALES = ("std", "eigenvalue")
CHANNEL_ORDERS = ("rgb", "bgr")


def centered(images: jax.Array, stats: dict) -> jax.Array:
  """uint8 images -> float32 with the mean image subtracted."""
  return images.astype(jnp.float32) - stats["mean"]


def network_input(views: jax.Array, stats: dict, config: ml_collections.ConfigDict) -> jax.Array:
  """Mean-subtracted RGB `views` as the network reads them: with `config.standardize_inputs`
  each channel divided by its standard deviation over the training set (the square roots of the
  diagonal of the RGB covariance, eigvecs diag(eigvals) eigvecs^T), then in
  `config.channel_order`: "rgb" as they are, "bgr" with the channels reversed."""
  if config.standardize_inputs:
    views = views * jax.lax.rsqrt((stats["eigvecs"] ** 2) @ stats["eigvals"])
  if config.channel_order not in CHANNEL_ORDERS:
    raise ConfigError(
      f"config.channel_order={config.channel_order!r}; choose from {CHANNEL_ORDERS}."
    )
  return views[..., ::-1] if config.channel_order == "bgr" else views


def crop(images: jax.Array, offsets: jax.Array, size: int) -> jax.Array:
  """The size x size patch of each image whose top-left corner is offsets[i] = (row, column)."""

  def one(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (size, size, image.shape[-1]))

  return jax.vmap(one)(images, offsets)


def reflect(images: jax.Array, flips: jax.Array) -> jax.Array:
  """Mirrors images[i] left-right where flips[i]."""
  return jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)


def lighting(alphas: jax.Array, stats: dict, scale: str) -> jax.Array:
  """[p1 p2 p3][a1 s1, a2 s2, a3 s3]^T per image: the RGB quantity added to every pixel.

  With lambda_i the eigenvalues on 0-255 values, s_i is sqrt(lambda_i) for scale "std", and
  lambda_i / 255 for "eigenvalue" (the paper's formula with pixel values in [0, 1], taken
  back to 0-255). alphas is [B, 3]; the result is [B, 3] on the 0-255 scale.
  """
  if scale not in LIGHTING_SCALES:
    raise ConfigError(f"config.lighting_scale={scale!r}; choose from {LIGHTING_SCALES}.")
  eigvals = stats["eigvals"]
  s = jnp.sqrt(eigvals) if scale == "std" else eigvals / 255.0
  return (alphas * s) @ stats["eigvecs"].T


def augmentation(rng: jax.Array, batch: int, config: ml_collections.ConfigDict) -> dict:
  """Per image: crop "offsets" [B, 2], "flips" [B] and lighting "alphas" [B, 3] from `rng`.

  What `config.augmentation` switches off is the identity (the central crop, no flip, zero
  alphas); the draws are the same, so the other augmentations do not change.
  """
  crop_rng, flip_rng, alpha_rng = jax.random.split(rng, 3)
  offsets = jax.random.randint(crop_rng, (batch, 2), 0, config.image_size - config.crop_size + 1)
  flips = jax.random.bernoulli(flip_rng, 0.5, (batch,))
  alphas = config.pca_lighting_std * jax.random.normal(alpha_rng, (batch, 3))
  on, centre = config.augmentation, jnp.array(view_offsets(config)[4], offsets.dtype)
  return dict(
    offsets=offsets if on.random_crop else jnp.broadcast_to(centre, offsets.shape),
    flips=flips if on.flip else jnp.zeros_like(flips),
    alphas=alphas if on.lighting else jnp.zeros_like(alphas),
  )


def train_views(
  rng: jax.Array, images: jax.Array, stats: dict, config: ml_collections.ConfigDict
) -> jax.Array:
  """Random crops, random reflections and PCA lighting (those `config.augmentation` leaves
  on): float32 [B, C, C, 3]."""
  aug = augmentation(rng, images.shape[0], config)
  views = reflect(crop(centered(images, stats), aug["offsets"], config.crop_size), aug["flips"])
  added = lighting(aug["alphas"], stats, config.lighting_scale)[:, None, None, :]
  return network_input(views + added, stats, config)


def view_offsets(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
  """(row, column) of the top-left, top-right, bottom-left, bottom-right and centre patches."""
  far = config.image_size - config.crop_size
  return [(0, 0), (0, far), (far, 0), (far, far), (far // 2, far // 2)]


def _patch(images: jax.Array, offset: tuple[int, int], size: int) -> jax.Array:
  return images[:, offset[0] : offset[0] + size, offset[1] : offset[1] + size]


def center_view(images: jax.Array, stats: dict, config: ml_collections.ConfigDict) -> jax.Array:
  """The central patch: float32 [B, C, C, 3]."""
  view = _patch(centered(images, stats), view_offsets(config)[4], config.crop_size)
  return network_input(view, stats, config)


def ten_views(images: jax.Array, stats: dict, config: ml_collections.ConfigDict) -> jax.Array:
  """The five patches of `view_offsets`, then their reflections: float32 [B, 10, C, C, 3]."""
  x = centered(images, stats)
  views = jnp.stack([_patch(x, o, config.crop_size) for o in view_offsets(config)], axis=1)
  return network_input(jnp.concatenate([views, views[:, :, :, ::-1]], axis=1), stats, config)
