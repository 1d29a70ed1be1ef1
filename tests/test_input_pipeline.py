"""Reading images: sources, host-side decoding, bad files and the Grain loader."""

import io
import itertools
import logging

import numpy as np
import pytest
from PIL import Image

from supervision import DataError, datasets
from supervision import input_pipeline as ip


def encode(image, fmt, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def levels(batch, key="image"):
  """The grey level that identifies each image of an `image_folder` batch."""
  return [int(x) for x in batch[key][:, 0, 0, 0]]


def take(ds, n):
  return list(itertools.islice(iter(ds), n))


# Decoding.


def test_decode_keeps_the_central_square_of_the_shorter_side():
  image = Image.new("RGB", (90, 30), (255, 0, 0))
  image.paste((0, 255, 0), (30, 0, 60, 30))  # the central 30x30 square is green
  out = datasets.decode_image(encode(image, "PNG"), 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  # The resampling filter of the edge columns reaches a little into the red sides.
  np.testing.assert_array_equal(out[:, 1:-1], np.broadcast_to([0, 255, 0], (16, 14, 3)))
  assert (out[:, [0, -1], 1] > 200).all()


@pytest.mark.parametrize(
  "image, fmt",
  [
    (Image.new("L", (20, 10), 77), "JPEG"),  # grayscale
    (Image.new("CMYK", (20, 10), (0, 0, 0, 0)), "JPEG"),  # CMYK white
    (Image.new("RGBA", (5, 7), (9, 9, 9, 0)), "PNG"),  # smaller than the crop, with alpha
    (Image.new("P", (300, 200), 3), "GIF"),
  ],
)
def test_decode_gives_rgb_of_the_size_for_any_mode(image, fmt):
  out = datasets.decode_image(encode(image, fmt), 32)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  assert np.ptp(out) <= 2  # a solid image stays solid


@pytest.mark.parametrize("fmt", ["PNG", "PPM"])
def test_decode_scales_16_bit_grey_to_8_bits_and_refuses_pixels_of_no_range(fmt):
  """16-bit levels 0, 257 x 100 and 65535 (a PNG or PGM, as scanners write them) are 0, 100
  and 255; PIL's own conversion would make the last two 255."""
  bands = np.repeat(np.array([0, 25700, 65535], np.uint16), 16)[:, None]  # 48 rows, 3 bands
  out = datasets.decode_image(encode(Image.fromarray(np.tile(bands, (1, 48))), fmt), 48)
  np.testing.assert_array_equal(out[[8, 24, 40], 24], [[0] * 3, [100] * 3, [255] * 3])
  for pixels in (np.full((8, 8), 3, np.int32), np.full((8, 8), 0.5, np.float32)):
    with pytest.raises(ValueError, match="its (I|F) pixels have no fixed range"):
      datasets.decode_image(encode(Image.fromarray(pixels), "TIFF"), 8)


def test_decode_reads_very_large_images():
  image = Image.new("RGB", (10_000, 9_000), (10, 200, 30))  # above PIL's 89.5M-pixel limit
  out = datasets.decode_image(encode(image, "JPEG"), 256)
  assert out.shape == (256, 256, 3) and np.abs(out.astype(int) - [10, 200, 30]).max() <= 3


# Folders.


def test_folder_labels_are_sorted_class_folders(image_folder, folder_config):
  classes = image_folder({"train": {"b": 2, "a": 1, "c": 1}, "val": {"c": 1}})
  source = ip.make_source(folder_config(image_folder.root, 3), "train")
  got = {int(e["image"][0, 0, 0]): int(e["label"]) for e in (source[i] for i in range(len(source)))}
  assert got == {level: "abc".index(classes[level]) for level in got} and len(got) == 4
  val = ip.make_source(folder_config(image_folder.root, 3), "val")  # a split may lack classes
  assert int(val[0]["label"]) == 2


def test_a_class_folder_missing_from_the_train_split_is_named(image_folder, folder_config):
  image_folder({"train": {"a": 1, "truck": 1}, "test": {"a": 1, "lorry": 1}})
  with pytest.raises(
    DataError, match=r"\['lorry'\].*train lacks \['lorry'\]; test lacks \['truck'\]"
  ):
    ip.make_source(folder_config(image_folder.root, 2), "train")


def test_validation_and_val_stand_in_for_each_other(image_folder, folder_config):
  image_folder({"train": {"a": 1}, "val": {"a": 2}})
  config = folder_config(image_folder.root, 1)
  assert len(ip.make_source(config, "validation")) == 2
  with pytest.raises(DataError, match=r"'test'.*found folders \['train', 'val'\]"):
    ip.make_source(config, "test")


def test_uppercase_extensions_and_contents_not_names(tmp_path, folder_config):
  folder = tmp_path / "train" / "a"
  folder.mkdir(parents=True)
  red = Image.new("RGB", (8, 8), (255, 0, 0))
  (folder / "x.JPEG").write_bytes(encode(red, "JPEG"))
  (folder / "y.PNG").write_bytes(encode(red, "PNG"))
  (folder / "z.JPEG").write_bytes(encode(red, "PNG"))  # a PNG named .JPEG
  (folder / ".hidden").write_bytes(b"not data")
  source = ip.make_source(folder_config(tmp_path, 1), "train")
  assert [e["image"][0, 0].tolist() for e in (source[i] for i in range(3))] == [[254, 0, 0]] + [
    [255, 0, 0]
  ] * 2 and len(source) == 3


def test_class_list_file_gives_the_labels(image_folder, folder_config, tmp_path):
  image_folder({"val": {"n02": 1, "n01": 1}})
  class_list = tmp_path / "classes.tsv"
  class_list.write_text("index\tsynset\tname\n0\tn02\tb\n1\tn00\tz\n2\tn01\ta\n")
  source = ip.make_source(folder_config(image_folder.root, 3, class_list=str(class_list)), "val")
  assert [int(source[i]["label"]) for i in range(2)] == [2, 0]  # files of n01 come first


def test_class_folder_missing_from_the_class_list_is_named(image_folder, folder_config, tmp_path):
  image_folder({"val": {"n01": 1, "n99": 1}})
  class_list = tmp_path / "classes.tsv"
  class_list.write_text("0\tn01\ta\n")
  config = folder_config(image_folder.root, 1, class_list=str(class_list))
  with pytest.raises(DataError, match=r"\['n99'\].*classes.tsv"):
    ip.make_source(config, "val")


def test_classes_select_some_class_folders_in_their_order(image_folder, folder_config):
  """Label i is the i-th class of config.classes, whatever the folders' order; the images of the
  other folders are left out of every split."""
  # Grey levels: train a 1-2, b 3, c 4-6; test a 7, c 8.
  image_folder({"train": {"a": 2, "b": 1, "c": 3}, "test": {"a": 1, "c": 1}})
  config = folder_config(image_folder.root, 2, classes=("c", "a"))
  want = dict(train={1: 1, 2: 1, 4: 0, 5: 0, 6: 0}, test={7: 1, 8: 0})
  for split, labels in want.items():
    source = ip.make_source(config, split)
    examples = [source[i] for i in range(len(source))]
    assert {int(e["image"][0, 0, 0]): int(e["label"]) for e in examples} == labels
  classes, _ = datasets.source_classes_and_splits(config)
  assert classes == ["c", "a"]


@pytest.mark.parametrize(
  "classes,num_classes,match",
  [
    (("a", "x"), 2, r"config.classes=\('a', 'x'\): \['x'\]"),
    (("a,b",), 1, r"\['a,b'\].*as a tuple, e.g. --config.classes=\"\('a', 'b'\)\""),
    (("a", "a"), 2, "a class named twice"),
    (("a",), 2, "config.classes has 1 classes but config.num_classes=2"),
  ],
)
def test_bad_classes_are_named(image_folder, folder_config, classes, num_classes, match):
  image_folder({"train": {"a": 1, "b": 1}})
  with pytest.raises(DataError, match=match):
    ip.make_source(folder_config(image_folder.root, num_classes, classes=classes), "train")


def test_classes_of_a_dataset_without_class_folders_is_a_config_error(folder_config):
  config = folder_config("unused", 10, dataset="fake", classes=("a",))
  with pytest.raises(ip.ConfigError, match="config.classes selects class folders"):
    datasets.decoding_source(config, "train")


def test_wrong_num_classes_is_named(image_folder, folder_config):
  image_folder({"train": {"a": 1, "b": 1}})
  with pytest.raises(DataError, match="has 2 classes but config.num_classes=5"):
    ip.make_source(folder_config(image_folder.root, 5), "train")


def test_split_sizes(image_folder, folder_config):
  image_folder({"train": {"a": 3, "b": 2}, "validation": {"a": 1, "b": 1}})
  config = folder_config(image_folder.root, 2)
  assert (
    len(datasets.decoding_source(config, "train")) == 5 and len(ip.make_source(config, "val")) == 2
  )


def test_imagenet2012_without_its_files_says_where_to_put_them(tmp_path):
  pytest.importorskip("tensorflow_datasets", reason="TFDS is not installed")
  config = ip.ml_collections.ConfigDict(
    dict(dataset="imagenet2012", data_dir=str(tmp_path), classes=())
  )
  with pytest.raises(DataError) as error:
    ip.make_source(config, "train")
  message = str(error.value)
  assert str(tmp_path / "downloads" / "manual") in message
  assert "ILSVRC2012_img_train.tar" in message and "folder:" in message


def test_tfds_datasets_are_decoded_like_files(folder_config, caplog):
  tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS is not installed")
  config = folder_config("unused", 10, dataset="cifar10", eval_split="test")
  with tfds.testing.mock_data(num_examples=10), caplog.at_level(logging.WARNING):
    (batch,) = take(ip.train_dataset(config, 0, 1), 1)
    assert len(ip.make_source(config, "train")) == len(ip.make_source(config, "test")) == 10
  assert batch["image"].shape == (4, 32, 32, 3) and batch["label"].dtype == np.int32
  assert "Skipped" not in caplog.text


def test_fake_data_says_so(folder_config, caplog):
  config = folder_config("unused", 10, dataset="fake")
  with caplog.at_level(logging.WARNING):
    (batch,) = take(ip.train_dataset(config, 0, 1), 1)
  assert "for throughput benchmarks only" in caplog.text
  assert batch["image"].shape == (4, 32, 32, 3) and batch["label"].dtype == np.int32


# The loader.


@pytest.fixture
def twelve(image_folder, folder_config):
  """A folder of 12 training and 11 validation images, and its config."""
  classes = image_folder({"train": {"a": 5, "b": 7}, "val": {"a": 6, "b": 5}})
  return classes, folder_config(image_folder.root, 2)


def test_training_batches_are_shuffled_epochs_with_right_labels(twelve):
  classes, config = twelve
  batches = take(ip.train_dataset(config, 0, 1), 6)  # two epochs of 12
  assert batches[0]["image"].shape == (4, 32, 32, 3) and batches[0]["image"].dtype == np.uint8
  assert batches[0]["label"].shape == (4,) and batches[0]["label"].dtype == np.int32
  seen = [level for b in batches for level in levels(b)]
  assert sorted(seen[:12]) == sorted(seen[12:]) == list(range(1, 13))
  assert seen[:12] != seen[12:] and seen[:12] != sorted(seen[:12])
  for b in batches:
    assert [int(x) for x in b["label"]] == ["ab".index(classes[v]) for v in levels(b)]


def test_a_batch_across_an_epoch_boundary_takes_from_both_epochs():
  """10 examples in batches of 4: batch 2 ends epoch 0 and starts epoch 1, and so on. Every
  stretch of 10 positions of the stream that starts an epoch is a permutation, each its own."""
  stream = np.concatenate([ip.train_indices(10, 0, 0, 1, 4, step) for step in range(10)])
  epochs = stream.reshape(4, 10)
  for e, order in enumerate(epochs):
    assert sorted(order) == list(range(10)), f"epoch {e} of the stream: {order}"
  assert len({tuple(order) for order in epochs}) == 4, f"epochs shuffled alike: {epochs}"
  two = [ip.train_indices(10, 0, p, 2, 2, step) for step in range(10) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(two), stream, err_msg="2 processes' rows")


def test_order_is_deterministic_for_a_seed(twelve):
  _, config = twelve
  first, second = (take(ip.train_dataset(config, 0, 1), 3) for _ in range(2))
  assert [levels(b) for b in first] == [levels(b) for b in second]
  config.seed = 1
  assert [levels(b) for b in take(ip.train_dataset(config, 0, 1), 3)] != [levels(b) for b in first]


def test_worker_processes_give_the_same_stream(twelve):
  _, config = twelve
  in_process = take(ip.train_dataset(config, 0, 1), 4)
  config.num_workers = 2
  assert [levels(b) for b in take(ip.train_dataset(config, 0, 1), 4)] == [
    levels(b) for b in in_process
  ]


def test_restored_state_continues_the_stream_exactly(twelve):
  _, config = twelve
  iterator = iter(ip.train_dataset(config, 0, 1))
  take(iterator, 4)  # into the second epoch
  state = iterator.get_state()
  rest = take(iterator, 5)
  restored = iter(ip.train_dataset(config, 0, 1))
  restored.set_state(state)
  assert [levels(b) for b in take(restored, 5)] == [levels(b) for b in rest]


def test_processes_read_their_rows_of_the_same_global_batches(twelve):
  _, config = twelve
  per_process = [take(ip.train_dataset(config, index, 2), 6) for index in range(2)]
  one_process = take(ip.train_dataset(config, 0, 1), 6)  # batches of 4: two epochs
  for step, batch in enumerate(one_process):
    rows = [levels(per_process[p][step]) for p in range(2)]
    assert rows[0] + rows[1] == levels(batch)  # process p holds rows 2p, 2p + 1
  first_epoch = [level for b in one_process[:3] for level in levels(b)]
  assert sorted(first_epoch) == list(range(1, 13))


def test_evaluation_sees_every_example_once_with_padding_masked(twelve):
  _, config = twelve  # 11 validation images (levels 13-23), host batches of 2
  per_process = [list(ip.eval_dataset(config, index, 2)) for index in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == 3  # 12 slots, the last masked
  real = [
    v for bs in per_process for b in bs for v, m in zip(levels(b), b["mask"], strict=True) if m
  ]
  assert sorted(real) == list(range(13, 24))
  assert sum(not m for bs in per_process for b in bs for m in b["mask"]) == 1
  assert per_process[0][0]["mask"].dtype == bool


# Bad files.


def test_bad_files_are_skipped_and_named(image_folder, folder_config, caplog):
  classes = image_folder({"train": {"a": 3, "b": 3}})
  folder = image_folder.root / "train" / "b"
  good = encode(Image.new("RGB", (40, 40), (9, 9, 9)), "JPEG")
  bad = {
    "empty.jpg": b"",
    "truncated.jpg": good[: len(good) // 2],
    "notes.JPEG": b"this is not an image\n" * 10,
    "noise.png": np.random.default_rng(0).bytes(500),
  }
  for name, data in bad.items():
    (folder / name).write_bytes(data)
  config = folder_config(image_folder.root, 2, batch_size=10)
  with caplog.at_level(logging.WARNING):
    (batch,) = take(ip.train_dataset(config, 0, 1), 1)  # one epoch: the 6 good of 10 files
  good = {"image": batch["image"][batch["mask"]], "label": batch["label"][batch["mask"]]}
  assert sorted(levels(good)) == list(range(1, 7))
  assert [int(x) for x in good["label"]] == ["ab".index(classes[v]) for v in levels(good)]
  for name in bad:
    assert caplog.text.count(name) == 1, caplog.text
  assert "(4 skipped so far)" in caplog.text


def test_entries_of_class_folders_that_are_not_files_are_named(image_folder, folder_config, caplog):
  """A folder inside a class folder, a broken link and an empty class folder are warned of, not
  dropped in silence; the images beside them are read."""
  image_folder({"train": {"a": 2, "b": 1}})
  train = image_folder.root / "train"
  (train / "a" / "nested").mkdir()
  (train / "a" / "broken.jpg").symlink_to(train / "missing.jpg")
  (train / "c").mkdir()
  with caplog.at_level(logging.WARNING):
    source = ip.make_source(folder_config(image_folder.root, 3), "train")
  assert len(source) == 3
  assert "2 entries of class folders" in caplog.text
  assert "'a/broken.jpg', 'a/nested'" in caplog.text
  assert f"Class folders without a file in {train}: ['c']" in caplog.text


def test_bad_files_are_masked_in_evaluation(image_folder, folder_config, caplog):
  image_folder({"val": {"a": 3}})
  (image_folder.root / "val" / "a" / "zero.jpg").write_bytes(b"")
  with caplog.at_level(logging.WARNING):
    (batch,) = list(ip.eval_dataset(folder_config(image_folder.root, 1), 0, 1))
  assert batch["mask"].tolist() == [True, True, True, False] and "zero.jpg" in caplog.text


# The shared real data.


def test_imagenet_samples_decode_without_error(imagenet_samples_dir, imagenet_classes_file, caplog):
  config = ip.ml_collections.ConfigDict(
    dict(
      dataset=f"folder:{imagenet_samples_dir}",
      class_list=str(imagenet_classes_file),
      classes=(),
      num_classes=1000,
      image_size=256,
      eval_split="validation",
      batch_size=50,
      num_workers=0,
      cache_images=False,
      num_threads=2,
      decoder="host",
    )
  )
  with caplog.at_level(logging.WARNING):
    batches = list(ip.eval_dataset(config, 0, 1))
  assert len(batches) == 5 and all(b["mask"].all() for b in batches)
  assert batches[0]["image"].shape == (50, 256, 256, 3) and "Skipped" not in caplog.text
  labels = np.concatenate([b["label"] for b in batches])
  assert len(set(labels.tolist())) == 250 and labels.max() < 1000


def test_cifar10_small_reads_with_its_class_names(cifar10_small_dir, folder_config):
  config = folder_config(cifar10_small_dir, 10, batch_size=20, eval_split="test")
  assert (
    len(datasets.decoding_source(config, "train")) == len(ip.make_source(config, "test")) == 1000
  )
  (batch,) = take(ip.train_dataset(config, 0, 1), 1)
  assert batch["image"].shape == (20, 32, 32, 3) and batch["label"].max() < 10


def test_cached_source_decodes_every_image_up_front(image_folder, folder_config):
  classes = image_folder({"train": {"a": 3, "b": 4}})
  (image_folder.root / "train" / "b" / "zero.jpg").write_bytes(b"")
  config = folder_config(image_folder.root, 2, batch_size=3, cache_images=True)
  source = ip.make_source(config, "train")
  for path in (image_folder.root / "train").glob("*/*"):
    path.unlink()  # reads after the caching would fail
  assert len(source) == 8
  batch = ip.read_batch(source, np.arange(8))
  assert batch["mask"].tolist() == [True] * 7 + [False]
  assert levels(batch)[:7] == list(range(1, 8))
  assert [int(x) for x in batch["label"][:7]] == ["ab".index(classes[v]) for v in range(1, 8)]
  assert list(batch["errors"]) == [7] and "zero.jpg" in batch["errors"][7]


def test_loader_settings_follow_the_host_cores(twelve, monkeypatch):
  _, config = twelve
  config.num_workers = config.num_threads = -1
  source = datasets.decoding_source(config, "train")
  cached = ip.CachedSource(source, config, "train")
  for cores, decoding, in_memory in [(16, (16, 2), (0, 16)), (2, (0, 4), (0, 4))]:
    monkeypatch.setattr(ip, "host_cores", lambda cores=cores: cores)
    assert ip.loader_settings(config, source) == decoding
    assert ip.loader_settings(config, cached) == in_memory
  config.num_workers, config.num_threads = 3, 1
  assert ip.loader_settings(config, source) == ip.loader_settings(config, cached) == (3, 1)
