"""Tiny config: 32x32 frames, f=4 latents (8x8x4), small channels. Runs in seconds on CPU.

Used by the default test tier: the base config (``emotalker_jax/config_base.py``, where
every key is documented) under its own name.
"""

import ml_collections

from emotalker_jax import config_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = config_base.get_config()
  c.name = "tiny"
  return c
