"""`emotalker aot-compile`: see emotalker_jax/aot.py."""
from emotalker_jax.aot import add_arguments, run  # noqa: F401
