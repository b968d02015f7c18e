"""CREMA-D at 256x256 on a TPU pod: configs/mead.py (base256's model, the v5p-64 batch,
mesh and grain workers) on the frame-level ``crema_d/res256`` records.

Data: ``emotalker prepare crema_d --manual_dir ~/CREMA-D --data_dir DATA --image_size 256
--num_workers 16``; the splits are identity-disjoint and fixed: test = actors 1082-1091
(``labels.CREMA_TEST_ACTORS``; CREMA-D papers use random identity splits without
publishing them), train = 1001-1081.

CREMA-D is smaller than MEAD (7442 clips of ~2.5 s: ~0.47M frames), so fewer steps: 20k
steps of 512 are ~25 passes over its training frames.
"""

import os

import ml_collections

from emotalker_jax.config_utils import load_config_module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mead = load_config_module(os.path.join(os.path.dirname(__file__), "mead.py"))
  c = mead.get_config(arg)
  c.name = "crema_d"
  c.data.dataset = "crema_d/res256"
  c.train.steps = 20_000
  c.train.autoencoder_checkpoint = "workdirs/crema_d/autoencoder"
  return c
