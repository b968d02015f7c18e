"""`emotalker train --stage autoencoder` (emotalker_jax/training/autoencoder.py): the stage
measures the latent shift / scale that make the diffusion latents zero-mean and
unit-variance, saves them with the params, and the diffusion stage warns when its config
does not use them."""

import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emotalker_jax import checkpoints
from emotalker_jax.config_utils import load_config
from emotalker_jax.models.autoencoder import build_autoencoder, encode_to_latent
from emotalker_jax.training import autoencoder as ae_stage

OVERRIDES = [
  "--config.autoencoder.block_out_channels=(8, 16)",
  "--config.autoencoder.norm_num_groups=4",
  "--config.autoencoder_train.steps=3",
  "--config.train.log_every=1",
  "--config.train.ckpt_every=100",
  "--config.train.batch_size=8",
]


def _batches(n: int, seed: int = 0):
  """n batches of smooth random images (8, 32, 32, 3) in [-1, 1] (8: one per simulated device)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    lo = rng.uniform(-1, 1, (8, 4, 4, 3))
    out.append({"x_tgt": np.repeat(np.repeat(lo, 8, 1), 8, 2).astype(np.float32)})
  return out


@pytest.fixture(scope="module")
def config(repo_root):
  return load_config(str(repo_root / "configs/tiny.py"), OVERRIDES)


@pytest.fixture(scope="module")
def trained(config, tmp_path_factory):
  work = tmp_path_factory.mktemp("ae")
  batches = _batches(20)
  res = ae_stage.train_autoencoder(
    config, str(work), loader=itertools.cycle(batches), progress=False
  )
  return res, batches


def test_calibration_gives_unit_variance_latents(trained, config):
  res, batches = trained
  params, saved = checkpoints.load_params(res["path"])
  assert res["step"] == 3
  shift, scale = saved["shift_factor"], saved["scaling_factor"]
  assert scale > 0 and np.isfinite(shift)
  # The stage calibrates on the 8 batches after the 3 training steps (the cycle's 4..11).
  c = config.copy_and_resolve_references()
  c.autoencoder.shift_factor, c.autoencoder.scaling_factor = shift, scale
  vae = build_autoencoder(c)
  z = np.concatenate(
    [np.asarray(encode_to_latent(vae, params, jnp.asarray(b["x_tgt"]))) for b in batches[3:11]]
  ).astype(np.float64)
  assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, rel=1e-4)


def test_latent_calibration_matches_numpy(config):
  vae = build_autoencoder(config)
  import flax.linen as nn

  from emotalker_jax.models.autoencoder import init_autoencoder

  params = nn.meta.unbox(init_autoencoder(vae, jax.random.key(1), 32)["params"])
  batches = _batches(3, seed=5)
  got = ae_stage.latent_calibration(vae, params, iter(batches), num_batches=3)
  means = np.concatenate(
    [
      np.asarray(vae.apply({"params": params}, jnp.asarray(b["x_tgt"]), method="encode")[0])
      for b in batches
    ]
  )
  assert got["shift_factor"] == pytest.approx(float(means.mean()), rel=1e-5, abs=1e-7)
  assert got["scaling_factor"] == pytest.approx(1.0 / float(means.std()), rel=1e-5)


def test_diffusion_stage_warns_when_the_config_ignores_the_calibration(trained, config, caplog):
  res, _ = trained
  _, saved = checkpoints.load_params(res["path"])
  c = config.copy_and_resolve_references()
  c.train.autoencoder_checkpoint = res["path"]
  vae = build_autoencoder(c)
  with caplog.at_level(logging.WARNING):
    checkpoints.load_frozen_autoencoder(c, vae, jax.random.key(0))  # config: 1.0 / 0.0
  assert "--config.autoencoder.scaling_factor=" in caplog.text
  caplog.clear()
  c.autoencoder.shift_factor = saved["shift_factor"]
  c.autoencoder.scaling_factor = saved["scaling_factor"]
  with caplog.at_level(logging.WARNING):
    checkpoints.load_frozen_autoencoder(c, vae, jax.random.key(0))
  assert "calibrated" not in caplog.text
