"""The paper's two GPUs ("Training on Multiple GPUs") as a device mesh, plus data parallelism.

The mesh has axes ("data", "model"). Column c of every layer (kernels, biases, activations)
lives on model-device c; the batch is split over "data". Parameters and optimizer state are
placed by one rule: a leaf whose key path ends in a column layer's "kernel" or "bias" (the
parameters, and the optimizer state that mirrors them) has a leading column axis, split over
"model"; every other leaf is replicated. Which layers talk across "model" is decided by the
model itself (`supervision.models`): only conv3 and the FC layers (and LRN, where
`config.model.lrn.across_columns` lets its windows cross the columns). Dropout and augmentation
draws do not depend on the mesh (`jax_threefry_partitionable`, JAX's default).
"""

import math
import re

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from supervision import ConfigError
from supervision.models import DATA_AXIS, MODEL_AXIS

COLUMN_PARAMS = r"(^|/)(kernel|bias)$"  # key paths of leaves with a leading column axis
# XLA:CPU hands most convolutions, the matmuls and some reductions to YNNPACK by default; with
# its own (Eigen) convolutions instead the nets' steps run 1.3-1.9x faster on the CPUs measured
# (docs/performance.md), so on CPUs the convolutions stay with XLA: XLA's default list of
# YNNPACK fusions less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
CPU_COMPILER_OPTIONS = {
  "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
  "LIBRARY_FUSION_TYPE_REDUCE"
}


def compiler_options() -> dict[str, str] | None:
  """XLA options for `jax.jit` of the model's steps: `CPU_COMPILER_OPTIONS` on CPUs, else none."""
  return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins the processes of a multi-host run when `config.distributed.coordinator_address` is set.

  Call before any other JAX work. On CPU the processes talk through gloo collectives (JAX's
  default `jax_cpu_collectives_implementation`).
  """
  d = config.distributed
  if d.coordinator_address:
    jax.distributed.initialize(d.coordinator_address, d.num_processes, d.process_id)


def mesh_shape(
  config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1
) -> tuple[int, int]:
  """(data, model) sizes from `config.mesh`, -1 meaning all devices left; checks the config.

  Every process reads its own examples (`input_pipeline`), so each must own whole rows of
  the "data" axis: data is a multiple of the process count.
  """
  data, model = config.mesh.data, config.mesh.model
  if model < 1 or data == 0 or data < -1:
    raise ConfigError(
      f"config.mesh.data={data}, config.mesh.model={model}: model must be >= 1 and data >= 1 or"
      " -1 (all remaining devices)."
    )
  if num_devices % model or (data != -1 and data * model != num_devices):
    raise ConfigError(
      f"config.mesh.data={data} x config.mesh.model={model} does not fit {num_devices} devices;"
      f" data * model must equal the device count (data=-1 takes what model leaves)."
    )
  data = num_devices // model if data == -1 else data
  if config.model.columns % model:
    raise ConfigError(
      f"config.model.columns={config.model.columns} is not divisible by config.mesh.model="
      f"{model}: each model-device holds whole columns."
    )
  if data % num_processes:
    raise ConfigError(
      f"config.mesh.data={config.mesh.data} gives {data} batch slices for {num_processes}"
      " processes; each process reads its own examples, so use a multiple of the process count."
    )
  if config.batch_size % data:
    raise ConfigError(
      f"config.batch_size={config.batch_size} is not divisible by the data-parallel size {data}"
      f" (config.mesh.data={config.mesh.data}, {num_devices} devices)."
    )
  return data, model


def create_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
  """The ("data", "model") mesh over `devices` (default: all devices of all processes).

  Both axes are Auto: the model pins the placement where it matters (the column layers run in
  `jax.shard_map`, parameters and batches get the shardings below) and the compiler propagates
  it through the element-wise, LRN and pooling ops in between. Explicit axes would put the
  sharding into every array's type and demand a hand-written reshard at each column merge.
  """
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(config, len(devices), len({d.process_index for d in devices}))
  return jax.make_mesh(shape, (DATA_AXIS, MODEL_AXIS), (AxisType.Auto,) * 2, devices=devices)


def path_str(path) -> str:
  """A key path as text, e.g. "params/conv1/kernel"."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def state_shardings(mesh: Mesh, tree):
  """NamedShardings for a (possibly abstract) pytree of parameters or a whole train state.

  Leaves whose key path matches `COLUMN_PARAMS` are split over "model" along their leading
  column axis, the rest is replicated. Optimizer state mirrors the parameters' key paths, so
  it is sharded like them. Use with `jax.eval_shape` and `jax.jit(init, out_shardings=...)`.
  """

  def sharding(path, leaf):
    column = re.search(COLUMN_PARAMS, path_str(path))
    return NamedSharding(mesh, P(MODEL_AXIS) if column else P())

  return jax.tree.map_with_path(sharding, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Images and labels: the batch axis split over "data", replicated over "model"."""
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(mesh: Mesh, host_batch):
  """Assembles each process's part of the batch (numpy arrays) into global jax.Arrays.

  A process holds the rows of the devices it owns along "data" (all rows when "data" does not
  span processes); the global batch is their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def replicate(mesh: Mesh, tree):
  """`tree` on every device of `mesh` (e.g. dataset statistics)."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def bytes_per_device(tree, shardings=None) -> dict:
  """{device: bytes it holds} of a pytree of arrays, placed by their own or by `shardings`.

  `tree` may be abstract (e.g. from `jax.eval_shape`) when `shardings` is given.
  """
  shardings = jax.tree.map(lambda x: x.sharding, tree) if shardings is None else shardings
  total = {}
  for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
    nbytes = math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    for device in sharding.device_set:
      total[device] = total.get(device, 0) + nbytes
  return total
