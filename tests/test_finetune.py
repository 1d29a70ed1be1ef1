"""Fine-tuning: a new run starts from the layers of another run, trained on other classes."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import smoke
from supervision import ConfigError, checkpoint, models, optim, steps, train

FIRST_FIVE = ("airplane", "automobile", "bird", "cat", "deer")  # of CIFAR-10's classes


def cifar10_config(cifar10_small_dir, **overrides):
  """The smoke config on the CIFAR-10 subset, decoding only the images it reads."""
  config = smoke.get_config()
  config.dataset, config.cache_images = f"folder:{cifar10_small_dir}", False
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def source(cifar10_small_dir, tmp_path_factory):
  """The workdir of a run on 5 of the 10 classes, with a checkpoint of step 7 whose parameters
  are random normal (far from any initialisation) and whose optimizer state is all ones; and
  those parameters."""
  config = cifar10_config(cifar10_small_dir, classes=FIRST_FIVE, num_classes=5)
  model, tx = models.create_model(config), optim.create_optimizer(config)
  shapes = jax.eval_shape(functools.partial(steps.create_train_state, config, model, tx))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), shapes.params)
  ones = jax.tree.map(lambda x: np.ones(x.shape, x.dtype), shapes)
  state = ones.replace(step=np.int32(7), params=params)
  workdir = tmp_path_factory.mktemp("source")
  with checkpoint.create_manager(str(workdir), config) as manager:
    checkpoint.save(manager, state, {}, {}, config)
    manager.wait_until_finished()
  return workdir, params


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
  """A workdir shared by the trainers below, so that the dataset statistics are computed once."""
  return str(tmp_path_factory.mktemp("stats"))


def test_restores_the_matching_layers_and_starts_the_classifier_anew(
  cifar10_small_dir, source, stats_dir, capsys
):
  """On the paper's two model-devices (mesh.model=2 of 4 devices), all 10 classes."""
  source_dir, source_params = source
  config = cifar10_config(cifar10_small_dir, init_from=str(source_dir))
  config.mesh.model = 2
  trainer = train.Trainer(config, stats_dir)
  fresh = trainer.init_state()
  state = trainer.init_state(trainer.init_from_layers())
  out = capsys.readouterr().out
  assert f"Fine-tuning from {source_dir}, step 7 (5 classes)" in out
  assert "restored conv1, conv2, conv3, fc4; new: fc5 (10 classes)." in out
  for name in ("conv1", "conv2", "conv3", "fc4"):
    jax.tree.map(np.testing.assert_array_equal, state.params[name], source_params[name])
  jax.tree.map(np.testing.assert_array_equal, state.params["fc5"], fresh.params["fc5"])
  assert state.params["fc5"]["kernel"].shape == (2, 32, 5)  # the source's was (2, 32, 3)
  assert int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, fresh.opt_state)
  assert not any(np.any(m) for m in jax.tree.leaves(state.opt_state.inner_state))  # no momentum
  np.testing.assert_array_equal(state.rng, fresh.rng)
  shardings = lambda s: [leaf.sharding for leaf in jax.tree.leaves(s)]  # noqa: E731
  assert shardings(state) == shardings(fresh)
  assert state.params["conv1"]["kernel"].sharding.spec == P("model")


def test_a_layer_the_new_net_adds_starts_anew(cifar10_small_dir, source, stats_dir, capsys):
  """With a second hidden FC layer, fc5 (the source's classifier) and fc6 are new."""
  source_dir, source_params = source
  config = cifar10_config(cifar10_small_dir, init_from=str(source_dir))
  config.model.dense = (32, 32)
  layers = train.Trainer(config, stats_dir).init_from_layers()
  assert sorted(layers) == ["conv1", "conv2", "conv3", "fc4"]
  jax.tree.map(np.testing.assert_array_equal, layers["conv2"], source_params["conv2"])
  assert "restored conv1, conv2, conv3, fc4; new: fc5, fc6 (10 classes)." in capsys.readouterr().out


def test_a_layer_of_other_shapes_is_named(cifar10_small_dir, source, stats_dir):
  config = cifar10_config(cifar10_small_dir, init_from=str(source[0]))
  conv1, conv2, conv3 = config.model.conv
  config.model.conv = (conv1, dict(conv2, features=32), conv3)
  with pytest.raises(
    ConfigError,
    match=r"config.init_from: layer conv2 has shapes \{'bias': \(2, 8\), 'kernel': \(2, 5, 5, 8,"
    r" 8\)\} there and \{'bias': \(2, 16\), 'kernel': \(2, 5, 5, 8, 16\)\} here",
  ):
    train.Trainer(config, stats_dir).init_from_layers()


def test_a_missing_source_is_named(cifar10_small_dir, stats_dir, tmp_path):
  config = cifar10_config(cifar10_small_dir, init_from=str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match=r"config.init_from='.*nowhere': No checkpoint"):
    train.Trainer(config, stats_dir).init_from_layers()


def test_a_run_with_its_own_checkpoint_resumes_and_ignores_init_from(
  cifar10_small_dir, source, tmp_path, capsys
):
  """A fine-tuning run stopped after step 1 resumes at step 1 even when config.init_from now
  names no run at all (were it applied, the run would fail, or start again at step 0)."""
  config = cifar10_config(cifar10_small_dir, init_from=str(source[0]), num_train_steps=1)
  config.update(eval_every_steps=100, num_eval_batches=1, log_every_steps=1)
  train.train_and_evaluate(config, str(tmp_path))
  assert "Fine-tuning from" in capsys.readouterr().out
  config.update(init_from=str(tmp_path / "nowhere"), num_train_steps=2)
  train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "resumed at step 1" in out and "Fine-tuning" not in out, out
  params, stored, step = checkpoint.restore_params(str(tmp_path))
  assert step == 2 and stored.init_from.endswith("nowhere")
