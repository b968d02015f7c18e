"""Stage 1: train the KL autoencoder (E, D) on the dataset's frames.

Loss per frame x in [-1, 1] (B, H, W, 3):
L1(D(z), x) + L2(D(z), x) + kl_weight * KL(q(z|x) || N(0, I)),
z sampled from the posterior (the latent-diffusion recipe without the GAN and perceptual
terms: neither a discriminator nor a VGG is available offline at this scale). Written to
``WORKDIR/autoencoder/`` (params.safetensors + config.json; WORKDIR may be gs://) which
``config.train.autoencoder_checkpoint`` then points the diffusion stage at.

``emotalker train --stage autoencoder --config ... --workdir DIR`` runs it; it uses the same
sharded-state helpers, optimizer and checkpoint manager as the diffusion stage (its own
subfolder DIR/autoencoder_checkpoints), so it resumes too.
"""

from __future__ import annotations

import logging
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from emotalker_jax import checkpoints, parallel
from emotalker_jax.checkpoints import checkpoint_manager, restore_checkpoint, save_checkpoint
from emotalker_jax.models.autoencoder import build_autoencoder, init_autoencoder
from emotalker_jax.training import state as state_lib
from emotalker_jax.training.loop import MetricWriter, _check_finite
from input_pipeline.pipeline import make_train_loader

log = logging.getLogger(__name__)


def autoencoder_loss(vae, params, x, rng, kl_weight: float):
  """(loss, metrics) for frames x (B, H, W, 3)."""
  mean, logvar = vae.apply({"params": params}, x, method="encode")
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
  rec = vae.apply({"params": params}, z, method="decode")
  l1 = jnp.mean(jnp.abs(rec - x))
  l2 = jnp.mean(jnp.square(rec - x))
  kl = 0.5 * jnp.mean(jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3)))
  loss = l1 + l2 + kl_weight * kl
  psnr = -10.0 * jnp.log10(jnp.mean(jnp.square((rec - x) / 2.0)) + 1e-12)
  return loss, {"loss": loss, "l1": l1, "l2": l2, "kl": kl, "psnr": psnr}


def build_autoencoder_trainer(config, mesh=None, rng=None):
  mesh = mesh if mesh is not None else parallel.create_mesh(config.mesh)
  rules = parallel.rules_from_config(config)
  rng = jax.random.key(int(config.seed) + 1) if rng is None else rng
  vae = build_autoencoder(config)
  train_cfg = config.autoencoder_train
  tx = state_lib.make_optimizer(train_cfg)
  init = state_lib.init_state_fn(
    lambda r: init_autoencoder(vae, r, config.data.image_size)["params"], tx
  )
  state, shardings = state_lib.create_sharded_state(init, rng, mesh, rules)
  kl_weight = float(train_cfg.kl_weight)
  ema_decay = float(train_cfg.ema_decay)

  def step(state, x):
    r = jax.random.fold_in(state.rng, state.step)
    (_, m), g = jax.value_and_grad(
      lambda p: autoencoder_loss(vae, p, x, r, kl_weight), has_aux=True
    )(state.params)
    return state.apply_gradients(g, ema_decay), m

  step_fn = jax.jit(
    step,
    in_shardings=(shardings, parallel.batch_sharding(mesh, 4)),
    out_shardings=(shardings, None),
    donate_argnums=(0,),
  )
  return vae, state, shardings, step_fn, mesh, train_cfg


def latent_calibration(vae, params, batches, num_batches: int = 8) -> dict:
  """Scalar shift and scale that make the posterior means zero-mean, unit-variance.

  The diffusion schedule assumes x_0 of roughly unit variance (SD's 0.18215 is the same
  calibration for its VAE); our autoencoders are trained from scratch, so the factors are
  measured on ``num_batches`` training batches (iterator of dicts with "x_tgt" (B,H,W,3)
  in [-1, 1]). Returns {"shift_factor": mean, "scaling_factor": 1 / std} as floats.
  """
  enc = jax.jit(lambda p, x: vae.apply({"params": p}, x, method="encode")[0])
  means = [
    np.asarray(enc(params, jnp.asarray(np.asarray(next(batches)["x_tgt"], np.float32))))
    for _ in range(num_batches)
  ]
  z = np.concatenate(means).astype(np.float64)
  return {"shift_factor": float(z.mean()), "scaling_factor": float(1.0 / max(z.std(), 1e-6))}


def train_autoencoder(
  config, workdir: str, *, loader=None, max_steps=None, progress: bool = True
) -> dict:
  """Trains the autoencoder; returns {'step', 'psnr', 'path'} (path: the saved params)."""

  vae, state, shardings, step_fn, mesh, tc = build_autoencoder_trainer(config)
  if loader is None:
    loader = make_train_loader(config)
  it = iter(loader)

  class _Holder:  # the minimal Trainer surface the checkpoint helpers use
    pass

  holder = _Holder()
  holder.state, holder.state_shardings, holder.config = state, shardings, config
  workdir = checkpoints.as_path(workdir)
  sub = workdir / "autoencoder_stage"
  mngr = checkpoint_manager(sub, config)
  start = restore_checkpoint(mngr, holder, it) if mngr.latest_step() is not None else 0
  total = int(tc.steps)
  end = total if max_steps is None else min(total, start + int(max_steps))
  writer = MetricWriter(sub)
  last = {}
  try:
    for s in tqdm(
      range(start, end), initial=start, total=total, desc="autoencoder", disable=not progress
    ):
      x = parallel.shard_batch(np.asarray(next(it)["x_tgt"], np.float32), mesh)
      holder.state, m = step_fn(holder.state, x)
      if (s + 1) % int(config.train.log_every) == 0 or s + 1 == end:
        _check_finite(s, m)
        last = {k: float(v) for k, v in jax.device_get(m).items()}
        writer.write(s + 1, last)
      if (s + 1) % int(config.train.ckpt_every) == 0:
        save_checkpoint(mngr, holder, it)
    save_checkpoint(mngr, holder, it, force=True)
  finally:
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  path = workdir / "autoencoder"
  ema = jax.device_get(holder.state.ema_params)
  ae_cfg = {**config.autoencoder.to_dict(), **latent_calibration(vae, ema, it)}
  if jax.process_index() == 0:  # the params are replicated: one writer
    if checkpoints.is_remote(path):  # safetensors writes local files: stage, then copy
      with tempfile.TemporaryDirectory(prefix="emotalker-autoencoder-") as tmp:
        checkpoints.save_params(tmp, ema, ae_cfg)
        checkpoints.copy_folder(tmp, path)
    else:
      checkpoints.save_params(os.fspath(path), ema, ae_cfg)
  log.info(
    "latent calibration: shift_factor=%.4f scaling_factor=%.4f (unit-variance "
    "latents; pass --config.autoencoder.shift_factor=%.4f "
    "--config.autoencoder.scaling_factor=%.4f to the diffusion stage)",
    ae_cfg["shift_factor"],
    ae_cfg["scaling_factor"],
    ae_cfg["shift_factor"],
    ae_cfg["scaling_factor"],
  )
  log.info(
    "autoencoder params written to %s (point config.train.autoencoder_checkpoint at it)", path
  )
  return {
    "step": int(jax.device_get(holder.state.step)),
    "psnr": last.get("psnr"),
    "path": os.fspath(path),
  }


__all__ = [
  "autoencoder_loss",
  "build_autoencoder_trainer",
  "latent_calibration",
  "train_autoencoder",
]
