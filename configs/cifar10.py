"""CIFAR-10 with the paper's four-layer net (Figure 1, "Local Response Normalization").

A cuda-convnet style network: three 5x5 conv layers with pooling, then a softmax layer; one
column. Data: TFDS `cifar10`, or a folder of JPEGs with `--config.dataset=folder:/path/to/cifar10`
(train/ and test/ inside). Variants (`--config=configs/cifar10.py:VARIANT`), the nets of the
CIFAR-10 experiments (`experiments/`):

  no_lrn               without LRN (the CIFAR-10 result of "Local Response Normalization")
  figure1              Figure 1's net and recipe: cuda-convnet's layers-80sec (no LRN), its
                       per-layer init, no regularization of any kind (no weight decay, no
                       dropout, central crops only), a constant learning rate, training ended at
                       25% training error; `--config.model.activation=tanh` for the tanh curve
  layers_18pct         cuda-convnet's layers-18pct exactly: its rnorm (size 3, scale 5e-5 divided by
                       the size, plus 1, power 0.75) after the pooling, and its per-layer init
  layers_18pct_no_lrn  the same net without rnorm
  hidden_fc            one hidden FC layer of 256 ReLUs with dropout 0.5 before the classifier, so
                       that dropout can be switched ("Overlapping Pooling", "Dropout")
"""

import ml_collections

from configs import alexnet

VARIANTS = ("no_lrn", "figure1", "layers_18pct", "layers_18pct_no_lrn", "hidden_fc")
# cuda-convnet's CIFAR-10 configs (layers-80sec, layers-18pct): initW of each layer.
CUDA_CONVNET_INIT_STD = dict(conv1=1e-4, conv2=1e-2, conv3=1e-2, fc4=1e-2)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The CIFAR-10 experiment; `variant` is "" or one of `VARIANTS`."""
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
  m.pool.partial_windows = True  # cuda-convnet's pooled sizes: 24 -> 12, 6, 3 (not 11, 5, 2)
  m.init_bias_one = ()

  config.num_epochs = 12
  config.lr_schedule = "step"
  config.lr_step_epochs = (8, 11)
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  return apply_variant(config, variant)


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """Changes the CIFAR-10 net into one of `VARIANTS` (no-op for "")."""
  m = config.model
  if variant == "":
    pass
  elif variant in ("no_lrn", "layers_18pct_no_lrn"):
    m.conv = tuple(dict(c, lrn=False) for c in m.conv)
  elif variant == "figure1":
    m.conv = tuple(dict(c, lrn=False) for c in m.conv)
    m.dropout_rate = 0.0
    config.weight_decay = 0.0
    config.augmentation.update(random_crop=False, flip=False, lighting=False)
    config.lr_schedule = "constant"
    config.num_epochs = 10
    config.stop_at_train_error = 0.25
    config.log_every_steps = 39  # 0.1 epoch of 390 steps
  elif variant == "layers_18pct":
    m.lrn.update(k=1.0, n=3, alpha=5e-5, beta=0.75, alpha_over_n=True, after_pool=True)
  elif variant == "hidden_fc":
    m.dense = (256,)  # fc4; fc5 is the softmax layer (biases 0, as in the net's other layers)
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/cifar10.py; choose from {VARIANTS}.")
  if variant in ("figure1", "layers_18pct", "layers_18pct_no_lrn"):
    m.layer_init_std = dict(CUDA_CONVNET_INIT_STD)
  return config
