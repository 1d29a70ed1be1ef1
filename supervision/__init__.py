"""supervision: the network of Krizhevsky, Sutskever & Hinton (2012) in JAX/Flax."""
