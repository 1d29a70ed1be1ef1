"""Weights trained in Caffe: a `.caffemodel` (such as the BVLC model zoo's `bvlc_alexnet`, the
paper's two-column net) imported into a checkpoint of `configs/alexnet.py:caffe`.

`python main.py --mode=import_caffe --config=configs/alexnet.py:caffe
--config.caffe.model=M.caffemodel --config.caffe.mean=imagenet_mean.binaryproto --workdir=D`
writes D/checkpoints/0 (step 0, fresh optimizer state) and the statistics file of D with Caffe's
mean image, so that every mode that reads checkpoints (`eval`, `train` to fine-tune) runs on it.

A `.caffemodel` is a binary `NetParameter` protobuf. Its messages are declared here with only the
fields the import reads (the field numbers are caffe.proto's), so neither Caffe nor protoc is
needed: the layers (`layer`, or `layers` in older files such as bvlc_alexnet's), each with its name,
type and blobs, and a blob's shape (`shape`, or the older num/channels/height/width) and data.

Caffe's layouts, and this project's (`supervision.models`):

  conv kernels   (out, in / group, h, w); group g computes outputs g * out / groups ... from inputs
                 g * in / groups ...: the columns of a layer that reads its "own" column
                 -> (columns, h, w, in, out / columns), column c holding Caffe's outputs c * out /
                 columns ...
  fc weights     (out, in), in over the (channel, row, column) flatten of the maps below
                 -> (columns, in, out / columns), in over the (row, column, channel) flatten
  maps           the channels of both columns in order, column 0's first, as `_merge_columns`
  input          BGR; the mean image a BlobProto (1, 3, 256, 256) of BGR values
"""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from supervision import (
  ConfigError,
  DataError,
  WorkdirError,
  checkpoint,
  models,
  optim,
  stats,
  steps,
  train,
)

# The per-channel mean of Caffe's ILSVRC-2012 mean image (BGR), used without a mean file.
CHANNEL_MEAN_BGR = (104.0, 117.0, 123.0)

_F = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, repeated, message type of the field)]) of caffe.proto.
_MESSAGES = (
  ("BlobShape", [("dim", 1, _F.TYPE_INT64, True, "")]),
  (
    "BlobProto",
    [
      ("num", 1, _F.TYPE_INT32, False, ""),
      ("channels", 2, _F.TYPE_INT32, False, ""),
      ("height", 3, _F.TYPE_INT32, False, ""),
      ("width", 4, _F.TYPE_INT32, False, ""),
      ("data", 5, _F.TYPE_FLOAT, True, ""),
      ("shape", 7, _F.TYPE_MESSAGE, False, "BlobShape"),
      ("double_data", 8, _F.TYPE_DOUBLE, True, ""),
    ],
  ),
  (
    "LayerParameter",
    [
      ("name", 1, _F.TYPE_STRING, False, ""),
      ("type", 2, _F.TYPE_STRING, False, ""),
      ("blobs", 7, _F.TYPE_MESSAGE, True, "BlobProto"),
    ],
  ),
  (  # the layers of older files; `type` is the enum V1LayerParameter.LayerType (4 convolution,
    # 14 inner product, ...), read as the integer it is on the wire
    "V1LayerParameter",
    [
      ("name", 4, _F.TYPE_STRING, False, ""),
      ("type", 5, _F.TYPE_INT32, False, ""),
      ("blobs", 6, _F.TYPE_MESSAGE, True, "BlobProto"),
    ],
  ),
  (
    "NetParameter",
    [
      ("name", 1, _F.TYPE_STRING, False, ""),
      ("layers", 2, _F.TYPE_MESSAGE, True, "V1LayerParameter"),
      ("layer", 100, _F.TYPE_MESSAGE, True, "LayerParameter"),
    ],
  ),
)


def _message_classes() -> dict:
  """The message classes of `_MESSAGES`, in a descriptor pool of their own."""
  file = descriptor_pb2.FileDescriptorProto(name="caffe.proto", package="caffe", syntax="proto2")
  for name, fields in _MESSAGES:
    proto = file.message_type.add(name=name)
    for field, number, kind, repeated, type_name in fields:
      label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
      f = proto.field.add(name=field, number=number, type=kind, label=label)
      if type_name:
        f.type_name = f".caffe.{type_name}"
      elif repeated:
        f.options.packed = True  # as caffe.proto declares them; either encoding parses
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file)
  find = pool.FindMessageTypeByName
  return {name: message_factory.GetMessageClass(find(f"caffe.{name}")) for name, _ in _MESSAGES}


_CLASSES = _message_classes()
BlobProto, NetParameter = _CLASSES["BlobProto"], _CLASSES["NetParameter"]


def _parse(cls: type, path: str, what: str) -> message.Message:
  """The message `cls` in the file `path`, or an error naming the file."""
  if not Path(path).is_file():
    raise FileNotFoundError(f"No {what} {path}: see the README for where to get it.")
  parsed = cls()
  try:
    parsed.ParseFromString(Path(path).read_bytes())
  except message.DecodeError as e:
    raise DataError(f"{path} is not a {what} (a binary caffe.{cls.__name__}): {e}.") from None
  return parsed


def blob_array(blob: message.Message, where: str) -> np.ndarray:
  """The values of a BlobProto as a float32 array of its shape."""
  if blob.HasField("shape"):
    shape = tuple(blob.shape.dim)
  else:
    shape = (blob.num, blob.channels, blob.height, blob.width)
  values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
  if values.size != math.prod(shape):
    raise DataError(f"{where}: a blob of shape {shape} holds {values.size} values.")
  return values.reshape(shape)


def read_layers(path: str) -> dict[str, list[np.ndarray]]:
  """{layer name: its blobs} of the layers of the .caffemodel `path` that have weights."""
  net = _parse(NetParameter, path, "Caffe model")
  layers = {
    layer.name: [blob_array(b, f"{path}, layer {layer.name!r}") for b in layer.blobs]
    for layer in (*net.layers, *net.layer)
    if len(layer.blobs)
  }
  if not layers:
    raise DataError(f"{path} holds no layer with weights: is it a .caffemodel?")
  return layers


def conv_kernel(weights: np.ndarray, columns: int) -> np.ndarray:
  """Caffe's (out, in / group, h, w) kernels -> (columns, h, w, in / group, out / columns)."""
  return weights.reshape(columns, -1, *weights.shape[1:]).transpose(0, 3, 4, 2, 1)


def dense_kernel(weights: np.ndarray, columns: int, maps: int) -> np.ndarray:
  """Caffe's (out, in) weights over the (channel, position) flatten of `maps` maps ->
  (columns, in, out / columns) over the (position, channel) flatten."""
  out, size = weights.shape
  hwc = weights.reshape(out, maps, size // maps).transpose(0, 2, 1).reshape(out, size)
  return hwc.reshape(columns, -1, size).transpose(0, 2, 1)


def _blobs(layers: dict, name: str, path: str, shapes: tuple) -> list[np.ndarray]:
  """The weights and biases of layer `name`, of Caffe's `shapes` (leading axes of size 1, as
  older files store them, dropped)."""
  if name not in layers:
    raise DataError(
      f"{path} has no layer {name!r}; its layers with weights are {', '.join(layers)}. The"
      " import needs a net of the config's layers (configs/alexnet.py:caffe: bvlc_alexnet)."
    )
  blobs = layers[name]
  if len(blobs) != 2:
    raise DataError(f"{path}: layer {name!r} has {len(blobs)} blobs; the import needs 2.")
  arrays = []
  for array, shape, what in zip(blobs, shapes, ("weights", "biases"), strict=True):
    while array.ndim > len(shape) and array.shape[0] == 1:
      array = array[0]
    if array.shape != shape:
      raise DataError(
        f"{path}: the {what} of layer {name!r} have shape {array.shape}; the config's model"
        f" needs {shape} (in Caffe's order). Is it a net of the config's layers, columns and"
        " crop_size?"
      )
    arrays.append(array)
  return arrays


def read_params(path: str, config: ml_collections.ConfigDict) -> dict:
  """The parameters of the network of `config` from the .caffemodel `path` (numpy arrays)."""
  layers = read_layers(path)
  model = models.create_model(config)
  images = jnp.zeros((1, config.crop_size, config.crop_size, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  params = {}
  for layer in config.model.conv:
    name = layer["name"]
    columns, h, w, inputs, outputs = shapes[name]["kernel"].shape
    caffe = ((columns * outputs, inputs, h, w), (columns * outputs,))
    weights, biases = _blobs(layers, name, path, caffe)
    params[name] = dict(kernel=conv_kernel(weights, columns), bias=biases.reshape(columns, -1))
  maps = (config.model.conv[-1]["features"], *config.model.dense)  # what each FC layer reads
  for name, below in zip(model.dense_names(), maps, strict=True):
    columns, inputs, outputs = shapes[name]["kernel"].shape
    caffe = ((columns * outputs, inputs), (columns * outputs,))
    weights, biases = _blobs(layers, name, path, caffe)
    kernel = dense_kernel(weights, columns, below)
    params[name] = dict(kernel=kernel, bias=biases.reshape(columns, -1))
  unused = sorted(set(layers) - set(params))
  if unused:
    logging.warning("%s: layers %s are not in the config's model; not imported.", path, unused)
  return params


def read_mean(path: str, size: int) -> np.ndarray:
  """Caffe's mean image (a BlobProto of BGR values, 3 x size x size) as [size, size, 3] RGB, the
  layout of the project's statistics."""
  mean = blob_array(_parse(BlobProto, path, "Caffe mean file"), path)
  while mean.ndim > 3 and mean.shape[0] == 1:
    mean = mean[0]
  if mean.shape != (3, size, size):
    raise DataError(
      f"{path} holds a mean of shape {mean.shape}; config.image_size={size} needs (3, {size},"
      f" {size}) (Caffe's imagenet_mean.binaryproto is 3 x 256 x 256)."
    )
  return mean.transpose(1, 2, 0)[..., ::-1]


def caffe_stats(mean: np.ndarray, config: ml_collections.ConfigDict) -> dict:
  """The statistics file's contents with the mean image `mean` ([S, S, 3] RGB). Caffe's files hold
  no RGB principal components: their eigenvalues are 0, so training from the imported weights
  adds no lighting noise (run --mode=stats for the dataset's own)."""
  return stats.from_moments(config, mean, np.zeros((3, 3)), count=0, skipped=0)


def run_import(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`--mode=import_caffe`: `config.caffe.model` into `workdir`'s first checkpoint (step 0) and
  its statistics file with `config.caffe.mean` (Caffe's per-channel mean without it)."""
  if not config.caffe.model:
    raise ConfigError(
      "--mode=import_caffe needs --config.caffe.model=PATH, a .caffemodel such as"
      " bvlc_alexnet.caffemodel (see the README)."
    )
  size = config.image_size
  if config.caffe.mean:
    mean = read_mean(config.caffe.mean, size)
  else:
    mean = np.broadcast_to(np.array(CHANNEL_MEAN_BGR[::-1]), (size, size, 3))
  params = read_params(config.caffe.model, config)
  with checkpoint.create_manager(workdir, config) as manager:
    if manager.all_steps():
      raise WorkdirError(
        f"{manager.directory} holds checkpoints already (steps {manager.all_steps()}); import"
        " into another --workdir."
      )
    tx = optim.create_optimizer(config)
    state = steps.state_from_params(
      jax.tree.map(jnp.asarray, params), tx, jax.random.key(config.seed)
    )
    plateau = vars(optim.Plateau.from_config(config))
    checkpoint.save(manager, state, None, dict(plateau=plateau), config)
    manager.wait_until_finished()
  path = stats.stats_path(config, workdir)
  stats.save_stats(caffe_stats(mean, config), path)
  count = sum(p.size for layer in params.values() for p in layer.values())
  train.say(
    f"Imported {', '.join(params)} ({count:,} parameters) from {config.caffe.model} into"
    f" {manager.directory}/0, and the mean of {config.caffe.mean or CHANNEL_MEAN_BGR} (BGR)"
    f" into {path}."
  )
