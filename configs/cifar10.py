"""CIFAR-10 with the paper's four-layer net (Figure 1, "Local Response Normalization").

A cuda-convnet style network: three 5x5 conv layers with pooling, then a softmax layer; one
column. The activation (`--config.model.activation=tanh`) and LRN (`:no_lrn`) are switchable
for the experiments of Figure 1 and "Local Response Normalization". Data: TFDS `cifar10`, or a
folder of JPEGs with `--config.dataset=folder:/path/to/cifar10` (train/ and test/ inside).
"""

import ml_collections

from configs import alexnet


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The CIFAR-10 experiment; `variant` is "" or "no_lrn"."""
  config = alexnet.get_config()
  config.dataset = "cifar10"
  config.num_classes = 10
  config.image_size = 32
  config.crop_size = 24  # cuda-convnet's CIFAR-10 crops
  config.train_split = "train"
  config.eval_split = "test"
  config.cache_images = True  # decoded before training: 60,000 32x32 images are 184 MB

  m = config.model
  m.columns = 1
  m.conv = (
    alexnet.conv("conv1", 32, 5, reads="all", lrn=True, pool="max"),
    alexnet.conv("conv2", 32, 5, lrn=True, pool="avg"),
    alexnet.conv("conv3", 64, 5, pool="avg"),
  )
  m.dense = ()  # fc4 is the softmax layer
  m.init_bias_one = ()

  config.num_epochs = 12
  config.lr_schedule = "step"
  config.lr_step_epochs = (8, 11)
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  if variant == "no_lrn":
    m.conv = tuple(dict(c, lrn=False) for c in m.conv)
  elif variant:
    raise ValueError(f"Unknown variant {variant!r} of configs/cifar10.py; choose 'no_lrn'.")
  return config
