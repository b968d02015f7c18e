"""Conditional UNet (diffusers ``UNet2DConditionModel`` semantics), Flax linen, NHWC.

    eps = UNet(config.unet, dtype)(sample (B,H,W,Cin), timesteps (B,), context (B,L,D))

``config.unet`` uses diffusers' key names (block_out_channels, down_block_types,
up_block_types, layers_per_block, attention_head_dim, num_attention_heads,
cross_attention_dim, transformer_layers_per_block, norm_num_groups,
use_linear_projection, dropout, remat), so a diffusers ``config.json`` converts key for
key and the parameter tree mirrors diffusers' state-dict names (``down_blocks.0.`` ->
``down_blocks_0/``). Optional keys (diffusers defaults): flip_sin_to_cos (True),
freq_shift (0), norm_eps (1e-5).

One key of ours, not diffusers': ``context_embedding`` ("none", the default and diffusers'
behaviour, or "mean"). With "mean" the time embedding also gets a linear read of the
context, ``temb += Dense(mean_L(context))`` (``context_embedding`` kernel (D, 4 C0)), the
way SDXL adds its pooled text embedding. The emotion tokens e_k = s_k B_k + b_k enter
that sum linearly, so every ResNet block sees each intensity additively; through
cross-attention alone a softmax over tokens decides how much of a faint emotion beside a
strong one reaches a pixel. With "emotion_tokens" the read is of the emotion tokens
alone, flattened: ``temb += Dense(concat_k e_k)`` (kernel (K D, 4 C0)), so each emotion
has its own weights and nothing else in the context dilutes it (the mean divides the K
emotion tokens among the audio and text tokens). ``context_slice`` = (first, K) says where
they are in the context; ``build_unet`` sets it from the config ([audio tokens; emotion
tokens; text tokens], ``models/conditioner.assemble_context``).

Heads follow diffusers exactly, naming quirk included: when ``num_attention_heads`` is
None, ``attention_head_dim`` is the number of *heads* per block (SD-1.5's
``attention_head_dim: 8`` means 8 heads); a block of C channels then has heads of width
C // heads (inner width heads * (C // heads)). Either key may be an int or a per-down-block
tuple; up blocks use the reversed tuple, the mid block the last entry.

Block types: CrossAttnDownBlock2D, DownBlock2D, CrossAttnUpBlock2D, UpBlock2D; the mid
block is UNetMidBlock2DCrossAttn. ``remat`` wraps every down/mid/up block in ``nn.remat``.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emotalker_jax.models.layers import (
  IMAGE_AXES,
  Downsample2D,
  ResnetBlock2D,
  TimestepEmbedding,
  Transformer2DModel,
  Upsample2D,
  conv,
  dense,
  group_norm,
  timestep_embedding,
)

Dtype = Any

DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
CONTEXT_EMBEDDINGS = ("none", "mean", "emotion_tokens")


def _get(cfg, key, default=None):
  if isinstance(cfg, dict):
    return cfg.get(key, default)
  try:
    v = cfg.get(key, default)
  except AttributeError:
    v = getattr(cfg, key, default)
  return v


def _per_block(value, n: int, key: str) -> tuple:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(
        f"config.unet.{key}={tuple(value)} must have one entry per down "
        f"block ({n}); give an int or {n} values"
      )
    return tuple(value)
  return (value,) * n


@dataclasses.dataclass(frozen=True)
class UNetSpec:
  """The resolved, hashable UNet layout (see the module docstring for the keys)."""

  in_channels: int
  out_channels: int
  block_out_channels: tuple[int, ...]
  down_block_types: tuple[str, ...]
  up_block_types: tuple[str, ...]
  layers_per_block: tuple[int, ...]
  heads: tuple[int, ...]  # resolved number of heads per down block
  cross_attention_dim: int
  transformer_layers_per_block: tuple[int, ...]
  norm_num_groups: int
  use_linear_projection: bool
  dropout: float
  remat: bool
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  norm_eps: float = 1e-5
  context_embedding: str = "none"
  context_slice: tuple[int, int] | None = None  # (first, count) of the emotion tokens

  @property
  def num_down(self) -> int:
    """Number of 2x downsamplings; H and W must be multiples of 2 ** num_down."""
    return len(self.block_out_channels) - 1

  @classmethod
  def from_config(cls, cfg) -> UNetSpec:
    if isinstance(cfg, UNetSpec):
      return cfg
    boc = tuple(int(c) for c in _get(cfg, "block_out_channels"))
    n = len(boc)
    down = tuple(_get(cfg, "down_block_types"))
    up = tuple(_get(cfg, "up_block_types"))
    if len(down) != n or len(up) != n:
      raise ValueError(
        f"config.unet: down_block_types ({len(down)}), up_block_types ({len(up)}) and "
        f"block_out_channels ({n}) must have the same length"
      )
    for t in down:
      if t not in DOWN_TYPES:
        raise ValueError(
          f"config.unet.down_block_types: {t!r} is not supported; use one of {DOWN_TYPES}"
        )
    for t in up:
      if t not in UP_TYPES:
        raise ValueError(
          f"config.unet.up_block_types: {t!r} is not supported; use one of {UP_TYPES}"
        )
    heads = _get(cfg, "num_attention_heads")
    if heads is None:
      heads = _get(cfg, "attention_head_dim")  # diffusers' naming quirk
    heads = tuple(int(h) for h in _per_block(heads, n, "attention_head_dim"))
    groups = int(_get(cfg, "norm_num_groups", 32))
    for c in boc:
      if c % groups:
        raise ValueError(
          f"config.unet.block_out_channels {boc}: {c} is not divisible by norm_num_groups={groups}"
        )
    for c, h in zip(boc, heads):
      if h < 1 or c // h < 1:
        raise ValueError(
          f"config.unet: {h} attention heads do not fit {c} channels; "
          "lower attention_head_dim/num_attention_heads"
        )
    ctx_emb = str(_get(cfg, "context_embedding", "none") or "none")
    if ctx_emb not in CONTEXT_EMBEDDINGS:
      raise ValueError(
        f"config.unet.context_embedding={ctx_emb!r}: use one of {CONTEXT_EMBEDDINGS}"
      )
    cad = _get(cfg, "cross_attention_dim")
    if isinstance(cad, (list, tuple)):
      if len(set(cad)) != 1:
        raise ValueError(
          f"config.unet.cross_attention_dim={cad}: one width for all blocks is supported"
        )
      cad = cad[0]
    return cls(
      in_channels=int(_get(cfg, "in_channels")),
      out_channels=int(_get(cfg, "out_channels")),
      block_out_channels=boc,
      down_block_types=down,
      up_block_types=up,
      layers_per_block=tuple(
        int(x) for x in _per_block(_get(cfg, "layers_per_block", 2), n, "layers_per_block")
      ),
      heads=heads,
      cross_attention_dim=int(cad),
      transformer_layers_per_block=tuple(
        int(x)
        for x in _per_block(
          _get(cfg, "transformer_layers_per_block", 1), n, "transformer_layers_per_block"
        )
      ),
      norm_num_groups=groups,
      use_linear_projection=bool(_get(cfg, "use_linear_projection", False)),
      dropout=float(_get(cfg, "dropout", 0.0) or 0.0),
      remat=bool(_get(cfg, "remat", False)),
      flip_sin_to_cos=bool(_get(cfg, "flip_sin_to_cos", True)),
      freq_shift=float(_get(cfg, "freq_shift", 0.0)),
      norm_eps=float(_get(cfg, "norm_eps", 1e-5)),
      context_embedding=ctx_emb,
    )


class _Block(nn.Module):
  """Shared fields of the down/mid/up blocks."""

  out_channels: int
  num_layers: int
  spec: UNetSpec
  heads: int
  transformer_layers: int
  has_attention: bool
  add_sample: bool = False  # downsample (down) / upsample (up) at the end
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _resnet(self, name):
    return ResnetBlock2D(
      self.out_channels,
      groups=self.spec.norm_num_groups,
      eps=self.spec.norm_eps,
      dropout=self.spec.dropout,
      deterministic=self.deterministic,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )

  def _attn(self, name):
    return Transformer2DModel(
      heads=self.heads,
      head_dim=self.out_channels // self.heads,
      num_layers=self.transformer_layers,
      groups=self.spec.norm_num_groups,
      use_linear_projection=self.spec.use_linear_projection,
      deterministic=self.deterministic,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name=name,
    )


class DownBlock(_Block):
  """CrossAttnDownBlock2D (has_attention) or DownBlock2D.

  (x (B,H,W,C), temb (B,T), context (B,L,D)) -> (x', skips): skips are the output of
  every resnet(+attention) layer and of the downsampler, in order.
  """

  @nn.compact
  def __call__(self, x, temb, context):
    skips = []
    for i in range(self.num_layers):
      x = self._resnet(f"resnets_{i}")(x, temb)
      if self.has_attention:
        x = self._attn(f"attentions_{i}")(x, context)
      skips.append(x)
    if self.add_sample:
      x = Downsample2D(
        self.out_channels,
        padding=1,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="downsamplers_0",
      )(x)
      skips.append(x)
    return x, tuple(skips)


class MidBlock(_Block):
  """UNetMidBlock2DCrossAttn: resnet, then (attention, resnet) x num_layers."""

  @nn.compact
  def __call__(self, x, temb, context):
    x = self._resnet("resnets_0")(x, temb)
    for i in range(self.num_layers):
      x = self._attn(f"attentions_{i}")(x, context)
      x = self._resnet(f"resnets_{i + 1}")(x, temb)
    return x


class UpBlock(_Block):
  """CrossAttnUpBlock2D (has_attention) or UpBlock2D: each layer concatenates the next
  skip (last first) on channels, then resnet(+attention); optional 2x upsample."""

  @nn.compact
  def __call__(self, x, skips, temb, context):
    skips = list(skips)
    for i in range(self.num_layers):
      x = jnp.concatenate([x, skips.pop().astype(x.dtype)], axis=-1)
      x = self._resnet(f"resnets_{i}")(x, temb)
      if self.has_attention:
        x = self._attn(f"attentions_{i}")(x, context)
    if self.add_sample:
      x = Upsample2D(
        self.out_channels, dtype=self.dtype, param_dtype=self.param_dtype, name="upsamplers_0"
      )(x)
    return x


class UNet(nn.Module):
  """The denoiser eps_theta(z_t, t, y, c).

  config: the ``config.unet`` section (ConfigDict, dict or UNetSpec); dtype: compute dtype.
  __call__(sample (B,H,W,in_channels) NHWC float, timesteps (B,) or scalar (diffusion step
  index), context (B,L,cross_attention_dim), train=False) -> (B,H,W,out_channels) float32.
  H and W must be multiples of 2 ** (len(block_out_channels) - 1). ``train=True`` enables
  dropout (rng collection 'dropout').
  """

  config: Any
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def spec(self) -> UNetSpec:
    return UNetSpec.from_config(self.config)

  def check_inputs(self, sample, timesteps, context) -> None:
    """Raises ValueError naming the input and the expected value."""
    s = self.spec
    if sample.ndim != 4:
      raise ValueError(
        f"UNet sample must be NHWC (B, H, W, {s.in_channels}); got shape {tuple(sample.shape)}"
      )
    if sample.shape[-1] != s.in_channels:
      raise ValueError(
        f"UNet sample has {sample.shape[-1]} channels but config.unet.in_channels="
        f"{s.in_channels} (noisy latent + condition latents); fix the input or the config"
      )
    f = 2**s.num_down
    if sample.shape[1] % f or sample.shape[2] % f:
      raise ValueError(
        f"UNet sample spatial size {tuple(sample.shape[1:3])} is not a multiple of {f} "
        f"(2 ** {s.num_down} downsamplings); resize or pad the latents"
      )
    if context.ndim != 3 or context.shape[-1] != s.cross_attention_dim:
      raise ValueError(
        f"UNet context must be (B, L, {s.cross_attention_dim}) "
        f"(config.unet.cross_attention_dim); got shape {tuple(context.shape)}"
      )
    if context.shape[0] != sample.shape[0]:
      raise ValueError(f"UNet context batch {context.shape[0]} != sample batch {sample.shape[0]}")
    t = jnp.shape(timesteps)
    if not (t == () or t == (sample.shape[0],) or t == (1,)):
      raise ValueError(
        f"UNet timesteps must have shape ({sample.shape[0]},) or be a scalar; got {t}"
      )

  def _context_read(self, context):
    """What ``context_embedding`` reads of the context (B, L, D): 'mean' -> (B, D), the
    mean over tokens; 'emotion_tokens' -> (B, K D), the K emotion tokens concatenated."""
    s = self.spec
    if s.context_embedding == "mean":
      return jnp.mean(context, axis=1)
    if s.context_slice is None:
      raise ValueError(
        "unet.context_embedding='emotion_tokens' needs context_slice (first, count) of the "
        "emotion tokens; build the UNet with build_unet(config)"
      )
    first, count = s.context_slice
    if first + count > context.shape[1]:
      raise ValueError(
        f"context_slice {s.context_slice} does not fit a context of {context.shape[1]} tokens"
      )
    return context[:, first : first + count].reshape(context.shape[0], -1)

  @nn.compact
  def __call__(self, sample, timesteps, context, train: bool = False):
    s = self.spec
    self.check_inputs(sample, timesteps, context)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    det = not train
    b = sample.shape[0]
    n = len(s.block_out_channels)
    wrap = nn.remat if s.remat else (lambda cls: cls)
    down_cls, mid_cls, up_cls = wrap(DownBlock), wrap(MidBlock), wrap(UpBlock)

    t = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32).reshape(-1), (b,))
    temb = timestep_embedding(t, s.block_out_channels[0], s.flip_sin_to_cos, s.freq_shift)
    temb = TimestepEmbedding(4 * s.block_out_channels[0], name="time_embedding", **kw)(temb)
    context = context.astype(self.dtype)
    if s.context_embedding != "none":
      temb = temb + dense(temb.shape[-1], ("embed", "mlp"), name="context_embedding", **kw)(
        self._context_read(context)
      )

    x = sample.astype(self.dtype)
    x = nn.with_logical_constraint(x, IMAGE_AXES)
    x = conv(s.block_out_channels[0], 3, name="conv_in", **kw)(x)
    skips = [x]
    for i, btype in enumerate(s.down_block_types):
      x, res = down_cls(
        out_channels=s.block_out_channels[i],
        num_layers=s.layers_per_block[i],
        spec=s,
        heads=s.heads[i],
        transformer_layers=s.transformer_layers_per_block[i],
        has_attention=btype == "CrossAttnDownBlock2D",
        add_sample=i < n - 1,
        deterministic=det,
        name=f"down_blocks_{i}",
        **kw,
      )(x, temb, context)
      skips.extend(res)

    x = mid_cls(
      out_channels=s.block_out_channels[-1],
      num_layers=1,
      spec=s,
      heads=s.heads[-1],
      transformer_layers=s.transformer_layers_per_block[-1],
      has_attention=True,
      deterministic=det,
      name="mid_block",
      **kw,
    )(x, temb, context)

    rev_ch = s.block_out_channels[::-1]
    rev_heads = s.heads[::-1]
    rev_layers = s.layers_per_block[::-1]
    rev_tl = s.transformer_layers_per_block[::-1]
    for i, btype in enumerate(s.up_block_types):
      k = rev_layers[i] + 1
      res, skips = tuple(skips[-k:]), skips[:-k]
      x = up_cls(
        out_channels=rev_ch[i],
        num_layers=k,
        spec=s,
        heads=rev_heads[i],
        transformer_layers=rev_tl[i],
        has_attention=btype == "CrossAttnUpBlock2D",
        add_sample=i < n - 1,
        deterministic=det,
        name=f"up_blocks_{i}",
        **kw,
      )(x, res, temb, context)

    x = nn.silu(group_norm(s.norm_num_groups, s.norm_eps, name="conv_norm_out", **kw)(x))
    x = conv(s.out_channels, 3, name="conv_out", **kw)(x)
    return nn.with_logical_constraint(x.astype(jnp.float32), IMAGE_AXES)


def build_unet(config) -> UNet:
  """The UNet of a full config (uses ``config.unet`` and ``config.dtype``/``param_dtype``;
  with context_embedding 'emotion_tokens' also ``config.audio.tokens_per_frame`` and
  ``config.eib.num_emotions``, where the emotion tokens sit in the context)."""
  spec = UNetSpec.from_config(config.unet)
  if spec.context_embedding == "emotion_tokens":
    spec = dataclasses.replace(
      spec, context_slice=(int(config.audio.tokens_per_frame), int(config.eib.num_emotions))
    )
  return UNet(
    config=spec,
    dtype=jnp.dtype(config.dtype),
    param_dtype=jnp.dtype(config.param_dtype),
  )


def dummy_inputs(
  spec: UNetSpec | Any, batch: int = 1, size: int | Sequence[int] = 8, context_len: int = 4
):
  """Zero inputs of the right shapes (for init / eval_shape): (sample, timesteps, context)."""
  spec = UNetSpec.from_config(spec)
  h, w = (size, size) if isinstance(size, int) else size
  return (
    jnp.zeros((batch, h, w, spec.in_channels), jnp.float32),
    jnp.zeros((batch,), jnp.int32),
    jnp.zeros((batch, context_len, spec.cross_attention_dim), jnp.float32),
  )


def init_unet(
  model: UNet, rng: jax.Array, size: int | Sequence[int] | None = None, context_len: int = 4
):
  """Initialises the UNet; returns the variables dict ({'params': boxed tree})."""
  spec = model.spec
  size = size or 2**spec.num_down
  return model.init(rng, *dummy_inputs(spec, 1, size, context_len))
