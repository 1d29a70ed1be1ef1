"""The paper's network on synthetic data: train-step throughput without input cost."""

import ml_collections

from configs import alexnet


def get_config() -> ml_collections.ConfigDict:
  config = alexnet.get_config()
  config.dataset = "fake"
  config.num_train_steps = 20
  config.log_every_steps = 5
  config.eval_every_steps = 10**9
  config.checkpoint_every_steps = 10**9
  config.num_eval_batches = 1
  return config
