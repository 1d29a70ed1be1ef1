"""One process of test_sharding's two-process run: `distributed_worker.py ADDRESS ID OUTDIR`.

Joins the run at the coordinator ADDRESS as process ID of 2, trains the small config on a
(2, 2) mesh and writes the results to OUTDIR/processID.npz.
"""

import sys

import jax
import numpy as np
from test_sharding import random_params, small_config, train_run

from supervision import sharding


def main(address: str, process_id: str, outdir: str) -> None:
  config = small_config(2, 2)
  config.distributed.update(dict(coordinator_address=address, num_processes=2))
  config.distributed.process_id = int(process_id)
  sharding.initialize_distributed(config)
  assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
  results = train_run(config, random_params(config))
  np.savez(f"{outdir}/process{process_id}.npz", *jax.tree.leaves(results))


if __name__ == "__main__":
  main(*sys.argv[1:])
