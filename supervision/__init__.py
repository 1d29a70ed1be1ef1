"""supervision: the network of Krizhevsky, Sutskever & Hinton (2012) in JAX/Flax."""


class ConfigError(ValueError):
  """A configuration value that cannot work; the message names the key and the value."""


class DataError(ValueError):
  """A dataset, file or setting that cannot be read as asked; the message says what to fix."""


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored; the message names it and says what to do."""


class WorkdirError(RuntimeError):
  """A workdir that cannot be used; the message says why and what to do."""


# Errors whose message says what is wrong and what to do: the command lines print it in one
# line, without a traceback.
USER_ERRORS = (ConfigError, DataError, CheckpointError, WorkdirError, FileNotFoundError)
