"""supervision: the network of Krizhevsky, Sutskever & Hinton (2012) in JAX/Flax."""


class ConfigError(ValueError):
  """A configuration value that cannot work; the message names the key and the value."""


class DataError(ValueError):
  """A dataset, file or setting that cannot be read as asked; the message says what to fix."""
