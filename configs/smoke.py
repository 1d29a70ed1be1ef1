"""A tiny two-column net on a few CIFAR-10 images, for tests: seconds per run."""

import ml_collections

from configs import cifar10


def get_config() -> ml_collections.ConfigDict:
  config = cifar10.get_config()
  m = config.model
  m.columns = 2
  m.conv = (
    dict(m.conv[0], features=8),
    dict(m.conv[1], features=8),
    dict(m.conv[2], features=8, reads="all"),
  )
  m.dense = (16,)
  config.batch_size = 16
  config.num_train_steps = 20
  config.lr_schedule = "constant"
  config.log_every_steps = 5
  config.eval_every_steps = 10
  config.checkpoint_every_steps = 10
  return config
