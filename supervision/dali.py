"""Decoding a prepared dataset's JPEGs with NVIDIA DALI (`config.decoder = "dali"`).

On a GPU the JPEGs are decoded by nvJPEG ("mixed" device: Hopper's hardware JPEG decoder where
there is one) straight into device memory, so the host only reads records; elsewhere DALI's CPU
backend decodes them (libjpeg-turbo). The crops, flips and lighting stay the project's own
(`supervision.preprocessing`). This module is imported only when selected: install DALI with
`pip install -r requirements-dali.txt`.
"""

import jax
import numpy as np
from nvidia.dali import fn, pipeline_def, types


class Decoder:
  """Decodes the "jpeg" of batches of `batch_size` (`prepared.read_encoded`) into "image" uint8
  [b, S, S, 3]: a jax.Array on the first local GPU, or a numpy array on the CPU."""

  def __init__(self, batch_size: int):
    self.gpu = jax.local_devices()[0].platform == "gpu"
    device_id = jax.local_devices()[0].local_hardware_id if self.gpu else None

    @pipeline_def(
      batch_size=batch_size,
      num_threads=2,
      device_id=device_id,
      prefetch_queue_depth=1,
      exec_async=False,
      exec_pipelined=False,
    )
    def decode():
      jpegs = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
      return fn.decoders.image(jpegs, device="mixed" if self.gpu else "cpu", output_type=types.RGB)

    self.pipeline = decode()
    self.pipeline.build()

  def __call__(self, batch: dict) -> dict:
    batch = dict(batch)
    self.pipeline.feed_input("jpeg", batch.pop("jpeg"))
    (images,) = self.pipeline.run()
    if self.gpu:  # the pipeline reuses its buffers: copy out of them
      batch["image"] = jax.numpy.array(jax.dlpack.from_dlpack(images.as_tensor()), copy=True)
    else:
      batch["image"] = np.array(images.as_tensor())
    return batch
