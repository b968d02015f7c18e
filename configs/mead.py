"""MEAD at 256x256 on a TPU pod: configs/base256.py's model (f=4 KL autoencoder, 64x64x4
latents, the ~214M-parameter UNet, bfloat16) on the frame-level ``mead/res256`` records.

Data: ``emotalker prepare mead --manual_dir ~/MEAD --data_dir DATA --image_size 256
--num_workers 16`` (input_pipeline/mead.py); the splits are identity-disjoint: test = M003,
M030, W009, W015 (``labels.MEAD_TEST_ACTORS``, the held-out speakers of the talking-face
literature), train = every other actor. Point ``data.data_dir`` at DATA (a gs:// path on a
pod).

Pod (sized for a v5p-64: 32 chips, one JAX device each, on 8 hosts of 4 chips):
- global batch 512 = 16 frames per chip; each host's loader makes 512 / 8 = 64 per step.
- mesh: data = -1 (every chip), fsdp = 1. The trained state (UNet params, AdamW's two
  moments and the EMA, float32: ~4.3 GB) fits each chip's 95 GiB, so plain data
  parallelism avoids fsdp's per-layer all-gathers; set mesh.fsdp > 1 if the model grows.
  The batch divides any power-of-two slice of up to 512 chips (data = -1 fills it).
- grain: 16 workers per host (``data.worker_count``), each prefetching the base's 2
  batches (``data.worker_buffer_size``). Measured (``emotalker bench pipeline --config
  configs/mead.py --photo-tree --pod-hosts 8 --pod-step-s 0.12 --workers 0,1,2``, 256x256
  frame records, 2-core Xeon): 113 examples/s per worker (226 with 2 workers). A host
  needs 64 / step time: 533/s at an estimated 0.12 s step (XLA's 1.547 TFLOP per example
  x 16 per chip at 45% of a v5p chip's 459 TFLOP/s), i.e. >= 5 workers; 16 make ~1800/s
  (3.4x), enough for steps down to ~0.035 s or for cores slower than these. A
  deeper prefetch only holds more of the ~3.4 MB float32 examples: 16 workers x 2
  batches already queue ~4 s of steps.

Stage 1 first: ``emotalker train --stage autoencoder --config configs/mead.py --workdir
workdirs/mead`` writes workdirs/mead/autoencoder, which ``train.autoencoder_checkpoint``
reads (pass its latent calibration, printed at the end, as --config.autoencoder.* flags).
"""

import os

import ml_collections

from emotalker_jax.config_utils import load_config_module

POD_CHIPS = 32  # v5p-64: the JAX devices of the pod this config is sized for
POD_HOSTS = 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  base256 = load_config_module(os.path.join(os.path.dirname(__file__), "base256.py"))
  c = base256.get_config(arg)
  c.name = "mead"
  c.data.dataset = "mead/res256"
  c.data.worker_count = 16
  c.train.batch_size = 512
  c.train.steps = 50_000  # 25.6M examples: ~6 passes over MEAD's ~4M training frames
  c.train.ckpt_every = 1000
  c.train.autoencoder_checkpoint = "workdirs/mead/autoencoder"
  c.mesh.data = -1
  c.mesh.fsdp = 1
  return c
