"""Retrieval ("Qualitative Evaluations"): exact k-NN and Hamming search against brute force,
precision@k by hand, the binary auto-encoder, --mode=retrieval and Figure 4 (right)."""

import json
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from supervision import ConfigError, DataError, binary_codes, retrieval, retrieval_figure
from tests.test_main import ROOT


def brute_force(distances, k):
  """The k smallest of each row of `distances` [Q, N], ties to the lower index."""
  indices = np.argsort(distances, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(distances, indices, axis=1), indices


def clustered(rng, centers, count):
  """`count` non-negative vectors around random ones of `centers`, and their labels."""
  labels = rng.integers(0, len(centers), count).astype(np.int32)
  noise = rng.normal(size=(count, centers.shape[1]))
  return np.maximum(centers[labels] + noise, 0).astype(np.float32), labels


@pytest.mark.parametrize("k", [5, 40])  # 40 > database_chunk: neighbours from several blocks
def test_euclidean_neighbours_equal_brute_force(k):
  rng = np.random.default_rng(0)
  queries = rng.normal(size=(37, 16)).astype(np.float32)
  database = rng.normal(size=(101, 16)).astype(np.float32)
  database[70] = database[10]  # a tie across blocks of 30: the lower index comes first
  queries[3] = database[10]  # at distance 0 from both (no NaN from rounding below 0)
  distances, indices = retrieval.euclidean_neighbours(
    queries, database, k, query_chunk=8, database_chunk=30
  )
  want_distances, want_indices = brute_force(
    np.sqrt(((queries[:, None] - database[None]) ** 2).sum(-1)), k
  )
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_allclose(distances, want_distances, rtol=1e-5, atol=1e-5)
  assert list(indices[3, :2]) == [10, 70]


def test_hamming_neighbours_equal_brute_force():
  rng = np.random.default_rng(1)
  queries, database = rng.random((29, 24)) < 0.5, rng.random((77, 24)) < 0.5
  distances, indices = retrieval.hamming_neighbours(
    queries, database, 12, query_chunk=7, database_chunk=20
  )
  # 24-bit distances tie often: the order among equals is the database's.
  want_distances, want_indices = brute_force((queries[:, None] != database[None]).sum(-1), 12)
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(distances, want_distances)


def test_more_neighbours_than_vectors_is_an_error():
  with pytest.raises(ConfigError, match="k=4 neighbours asked of a database of 3"):
    retrieval.euclidean_neighbours(
      np.zeros((2, 5)), np.zeros((3, 5)), 4, query_chunk=2, database_chunk=2
    )


def test_precision_at_k_by_hand():
  neighbour_labels = np.array([[1, 1, 0, 1], [2, 0, 2, 2]])
  # k=1: both first neighbours match; k=2: 2/2 and 1/2; k=3: 2/3 and 2/3; k=4: 3/4 and 3/4.
  got = retrieval.precision_at_k(neighbour_labels, np.array([1, 2]), (1, 2, 3, 4))
  assert got == pytest.approx({1: 1.0, 2: 0.75, 3: 2 / 3, 4: 0.75})


def test_autoencoder_codes_are_binary_and_retrieve_the_class():
  rng = np.random.default_rng(2)
  centers = np.maximum(rng.normal(size=(8, 64)), 0) * 2
  database, database_labels = clustered(rng, centers, 1000)
  queries, query_labels = clustered(rng, centers, 200)
  config = ml_collections.ConfigDict(
    dict(hidden=(32,), code_noise=2.0, steps=200, batch_size=64, learning_rate=1e-2, seed=0)
  )
  codec = binary_codes.train(database, 16, config)
  codes = binary_codes.encode(codec, queries), binary_codes.encode(codec, database)
  assert codes[0].shape == (200, 16) and codes[0].dtype == bool
  # Without the noise on the code layer about half of the units end up near 0 or 1.
  assert codec.summary(queries)["binary_fraction"] > 0.9
  _, indices = retrieval.hamming_neighbours(*codes, 10, query_chunk=64, database_chunk=256)
  indices = np.asarray(indices)
  precision = retrieval.precision_at_k(database_labels[indices], query_labels, (10,))[10]
  assert precision > 0.8  # chance: 1/8


def test_missing_or_bad_features_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    retrieval.load_features(str(tmp_path), "validation")
  message = str(error.value)
  assert str(tmp_path / "features" / "validation.npz") in message
  assert "--mode=features --config.features.split=validation" in message
  path = tmp_path / "features" / "train.npz"
  path.parent.mkdir()
  np.savez(path, features=np.zeros((3, 2)), labels=np.zeros(3))  # before the indices were kept
  with pytest.raises(DataError, match="train.npz must hold 'features', 'labels' and 'indices'; it"):
    retrieval.load_features(str(tmp_path), "train")
  path.write_text("not an archive")
  with pytest.raises(DataError, match="train.npz is not a readable .npz file"):
    retrieval.load_features(str(tmp_path), "train")


def test_the_mode_reports_a_missing_features_file(tmp_path):
  result = subprocess.run(
    [sys.executable, "main.py", "--config=configs/cifar10.py", "--mode=retrieval"]
    + [f"--workdir={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert f"Error: {tmp_path / 'features' / 'train.npz'} is missing" in result.stderr


TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 2


@pytest.fixture
def retrieval_run(tmp_path, image_folder, folder_config):
  """A folder dataset of solid grey images (the level identifies the image), feature files of
  its splits (clustered by class), and a small config for --mode=retrieval."""
  image_folder(
    {
      "train": {"a": TRAIN_PER_CLASS, "b": TRAIN_PER_CLASS},
      "test": {"a": TEST_PER_CLASS, "b": TEST_PER_CLASS},
    }
  )
  config = folder_config(image_folder.root, 2, eval_split="test")
  r = config.retrieval
  r.code_bits, r.hidden, r.steps, r.batch_size, r.k = (8,), (16,), 50, 8, (1, 3, 6)
  r.query_chunk, r.database_chunk, r.figure_queries = 3, 5, 3
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(2, 32)) * 2
  workdir = tmp_path / "work"
  (workdir / "features").mkdir(parents=True)
  features = {}
  for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
    labels = np.repeat(np.arange(2, dtype=np.int32), per_class)  # the folder's order
    vectors = (centers[labels] + rng.normal(size=(len(labels), 32)) * 2).astype(np.float32)
    examples = np.arange(len(labels))
    np.savez(
      workdir / "features" / f"{split}.npz", features=vectors, labels=labels, indices=examples
    )
    features[split] = vectors, labels
  return config, workdir, features


def test_retrieval_mode_writes_the_results_and_figure_4(retrieval_run, capsys):
  config, workdir, features = retrieval_run
  report = retrieval.run_retrieval(config, str(workdir))
  (database, database_labels), (queries, query_labels) = features["train"], features["test"]
  _, nearest = brute_force(((queries[:, None] - database[None]) ** 2).sum(-1), 6)
  hits = database_labels[nearest] == query_labels[:, None]
  stored = json.loads((workdir / "retrieval.json").read_text())
  assert [m["name"] for m in stored["methods"]] == ["euclidean", "hamming_8"]
  euclidean, hamming = stored["methods"]
  assert euclidean["precision_at"] == pytest.approx({str(k): hits[:, :k].mean() for k in (1, 3, 6)})
  assert euclidean["bits"] == 32 * 32 and hamming["bits"] == 8
  assert all(m["ms_per_query"] > 0 for m in stored["methods"])
  assert 0 <= hamming["autoencoder"]["binary_fraction"] <= 1
  assert stored["chance_precision"] == 0.5 and stored["num_queries"] == 4
  assert report["methods"][0]["precision_at"][6] == pytest.approx(hits.mean())
  assert "hamming_8" in capsys.readouterr().out
  check_figure(workdir, nearest, np.arange(len(database)))


def check_figure(workdir, nearest, database_examples):
  """Figure 4's 3 rows of 96-pixel cells: a query, a quarter-cell gap, its 6 neighbours, each
  the image of its example: `nearest` [queries, 6] are rows of the database's features,
  `database_examples` the training split's example of each row."""
  figure = np.asarray(Image.open(workdir / "figures" / "figure4_right.png").convert("RGB"))
  cell = retrieval_figure.MIN_CELL
  assert figure.shape == (3 * cell, 7 * cell + cell // 4, 3)
  assert figure.std() > 10
  # image_folder's grey levels count up from 1: the training split's images, then the test's.
  level = {("train", i): 1 + i for i in range(2 * TRAIN_PER_CLASS)}
  level |= {("test", i): 1 + 2 * TRAIN_PER_CLASS + i for i in range(2 * TEST_PER_CLASS)}
  centres = [c * cell + (cell // 4 if c else 0) + cell // 2 for c in range(7)]
  rows = [[int(figure[r * cell + cell // 2, x, 0]) for x in centres] for r in range(3)]
  query_of = {level["test", i]: i for i in range(2 * TEST_PER_CLASS)}
  assert len({row[0] for row in rows}) == 3 and all(row[0] in query_of for row in rows)
  for row in rows:
    want = [level["train", database_examples[i]] for i in nearest[query_of[row[0]]]]
    assert row[1:] == want, row


def test_the_figure_shows_the_examples_of_a_features_file_with_rows_left_out(retrieval_run):
  """A training image unreadable at --mode=features has no row: the rows after it are the
  examples after it (its "indices"), not shifted onto their neighbours in the split."""
  config, workdir, features = retrieval_run
  config.retrieval.code_bits = ()
  vectors, labels = features["train"]
  kept = np.delete(np.arange(len(labels)), [0, 7])
  np.savez(
    workdir / "features" / "train.npz", features=vectors[kept], labels=labels[kept], indices=kept
  )
  retrieval.run_retrieval(config, str(workdir))
  queries = features["test"][0]
  _, nearest = brute_force(((queries[:, None] - vectors[kept][None]) ** 2).sum(-1), 6)
  check_figure(workdir, nearest, kept)


def test_the_figure_checks_that_feature_rows_are_the_split_in_order(retrieval_run):
  config, workdir, features = retrieval_run
  config.retrieval.code_bits = ()
  vectors, labels = features["test"]
  np.savez(
    workdir / "features" / "test.npz", features=vectors, labels=1 - labels, indices=np.arange(4)
  )
  with pytest.raises(DataError, match=r"Example \d of split 'test' is of class \d but its"):
    retrieval.run_retrieval(config, str(workdir))
  indices = np.array([0, 1, 2, 4])
  np.savez(workdir / "features" / "test.npz", features=vectors, labels=labels, indices=indices)
  with pytest.raises(DataError, match="name example 4, but the split has 4 examples"):
    retrieval.run_retrieval(config, str(workdir))
