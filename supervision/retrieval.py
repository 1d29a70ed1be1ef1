"""Image retrieval by the last hidden layer ("Qualitative Evaluations", Figure 4 right).

The paper finds, for a test image, the training images whose 4096-dimensional feature vectors
(fc7's outputs) are nearest in Euclidean distance, and proposes making this efficient "by
training an auto-encoder to compress these vectors to short binary codes". `--mode=retrieval`
does both on the feature files of `--mode=features` (WORKDIR/features/<split>.npz: "features"
float32 [N, D], "labels" int32 [N] and "indices" [N], row i the split's example indices[i]):
queries are the eval split's vectors, the database the training split's.

Both searches are exact and run on the device as matrix products over chunks of queries and
of the database, keeping the k smallest distances with `jax.lax.top_k`:

  Euclidean   ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2  on the raw vectors
  Hamming     (B - q.x) / 2                           on B-bit codes written as +-1

Ties go to the lower database index. Each search is scored by precision@k (the fraction of the
k neighbours with the query's label) and timed per query on the device.
"""

import functools
import json
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from supervision import ConfigError, DataError, binary_codes, retrieval_figure
from supervision.train import say

TIMING_REPEATS = 3  # timed searches after the warm-up; the median counts
FIGURE_NEIGHBOURS = 6  # training images per query in Figure 4 (right)


def features_path(workdir: str, split: str) -> Path:
  return Path(workdir) / "features" / f"{split}.npz"


def load_features(workdir: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(features float32 [N, D], labels int32 [N], example indices [N]) of `split` from
  WORKDIR/features/<split>.npz."""
  path = features_path(workdir, split)
  if not path.is_file():
    raise FileNotFoundError(
      f"{path} is missing: write it with --mode=features --config.features.split={split}"
      f" --workdir={workdir} (and the same --config)."
    )
  try:
    with np.load(path) as data:
      arrays = {key: data[key] for key in ("features", "labels", "indices") if key in data.files}
      names = sorted(data.files)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f"{path} is not a readable .npz file: {e}") from None
  if len(arrays) < 3:
    raise DataError(
      f"{path} must hold 'features', 'labels' and 'indices'; it has {names}. Write it again with"
      f" --mode=features --config.features.split={split} --workdir={workdir}."
    )
  features = arrays["features"].astype(np.float32, copy=False)
  labels = arrays["labels"].astype(np.int32, copy=False)
  indices = arrays["indices"]
  if features.ndim != 2 or labels.shape != features.shape[:1] or not len(labels):
    raise DataError(
      f"{path}: features {features.shape} and labels {labels.shape} are not [N, D] and [N], N > 0."
    )
  if indices.shape != labels.shape:
    raise DataError(f"{path}: indices {indices.shape} and labels {labels.shape} differ in shape.")
  return features, labels, indices


@functools.partial(
  jax.jit, static_argnames=("k", "scale", "precision", "query_chunk", "database_chunk")
)
def _smallest(
  queries: jax.Array,
  query_bias: jax.Array,
  database: jax.Array,
  database_bias: jax.Array,
  *,
  k: int,
  scale: float,
  precision: str,
  query_chunk: int,
  database_chunk: int,
) -> tuple[jax.Array, jax.Array]:
  """The k smallest of d[i, j] = query_bias[i] + scale * queries[i].database[j] +
  database_bias[j] for each query i: (distances [Q, k], database indices [Q, k]), ascending,
  ties to the lower index. Memory: one query_chunk x database_chunk block of d at a time, and
  no copy of the inputs."""
  num_queries, size = len(queries), len(database)
  qc, dc = min(query_chunk, num_queries), min(database_chunk, size)
  # Chunks start every qc (dc) rows, but the last one ends at the last row: it overlaps the one
  # before where the chunk size does not divide the rows, which are counted once.
  query_starts = np.minimum(np.arange(0, num_queries, qc), num_queries - qc)
  first_new = np.arange(0, size, dc)  # block b's rows from here on are not in block b - 1
  database_starts = np.minimum(first_new, size - dc)

  def search(q_start):
    q = jax.lax.dynamic_slice_in_dim(queries, q_start, qc)
    q_bias = jax.lax.dynamic_slice_in_dim(query_bias, q_start, qc)

    def merge(best, block):
      x_start, new = block
      x = jax.lax.dynamic_slice_in_dim(database, x_start, dc)
      x_bias = jax.lax.dynamic_slice_in_dim(database_bias, x_start, dc)
      index = x_start + jnp.arange(dc)
      products = jnp.dot(q, x.T, precision=precision, preferred_element_type=jnp.float32)
      d = q_bias[:, None] + scale * products + x_bias[None, :]
      neg, position = jax.lax.top_k(-jnp.where(index >= new, d, jnp.inf), min(k, dc))
      # The best so far (lower indices) come first, so that top_k keeps them on ties.
      distances = jnp.concatenate([best[0], -neg], axis=1)
      indices = jnp.concatenate([best[1], index[position]], axis=1)
      neg, position = jax.lax.top_k(-distances, k)
      return (-neg, jnp.take_along_axis(indices, position, axis=1)), None

    start = (jnp.full((qc, k), jnp.inf), jnp.full((qc, k), -1, jnp.int32))
    return jax.lax.scan(merge, start, (database_starts, first_new))[0]

  distances, indices = jax.lax.map(search, query_starts)
  last = num_queries - (len(query_starts) - 1) * qc  # the last chunk's rows not in the one before
  return tuple(
    jnp.concatenate([a[:-1].reshape(-1, k), a[-1, qc - last :]]) for a in (distances, indices)
  )


def _check_k(k: int, size: int) -> None:
  if not 1 <= k <= size:
    raise ConfigError(f"k={k} neighbours asked of a database of {size}; use 1 <= k <= {size}.")


def euclidean_neighbours(
  queries: jax.Array,
  database: jax.Array,
  k: int,
  *,
  query_chunk: int,
  database_chunk: int,
) -> tuple[jax.Array, jax.Array]:
  """(Euclidean distances [Q, k], indices [Q, k]) of the k nearest database rows to each query."""
  _check_k(k, len(database))
  squared, indices = _smallest(
    queries,
    jnp.sum(jnp.square(queries), axis=1),
    database,
    jnp.sum(jnp.square(database), axis=1),
    k=k,
    scale=-2.0,
    precision="highest",  # float32 products: no TF32 or bfloat16 passes on GPUs and TPUs
    query_chunk=query_chunk,
    database_chunk=database_chunk,
  )
  return jnp.sqrt(jnp.maximum(squared, 0.0)), indices


def hamming_neighbours(
  query_codes: jax.Array,
  database_codes: jax.Array,
  k: int,
  *,
  query_chunk: int,
  database_chunk: int,
) -> tuple[jax.Array, jax.Array]:
  """(Hamming distances int32 [Q, k], indices [Q, k]) of the k nearest database codes (bool
  [N, B]) to each query code. The +-1 codes' products are exact in bfloat16 with float32 sums."""
  _check_k(k, len(database_codes))
  bits = query_codes.shape[1]
  signs = [jnp.where(c, 1.0, -1.0).astype(jnp.bfloat16) for c in (query_codes, database_codes)]
  distances, indices = _smallest(
    signs[0],
    jnp.full(len(query_codes), bits / 2),
    signs[1],
    jnp.zeros(len(database_codes)),
    k=k,
    scale=-0.5,
    precision="default",
    query_chunk=query_chunk,
    database_chunk=database_chunk,
  )
  return jnp.round(distances).astype(jnp.int32), indices


def precision_at_k(
  neighbour_labels: np.ndarray, query_labels: np.ndarray, ks: tuple[int, ...]
) -> dict[int, float]:
  """{k: mean over queries of the fraction of the first k neighbours with the query's label}."""
  hits = np.asarray(neighbour_labels) == np.asarray(query_labels)[:, None]
  return {k: float(hits[:, :k].mean()) for k in ks}


def seconds_per_query(search, *args) -> float:
  """Median time of `search(*args)` over TIMING_REPEATS runs after a warm-up (compilation), to
  the end of the device's work, divided by the number of queries (len(args[0]))."""
  jax.block_until_ready(search(*args))
  times = []
  for _ in range(TIMING_REPEATS):
    start = time.perf_counter()
    jax.block_until_ready(search(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)) / len(args[0])


def validate_config(config: ml_collections.ConfigDict, database_size: int) -> None:
  """Errors in config.retrieval, naming the key and value."""
  r = config.retrieval
  for key in ("k", "code_bits"):  # code_bits may be empty: Euclidean search only
    if any(not isinstance(v, int) or v < 1 for v in r[key]) or (key == "k" and not r.k):
      raise ConfigError(f"config.retrieval.{key}={r[key]} must be positive integers.")
  for key in ("steps", "batch_size", "query_chunk", "database_chunk"):
    if r[key] < 1:
      raise ConfigError(f"config.retrieval.{key}={r[key]} must be positive.")
  if r.learning_rate <= 0 or r.code_noise < 0:
    raise ConfigError(
      f"config.retrieval.learning_rate={r.learning_rate} must be > 0 and"
      f" config.retrieval.code_noise={r.code_noise} >= 0."
    )
  if r.num_queries == 0 or r.num_queries < -1 or r.figure_queries < 0:
    raise ConfigError(
      f"config.retrieval.num_queries={r.num_queries} must be positive or -1 (all), and"
      f" config.retrieval.figure_queries={r.figure_queries} >= 0."
    )
  if max(*r.k, FIGURE_NEIGHBOURS if r.figure_queries else 1) > database_size:
    raise ConfigError(
      f"config.retrieval.k={r.k}: more neighbours than the {database_size} training vectors"
      f" (the figure shows {FIGURE_NEIGHBOURS})."
    )


def evaluate(
  name: str,
  search,
  queries: jax.Array,
  database: jax.Array,
  labels: tuple[np.ndarray, np.ndarray],
  config: ml_collections.ConfigDict,
  k: int,
) -> tuple[dict, np.ndarray]:
  """Precision@k for config.retrieval.k and the time per query of `search` for the k nearest
  (k >= those); returns them and the neighbours' indices [Q, k]. `labels` are the queries' and
  the database's."""
  r = config.retrieval
  run = functools.partial(search, k=k, query_chunk=r.query_chunk, database_chunk=r.database_chunk)
  indices = np.asarray(run(queries, database)[1])
  precision = precision_at_k(labels[1][indices], labels[0], r.k)
  milliseconds = 1e3 * seconds_per_query(run, queries, database)
  return dict(name=name, precision_at=precision, ms_per_query=milliseconds), indices


def run_retrieval(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`--mode=retrieval`: Euclidean search on the raw vectors and Hamming search on the binary
  codes of each config.retrieval.code_bits; writes WORKDIR/retrieval.json and Figure 4 (right)."""
  database, database_labels, database_examples = load_features(workdir, config.train_split)
  queries, query_labels, query_examples = load_features(workdir, config.eval_split)
  if queries.shape[1] != database.shape[1]:
    raise DataError(
      f"{features_path(workdir, config.eval_split)} has {queries.shape[1]}-dimensional features,"
      f" {features_path(workdir, config.train_split)} {database.shape[1]}-dimensional ones."
    )
  validate_config(config, len(database))
  r = config.retrieval
  rng = np.random.default_rng(r.seed)
  rows = np.arange(len(queries))
  if 0 < r.num_queries < len(queries):
    rows = np.sort(rng.choice(len(queries), r.num_queries, replace=False))
  query_labels = query_labels[rows]
  say(
    f"Retrieval: {len(rows)} {config.eval_split} queries, {len(database)} {config.train_split}"
    f" vectors of {database.shape[1]} dimensions, on {jax.devices()[0].device_kind}."
  )
  on_device = jax.device_put(queries[rows]), jax.device_put(database)
  labels = (query_labels, database_labels)
  k = max(r.k)
  euclidean_k = max(k, FIGURE_NEIGHBOURS) if r.figure_queries else k
  euclidean, nearest = evaluate(
    "euclidean", euclidean_neighbours, *on_device, labels, config, euclidean_k
  )
  results = [dict(euclidean, bits=32 * database.shape[1])]
  for bits in r.code_bits:
    codec = binary_codes.train(on_device[1], bits, r)
    codes = [binary_codes.encode(codec, vectors) for vectors in on_device]
    hamming = evaluate(f"hamming_{bits}", hamming_neighbours, *codes, labels, config, k)
    results.append(dict(hamming[0], bits=bits, autoencoder=codec.summary(on_device[0])))
  # Chance: the expected precision of neighbours drawn at random from the database.
  classes = max(database_labels.max(), query_labels.max()) + 1
  chance = float(np.mean(np.bincount(database_labels, minlength=classes)[query_labels]))
  chance /= len(database)
  report = dict(
    num_queries=len(rows),
    database_size=len(database),
    feature_dim=database.shape[1],
    device=jax.devices()[0].device_kind,
    chance_precision=chance,
    methods=results,
  )
  say(format_table(report))
  path = Path(workdir) / "retrieval.json"
  path.write_text(json.dumps(report, indent=2) + "\n")
  say(f"Wrote {path}.")
  if r.figure_queries:
    shown = np.sort(rng.choice(len(rows), min(r.figure_queries, len(rows)), replace=False))
    neighbours = nearest[shown, :FIGURE_NEIGHBOURS]
    figure = retrieval_figure.draw(
      config,
      query_examples[rows[shown]],
      database_examples[neighbours],
      (query_labels[shown], database_labels[neighbours]),
      Path(workdir) / "figures" / "figure4_right.png",
    )
    say(f"Wrote {figure}.")
  return report


def format_table(report: dict) -> str:
  """The methods' precision@k and query time as a text table."""
  ks = list(report["methods"][0]["precision_at"])
  header = f"{'method':<14}{'bits':>8}" + "".join(f"{f'P@{k}':>8}" for k in ks) + "  ms/query"
  lines = [header]
  for m in report["methods"]:
    precision = "".join(f"{m['precision_at'][k]:>8.4f}" for k in ks)
    lines.append(f"{m['name']:<14}{m['bits']:>8}{precision}  {m['ms_per_query']:.4g}")
  lines.append(f"chance: P = {report['chance_precision']:.4f} (labels shared with the database)")
  return "\n".join(lines)
