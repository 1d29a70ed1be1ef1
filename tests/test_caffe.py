"""Importing Caffe models: a tiny bvlc_alexnet (few kernels, 2 groups, 99x99 input) written here
as a .caffemodel, imported, and run against a numpy forward pass in Caffe's conventions (NCHW,
grouped convolutions, LRN across channels with k = 1 and alpha / n, 3/2 max pooling rounding up,
FC layers on the (channel, row, column) flatten, BGR input minus the mean image)."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from configs import alexnet
from supervision import DataError, WorkdirError, caffe, checkpoint, inference, models, stats

# (name, kernel size, stride, pad, group, kernels): bvlc_alexnet's conv layers with
# 8-12 kernels. 99 -> conv1 23 -> pool 11 -> conv2 11 -> pool 5 -> conv3-5 5 -> pool 2.
CONV = (
  ("conv1", 11, 4, 0, 1, 8),
  ("conv2", 5, 1, 2, 2, 8),
  ("conv3", 3, 1, 1, 1, 12),
  ("conv4", 3, 1, 1, 2, 12),
  ("conv5", 3, 1, 1, 2, 8),
)
FC = (("fc6", 16), ("fc7", 16), ("fc8", 4))
LRN_AFTER, POOL_AFTER = ("conv1", "conv2"), ("conv1", "conv2", "conv5")
K, N, ALPHA, BETA = 1.0, 5, 1e-4, 0.75  # bvlc_alexnet's norm1 and norm2 (Caffe's k default 1)
S, C = 104, 99  # image size and crop
V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18}  # V1LayerParameter.LayerType


def tiny_config(**overrides):
  config = alexnet.get_config("caffe")
  m = config.model
  m.conv = tuple(dict(c, features=row[5]) for c, row in zip(m.conv, CONV, strict=True))
  m.dense = tuple(n for _, n in FC[:-1])
  config.num_classes = FC[-1][1]
  config.image_size, config.crop_size, config.batch_size = S, C, 4
  config.num_workers, config.num_threads = 0, 2
  config.update(overrides)
  return config


def caffe_weights():
  """{layer: (weights, biases)} in Caffe's shapes, scaled so that LRN's sums matter (they halve
  the maps of conv1 and conv2)."""
  rng = np.random.default_rng(0)
  weights, maps = {}, 3
  for name, size, _, _, group, kernels in CONV:
    fan_in = maps // group * size * size
    w = rng.normal(0, 2 / np.sqrt(fan_in), (kernels, maps // group, size, size))
    weights[name], maps = (
      (w.astype(np.float32), rng.normal(0, 1, kernels).astype(np.float32)),
      kernels,
    )
  inputs = maps * 2 * 2
  for (name, outputs), scale in zip(FC, (1, 1, 0.02), strict=True):  # logits of a few units
    w = rng.normal(0, scale / np.sqrt(inputs), (outputs, inputs)).astype(np.float32)
    weights[name], inputs = (w, rng.normal(0, 1, outputs).astype(np.float32)), outputs
  return weights


def set_blob(blob, array, v1):
  """V1 files store 4-d num/channels/height/width (FC weights 1 x 1 x out x in, biases
  1 x 1 x 1 x out), newer ones a shape."""
  if v1:
    blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
  else:
    blob.shape.dim.extend(array.shape)
  blob.data.extend(array.ravel().tolist())


def write_caffemodel(path, weights, v1=True, skip=()):
  """`weights` as a .caffemodel: V1 `layers` (bvlc_alexnet's) or new `layer`, with a ReLU after
  each layer, as in Caffe's nets."""
  net = caffe.NetParameter(name="AlexNet")
  for name, blobs in weights.items():
    if name in skip:
      continue
    kind = "Convolution" if name.startswith("conv") else "InnerProduct"
    for layer_name, layer_kind in ((name, kind), (f"relu{name[-1]}", "ReLU")):
      layer = net.layers.add() if v1 else net.layer.add()
      layer.name, layer.type = layer_name, V1_TYPES[layer_kind] if v1 else layer_kind
      for array in blobs if layer_kind != "ReLU" else ():
        set_blob(layer.blobs.add(), array, v1)
  path.write_bytes(net.SerializeToString())
  return str(path)


def write_mean(path, mean_bgr):
  blob = caffe.BlobProto()
  set_blob(blob, mean_bgr[None], v1=True)  # 1 x 3 x S x S, as imagenet_mean.binaryproto
  path.write_bytes(blob.SerializeToString())
  return str(path)


def conv_reference(x, w, b, stride, pad, group):
  """Caffe's grouped convolution of NCHW `x` with (out, in / group, h, w) kernels."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  out_maps, in_maps, size, _ = w.shape
  rows = (x.shape[2] - size) // stride + 1
  out = np.zeros((len(x), out_maps, rows, rows))
  per = out_maps // group
  for g in range(group):
    xg = x[:, g * in_maps : (g + 1) * in_maps]
    for i in range(size):
      for j in range(size):
        patch = xg[:, :, i : i + stride * rows : stride, j : j + stride * rows : stride]
        wg = w[g * per : (g + 1) * per, :, i, j]
        out[:, g * per : (g + 1) * per] += np.einsum("ncyx,oc->noyx", patch, wg)
  return out + b[None, :, None, None]


def lrn_reference(x):
  """Caffe's across-channel LRN: x_c / (k + alpha / n * sum of x^2 over the n channels around
  c, clipped at the ends)^beta."""
  out = np.empty_like(x)
  for c in range(x.shape[1]):
    window = x[:, max(0, c - N // 2) : c + N // 2 + 1]
    out[:, c] = x[:, c] / (K + ALPHA / N * (window**2).sum(axis=1)) ** BETA
  return out


def max_pool_reference(x, size=3, stride=2):
  """Caffe's max pooling: ceil((rows - size) / stride) + 1 windows, the last ones clipped."""
  rows = -(-(x.shape[2] - size) // stride) + 1
  out = np.empty(x.shape[:2] + (rows, rows))
  for i in range(rows):
    for j in range(rows):
      out[:, :, i, j] = x[:, :, i * stride : i * stride + size, j * stride : j * stride + size].max(
        axis=(2, 3)
      )
  return out


def caffe_forward(x, weights):
  """bvlc_alexnet's test-time forward pass on NCHW BGR `x` minus the mean (dropout is the
  identity at test time in Caffe)."""
  for name, _, stride, pad, group, _ in CONV:
    x = np.maximum(conv_reference(x, *weights[name], stride, pad, group), 0)
    x = lrn_reference(x) if name in LRN_AFTER else x
    x = max_pool_reference(x) if name in POOL_AFTER else x
  x = x.reshape(len(x), -1)
  for name, _ in FC:
    w, b = weights[name]
    x = x @ w.T + b
    x = np.maximum(x, 0) if name != FC[-1][0] else x
  return x


@pytest.fixture(scope="module")
def weights():
  return caffe_weights()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, weights):
  return write_caffemodel(tmp_path_factory.mktemp("caffe") / "tiny.caffemodel", weights)


def test_imported_net_equals_caffes_forward_pass(tmp_path, model_file, weights):
  """Catches a kernel layout or group split transposed, fc6 read in Caffe's CHW flatten order,
  a config variant that keeps the paper's LRN (k = 2, alpha not / n, within columns), its conv1
  padding or its test-time dropout scale, and files of either layer format read differently."""
  config = tiny_config()
  params = caffe.read_params(model_file, config)
  new_style = caffe.read_params(write_caffemodel(tmp_path / "new", weights, v1=False), config)
  jax.tree.map(np.testing.assert_array_equal, params, new_style)
  x = np.random.default_rng(1).uniform(-128, 128, (2, 3, C, C))  # BGR minus the mean
  logits = jax.jit(models.create_model(config).apply)({"params": params}, x.transpose(0, 2, 3, 1))
  want = caffe_forward(x, weights)
  assert np.abs(want).max() > 1 and np.ptp(want) > 1  # not a degenerate net
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


def write_images(root, rng):
  """Random RGB S x S images: 2 per class in train/ and val/; returns the val ones and labels."""
  images, labels = [], []
  for split in ("train", "val"):
    for label in range(FC[-1][1]):
      folder = root / split / f"class{label}"
      folder.mkdir(parents=True)
      for n in range(2):
        image = rng.integers(0, 256, (S, S, 3), np.uint8)
        Image.fromarray(image).save(folder / f"{n}.png")
        if split == "val":
          images.append(image)
          labels.append(label)
  return np.stack(images), np.array(labels)


def test_import_mode_writes_a_checkpoint_that_evaluates_as_caffe(tmp_path, model_file, weights):
  """`--mode=import_caffe` then `--mode=eval`: the losses of the central crop and of the 10
  views (the mean of their softmaxes) are those of Caffe's pipeline on the same images (BGR,
  Caffe's mean image cropped alike). Catches the mean read in the wrong channel order or
  layout, the views fed as RGB, and a checkpoint or statistics file that eval does not find."""
  rng = np.random.default_rng(2)
  images, labels = write_images(tmp_path / "data", rng)
  mean_bgr = rng.uniform(80, 170, (3, S, S)).astype(np.float32)
  config = tiny_config(dataset=f"folder:{tmp_path / 'data'}")
  config.caffe.model, config.caffe.mean = model_file, write_mean(tmp_path / "mean", mean_bgr)
  workdir = str(tmp_path / "work")
  caffe.run_import(config, workdir)
  results = inference.evaluate_checkpoint(config, workdir)

  x = images[..., ::-1].transpose(0, 3, 1, 2) - mean_bgr  # Caffe: BGR NCHW minus the mean
  offsets = [(0, 0), (0, S - C), (S - C, 0), (S - C, S - C), ((S - C) // 2,) * 2]
  crops = [x[:, :, r : r + C, c : c + C] for r, c in offsets]
  crops += [crop[..., ::-1] for crop in crops]  # mirrored
  probs = [np.exp(jax.nn.log_softmax(caffe_forward(crop, weights))) for crop in crops]
  for name, p in (("center", probs[4]), ("ten_views", np.mean(probs, axis=0))):
    loss = -np.log(p[np.arange(len(p)), labels]).mean()
    error = (p.argmax(1) != labels).mean()
    assert results[name]["count"] == len(labels)
    assert results[name]["loss"] == pytest.approx(loss, rel=1e-4), name
    assert results[name]["top1_error"] == pytest.approx(error), name
  saved = json.loads((tmp_path / "work" / "eval_results.json").read_text())
  assert saved["step"] == 0
  params, stored, step = checkpoint.restore_params(workdir)
  jax.tree.map(np.testing.assert_array_equal, params, caffe.read_params(model_file, config))
  assert step == 0 and stored.channel_order == "bgr"
  with pytest.raises(WorkdirError, match="holds checkpoints already"):
    caffe.run_import(config, workdir)
  config.caffe.mean = ""  # Caffe's per-channel mean, BGR (104, 117, 123)
  caffe.run_import(config, str(tmp_path / "channel_mean"))
  imported = stats.load_or_compute_stats(config, str(tmp_path / "channel_mean"))
  np.testing.assert_array_equal(imported["mean"], np.broadcast_to([123.0, 117.0, 104.0], (S, S, 3)))
  np.testing.assert_array_equal(imported["eigvals"], np.zeros(3))  # no RGB components in Caffe's


def test_files_that_do_not_fit_are_named(tmp_path, weights):
  config = tiny_config()
  text = tmp_path / "deploy.prototxt"
  text.write_text('name: "AlexNet"\nlayer {\n  name: "data"\n  type: "Input"\n}\n')
  with pytest.raises(DataError, match=f"{text} is not a Caffe model"):
    caffe.read_params(str(text), config)
  empty = tmp_path / "empty.caffemodel"
  empty.write_bytes(b"")
  with pytest.raises(DataError, match=f"{empty} holds no layer with weights"):
    caffe.read_params(str(empty), config)
  no_fc8 = write_caffemodel(tmp_path / "no_fc8.caffemodel", weights, skip=("fc8",))
  with pytest.raises(DataError, match=f"{no_fc8} has no layer 'fc8'; its layers with weights"):
    caffe.read_params(no_fc8, config)
  no_bias = write_caffemodel(tmp_path / "no_bias.caffemodel", dict(weights, fc7=weights["fc7"][:1]))
  with pytest.raises(DataError, match=f"{no_bias}: layer 'fc7' has 1 blobs; the import needs 2"):
    caffe.read_params(no_bias, config)
  ungrouped = dict(weights, conv2=(np.zeros((8, 8, 5, 5), np.float32), weights["conv2"][1]))
  path = write_caffemodel(tmp_path / "ungrouped.caffemodel", ungrouped)
  with pytest.raises(DataError, match=r"layer 'conv2' have shape \(8, 8, 5, 5\).*\(8, 4, 5, 5\)"):
    caffe.read_params(path, config)
  with pytest.raises(FileNotFoundError, match="No Caffe model"):
    caffe.read_params(str(tmp_path / "missing.caffemodel"), config)
  small = write_mean(tmp_path / "small_mean", np.zeros((3, 8, 8), np.float32))
  with pytest.raises(DataError, match=rf"{small} holds a mean of shape \(3, 8, 8\)"):
    caffe.read_mean(small, S)
