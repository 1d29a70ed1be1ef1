"""--mode=figures: the first layer's kernels by column, their chroma, and the training curves."""

import json
import math
import subprocess
import sys
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from PIL import Image

from configs import smoke
from supervision import DataError, checkpoint, figures, models

ROOT = Path(__file__).resolve().parents[1]


@flax.struct.dataclass
class State:
  step: jnp.ndarray
  params: dict


def tiny_config(kernels=40):
  """The smoke net's config (two columns, 5x5 conv1) with `kernels` conv1 kernels."""
  config = smoke.get_config()
  config.model.conv = (dict(config.model.conv[0], features=kernels), *config.model.conv[1:])
  return config


def save_run(workdir, config, kernels_by_step):
  """Checkpoints of {step: conv1 kernel array (column, height, width, RGB, kernel)}."""
  manager = checkpoint.create_manager(str(workdir), config)
  for step, kernel in kernels_by_step.items():
    params = {"conv1": {"kernel": kernel, "bias": np.zeros(kernel.shape[::4], np.float32)}}
    checkpoint.save(manager, State(step=jnp.int32(step), params=params), {}, {}, config)
  manager.wait_until_finished()
  manager.close()


def planted(columns=2, n=20, size=5):
  """Kernels, as `models.ColumnConv` stores them, that are black but for their centre pixel,
  whose colour (1, j / 20, 0.25 + 0.5 c) names column c and kernel j. Min-max normalisation
  leaves them as they are (minimum 0, maximum 1)."""
  kernel = np.zeros((columns, size, size, 3, n), np.float32)
  for c in range(columns):
    for j in range(n):
      kernel[c, size // 2, size // 2, :, j] = (1, j / 20, 0.25 + 0.5 * c)
  return kernel


def read_planted(png):
  """{(column, kernel): (y, x)} of the top-left pixel of each planted centre in the PNG: its
  red is 255 and its blue is not (the white background's is)."""
  image = np.asarray(Image.open(png).convert("RGB")).astype(int)
  mask = (image[..., 0] == 255) & (image[..., 2] < 255)
  corner = mask & ~np.roll(mask, 1, axis=0) & ~np.roll(mask, 1, axis=1)
  found = {}
  for y, x in zip(*np.nonzero(corner), strict=True):
    _, g, b = image[y, x]
    found[(int(b > 128), round(g / 12.75))] = (int(y), int(x))
  return found


def test_kernel_j_of_column_c_makes_map_j_of_column_c():
  """Through the real layer: on a patch of its own size, output map j of column c is the dot
  product of the patch with kernel [c, j] of `first_layer_kernels` (numpy)."""
  layer = models.ColumnConv(
    6, 3, 1, "VALID", 2, "all", nn.initializers.normal(1.0), nn.initializers.normal(1.0)
  )
  x = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
  variables = layer.init(jax.random.key(0), x, x_columns=False)
  out = np.asarray(layer.apply(variables, x, x_columns=False))  # (column, batch, 1, 1, kernel)
  params = jax.device_get(variables["params"])
  kernels = figures.first_layer_kernels({"conv1": params}, smoke.get_config())
  assert kernels.shape == (2, 3, 3, 3, 3)
  want = np.einsum("bhwi,cjhwi->cbj", x, kernels) + params["bias"][:, None, :]
  np.testing.assert_allclose(out[:, :, 0, 0, :], want, rtol=1e-5, atol=1e-5)


def test_the_grid_has_column_0_on_top_and_each_column_in_order(tmp_path):
  save_run(tmp_path, tiny_config(), {5: planted()})
  results = figures.run_figures(smoke.get_config(), str(tmp_path))
  png = tmp_path / "figures" / "conv1_kernels.png"
  assert results["figures"][0] == str(png)
  # 5x5 kernels drawn 8x (40 px) with 2 px gaps, 16 a row: 16 * 42 - 2 = 670 wide; 20 kernels
  # a column are 2 rows, 2 * 42 - 2 = 82 px, and 12 px part the columns: 82 + 12 + 82 = 176.
  assert Image.open(png).size == (670, 176)
  found = read_planted(png)
  assert len(found) == 40
  for (c, j), (y, x) in found.items():  # the centre pixel of a 40 px cell starts 16 px in
    assert (y, x) == (c * 94 + j // 16 * 42 + 16, j % 16 * 42 + 16), (c, j)


def test_the_grid_wraps_rows_within_each_column():
  """Three a row: column 0's 7 kernels fill rows 0-2 (3, 3, 1), column 1's rows 3-5."""
  grid = figures.kernel_grid(np.moveaxis(planted(n=7), -1, 1), per_row=3)
  assert grid.shape == (2 * (3 * 42 - 2) + 12, 3 * 42 - 2, 3)
  rows = [[(c, j) for j in range(7) if j // 3 == r] for c in range(2) for r in range(3)]
  for r, kernels in enumerate(rows):
    for k, (c, j) in enumerate(kernels):
      y, x = r * 42 + c * (12 - 2) + 16, k * 42 + 16
      np.testing.assert_allclose(grid[y, x], (1, j / 20, 0.25 + 0.5 * c), err_msg=f"{c}, {j}")
  assert np.all(grid[3 * 42 - 2 : 3 * 42 + 10] == 1.0)  # white between the columns


def test_chroma_is_0_for_grey_kernels_and_hand_computed_for_a_red_one():
  rng = np.random.default_rng(0)
  grey = np.repeat(rng.normal(size=(2, 2, 1)), 3, axis=-1)  # R = G = B at every pixel
  # Red only: R = 0, 1, 2, 3 normalises to 0, 1/3, 2/3, 1 (G = B = 0 are the minimum). A pixel
  # (t, 0, 0) lies t * |(2/3, -1/3, -1/3)| = t * sqrt(2/3) from the grey axis; mean t = 1/2.
  red = np.zeros((2, 2, 3))
  red[..., 0] = [[0, 1], [2, 3]]
  kernels = np.stack([[grey, 5 * grey - 2], [grey, red]])  # (column, kernel, 2, 2, RGB)
  np.testing.assert_allclose(
    figures.mean_chroma(kernels), [0, 0.5 * math.sqrt(2 / 3) / 2], atol=1e-7
  )
  # The scale and offset of a kernel do not matter.
  scaled = np.stack([[10 * red - 4]])
  np.testing.assert_allclose(figures.mean_chroma(scaled), [0.5 * math.sqrt(2 / 3)], atol=1e-7)


def write_rows(path, rows, tail=""):
  path.write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)


def train_row(step, error, lr, epoch=True):
  row = dict(step=step, loss=2.0, top1_error=error, learning_rate=lr, param_norm=1.0)
  return dict(row, epoch=step / 20) if epoch else row


def eval_row(step, error):
  return dict(step=step, epoch=step / 20, eval_loss=2.0, eval_top1_error=error, eval_count=100)


def test_the_curves_keep_the_resumed_rows_and_drop_a_row_cut_short(tmp_path):
  """A run logged steps 10-50 and evaluated at 20 and 40, then resumed from step 20 without
  its file cleaned and stopped after step 40: its rows of steps 30 and 40 replace the first
  run's, and the first run's step 50 is gone with them."""
  first = [train_row(10, 0.9, 0.1), train_row(20, 0.8, 0.1), eval_row(20, 0.85)]
  first += [train_row(30, 0.7, 0.1), train_row(40, 0.6, 0.01), eval_row(40, 0.75)]
  first += [train_row(50, 0.55, 0.01)]
  resumed = [train_row(30, 0.5, 0.1), train_row(40, 0.4, 0.01), eval_row(40, 0.45)]
  path = tmp_path / "metrics.jsonl"
  write_rows(path, first + resumed, tail='{"step": 50, "loss"')
  axis, series = figures.curves(figures.read_metrics(path))
  assert axis == "epoch"
  want = dict(
    top1_error=([0.5, 1, 1.5, 2], [0.9, 0.8, 0.5, 0.4]),
    eval_top1_error=([1, 2], [0.85, 0.45]),
    learning_rate=([0.5, 1, 1.5, 2], [0.1, 0.1, 0.1, 0.01]),
  )
  assert set(series) == set(want)
  for key, (x, values) in want.items():
    np.testing.assert_allclose(series[key][0], x, err_msg=key)
    np.testing.assert_allclose(series[key][1], values, err_msg=key)


def test_rows_without_epochs_give_steps_and_a_bad_row_is_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  write_rows(path, [train_row(10, 0.9, 0.1, epoch=False), train_row(20, 0.8, 0.1, epoch=False)])
  axis, series = figures.curves(figures.read_metrics(path))
  assert axis == "step" and list(series["top1_error"][0]) == [10, 20]
  path.write_text(path.read_text().replace("\n", "\nnot json\n", 1))
  with pytest.raises(DataError, match="metrics.jsonl, line 2"):
    figures.read_metrics(path)


def test_figures_of_a_checkpoint_step_are_written_with_their_numbers(tmp_path, capsys):
  config = tiny_config(kernels=8)
  rng = np.random.default_rng(0)
  random = rng.normal(size=(2, 5, 5, 3, 4)).astype(np.float32)
  save_run(tmp_path, config, {10: random, 20: planted(n=4)})
  rows = [train_row(s, 0.9 - s / 100, 0.01 if s < 30 else 0.001) for s in range(5, 45, 5)]
  write_rows(tmp_path / "metrics.jsonl", rows + [eval_row(20, 0.8), eval_row(40, 0.6)])
  config.eval_checkpoint_step = 10
  results = figures.run_figures(config, str(tmp_path))
  out = capsys.readouterr().out
  assert results == json.loads((tmp_path / "figures" / "figures.json").read_text())
  assert results["step"] == 10 and len(results["conv1_mean_chroma"]) == 2
  assert 0 < min(results["conv1_mean_chroma"]) and max(results["conv1_mean_chroma"]) < 0.82
  curves = tmp_path / "figures" / "curves.png"
  assert results["figures"] == [str(tmp_path / "figures" / "conv1_kernels.png"), str(curves)]
  assert str(curves) in out and "column 1" in out
  image = np.asarray(Image.open(curves).convert("RGB"))
  assert image.shape == (600, 800, 3)  # 8 x 6 inches at 100 dpi
  assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50
  kernels = np.asarray(Image.open(results["figures"][0]).convert("RGB"))
  assert kernels.shape == (2 * 40 + 12, 4 * 42 - 2, 3) and kernels.std() > 10
  # The planted kernels of step 20 are the latest; without metrics there is no curve figure.
  (tmp_path / "metrics.jsonl").unlink()
  config.eval_checkpoint_step = -1
  results = figures.run_figures(config, str(tmp_path))
  assert results["step"] == 20 and len(results["figures"]) == 1
  # (1, j / 20, 0.25 + 0.5 c) normalised: a single coloured pixel in 25 black ones.
  centre = [np.array([1, j / 20, 0.25 + 0.5 * c]) for c in range(2) for j in range(4)]
  chroma = [np.linalg.norm(v - v.mean()) / 25 for v in centre]
  np.testing.assert_allclose(
    results["conv1_mean_chroma"], [np.mean(chroma[:4]), np.mean(chroma[4:])], atol=1e-4
  )


def test_main_draws_the_figures(tmp_path):
  save_run(tmp_path, tiny_config(kernels=8), {3: planted(n=4)})
  result = subprocess.run(
    [sys.executable, "main.py", "--mode=figures", "--config=configs/cifar10.py",
     f"--workdir={tmp_path}"],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  assert "conv1 mean chroma by column" in result.stdout
  assert (tmp_path / "figures" / "conv1_kernels.png").exists()
