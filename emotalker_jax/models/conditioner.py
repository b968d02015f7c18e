"""Condition generator: audio encoder, landmark encoder, and the cross-attention context.

METHOD.md, model step 1: ``c = concat(AudioEnc(a), EIB(p))``. The emotion tokens come
from ``models/eib.py``; this module encodes the audio window of each video frame and
assembles the context the UNet cross-attends to:

    context = [audio tokens (N_a); emotion tokens (N_e)]

(``LandmarkEncoder`` and ``assemble_context``'s optional landmark tokens are DiffTalk's
landmark conditioning; EmoTalker's ``Conditioner`` does not use them.)

The audio frontend (log-mel, per-frame windows) lives in ``emotalker_jax.audio`` and is
re-exported here. Logical axis names used: batch, length, embed, heads, kv, mlp,
conv_in, conv_out, norm (all from ``config.logical_axis_rules``); the tap axis of 1-D
conv kernels and the position / query tables' row axis are left unnamed (None, never
sharded).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from emotalker_jax.audio import (  # noqa: F401  (re-exported frontend)
  audio_features,
  audio_windows,
  features_from_config,
  log_mel_spectrogram,
  mel_filterbank,
  window_length,
)
from emotalker_jax.models.layers import BERT_QKV, TOKEN_AXES, Attention, dense, layer_norm

Dtype = Any

# Fixed affine normalisation of log-mel input: log(1e-5) = -11.5 (silence) .. ~+5 (loud
# speech) maps to about -1.9 .. +2.3.
LOG_MEL_MEAN = -4.0
LOG_MEL_SCALE = 4.0


def _dtype(name_or_dtype) -> Dtype:
  return jnp.dtype(name_or_dtype)


# eps 1e-5 and flax's one-pass variance: the LayerNorms the conditioner was trained with.
_layer_norm = functools.partial(layer_norm, 1e-5, fast_variance=True)


def _attention(num_heads, head_dim, dtype, param_dtype, name):
  """Attention with biased q/k/v named query/key/value/out (the conditioner's tree)."""
  return Attention(
    heads=num_heads,
    head_dim=head_dim,
    qkv_bias=True,
    proj_names=BERT_QKV,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


class TransformerBlock(nn.Module):
  """Pre-LayerNorm self-attention + GELU MLP (4x) block: (B, T, D) -> (B, T, D).

  ``num_heads`` heads of width D / num_heads (D must be divisible by num_heads).
  """

  num_heads: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = _layer_norm(name="norm1", **kw)(x)
    x = x + _attention(self.num_heads, d // self.num_heads, name="attn", **kw)(h)
    h = _layer_norm(name="norm2", **kw)(x)
    h = dense(self.mlp_ratio * d, ("embed", "mlp"), name="fc1", **kw)(h)
    h = nn.gelu(h)
    h = dense(d, ("mlp", "embed"), name="fc2", **kw)(h)
    x = x + h
    return nn.with_logical_constraint(x, TOKEN_AXES)


class AudioEncoder(nn.Module):
  """Per-video-frame audio window -> ``tokens_per_frame`` cross-attention tokens.

  Input: log-mel windows (..., W, n_mels) float (natural-log magnitude mel from
  ``emotalker_jax.audio``; W = 21 for 0.2 s). Leading dims are flattened into a batch
  and restored, so (B, W, 80) -> (B, N_a, D) and (B, N, W, 80) -> (B, N, N_a, D),
  with N_a = ``tokens_per_frame`` and D = ``context_dim``.

  Layers: fixed log-mel normalisation; Conv1D(k3, s1) -> GELU -> Conv1D(k3, s2) ->
  GELU -> Conv1D(k3, s2) -> GELU (time 21 -> 11 -> 6); learned position embedding;
  ``num_layers`` transformer blocks; N_a learned queries attend to the sequence
  (attention pooling); LayerNorm; Dense to ``context_dim``.
  """

  width: int = 64
  num_layers: int = 1
  num_heads: int = 2
  tokens_per_frame: int = 4
  context_dim: int = 64
  conv_strides: Sequence[int] = (1, 2, 2)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @classmethod
  def from_config(cls, config, **kw) -> AudioEncoder:
    a = config.audio
    return cls(
      width=a.width,
      num_layers=a.num_layers,
      num_heads=a.num_heads,
      tokens_per_frame=a.tokens_per_frame,
      context_dim=config.context_dim,
      dtype=_dtype(config.dtype),
      param_dtype=_dtype(config.param_dtype),
      **kw,
    )

  @nn.compact
  def __call__(self, mel_windows):
    if mel_windows.ndim < 3:
      raise ValueError(
        f"AudioEncoder expects (..., W, n_mels) windows, got shape "
        f"{mel_windows.shape}; build them with audio_windows()"
      )
    if self.width % self.num_heads:
      raise ValueError(
        f"width {self.width} is not divisible by num_heads {self.num_heads}; "
        "change config.audio.width or config.audio.num_heads"
      )
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    lead = mel_windows.shape[:-2]
    x = mel_windows.reshape((-1,) + mel_windows.shape[-2:]).astype(self.dtype)
    x = (x - LOG_MEL_MEAN) / LOG_MEL_SCALE  # (B, W, n_mels)
    x = nn.with_logical_constraint(x, ("batch", "length", None))
    for i, stride in enumerate(self.conv_strides):
      x = nn.Conv(
        self.width,
        kernel_size=(3,),
        strides=(stride,),
        padding="SAME",
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), (None, "conv_in", "conv_out")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
        name=f"conv{i}",
      )(x)
      x = nn.gelu(x)
    x = nn.with_logical_constraint(x, TOKEN_AXES)
    t = x.shape[1]
    pos = self.param(
      "pos_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (t, self.width),
      self.param_dtype,
    )
    x = x + pos.astype(self.dtype)[None]
    for i in range(self.num_layers):
      x = TransformerBlock(
        self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype, name=f"block{i}"
      )(x)
    x = _layer_norm(name="norm_kv", **kw)(x)
    queries = self.param(
      "queries",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
      (self.tokens_per_frame, self.width),
      self.param_dtype,
    )
    q = jnp.broadcast_to(queries.astype(self.dtype)[None], (x.shape[0],) + queries.shape)
    tok = q + _attention(self.num_heads, self.width // self.num_heads, name="pool", **kw)(q, x)
    tok = _layer_norm(name="norm_out", **kw)(tok)
    tok = dense(self.context_dim, ("embed", "mlp"), name="proj_out", **kw)(tok)
    tok = nn.with_logical_constraint(tok, TOKEN_AXES)
    return tok.reshape(lead + tok.shape[1:])


def _check_landmarks(landmarks):
  ok = (landmarks.ndim == 3 and landmarks.shape[-1] == 2) or (
    landmarks.ndim == 2 and landmarks.shape[-1] % 2 == 0
  )
  if not ok:
    raise ValueError(
      f"landmarks must be (B, P, 2) or (B, P*2) coordinates, got shape {tuple(landmarks.shape)}"
    )


class LandmarkEncoder(nn.Module):
  """Facial landmarks -> ``num_tokens`` context tokens.

  Input: (B, P * 2) flat or (B, P, 2) (x, y) coordinates normalised to the image
  (e.g. in [0, 1]; 68 points for dlib's layout). Output: (B, num_tokens, context_dim).
  MLP on the flattened coordinates, as in DiffTalk's landmark encoder.
  """

  num_tokens: int = 4
  context_dim: int = 64
  hidden: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, landmarks):
    _check_landmarks(landmarks)
    if landmarks.ndim == 3:
      landmarks = landmarks.reshape(landmarks.shape[0], -1)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = landmarks.astype(self.dtype)
    x = dense(self.hidden, ("embed", "mlp"), name="fc1", **kw)(x)
    x = nn.gelu(x)
    x = dense((self.num_tokens, self.context_dim), ("mlp", None, "embed"), name="fc2", **kw)(x)
    x = _layer_norm(name="norm_out", **kw)(x)
    return nn.with_logical_constraint(x, TOKEN_AXES)


def assemble_context(audio_tokens, emotion_tokens, landmark_tokens=None):
  """Cross-attention context = [audio; emotion (; landmark)] along the token axis.

  audio_tokens (B, N_a, D), emotion_tokens (B, N_e, D), landmark_tokens (B, N_l, D) or
  None -> (B, N_a + N_e [+ N_l], D) in the dtype of the audio tokens. Emotion/landmark
  tokens with batch 1 are broadcast to B (one prompt for every frame of a clip).
  """
  parts = [("audio", audio_tokens), ("emotion", emotion_tokens)]
  if landmark_tokens is not None:
    parts.append(("landmark", landmark_tokens))
  b, d = audio_tokens.shape[0], audio_tokens.shape[-1]
  out = []
  for name, t in parts:
    if t.ndim != 3:
      raise ValueError(f"{name} tokens must be (B, N, D), got shape {t.shape}")
    if t.shape[-1] != d:
      raise ValueError(
        f"{name} tokens have width {t.shape[-1]} but audio tokens {d}; "
        "both must equal config.context_dim"
      )
    if t.shape[0] != b:
      if t.shape[0] != 1:
        raise ValueError(f"{name} tokens have batch {t.shape[0]}, audio tokens {b}")
      t = jnp.broadcast_to(t, (b,) + t.shape[1:])
    out.append(t.astype(audio_tokens.dtype))
  return jnp.concatenate(out, axis=1)


class Conditioner(nn.Module):
  """The audio encoder and the context assembly of EmoTalker.

  __call__(mel_windows (B, W, n_mels), emotion_tokens (B or 1, N_e, D))
    -> context (B, N_a + N_e, D). (Landmark tokens, ``LandmarkEncoder``, are not part of
  EmoTalker's context: nothing provides landmarks at generation time.)
  """

  audio: AudioEncoder

  @classmethod
  def from_config(cls, config) -> Conditioner:
    return cls(audio=AudioEncoder.from_config(config))

  @nn.compact
  def __call__(self, mel_windows, emotion_tokens):
    return assemble_context(self.audio(mel_windows), emotion_tokens)


def num_context_tokens(config, num_emotion_tokens: int) -> int:
  """Context length N_a + N_e for a config and the EIB's token count."""
  return config.audio.tokens_per_frame + int(num_emotion_tokens)


__all__ = (
  "AudioEncoder",
  "LandmarkEncoder",
  "Conditioner",
  "TransformerBlock",
  "assemble_context",
  "num_context_tokens",
  "audio_windows",
  "log_mel_spectrogram",
  "audio_features",
  "features_from_config",
  "mel_filterbank",
  "window_length",
  "LOG_MEL_MEAN",
  "LOG_MEL_SCALE",
)
