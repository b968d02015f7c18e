"""The train step: L = L_LDM + lambda_EIB * L_EIB (METHOD.md eq. 2, 3), pure and jitted.

Batch (batch axis first; ``parallel.shard_batch`` puts it on the mesh): ``batch_spec``
gives every key's shape and dtype: frames in [-1, 1], the audio window, the clip's and the
prompt's emotion labels, the prompt's tokens (with ``train.prompt_pool_size`` > 0: their
frozen token states, ``training.prompt_pool``), and the weighted regions;
``training.frozen_cache`` says which frozen outputs the trainer may pass in instead.
Frozen params (replicated): {'vae': autoencoder params, 'text': text-encoder params}.

Per step, from ``fold_in(state.rng, state.step)`` (so a resumed run draws the same
randomness): t ~ U{0..T-1}, eps ~ N(0, I), the conditioning-dropout mask (p_uncond: the
emotion tokens become the learned null set, for classifier-free guidance) and the
explicit-intensity mask (p_explicit: the emotion tokens come from the label vector s,
which trains the ``--emotion`` path). The latents are the autoencoder's posterior means,
computed in the step (the autoencoder is frozen), the reference frame's from the batch
when ``train.cache_reference_latents``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from emotalker_jax.audio import window_length
from emotalker_jax.diffusion import schedule as sched
from emotalker_jax.emotions import NUM_EMOTIONS
from emotalker_jax.models.autoencoder import encode_to_latent
from emotalker_jax.models.eib import eib_loss
from emotalker_jax.models.text_encoder import read_text_config
from emotalker_jax.training.prompt_pool import pool_enabled
from emotalker_jax.training.state import learning_rate_schedule

# emotion: the clip's label (the explicit-intensity path of the condition); prompt_emotion:
# the FED label of the prompt drawn for the clip, which supervises L_EIB (the EIB reads the
# prompt, so its target is what the prompt says, not what the clip shows).
BATCH_KEYS = (
  "x_tgt",
  "x_mask",
  "x_ref",
  "audio_mel",
  "emotion",
  "prompt_emotion",
  "input_ids",
  "attention_mask",
)
# Also in the batch when train.mouth_loss_weight > 0: the pipeline's mouth box (B, H, W);
# when train.eyes_loss_weight > 0: its box of the brows and eyes (B, H, W).
MOUTH_KEY = "mouth_region"
EYES_KEY = "eyes_region"
REGION_WEIGHTS = ((MOUTH_KEY, "mouth_loss_weight"), (EYES_KEY, "eyes_loss_weight"))


def region_loss_weights(config) -> dict[str, float]:
  """{batch key: extra loss weight} of the regions whose weight is > 0."""
  out = {}
  for key, name in REGION_WEIGHTS:
    w = float(config.train[name])
    if w < 0:
      raise ValueError(f"train.{name} must be >= 0, got {w}")
    if w > 0:
      out[key] = w
  return out


TOKEN_KEYS = ("input_ids", "attention_mask")
# With train.prompt_pool_size > 0 the batch carries the frozen tower's token states of its
# prompts (``training.frozen_cache.TextStateCache``) in place of input_ids.
TEXT_STATES_KEY = "text_states"
# With train.cache_reference_latents the batch carries the reference frames' latents
# (``training.frozen_cache.ReferenceLatentCache``) in place of x_ref.
REF_LATENT_KEY = "z_ref"


def cache_reference_latents(config) -> bool:
  return bool(config.train.get("cache_reference_latents", False))


def batch_keys(config) -> tuple[str, ...]:
  """The keys the train step reads for this config: BATCH_KEYS (+ the weighted regions);
  with a prompt pool text_states replaces input_ids, with cached reference latents z_ref
  replaces x_ref."""
  swap = {}
  if pool_enabled(config):
    swap["input_ids"] = TEXT_STATES_KEY
  if cache_reference_latents(config):
    swap["x_ref"] = REF_LATENT_KEY
  return tuple(swap.get(k, k) for k in BATCH_KEYS) + tuple(region_loss_weights(config))


def batch_spec(config, batch_size: int | None = None) -> dict:
  """The train batch of ``config``, once for every user: {key: jax.ShapeDtypeStruct}.

  The loop's shardings (rank of each key), ``emotalker aot-compile`` (abstract inputs) and
  the train-step benchmark (synthetic host batches) all read it. ``batch_size`` defaults to
  ``config.train.batch_size`` (global). Shapes: x_tgt, x_mask, x_ref (B, S, S, 3) float32;
  audio_mel (B, W, n_mels) float32 (W: ``audio.window_length``); emotion, prompt_emotion
  (B, 8) float32; input_ids, attention_mask (B, L) int32 (L: text.max_length); with a
  prompt pool, text_states (B, L, D) float32 (D: the text tower's width) instead of
  input_ids; with cached reference latents, z_ref (B, S/f, S/f, C) float32 instead of x_ref;
  the weighted regions (B, S, S) float32 in {0, 1}.
  """
  b = int(config.train.batch_size if batch_size is None else batch_size)
  s, length = int(config.data.image_size), int(config.text.max_length)
  shapes = {
    "x_tgt": (b, s, s, 3),
    "x_mask": (b, s, s, 3),
    "x_ref": (b, s, s, 3),
    "audio_mel": (b, window_length(config.audio.window_s), int(config.audio.n_mels)),
    "emotion": (b, NUM_EMOTIONS),
    "prompt_emotion": (b, NUM_EMOTIONS),
    "input_ids": (b, length),
    "attention_mask": (b, length),
  }
  if pool_enabled(config):
    _, tcfg, _, _ = read_text_config(config.text.path or None, kind=config.text.encoder)
    shapes[TEXT_STATES_KEY] = (b, length, int(tcfg.hidden_size))
  if cache_reference_latents(config):
    f = 2 ** (len(config.autoencoder.block_out_channels) - 1)
    shapes[REF_LATENT_KEY] = (b, s // f, s // f, int(config.autoencoder.latent_channels))
  shapes.update({key: (b, s, s) for key in region_loss_weights(config)})
  return {
    k: jax.ShapeDtypeStruct(shapes[k], jnp.int32 if k in TOKEN_KEYS else jnp.float32)
    for k in batch_keys(config)
  }


def mouth_loss_weight(config) -> float:
  return region_loss_weights(config).get(MOUTH_KEY, 0.0)


def latent_loss_weights(region, latent_hw: tuple[int, int], weight: float):
  """Per-latent-pixel loss weights 1 + weight * (fraction of the pixel inside ``region``).

  region: (B, H, W) {0, 1} at frame resolution, H and W multiples of the latent's h, w.
  Returns (B, h, w, 1) float32.
  """
  b, hh, ww = region.shape
  h, w = latent_hw
  frac = region.astype(jnp.float32).reshape(b, h, hh // h, w, ww // w).mean(axis=(2, 4))
  return (1.0 + weight * frac)[..., None]


def text_hidden_states(text_module, text_params, input_ids, attention_mask):
  """Frozen text-encoder token states (B, L, D) float32 (no gradient flows back)."""
  out = text_module.apply({"params": text_params}, input_ids, attention_mask)
  hidden = out[0] if isinstance(out, tuple) else out
  return jax.lax.stop_gradient(hidden.astype(jnp.float32))


def make_loss_fn(model, vae, text_module, schedule: sched.Schedule, config) -> Callable:
  """(params, frozen, batch, rng) -> (loss, metrics dict of scalars)."""
  tc = config.train
  T = schedule.alphas_cumprod.shape[0]
  region_w = region_loss_weights(config)
  ce_weight = float(config.eib.ce_weight)  # the same L_EIB as eib-train's

  def loss_fn(params, frozen, batch, rng):
    r_t, r_eps, r_drop, r_expl, r_dropout = jax.random.split(rng, 5)
    b = batch["x_tgt"].shape[0]
    # x_ref is encoded here unless its latent (computed once per frame) is in the batch
    cached_ref = REF_LATENT_KEY in batch
    frames = [batch["x_tgt"], batch["x_mask"]] + ([] if cached_ref else [batch["x_ref"]])
    z = jax.lax.stop_gradient(encode_to_latent(vae, frozen["vae"], jnp.concatenate(frames)))
    z0, z_mask, *rest = jnp.split(z, len(frames), axis=0)
    z_ref = jax.lax.stop_gradient(batch[REF_LATENT_KEY]) if cached_ref else rest[0]
    t = jax.random.randint(r_t, (b,), 0, T)
    eps = jax.random.normal(r_eps, z0.shape, z0.dtype)
    z_t = sched.q_sample(schedule, z0, t, eps)
    target = sched.training_target(schedule, z0, eps, t)
    if TEXT_STATES_KEY in batch:  # computed once per pooled prompt, outside the step
      hidden = jax.lax.stop_gradient(batch[TEXT_STATES_KEY])
    else:
      hidden = text_hidden_states(
        text_module, frozen["text"], batch["input_ids"], batch["attention_mask"]
      )
    drop = jax.random.bernoulli(r_drop, tc.p_uncond, (b,))
    use_text = ~jax.random.bernoulli(r_expl, tc.p_explicit, (b,))
    pred, logits = model.apply(
      {"params": params},
      z_t,
      t,
      jnp.concatenate([z_mask, z_ref], axis=-1),
      batch["audio_mel"],
      hidden,
      batch["attention_mask"],
      batch["emotion"],
      use_text,
      drop,
      train=True,
      rngs={"dropout": r_dropout},
    )
    # The speech mouth is a few latent pixels: without extra weight the denoiser never
    # learns to read the audio tokens (docs/RESULTS.md, lip sync). The weights of the
    # regions add: 1 + sum_r w_r * (fraction of the latent pixel inside region r).
    w = None
    for key, wr in region_w.items():
      wk = latent_loss_weights(batch[key], z0.shape[1:3], wr)
      w = wk if w is None else w + wk - 1.0
    l_ldm = sched.diffusion_loss(pred, target, element_weights=w)
    l_eib, eib_metrics = eib_loss(logits, batch["prompt_emotion"], ce_weight)
    loss = l_ldm + tc.lambda_eib * l_eib
    return loss, {"loss": loss, "loss_ldm": l_ldm, "loss_eib": l_eib, "eib_mae": eib_metrics["mae"]}

  return loss_fn


def make_train_step(model, vae, text_module, schedule: sched.Schedule, config) -> Callable:
  """(state, frozen, batch) -> (state, metrics). Not jitted here: ``jit_train_step`` adds
  the shardings. Metrics include the global gradient norm and the learning rate."""
  loss_fn = make_loss_fn(model, vae, text_module, schedule, config)
  lr_fn = learning_rate_schedule(config.train)
  ema_decay = float(config.train.ema_decay)

  def train_step(state, frozen, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, frozen, batch, rng
    )
    metrics["grad_norm"] = jnp.sqrt(
      sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads))
    )
    metrics["lr"] = lr_fn(state.step)
    return state.apply_gradients(grads, ema_decay), metrics

  return train_step


def jit_train_step(train_step, state_shardings, frozen_shardings, batch_shardings):
  """jax.jit with explicit in/out shardings; the state is donated (updated in place)."""
  return jax.jit(
    train_step,
    in_shardings=(state_shardings, frozen_shardings, batch_shardings),
    out_shardings=(state_shardings, None),
    donate_argnums=(0,),
  )


__all__ = [
  "make_loss_fn",
  "make_train_step",
  "jit_train_step",
  "text_hidden_states",
  "BATCH_KEYS",
  "TOKEN_KEYS",
  "TEXT_STATES_KEY",
  "REF_LATENT_KEY",
  "cache_reference_latents",
  "MOUTH_KEY",
  "EYES_KEY",
  "batch_keys",
  "batch_spec",
  "latent_loss_weights",
  "region_loss_weights",
]
