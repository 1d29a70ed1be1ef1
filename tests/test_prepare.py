"""Prepared datasets: --mode=prepare (counts, bad files, labels, statistics, resuming after a
kill) and training from `prepared:` (order, processes, evaluation, exact resume)."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_input_pipeline import levels, take
from test_train import assert_resume_is_exact

from configs import smoke
from supervision import (
  ConfigError,
  DataError,
  datasets,
  input_pipeline,
  prepare,
  prepared,
  stats,
  workdirs,
)

ROOT = Path(__file__).resolve().parents[1]


def noise_folder(root, counts, size=(120, 90), bad=()):
  """ROOT/train/<class>/<n>.jpg of random pixels, {class: count}, plus the `bad` file names
  (zero bytes) in class "b"; returns the list of good files in label order."""
  rng, files = np.random.default_rng(0), []
  for name, count in counts.items():
    folder = root / "train" / name
    folder.mkdir(parents=True)
    for n in range(count):
      pixels = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
      Image.fromarray(pixels).save(folder / f"{n:03d}.jpg", quality=95)
      files.append(folder / f"{n:03d}.jpg")
  for name in bad:
    (root / "train" / "b" / name).write_bytes(b"")
  return files


def prepared_config(config, out):
  config = config.copy_and_resolve_references()
  config.dataset = f"{prepared.PREFIX}{out}"
  return config


def read_all(source):
  return input_pipeline.read_batch(source, np.arange(len(source)))


@pytest.fixture
def photos(tmp_path, folder_config):
  """12 noise photos in classes a (5) and b (7), and 2 empty files in b; the config reads it."""
  files = noise_folder(tmp_path / "data", {"a": 5, "b": 7}, bad=("broken.jpg", "empty.jpg"))
  config = folder_config(tmp_path / "data", 2, num_workers=0, eval_split="train")
  config.prepare.shard_size = 5
  return files, config


def test_prepare_counts_bad_files_labels_and_statistics(photos, tmp_path, capsys):
  files, config = photos
  out = tmp_path / "prepared"
  metadata = prepare.run_prepare(config, str(out))
  # 14 files in shards of 5: 5 + 5 + 4, of which 2 unreadable.
  assert metadata["splits"]["train"]["shards"] == [
    f"train-0000{i}-of-00003.array_record" for i in range(3)
  ]
  assert (metadata["splits"]["train"]["examples"], metadata["splits"]["train"]["bad_files"]) == (
    12,
    2,
  )
  assert metadata["classes"] == ["a", "b"] and metadata["image_size"] == 32
  assert "train: 12 records + 2 bad files = 14 source examples" in capsys.readouterr().out
  report = (out / prepared.BAD_FILES).read_text().splitlines()
  assert [line.split("\t")[0] for line in report] == ["train", "train"]
  assert "broken.jpg" in report[0] and "empty.jpg" in report[1]

  # The records are the decoded files in order, re-encoded as JPEGs, with their labels.
  source = datasets.decoding_source(prepared_config(config, out), "train")
  batch = read_all(source)
  originals = np.stack([datasets.decode_image(f.read_bytes(), 32) for f in files])
  assert batch["mask"].all() and batch["label"].tolist() == [0] * 5 + [1] * 7
  mse = np.mean((batch["image"].astype(float) - originals) ** 2)
  assert 10 * np.log10(255**2 / mse) > 25  # noise is JPEG's worst case; photos give ~37 dB

  # The statistics are those of the decoded files before encoding (numpy over the originals).
  got = stats.compute_stats(prepared_config(config, out))
  pixels = originals.reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(got["mean"], originals.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(got["cov"], np.cov(pixels, rowvar=False, bias=True), rtol=1e-9)
  assert (got["count"], got["skipped"]) == (12, 2)
  assert not (out / prepare.WORK).exists()

  # A second run writes nothing and counts the records again.
  mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
  prepare.run_prepare(config, str(out))
  assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
  assert "was prepared already" in capsys.readouterr().out


def test_worker_processes_write_the_same_dataset(photos, tmp_path):
  _, config = photos
  prepare.run_prepare(config, str(tmp_path / "one"))
  config.num_workers = 2
  prepare.run_prepare(config, str(tmp_path / "two"))
  for path in (tmp_path / "one").iterdir():
    assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name


def test_a_killed_prepare_resumes_to_the_same_records(tmp_path, folder_config):
  noise_folder(tmp_path / "data", {"a": 60, "b": 60}, size=(400, 300), bad=("empty.jpg",))
  config = folder_config(tmp_path / "data", 2, num_workers=0)
  config.prepare.shard_size = 3
  out = tmp_path / "killed"
  args = [
      sys.executable, "main.py", "--mode=prepare", "--config=configs/alexnet.py",
      f"--config.dataset={config.dataset}", "--config.num_classes=2", "--config.image_size=32",
      "--config.num_workers=0", "--config.prepare.shard_size=3", f"--workdir={out}",
  ]  # fmt: skip
  proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, start_new_session=True)
  deadline = time.time() + 120
  while len(list((out / prepare.WORK).glob("*.npz"))) < 3 and time.time() < deadline:
    assert proc.poll() is None, proc.stderr.read().decode()
    time.sleep(0.01)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (out / prepared.METADATA).exists(), "the prepare ended before it was killed"
  with pytest.raises(DataError, match="is unfinished"):
    datasets.decoding_source(prepared_config(config, out), "train")

  subprocess.run(args, cwd=ROOT, check=True, capture_output=True, timeout=300)
  prepare.run_prepare(config, str(tmp_path / "whole"))
  names = sorted(p.name for p in (tmp_path / "whole").iterdir())
  # main.py held the workdir through its lock file, which run_prepare alone does not take.
  killed = sorted(p.name for p in out.iterdir() if p.name != workdirs.LOCK)
  assert killed == names and len(names) == 44
  for name in names:
    assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_prepare_refuses_to_mix_settings(photos, tmp_path):
  _, config = photos
  out = tmp_path / "prepared"
  prepare.run_prepare(config, str(out))
  config.prepare.jpeg_quality = 75
  with pytest.raises(DataError, match="jpeg_quality: 90 there, 75 now"):
    prepare.run_prepare(config, str(out))


def test_reading_checks_the_config(photos, tmp_path):
  _, config = photos
  prepare.run_prepare(config, str(tmp_path / "prepared"))
  wrong = prepared_config(config, tmp_path / "prepared")
  wrong.image_size = 64
  with pytest.raises(DataError, match="holds 32x32 images but config.image_size=64"):
    datasets.decoding_source(wrong, "train")
  wrong = prepared_config(config, tmp_path / "prepared")
  wrong.num_classes = 3
  with pytest.raises(DataError, match="has 2 classes but config.num_classes=3"):
    datasets.decoding_source(wrong, "train")
  with pytest.raises(DataError, match="no split 'test'"):
    datasets.decoding_source(prepared_config(config, tmp_path / "prepared"), "test")


@pytest.fixture
def twelve_prepared(image_folder, folder_config, tmp_path):
  """The `twelve` folder of test_input_pipeline (grey levels 1-12 train, 13-23 val), prepared."""
  classes = image_folder({"train": {"a": 5, "b": 7}, "val": {"a": 6, "b": 5}})
  config = folder_config(image_folder.root, 2, num_workers=0)
  prepare.run_prepare(config, str(tmp_path / "prepared"))
  return classes, prepared_config(config, tmp_path / "prepared")


def test_prepared_training_order_is_the_folders(twelve_prepared, image_folder, folder_config):
  classes, config = twelve_prepared
  folder = folder_config(image_folder.root, 2)
  batches = take(input_pipeline.train_dataset(config, 0, 1), 6)  # two epochs of 12
  assert [levels(b) for b in batches] == [
    levels(b) for b in take(input_pipeline.train_dataset(folder, 0, 1), 6)
  ]  # solid grey levels survive JPEG exactly
  for b in batches:
    assert [int(x) for x in b["label"]] == ["ab".index(classes[v]) for v in levels(b)]


def test_prepared_processes_read_their_rows_and_evaluation_sees_all(twelve_prepared):
  _, config = twelve_prepared
  per_process = [take(input_pipeline.train_dataset(config, p, 2), 6) for p in range(2)]
  whole = take(input_pipeline.train_dataset(config, 0, 1), 6)
  for step, batch in enumerate(whole):
    assert levels(per_process[0][step]) + levels(per_process[1][step]) == levels(batch)
  evaluation = [list(input_pipeline.eval_dataset(config, p, 2)) for p in range(2)]
  real = [
    v for bs in evaluation for b in bs for v, m in zip(levels(b), b["mask"], strict=True) if m
  ]
  assert sorted(real) == list(range(13, 24))  # every validation image exactly once


def test_training_on_prepared_data_resumes_exactly(cifar10_small_dir, tmp_path):
  config = smoke.get_config()
  config.update(dataset=f"folder:{cifar10_small_dir}", num_workers=0, cache_images=False)
  config.prepare.shard_size = 256
  prepare.run_prepare(config, str(tmp_path / "prepared"))
  config = prepared_config(config, tmp_path / "prepared")
  config.num_eval_batches = 2
  assert_resume_is_exact(config, tmp_path, 8)
  metrics = json.loads((tmp_path / "once" / "eval_results.json").read_text())
  assert metrics["center"]["count"] == 2 * config.batch_size


def test_dali_decodes_as_the_host_does(photos, tmp_path):
  pytest.importorskip("nvidia.dali", reason="DALI is not installed (requirements-dali.txt)")
  _, config = photos
  prepare.run_prepare(config, str(tmp_path / "prepared"))
  config = prepared_config(config, tmp_path / "prepared")
  config.batch_size = 5  # evaluation: 12 examples in 3 batches, 3 rows of padding
  host = take(input_pipeline.train_dataset(config, 0, 1), 3) + list(
    input_pipeline.eval_dataset(config, 0, 1)
  )
  config.decoder = "dali"
  dali = take(input_pipeline.train_dataset(config, 0, 1), 3) + list(
    input_pipeline.eval_dataset(config, 0, 1)
  )
  assert len(dali) == len(host) == 6 and (~dali[-1]["mask"]).sum() == 3
  for a, b in zip(host, dali, strict=True):
    np.testing.assert_array_equal(a["label"][a["mask"]], b["label"][b["mask"]])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert isinstance(b["image"], np.ndarray) and b["image"].dtype == np.uint8
    np.testing.assert_array_equal(a["image"][a["mask"]], b["image"][b["mask"]])


@pytest.mark.parametrize(
  "decoder,dataset,match",
  [("dali", "folder", "decodes prepared datasets"), ("gpu", "prepared", "config.decoder='gpu'")],
)
def test_decoder_errors(photos, tmp_path, decoder, dataset, match):
  _, config = photos
  if dataset == "prepared":
    prepare.run_prepare(config, str(tmp_path / "prepared"))
    config = prepared_config(config, tmp_path / "prepared")
  config.decoder = decoder
  with pytest.raises(ConfigError, match=match):
    input_pipeline.train_dataset(config, 0, 1)


def test_shared_photos_prepared_keep_statistics_labels_and_pixels(
  imagenet_samples_dir, imagenet_classes_file, tmp_path
):
  config = smoke.get_config()
  config.update(
    dataset=f"folder:{imagenet_samples_dir}", class_list=str(imagenet_classes_file),
    num_classes=1000, image_size=256, crop_size=224, train_split="val", batch_size=50,
    num_workers=0, cache_images=False,
  )  # fmt: skip
  folder_stats = stats.compute_stats(config)  # the pass of --mode=stats
  prepare.run_prepare(config, str(tmp_path / "prepared"))
  ready = prepared_config(config, tmp_path / "prepared")
  for key in ("mean", "cov", "eigvals", "count"):
    np.testing.assert_allclose(stats.compute_stats(ready)[key], folder_stats[key], rtol=1e-12)
  originals = read_all(datasets.decoding_source(config, "val"))
  copies = read_all(datasets.decoding_source(ready, "val"))
  assert copies["mask"].all() and len(copies["label"]) == 250
  np.testing.assert_array_equal(copies["label"], originals["label"])
  mse = np.mean((copies["image"].astype(float) - originals["image"]) ** 2, axis=(1, 2, 3))
  psnr = 10 * np.log10(255**2 / mse)
  assert psnr.mean() > 35 and psnr.min() > 28  # quality 90: 36.9 dB on average, 29.7 the least
  ready.class_list = ""  # predict shows the names of the class list it was prepared with
  names = datasets.display_names(ready, datasets.class_names(ready))
  assert len(names) == 1000 and (names[0], names[999]) == ("tench", "toilet tissue")


def test_tfds_datasets_are_prepared_like_folders(folder_config, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS is not installed")
  config = folder_config("unused", 10, dataset="cifar10", eval_split="test")
  config.prepare.splits = ("train", "test")  # mock data lists no splits of its own
  with tfds.testing.mock_data(num_examples=6):
    metadata = prepare.run_prepare(config, str(tmp_path / "prepared"))
    originals = read_all(datasets.decoding_source(config, "test"))
  assert [metadata["splits"][s]["examples"] for s in ("train", "test")] == [6, 6]
  copies = read_all(
    datasets.decoding_source(prepared_config(config, tmp_path / "prepared"), "test")
  )
  np.testing.assert_array_equal(copies["label"], originals["label"])
  for copy, original in zip(copies["image"], originals["image"], strict=True):  # PIL's JPEG
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, "JPEG", quality=90)
    np.testing.assert_array_equal(copy, np.asarray(Image.open(buffer)))
