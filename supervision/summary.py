"""`--mode=summary`: the network's layers as the model itself computes them."""

import math

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from supervision import models, sharding


def placement(spec: jax.sharding.PartitionSpec, columns: int, model_devices: int) -> str:
  """Where a layer's columns live, in words, for parameters with sharding `spec`."""
  if not spec:
    return "replicated"
  if model_devices == 1:
    return f"{spec}: all {columns} columns on every device"
  k = columns // model_devices
  which = "column c" if k == 1 else f"columns {k}c..{k}c+{k - 1}"
  return f"{spec}: {which} on model-device c"


def layer_table(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> list[dict]:
  """One row per layer: output shape, neurons, parameters, which columns it reads, and how
  its parameters are placed on `mesh` (default: the mesh of `config.mesh`).

  Everything is derived by tracing the model (no FLOPs are spent): shapes from
  `jax.eval_shape`, outputs from the captured intermediates of each layer, placement from
  `sharding.state_shardings`.
  """
  mesh = sharding.create_mesh(config) if mesh is None else mesh
  model = models.create_model(config)
  images = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)

  def init(rng):
    return model.init_with_output(rng, images, capture_intermediates=True)

  _, variables = jax.eval_shape(init, jax.random.key(0))
  models.check_params(variables["params"], config.crop_size)
  shardings = sharding.state_shardings(mesh, variables["params"])
  rows = []
  for name, reads in model.layer_reads():
    params = variables["params"][name]
    per_device = sharding.bytes_per_device(params, shardings[name])
    (out,) = variables["intermediates"][name]["__call__"]
    columns = out.shape[0]
    shape = (*out.shape[2:-1], out.shape[-1] * columns)  # per image, both columns
    rows.append(
      dict(
        layer=name,
        output=shape,
        neurons=math.prod(shape),
        params=sum(math.prod(p.shape) for p in jax.tree.leaves(params)),
        reads=reads,
        sharding=placement(shardings[name]["kernel"].spec, columns, mesh.shape[models.MODEL_AXIS]),
        bytes_per_device=max(per_device.values()),
      )
    )
  return rows


def format_table(rows: list[dict], mesh: Mesh) -> str:
  """The rows as an aligned text table with a totals line, under a line naming the mesh."""
  title = ", ".join(f"{k}={v}" for k, v in mesh.shape.items())
  title = f"mesh {title} ({mesh.size} devices of {mesh.devices.flat[0].platform})"
  header = ("layer", "output", "neurons", "parameters", "reads", "param bytes/device", "sharding")
  lines = [
    (
      r["layer"],
      "x".join(map(str, r["output"])),
      f"{r['neurons']:,}",
      f"{r['params']:,}",
      r["reads"],
      f"{r['bytes_per_device']:,}",
      r["sharding"],
    )
    for r in rows
  ]
  totals = {k: f"{sum(r[k] for r in rows):,}" for k in ("neurons", "params", "bytes_per_device")}
  lines.append(
    ("total", "", totals["neurons"], totals["params"], "", totals["bytes_per_device"], "")
  )
  widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
  fmt = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
  rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
  return "\n".join([title, fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])


def run_summary(config: ml_collections.ConfigDict, workdir: str | None) -> None:
  """`--mode=summary`: prints the layer table with its sharding over the configured mesh."""
  mesh = sharding.create_mesh(config)
  print(format_table(layer_table(config, mesh), mesh))
