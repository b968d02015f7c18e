"""EmoTalker: the denoiser eps_theta(z_t, t, [E(x_mask); E(x_ref)], c) with its condition
generator c = [AudioEnc(a); EIB(p)] (METHOD.md, "Model").

One linen module owns the trainable parts (UNet, audio encoder, EIB). The frozen parts
(the autoencoder and the text encoder) are separate modules whose params are passed in:
the text encoder's token states ``text_hidden`` are an input here.

Shapes: z_t, latents (B, h, w, C) NHWC; t (B,) int32 in [0, T); mel (B, W, n_mels);
text_hidden (B, L, D_text), text_mask (B, L); intensities (B, 8); context (B, N, context_dim).
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

from emotalker_jax.audio import window_length
from emotalker_jax.models.conditioner import Conditioner
from emotalker_jax.models.eib import apply_null, calibrate_intensities, eib_from_config
from emotalker_jax.models.unet import build_unet


class EmoTalker(nn.Module):
  """Methods (``model.apply({'params': p}, ..., method=...)``):

  emotion(text_hidden, text_mask, intensities, use_text (B,) bool, drop (B,) bool)
      -> (emotion tokens (B, K+T, D), intensity logits (B, K)): tokens from the prompt
      where ``use_text``, else from the explicit intensities; the learned null set where
      ``drop`` (classifier-free guidance).
  explicit_emotion(intensities (B, K), intensity_gamma) -> tokens (B, K+T, D)
  text_emotion(text_hidden, text_mask, intensity_gamma) -> (tokens, s_hat (B, K))
      sampling only: the tokens are built from ``calibrate_intensities(s, gamma)``
      (gamma 1: eq. (3) as trained; see config.sampler.intensity_gamma).
  context(mel, emotion_tokens) -> (B, N_a + K + T, D)
  denoise(z_t, t, cond_latents (B,h,w,2C), context, train) -> model output (B,h,w,C)
  __call__(...) = all of the above (used for init and training).
  """

  config: Any

  def setup(self):
    self.unet = build_unet(self.config)
    self.conditioner = Conditioner.from_config(self.config)
    self.eib = eib_from_config(self.config)

  def emotion(
    self, text_hidden, text_mask, intensities, use_text, drop, deterministic: bool = True
  ):
    out = self.eib(text_hidden, text_mask, deterministic)
    explicit = self.eib.from_intensities(intensities)
    tokens = jnp.where(use_text[:, None, None], out.tokens, explicit.astype(out.tokens.dtype))
    tokens = apply_null(tokens, self.eib.null_tokens(1)[0], drop)
    return tokens, out.logits

  def null_emotion(self, batch: int):
    return self.eib.null_tokens(batch)

  def explicit_emotion(self, intensities, intensity_gamma: float = 1.0):
    return self.eib.from_intensities(calibrate_intensities(intensities, intensity_gamma))

  def text_emotion(self, text_hidden, text_mask, intensity_gamma: float = 1.0):
    """-> (tokens (B, K+T, D) built from the calibrated s_hat, s_hat (B, K) as read)."""
    out = self.eib(text_hidden, text_mask)
    if intensity_gamma == 1.0:
      return out.tokens, out.intensities
    k = out.intensities.shape[-1]
    emo = self.eib.emotion_tokens(calibrate_intensities(out.intensities, intensity_gamma))
    return jnp.concatenate(
      [emo.astype(out.tokens.dtype), out.tokens[:, k:]], axis=1
    ), out.intensities

  def context(self, mel, emotion_tokens):
    return self.conditioner(mel, emotion_tokens)

  def denoise(self, z_t, t, cond_latents, context, train: bool = False):
    return self.unet(
      jnp.concatenate([z_t, cond_latents.astype(z_t.dtype)], axis=-1), t, context, train=train
    )

  def __call__(
    self,
    z_t,
    t,
    cond_latents,
    mel,
    text_hidden,
    text_mask,
    intensities,
    use_text,
    drop,
    train: bool = False,
  ):
    tokens, logits = self.emotion(
      text_hidden, text_mask, intensities, use_text, drop, deterministic=not train
    )
    ctx = self.context(mel, tokens)
    return self.denoise(z_t, t, cond_latents, ctx, train), logits


def dummy_batch(config, batch: int = 1, text_len: int = 8, text_dim: int = 384) -> dict:
  """Zero inputs of the right shapes for ``EmoTalker.init`` (latent size from config)."""
  f = 2 ** (len(config.autoencoder.block_out_channels) - 1)
  h = config.data.image_size // f
  c = config.autoencoder.latent_channels
  w = window_length(config.audio.window_s)
  return dict(
    z_t=jnp.zeros((batch, h, h, c)),
    t=jnp.zeros((batch,), jnp.int32),
    cond_latents=jnp.zeros((batch, h, h, 2 * c)),
    mel=jnp.zeros((batch, w, config.audio.n_mels)),
    text_hidden=jnp.zeros((batch, text_len, text_dim)),
    text_mask=jnp.ones((batch, text_len), jnp.int32),
    intensities=jnp.zeros((batch, config.eib.num_emotions)),
    use_text=jnp.ones((batch,), bool),
    drop=jnp.zeros((batch,), bool),
  )


def init_emotalker(model: EmoTalker, rng: jax.Array, text_dim: int) -> Any:
  """Boxed params (with logical axis names) of a fresh EmoTalker."""
  return model.init(rng, **dummy_batch(model.config, text_dim=text_dim))["params"]
