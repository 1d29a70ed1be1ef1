"""The workdir of a run: created with a clear error, and held by one run at a time."""

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from supervision import WorkdirError

LOCK = ".lock"
METRICS = "metrics.jsonl"  # the logged rows of training (`train`), one JSON object a line
EVAL_RESULTS = "eval_results.json"  # the final evaluation (`train.write_eval_results`)


def create(workdir: str) -> Path:
  """`workdir`, made with its parents where missing."""
  path = Path(workdir)
  in_the_way = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
  if in_the_way:
    raise WorkdirError(
      f"--workdir={workdir} cannot be a folder: {in_the_way} is a file. Use another --workdir."
    )
  path.mkdir(parents=True, exist_ok=True)
  return path


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[Path]:
  """Holds `workdir` for this process while entered; a second holder gets a WorkdirError naming
  this one. The lock is the kernel's (flock), so it ends with its process however that ends: a
  lock file left by a dead process is taken over."""
  with open(create(workdir) / LOCK, "a+") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock.seek(0)
      owner = lock.read().strip() or "another process"
      raise WorkdirError(
        f"{workdir} is in use by {owner}. Wait for that run to end (or stop it), or use another"
        " --workdir."
      ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"process {os.getpid()} on {socket.gethostname()} (since {time.ctime()})\n")
    lock.flush()
    yield Path(workdir)
