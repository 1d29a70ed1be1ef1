"""Trained networks at work ("Results", "Qualitative Evaluations"): ensembles, predictions and
features of two tiny networks of different configs, against numpy from the networks' logits."""

import dataclasses
import functools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import smoke
from supervision import (
  ConfigError,
  DataError,
  checkpoint,
  datasets,
  inference,
  models,
  predict,
  sharding,
)
from supervision import stats as stats_lib

CREATE_MESH = sharding.create_mesh
CLASSES = (
  "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip
# The members' training statistics: per-channel variances (the eigenvectors are the RGB axes).
RGB_VARIANCES = np.array([400.0, 900.0, 1600.0], np.float32)
BROKEN = "test/cat/9999.jpg"  # not an image; sorted after cat's two readable test images


@flax.struct.dataclass
class State:
  step: jnp.ndarray
  params: Any


@dataclasses.dataclass
class Member:
  """A tiny trained network: its workdir, config, model, parameters and mean image; for each
  readable image of `dataset` the logits of its 10 views {file: [10, classes]} and the outputs
  of the hidden FC layer (none in a net without one) for its centre {file: [neurons]}."""

  workdir: Path
  config: Any
  model: Any
  params: Any
  mean: np.ndarray
  logits: dict = dataclasses.field(default_factory=dict)
  hidden: dict = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="module")
def dataset(cifar10_small_dir, tmp_path_factory):
  """A CIFAR-10 folder: train/<class>/ one image each, test/<class>/ two images each, and one
  file in test/cat/ that is not an image."""
  root = tmp_path_factory.mktemp("tiny_cifar10")
  for split, count in (("train", 1), ("test", 2)):
    for name in CLASSES:
      (root / split / name).mkdir(parents=True)
      for n in range(count):
        shutil.copy(cifar10_small_dir / split / name / f"{n:04d}.jpg", root / split / name)
  (root / BROKEN).write_bytes(b"not a JPEG")
  return root


def run_config(dataset, **overrides):
  """The run's config: the data and batches of the runs below, whatever the network."""
  config = smoke.get_config()
  config.dataset, config.eval_split = f"folder:{dataset}", "test"
  config.batch_size, config.num_workers, config.num_threads = 8, 0, 2
  config.cache_images = False
  config.update(overrides)
  return config


def make_member(workdir, config, std, seed, stored=None):
  """A checkpoint of step 7 with random parameters N(0, std) and a random mean image, with
  `config` (or the config dict `stored`) stored, as training leaves them; no training."""
  model = models.create_model(config)
  images = jnp.zeros((1, config.crop_size, config.crop_size, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda x: std * rng.standard_normal(x.shape, np.float32), shapes)
  with checkpoint.create_manager(str(workdir), config) as manager:
    stored = config if stored is None else ml_collections.ConfigDict(stored)
    checkpoint.save(manager, State(step=jnp.int32(7), params=params), {}, {}, stored)
  size = config.image_size
  mean = rng.uniform(96, 160, (size, size, 3)).astype(np.float32)
  data_stats = dict(
    dataset=config.dataset, image_size=size, mean=mean, eigvals=RGB_VARIANCES, eigvecs=np.eye(3)
  )
  stats_lib.save_stats(data_stats, stats_lib.stats_path(config, str(workdir)))
  return Member(workdir, config, model, params, mean)


@pytest.fixture(scope="module")
def members(dataset, tmp_path_factory):
  """Two networks of different configs: the smoke net (2 columns, a hidden FC layer, 32x32
  images cropped to 24) and a one-column net without hidden FC layer, as CIFAR-10's, on 28x28
  images cropped to 20 in BGR order (as Caffe's) and standardized, its last conv layer not
  pooled."""
  a = smoke.get_config()
  a.dataset = f"folder:{dataset}"
  b = smoke.get_config()
  b.dataset, b.image_size, b.crop_size = f"folder:{dataset}", 28, 20
  b.channel_order, b.standardize_inputs = "bgr", True
  m = b.model
  m.columns, m.dense = 1, ()
  m.conv = tuple(dict(c, features=8) for c in m.conv[:2]) + (dict(m.conv[2], features=8, pool=""),)
  root = tmp_path_factory.mktemp("members")
  members = make_member(root / "a", a, 0.1, 0), make_member(root / "b", b, 0.12, 1)
  files = readable_images(dataset) + readable_images(dataset, "train")
  for member in members:  # one call: compiling the network for each batch size costs seconds
    v = views(member, files, ten_views=True)
    apply = functools.partial(member.model.apply, capture_intermediates=True)
    z, state = jax.jit(apply)({"params": member.params}, v.reshape(-1, *v.shape[2:]))
    z = np.asarray(z, np.float64).reshape(len(files), 10, -1)
    member.logits = dict(zip(files, z, strict=True))
    if member.config.model.dense:  # fc4's columns side by side
      fc4 = np.concatenate(list(state["intermediates"]["fc4"]["__call__"][0]), axis=-1)
      member.hidden = dict(zip(files, fc4.reshape(len(files), 10, -1)[:, 4], strict=True))
  return members


def test_members_are_not_saturated(members, dataset):
  """The tests below compare probabilities: none may be all 0 and 1."""
  for member in members:
    probs = reference_probs(member, readable_images(dataset), ten_views=False)
    assert 0.15 < probs.max(axis=1).mean() < 0.9


def readable_images(dataset, split="test"):
  """The readable images of a split in its order: sorted classes, then sorted files."""
  return [f for name in CLASSES for f in sorted((dataset / split / name).glob("000*.jpg"))]


def views(member, files, ten_views):
  """Independently of the pipeline: the decoded images (a square image's shorter side to S is
  a plain resize) minus the mean image, in the network's channel order, and their central crop
  or 10 views [N, V, C, C, 3]."""
  size, crop = member.config.image_size, member.config.crop_size
  images = [
    Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BILINEAR) for f in files
  ]
  x = np.stack([np.asarray(i, np.float32) for i in images]) - member.mean
  x = x / np.sqrt(RGB_VARIANCES) if member.config.standardize_inputs else x
  x = x[..., ::-1] if member.config.channel_order == "bgr" else x
  far = size - crop
  corners = [(0, 0), (0, far), (far, 0), (far, far), (far // 2, far // 2)]
  patches = [x[:, r : r + crop, c : c + crop] for r, c in corners]
  if not ten_views:
    return patches[4][:, None]
  return np.stack(patches + [p[:, :, ::-1] for p in patches], axis=1)


def reference_probs(member, files, ten_views):
  """The mean softmax over the views (the centre's alone: view 4), in float64 from the
  network's logits."""
  z = np.stack([member.logits[f] if ten_views else member.logits[f][4:5] for f in files])
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return (e / e.sum(axis=-1, keepdims=True)).mean(axis=1)


def errors(probs, labels):
  top5 = np.argsort(-probs, axis=1)[:, :5]
  return np.mean(top5[:, 0] != labels), np.mean(~(top5 == labels[:, None]).any(axis=1))


def test_an_ensemble_averages_its_members_softmax(members, dataset, tmp_path, monkeypatch):
  config = run_config(dataset)
  config.ensemble.workdirs = tuple(str(m.workdir) for m in members)
  files = readable_images(dataset)
  labels = np.repeat(np.arange(10), 2)
  outputs = inference.ensemble_outputs(config)
  _, got_labels, log_probs = outputs
  np.testing.assert_array_equal(got_labels, labels)  # the broken file left out, in order
  monkeypatch.setattr(inference, "ensemble_outputs", lambda config: outputs)  # one pass
  results = inference.evaluate_ensemble(config, str(tmp_path))
  assert json.loads((tmp_path / "ensemble_results.json").read_text()) == results
  for view, ten_views in (("center", False), ("ten_views", True)):
    probs = [reference_probs(m, files, ten_views) for m in members]
    np.testing.assert_allclose(np.exp(log_probs[view]), np.mean(probs, axis=0), atol=1e-6)
    for i, p in enumerate(probs + [np.mean(probs, axis=0)]):
      got = results["members"][i] if i < len(members) else results["ensemble"]
      assert got[view]["count"] == 20
      np.testing.assert_allclose(
        [got[view]["top1_error"], got[view]["top5_error"]], errors(p, labels)
      )


def test_predictions_are_evals_top5_and_a_bad_file_is_named(members, dataset, caplog, capsys):
  member = members[0]
  config = run_config(
    dataset, predict=dict(path=str(dataset / "test"), ten_views=False, figure=False)
  )
  with caplog.at_level(logging.WARNING):
    got = predict.predict(config, str(member.workdir))
  assert str(dataset / BROKEN) in caplog.text  # named, and the 20 others predicted
  assert f"Not read: 1 of 21 files ({dataset / BROKEN})" in capsys.readouterr().out
  files = readable_images(dataset)
  assert [g["file"] for g in got] == [str(f) for f in files]
  assert [g["label"] for g in got] == [f.parent.name for f in files]
  for g, probs in zip(got, reference_probs(member, files, ten_views=False), strict=True):
    top = np.argsort(-probs)[:5]
    assert [name for name, _ in g["top5"]] == [CLASSES[c] for c in top]
    np.testing.assert_allclose([p for _, p in g["top5"]], probs[top], rtol=1e-5)


def test_a_prediction_figure_of_ten_views(members, dataset, capsys):
  member = members[1]
  file = dataset / "test" / "dog" / "0001.jpg"
  config = run_config(dataset, predict=dict(path=str(file), ten_views=True, figure=True))
  (got,) = predict.predict(config, str(member.workdir))
  probs = reference_probs(member, [file], ten_views=True)[0]
  top = np.argsort(-probs)[:5]
  assert got["label"] == "dog" and [n for n, _ in got["top5"]] == [CLASSES[c] for c in top]
  np.testing.assert_allclose([p for _, p in got["top5"]], probs[top], rtol=1e-5)
  out = capsys.readouterr().out
  assert f"{file} (true class: dog)" in out and f"{probs[top[0]]:.4f}  {CLASSES[top[0]]}" in out
  png = member.workdir / "predictions" / "0001.png"
  with Image.open(png) as image:
    assert image.size == (300, 450)
    pixels = np.asarray(image.convert("RGB"))
  assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


def classifier(member, features):
  """The classifier layer applied to `features` in numpy: features @ kernel_c + bias_c for each
  column c, the columns' outputs side by side."""
  name = models.create_model(member.config).dense_names()[-1]
  p = member.params[name]
  return np.concatenate(
    [features @ p["kernel"][c] + p["bias"][c] for c in range(len(p["bias"]))], -1
  )


def check_features(member, path, files, labels):
  """The features file at `path` of the readable images `files` of a split, with `labels`."""
  with np.load(path) as f:
    assert sorted(f.files) == ["features", "indices", "labels"]
    got, got_labels, indices = f["features"], f["labels"], f["indices"]
  assert got.dtype == np.float32 and got_labels.dtype == np.int32
  np.testing.assert_array_equal(got_labels, labels)
  split = files[0].parents[1]  # the split's examples: its classes' files, the unreadable too
  examples = [f for name in CLASSES for f in sorted((split / name).iterdir())]
  np.testing.assert_array_equal(indices, [examples.index(f) for f in files])
  # The paper's dropout multiplies the hidden layers' outputs by 0.5 at test time: the features
  # are the activations before, and 0.5 x them is the classifier's input.
  scale = 0.5 if member.config.model.dense else 1.0
  want = np.stack([member.logits[f][4] for f in files])
  np.testing.assert_allclose(classifier(member, scale * got), want, rtol=1e-4, atol=1e-4)
  if member.config.model.dense:  # the hidden layer's ReLU
    want = np.maximum(np.stack([member.hidden[f] for f in files]), 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  return got


def test_features_are_the_last_hidden_layers_activations(members, dataset):
  a, b = members
  files, labels = readable_images(dataset), np.repeat(np.arange(10), 2)
  path = inference.write_features(run_config(dataset), str(a.workdir))
  assert path == a.workdir / "features" / "test.npz"
  assert check_features(a, path, files, labels).shape == (20, 32)  # fc4's 32 outputs
  path = inference.write_features(run_config(dataset), str(b.workdir))
  assert check_features(b, path, files, labels).shape == (20, 5 * 5 * 8)  # conv3: 20 -> 10 -> 5
  config = run_config(dataset, features=dict(split="train"))
  path = inference.write_features(config, str(b.workdir))
  train_files = [dataset / "train" / name / "0000.jpg" for name in CLASSES]
  check_features(b, path, train_files, np.arange(10))


def test_features_of_two_columns_on_two_model_devices(members, dataset, monkeypatch, tmp_path):
  a = members[0]
  workdir = tmp_path / "copy"
  shutil.copytree(a.workdir, workdir, ignore=shutil.ignore_patterns("features"))
  create_mesh = functools.partial(CREATE_MESH, devices=jax.devices()[:2])
  monkeypatch.setattr(sharding, "create_mesh", create_mesh)
  config = run_config(dataset, mesh=dict(data=1, model=2))
  path = inference.write_features(config, str(workdir))
  check_features(a, path, readable_images(dataset), np.repeat(np.arange(10), 2))


def test_bad_input_is_named(members, dataset, tmp_path, image_folder):
  a = members[0]
  with pytest.raises(ConfigError, match="config.predict.path is empty"):
    predict.predict(run_config(dataset), str(a.workdir))
  config = run_config(dataset, predict=dict(path=str(tmp_path / "nothing.jpg")))
  with pytest.raises(FileNotFoundError, match="nothing.jpg"):
    predict.predict(config, str(a.workdir))
  with pytest.raises(ConfigError, match="config.ensemble.workdirs is empty"):
    inference.evaluate_ensemble(run_config(dataset), str(tmp_path))
  config = run_config(dataset, ensemble=dict(workdirs=(str(a.workdir), str(tmp_path / "new"))))
  with pytest.raises(FileNotFoundError, match=r"workdirs\[1\]=.*new.*train first"):
    inference.evaluate_ensemble(config, str(tmp_path))
  indices, labels = np.arange(4), np.array([0, 1, 1, 2])
  inference.check_same_examples("test", ("a", indices, labels), ("b", indices, labels))
  for other in ((indices[:3], labels[:3]), (indices, labels[::-1])):  # one fewer, other labels
    with pytest.raises(DataError, match="a read 4 examples, b 3|labels differ"):
      inference.check_same_examples("test", ("a", indices, labels), ("b", *other))
  no_stats = tmp_path / "no_stats"
  shutil.copytree(a.workdir, no_stats, ignore=shutil.ignore_patterns("stats_*"))
  with pytest.raises(
    FileNotFoundError, match="No statistics .*stats_folder_.*_32.npz.*--mode=stats"
  ):
    inference.write_features(run_config(dataset), str(no_stats))
  image_folder({"train": {"x": 1, "y": 1, "z": 1}})
  with pytest.raises(DataError, match="has 3 classes but the network of .* has 10"):
    inference.write_features(run_config(image_folder.root), str(a.workdir))


def test_a_checkpoint_older_than_a_network_key_loads_as_it_was_trained(dataset, tmp_path):
  """A config stored before model.pool.partial_windows, model.dropout_form and the other keys
  added since: the network loads as it was trained (its pooling without partial windows, its
  inverted dropout, RGB inputs not standardized: the code of then), not with today's settings
  of the run's config, which would change its shapes (24 -> 12, 6, 3), its test-time scale and
  its inputs; resuming it with them names the keys."""
  then = run_config(dataset)
  then.model.pool.partial_windows, then.model.dropout_form = False, "inverted"
  stored = json.loads(then.to_json())
  for key in ("channel_order", "standardize_inputs"):
    del stored[key]
  for key in ("dropout_form", "init", "layer_init_std"):
    del stored["model"][key]
  del stored["model"]["pool"]["partial_windows"]
  for key in ("across_columns", "after_pool"):
    del stored["model"]["lrn"][key]
  member = make_member(tmp_path, then, 0.1, 0, stored)
  now = run_config(dataset)
  now.model.pool.partial_windows, now.model.dropout_form = True, "paper"
  now.channel_order, now.standardize_inputs = "bgr", True  # the inputs, outside the model
  net = inference.load(now, str(tmp_path))
  assert (net.config.channel_order, net.config.standardize_inputs) == ("rgb", False)
  images = jnp.asarray(np.random.default_rng(0).uniform(-50, 50, (2, 24, 24, 3)), jnp.float32)
  np.testing.assert_allclose(
    net.model.apply({"params": net.params}, images),
    member.model.apply({"params": member.params}, images), rtol=1e-5, atol=1e-5,
  )  # fmt: skip
  with checkpoint.create_manager(str(tmp_path), now, create=False) as manager:
    with pytest.raises(ConfigError, match="model.dropout_form: 'inverted' there, 'paper' now"):
      checkpoint.check_config(manager, now)


def test_imagenet_names_and_true_classes(imagenet_classes_file, tmp_path):
  """The names column of the class list is shown ("tench" for n01440764, index 0); a file's
  true class is its class folder's in a ROOT/SPLIT/CLASS/FILE layout only."""
  config = run_config(tmp_path, class_list=str(imagenet_classes_file))
  names = datasets.display_names(config, ["unused"])
  assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
  labels = {"n01440764": 0, "n01443537": 1}
  assert predict.true_label(tmp_path / "val" / "n01443537" / "x.JPEG", labels) == 1
  assert predict.true_label(tmp_path / "photos" / "n01443537" / "x.JPEG", labels) == -1
  assert predict.true_label(tmp_path / "val" / "n99999999" / "x.JPEG", labels) == -1
  short = tmp_path / "classes.tsv"
  short.write_text("0\tn01440764\n1\tn01443537\tgoldfish\n")  # a line without a name
  config.class_list = str(short)
  assert datasets.display_names(config, []) == ["n01440764", "goldfish"]
