"""Training-set statistics against a direct numpy computation; `main.py --mode=stats`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from supervision import DataError, datasets, stats

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def photos(tmp_path, folder_config):
  """Six random photos of different sizes and modes in two classes, plus a bad file."""
  rng = np.random.default_rng(0)
  for n, (size, mode) in enumerate([((40, 30), "RGB"), ((20, 50), "L"), ((33, 33), "RGB")] * 2):
    folder = tmp_path / "data" / "train" / f"c{n % 2}"
    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).convert(mode).save(folder / f"{n}.png")
  (tmp_path / "data" / "train" / "c0" / "broken.png").write_bytes(b"\x89PNG broken")
  return folder_config(tmp_path / "data", 2, batch_size=4)


def test_statistics_equal_numpy(photos):
  root = Path(photos.dataset.removeprefix("folder:"))
  files = sorted(p for p in root.glob("train/*/*.png") if p.name != "broken.png")
  images = np.stack([datasets.decode_image(p.read_bytes(), 32) for p in files])
  pixels = images.reshape(-1, 3).astype(np.float64)
  cov = np.cov(pixels, rowvar=False, bias=True)
  eigvals, eigvecs = np.linalg.eigh(cov)

  got = stats.compute_stats(photos)
  assert (got["count"], got["skipped"]) == (6, 1)
  np.testing.assert_allclose(got["mean"], images.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(got["cov"], cov, rtol=1e-9)
  np.testing.assert_allclose(got["eigvals"], eigvals[::-1], rtol=1e-9)
  np.testing.assert_allclose(np.abs(got["eigvecs"]), np.abs(eigvecs[:, ::-1]), atol=1e-9)


def test_load_or_compute_caches_and_checks_the_file(photos, tmp_path):
  workdir = tmp_path / "work"
  first = stats.load_or_compute_stats(photos, str(workdir))
  assert first["mean"].shape == (32, 32, 3) and first["eigvecs"].shape == (3, 3)
  path = stats.stats_path(photos, str(workdir))
  assert path.exists()
  again = stats.load_or_compute_stats(photos, str(workdir))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])

  np.savez(path, **{**np.load(path), "image_size": 64})  # as if computed for another size
  with pytest.raises(DataError, match="image size 64.*image size 32"):
    stats.load_or_compute_stats(photos, str(workdir))


def test_main_stats_mode(photos, tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "main.py",
      "--mode=stats",
      "--config=configs/alexnet.py",
      f"--config.dataset={photos.dataset}",
      "--config.num_classes=2",
      "--config.image_size=32",
      "--config.batch_size=4",
      f"--workdir={tmp_path / 'work'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert "6 images" in result.stdout and "1 bad files skipped" in result.stdout
  assert "broken.png" in result.stderr
  assert list((tmp_path / "work").glob("stats_folder_*_32.npz"))


def test_main_stats_mode_reports_a_missing_folder_in_one_line(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "main.py",
      "--mode=stats",
      "--config=configs/alexnet.py",
      f"--config.dataset=folder:{tmp_path / 'nowhere'}",
      f"--workdir={tmp_path}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert f"{tmp_path / 'nowhere'} does not exist" in result.stderr


def test_fake_data_statistics_are_known_without_a_pass(folder_config):
  config = folder_config("unused", 10, dataset="fake")
  got = stats.compute_stats(config)  # no pass over 1.28 million fake images
  source = datasets.decoding_source(config, "train")
  images = np.stack([source[i]["image"] for i in range(200)]).astype(np.float64)
  pixels = images.reshape(-1, 3)  # 614,400 samples of each channel
  assert np.abs(got["mean"].mean() - images.mean()) < 0.5
  np.testing.assert_allclose(got["cov"], np.cov(pixels, rowvar=False), atol=60)  # ~1% of 5461
