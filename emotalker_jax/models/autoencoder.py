"""KL autoencoder (diffusers ``AutoencoderKL`` semantics), Flax linen, NHWC.

    mean, logvar = model.apply(v, x, method="encode")     # x (B,H,W,3) in [-1, 1]
    x_rec = model.apply(v, z, method="decode")            # z (B,H/f,W/f,latent_channels)

f = 2 ** (len(block_out_channels) - 1). ``config.autoencoder`` uses diffusers' keys:
in_channels, out_channels, latent_channels, block_out_channels, layers_per_block,
norm_num_groups, scaling_factor, mid_block_add_attention; optional use_quant_conv,
use_post_quant_conv (True) and shift_factor (0). Every down block is a
DownEncoderBlock2D, every up block an UpDecoderBlock2D; resnets and norms use eps 1e-6;
the encoder's downsampling pads the bottom/right edge (diffusers' padding=0).

The diffusion model works on *scaled* latents z = (mean - shift_factor) * scaling_factor;
``encode_to_latent`` / ``decode_latent`` apply and undo that scaling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emotalker_jax.models.layers import (
  IMAGE_AXES,
  AttentionBlock2D,
  Downsample2D,
  ResnetBlock2D,
  Upsample2D,
  conv,
  group_norm,
)

Dtype = Any
VAE_EPS = 1e-6


def _get(cfg, key, default=None):
  try:
    return cfg.get(key, default)
  except AttributeError:
    return getattr(cfg, key, default)


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec:
  """Resolved, hashable autoencoder layout."""

  in_channels: int
  out_channels: int
  latent_channels: int
  block_out_channels: tuple[int, ...]
  layers_per_block: int
  norm_num_groups: int
  scaling_factor: float = 1.0
  shift_factor: float = 0.0
  mid_block_add_attention: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @classmethod
  def from_config(cls, cfg) -> AutoencoderSpec:
    if isinstance(cfg, AutoencoderSpec):
      return cfg
    boc = tuple(int(c) for c in _get(cfg, "block_out_channels"))
    groups = int(_get(cfg, "norm_num_groups", 32))
    for c in boc:
      if c % groups:
        raise ValueError(
          f"config.autoencoder.block_out_channels {boc}: {c} is not "
          f"divisible by norm_num_groups={groups}"
        )
    shift = _get(cfg, "shift_factor", 0.0)
    return cls(
      in_channels=int(_get(cfg, "in_channels", 3)),
      out_channels=int(_get(cfg, "out_channels", 3)),
      latent_channels=int(_get(cfg, "latent_channels", 4)),
      block_out_channels=boc,
      layers_per_block=int(_get(cfg, "layers_per_block", 1)),
      norm_num_groups=groups,
      scaling_factor=float(_get(cfg, "scaling_factor", 1.0)),
      shift_factor=float(shift or 0.0),
      mid_block_add_attention=bool(_get(cfg, "mid_block_add_attention", True)),
      use_quant_conv=bool(_get(cfg, "use_quant_conv", True)),
      use_post_quant_conv=bool(_get(cfg, "use_post_quant_conv", True)),
    )


class _MidBlock(nn.Module):
  """UNetMidBlock2D without time embedding: resnet, [self-attention], resnet."""

  channels: int
  groups: int
  add_attention: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ResnetBlock2D(self.channels, groups=self.groups, eps=VAE_EPS, name="resnets_0", **kw)(x)
    if self.add_attention:
      x = AttentionBlock2D(groups=self.groups, eps=VAE_EPS, heads=1, name="attentions_0", **kw)(x)
    return ResnetBlock2D(self.channels, groups=self.groups, eps=VAE_EPS, name="resnets_1", **kw)(x)


class _EncoderBlock(nn.Module):
  """DownEncoderBlock2D: ``num_layers`` resnets, optional padded stride-2 downsample."""

  channels: int
  num_layers: int
  groups: int
  add_downsample: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      x = ResnetBlock2D(self.channels, groups=self.groups, eps=VAE_EPS, name=f"resnets_{i}", **kw)(
        x
      )
    if self.add_downsample:
      x = Downsample2D(self.channels, padding=0, name="downsamplers_0", **kw)(x)
    return x


class _DecoderBlock(nn.Module):
  """UpDecoderBlock2D: ``num_layers`` resnets, optional nearest x2 upsample + conv."""

  channels: int
  num_layers: int
  groups: int
  add_upsample: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      x = ResnetBlock2D(self.channels, groups=self.groups, eps=VAE_EPS, name=f"resnets_{i}", **kw)(
        x
      )
    if self.add_upsample:
      x = Upsample2D(self.channels, name="upsamplers_0", **kw)(x)
    return x


class Encoder(nn.Module):
  """(B, H, W, in_channels) -> (B, H/f, W/f, 2 * latent_channels) (mean and logvar)."""

  spec: AutoencoderSpec
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    s, kw = self.spec, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    boc = s.block_out_channels
    x = conv(boc[0], 3, name="conv_in", **kw)(x)
    for i, c in enumerate(boc):
      x = _EncoderBlock(
        c, s.layers_per_block, s.norm_num_groups, i < len(boc) - 1, name=f"down_blocks_{i}", **kw
      )(x)
      x = nn.with_logical_constraint(x, IMAGE_AXES)
    x = _MidBlock(boc[-1], s.norm_num_groups, s.mid_block_add_attention, name="mid_block", **kw)(x)
    x = nn.silu(group_norm(s.norm_num_groups, VAE_EPS, name="conv_norm_out", **kw)(x))
    return conv(2 * s.latent_channels, 3, name="conv_out", **kw)(x)


class Decoder(nn.Module):
  """(B, h, w, latent_channels) -> (B, h*f, w*f, out_channels)."""

  spec: AutoencoderSpec
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    s, kw = self.spec, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    rev = s.block_out_channels[::-1]
    x = conv(rev[0], 3, name="conv_in", **kw)(z)
    x = _MidBlock(rev[0], s.norm_num_groups, s.mid_block_add_attention, name="mid_block", **kw)(x)
    for i, c in enumerate(rev):
      x = _DecoderBlock(
        c, s.layers_per_block + 1, s.norm_num_groups, i < len(rev) - 1, name=f"up_blocks_{i}", **kw
      )(x)
      x = nn.with_logical_constraint(x, IMAGE_AXES)
    x = nn.silu(group_norm(s.norm_num_groups, VAE_EPS, name="conv_norm_out", **kw)(x))
    return conv(s.out_channels, 3, name="conv_out", **kw)(x)


class AutoencoderKL(nn.Module):
  """The KL autoencoder E, D of METHOD.md.

  config: ``config.autoencoder`` (ConfigDict, dict or AutoencoderSpec); dtype: compute dtype.
  encode(x (B,H,W,in_channels) in [-1,1]) -> (mean, logvar), each (B,H/f,W/f,latent) float32
  (logvar clipped to [-30, 20]); decode(z (B,h,w,latent), unscaled) -> (B,h*f,w*f,out) float32.
  __call__(x, rng=None) = decode(mean) or decode(sample) when ``rng`` is given (for init).
  H, W must be multiples of f.
  """

  config: Any
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def spec(self) -> AutoencoderSpec:
    return AutoencoderSpec.from_config(self.config)

  def setup(self):
    s, kw = self.spec, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = Encoder(s, **kw)
    self.decoder = Decoder(s, **kw)
    if s.use_quant_conv:
      self.quant_conv = conv(2 * s.latent_channels, 1, **kw)
    if s.use_post_quant_conv:
      self.post_quant_conv = conv(s.latent_channels, 1, **kw)

  def encode(self, x):
    s = self.spec
    if x.ndim != 4 or x.shape[-1] != s.in_channels:
      raise ValueError(
        f"autoencoder input must be NHWC (B, H, W, {s.in_channels}) "
        f"(config.autoencoder.in_channels); got shape {tuple(x.shape)}"
      )
    f = s.downsample_factor
    if x.shape[1] % f or x.shape[2] % f:
      raise ValueError(
        f"autoencoder input spatial size {tuple(x.shape[1:3])} is not a "
        f"multiple of {f} (the latent downsampling factor); resize the frames"
      )
    h = self.encoder(x.astype(self.dtype))
    if s.use_quant_conv:
      h = self.quant_conv(h)
    h = h.astype(jnp.float32)
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    s = self.spec
    if z.ndim != 4 or z.shape[-1] != s.latent_channels:
      raise ValueError(
        f"autoencoder latents must be (B, h, w, {s.latent_channels}) "
        f"(config.autoencoder.latent_channels); got shape {tuple(z.shape)}"
      )
    z = z.astype(self.dtype)
    if s.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x, rng=None):
    mean, logvar = self.encode(x)
    z = (
      mean
      if rng is None
      else mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    )
    return self.decode(z)


def build_autoencoder(config) -> AutoencoderKL:
  """The autoencoder of a full config (``config.autoencoder``, ``config.dtype``)."""
  return AutoencoderKL(
    config=AutoencoderSpec.from_config(config.autoencoder),
    dtype=jnp.dtype(config.dtype),
    param_dtype=jnp.dtype(config.param_dtype),
  )


def init_autoencoder(model: AutoencoderKL, rng: jax.Array, size: int | None = None):
  """Initialises the autoencoder on a (1, size, size, in_channels) input; returns variables."""
  s = model.spec
  size = size or s.downsample_factor
  return model.init(rng, jnp.zeros((1, size, size, s.in_channels), jnp.float32))


def encode_to_latent(model: AutoencoderKL, params, x, rng: jax.Array | None = None):
  """x (B,H,W,3) in [-1,1] -> diffusion latent z0 = (E(x) - shift) * scaling_factor.

  E(x) is the posterior mean, or a posterior sample when ``rng`` is given.
  ``params`` is the inner params tree (``{'params': params}`` is built here).
  """
  s = model.spec
  mean, logvar = model.apply({"params": params}, x, method="encode")
  z = mean
  if rng is not None:
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
  return (z - s.shift_factor) * s.scaling_factor


def decode_latent(model: AutoencoderKL, params, z):
  """Diffusion latent z0 (B,h,w,latent) -> image (B,h*f,w*f,3), roughly in [-1,1] (not
  clipped): D(z0 / scaling_factor + shift)."""
  s = model.spec
  return model.apply({"params": params}, z / s.scaling_factor + s.shift_factor, method="decode")
