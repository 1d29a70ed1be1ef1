"""A tiny two-column net on a few CIFAR-10 images, for tests: seconds per run.

With so few kernels, N(0, 0.01) weights leave the signal too small to learn within a few
dozen steps, so the weights start at N(0, 0.05).
"""

import ml_collections

from configs import cifar10


def get_config() -> ml_collections.ConfigDict:
  config = cifar10.get_config()
  m = config.model
  m.columns = 2
  m.conv = (
    dict(m.conv[0], features=16),
    dict(m.conv[1], features=16),
    dict(m.conv[2], features=16, reads="all"),
  )
  m.dense = (32,)
  m.init_std = 0.05
  config.batch_size = 32
  config.learning_rate = 0.02
  config.num_train_steps = 20
  config.lr_schedule = "constant"
  config.log_every_steps = 5
  config.eval_every_steps = 10
  config.checkpoint_every_steps = 10
  return config
