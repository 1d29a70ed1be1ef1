"""Test setup: simulated CPU devices and a compilation cache (set before jax is imported, and
inherited by the tests' subprocesses), and the shared data."""

import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from configs import alexnet

# Set once per session, in pytest-xdist's controller, whose workers inherit them. XLA:CPU's full
# LLVM optimisation (level 2) takes most of a test's time on these small nets: level 1 compiles
# the smoke net's init in 2 s instead of 11 s, and its train step in 6-9 s instead of 14 s, at
# about the same step time (level 0 compiles faster still, but halves the step rate of the RNG
# and LRN code that is not a library call). A new compilation cache for each session (tests that
# train several times compile the same steps once), or the one SUPERVISION_TEST_JAX_CACHE names,
# shared by sessions (tests/mutation.py's runs).
if "SUPERVISION_TEST_SESSION" not in os.environ:
  os.environ["SUPERVISION_TEST_SESSION"] = "1"
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4 --xla_backend_optimization_level=1"
  ).strip()
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.get(
    "SUPERVISION_TEST_JAX_CACHE"
  ) or tempfile.mkdtemp(prefix="supervision_jax_cache_")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_SMALL_PER_CLASS = 100  # images per class and split in `cifar10_small_dir`


def _shared(name):
  """The shared file `name`; skips the test where ../shared is missing (fails it in CI)."""
  path = SHARED_DATA / name
  if not path.exists():
    reason = f"{path} is missing: the shared test data lives in ../shared/data beside the repo."
    if os.environ.get("CI") == "true":
      pytest.fail(reason)
    pytest.skip(reason)
  return path


def _extract(tmp_path_factory, name, keep=lambda member: True):
  """Extracts the shared archive `name` into a new temporary folder and returns the folder."""
  archive = _shared(name)
  root = tmp_path_factory.mktemp(name.split(".")[0])
  with tarfile.open(archive) as tar:
    tar.extractall(root, members=[m for m in tar if keep(m)], filter="data")
  return root


@pytest.fixture(scope="session")
def cifar10_small_dir(tmp_path_factory):
  """The first CIFAR10_SMALL_PER_CLASS JPEGs of every class of both splits of CIFAR-10:
  train/<class>/NNNN.jpg and test/<class>/NNNN.jpg."""

  def keep(member):
    return not member.isfile() or int(Path(member.name).stem) < CIFAR10_SMALL_PER_CLASS

  return _extract(tmp_path_factory, "cifar10-jpg.tar.gz", keep)


@pytest.fixture(scope="session")
def imagenet_samples_dir(tmp_path_factory):
  """250 full-size ImageNet photos (4 grayscale): val/<synset>/<file>.JPEG."""
  return _extract(tmp_path_factory, "imagenet-samples-250.tar")


@pytest.fixture(scope="session")
def imagenet_classes_file():
  """The 1000 ILSVRC-2012 classes: `index<TAB>synset<TAB>name` lines after a header."""
  return _shared("imagenet_classes.tsv")


@pytest.fixture(scope="session")
def alexnet_params():
  """The paper's network (configs/alexnet.py) and its initial parameters from key 0: the test
  files share them, as initialising 61 million parameters takes seconds."""
  import jax
  import jax.numpy as jnp

  from supervision import models

  model = models.create_model(alexnet.get_config())
  return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 224, 224, 3)))["params"]


@pytest.fixture
def image_folder(tmp_path):
  """A function writing tmp/data/<split>/<class>/<n>.png from {split: {class: count}}.

  Every image is a solid grey whose level (1, 2, ...) identifies it; the function returns
  {level: class}, and its attribute `root` is tmp/data.
  """

  def make(layout, size=(48, 40)):
    classes = {}
    for split, counts in layout.items():
      for name, count in counts.items():
        folder = tmp_path / "data" / split / name
        folder.mkdir(parents=True)
        for n in range(count):
          level = len(classes) + 1
          Image.new("RGB", size, (level,) * 3).save(folder / f"{n:03d}.png")
          classes[level] = name
    return classes

  make.root = tmp_path / "data"
  return make


@pytest.fixture
def folder_config():
  """A function giving the paper's config reading a folder, small enough for tests."""

  def make(root, num_classes, **overrides):
    config = alexnet.get_config()
    config.dataset, config.num_classes = f"folder:{root}", num_classes
    config.image_size, config.crop_size, config.batch_size, config.num_threads = 32, 24, 4, 2
    config.num_workers = 0
    config.update(overrides)
    return config

  return make
