"""`--mode=summary`: the network's layers as the model itself computes them."""

import math

import jax
import jax.numpy as jnp
import ml_collections

from supervision import models


def layer_table(config: ml_collections.ConfigDict) -> list[dict]:
  """One row per layer: output shape, neurons, parameters and which columns it reads.

  Everything is derived by tracing the model (no FLOPs are spent): shapes from
  `jax.eval_shape`, outputs from the captured intermediates of each layer.
  """
  model = models.create_model(config)
  images = jnp.zeros((1, config.crop_size, config.crop_size, 3), jnp.float32)

  def init(rng):
    return model.init_with_output(rng, images, capture_intermediates=True)

  _, variables = jax.eval_shape(init, jax.random.key(0))
  rows = []
  for name, reads in model.layer_reads():
    params = variables["params"][name]
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
      )
    )
  return rows


def format_table(rows: list[dict]) -> str:
  """The rows as an aligned text table with a totals line."""
  header = ("layer", "output", "neurons", "parameters", "reads")
  lines = [
    (
      r["layer"],
      "x".join(map(str, r["output"])),
      f"{r['neurons']:,}",
      f"{r['params']:,}",
      r["reads"],
    )
    for r in rows
  ]
  total_neurons = sum(r["neurons"] for r in rows)
  total_params = sum(r["params"] for r in rows)
  lines.append(("total", "", f"{total_neurons:,}", f"{total_params:,}", ""))
  widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
  fmt = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
  rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
  return "\n".join([fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])
