"""Building blocks shared by every model module (Flax linen, NHWC): the one Dense, LayerNorm
and multi-head attention of the UNet, the autoencoder, the conditioner, the EIB and the
text encoders, plus the UNet / autoencoder convolutional and transformer blocks.

The UNet / autoencoder blocks mirror the diffusers PyTorch module of the same name,
numerically and in their parameter names (``to_out.0`` in diffusers is ``to_out_0`` here),
so a diffusers state dict maps onto our params by renaming keys and transposing kernels
(``emotalker_jax.checkpoints``). Images and latents are NHWC; token sequences are
(B, L, D). Parameters are created in ``param_dtype`` (float32); computation runs in
``dtype`` (float32 on CPU tests, bfloat16 on accelerators).

Logical axis names (mapped to mesh axes by ``config.logical_axis_rules``, never here):
conv kernels (kh, kw, in, out) -> (None, None, 'conv_in', 'conv_out'); dense kernels
name their input/output as 'embed' / 'mlp' / ('heads', 'kv'); norm scales/biases 'norm'.
Activations are constrained to ('batch', 'height', 'width', 'embed') or
('batch', 'length', 'embed'); attention's per-head q/k/v to ('batch', 'length', 'heads', 'kv').
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

IMAGE_AXES = ("batch", "height", "width", "embed")
TOKEN_AXES = ("batch", "length", "embed")
HEAD_AXES = ("batch", "length", "heads", "kv")

# Parameter names of the four attention projections (q, k, v, output), see ``Attention``.
DIFFUSERS_QKV = ("to_q", "to_k", "to_v", "to_out_0")  # UNet, autoencoder
BERT_QKV = ("query", "key", "value", "out")  # conditioner, EIB, text encoders


# ----------------------------------------------------------------------------------------
# Parameterised primitives with logical axis names
# ----------------------------------------------------------------------------------------


def _names_init(init, names):
  return nn.with_logical_partitioning(init, tuple(names))


class Dense(nn.Module):
  """Linear layer contracting the last ``n_in`` input axes into ``features`` (an int or a
  tuple, e.g. (heads, head_dim)); kernel ``in_shape + features`` named ``names``.

  Unlike ``nn.DenseGeneral`` the kernel is created in its final shape (no flat init then
  reshape), so its logical names stay valid under an active mesh (sharded init/apply).
  Init: lecun_normal with fan-in = all contracted axes; bias zeros.
  """

  features: int | tuple[int, ...]
  names: tuple
  n_in: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = None

  @nn.compact
  def __call__(self, x):
    feats = self.features
    feats = tuple(feats) if isinstance(feats, (tuple, list)) else (feats,)
    n_in, n_out = self.n_in, len(feats)
    init = self.kernel_init or nn.initializers.variance_scaling(
      1.0,
      "fan_in",
      "truncated_normal",
      in_axis=tuple(range(n_in)),
      out_axis=tuple(range(n_in, n_in + n_out)),
    )
    kernel = self.param(
      "kernel",
      _names_init(init, self.names),
      tuple(x.shape[x.ndim - n_in :]) + feats,
      self.param_dtype,
    )
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = jax.lax.dot_general(
      x, kernel, ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ()))
    )
    if self.use_bias:
      bias = self.param(
        "bias",
        _names_init(nn.initializers.zeros_init(), tuple(self.names)[-n_out:]),
        feats,
        self.param_dtype,
      )
      y = y + jnp.asarray(bias, y.dtype)
    return y


def dense(
  features,
  names: Sequence[str | None],
  *,
  dtype: Dtype,
  param_dtype: Dtype,
  name: str,
  n_in: int = 1,
  use_bias: bool = True,
  kernel_init=None,
) -> Dense:
  """A ``Dense`` whose kernel carries the logical axis ``names`` (one per kernel axis)."""
  return Dense(
    features=features,
    names=tuple(names),
    n_in=n_in,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=kernel_init,
    name=name,
  )


def conv(
  features: int,
  kernel: int,
  *,
  dtype: Dtype,
  param_dtype: Dtype,
  name: str | None = None,
  stride: int = 1,
  padding: int | Sequence[tuple[int, int]] = None,
  use_bias: bool = True,
  kernel_init=None,
) -> nn.Conv:
  """A 2-D convolution, kernel (k, k, in, out) named (None, None, 'conv_in', 'conv_out').

  ``padding`` defaults to k // 2 on every side (PyTorch's ``padding=k//2``).
  """
  if padding is None:
    padding = kernel // 2
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return nn.Conv(
    features=features,
    kernel_size=(kernel, kernel),
    strides=(stride, stride),
    padding=padding,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=param_dtype,
    kernel_init=_names_init(
      kernel_init or nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")
    ),
    bias_init=_names_init(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def group_norm(
  groups: int, eps: float, *, dtype: Dtype, param_dtype: Dtype, name: str
) -> nn.GroupNorm:
  """GroupNorm over the last (channel) axis, statistics in float32 (two-pass variance,
  like PyTorch)."""
  return nn.GroupNorm(
    num_groups=groups,
    epsilon=eps,
    dtype=dtype,
    param_dtype=param_dtype,
    use_fast_variance=False,
    scale_init=_names_init(nn.initializers.ones_init(), ("norm",)),
    bias_init=_names_init(nn.initializers.zeros_init(), ("norm",)),
    name=name,
  )


def layer_norm(
  eps: float, *, dtype: Dtype, param_dtype: Dtype, name: str, fast_variance: bool = False
) -> nn.LayerNorm:
  """LayerNorm over the last axis (statistics in float32), scale/bias named ('norm',).

  ``fast_variance=False``: two-pass variance E[(x - mean)^2], like PyTorch (the UNet and
  the text encoders, whose weights come from PyTorch). True: flax's one-pass
  E[x^2] - mean^2, which the conditioner and the EIB were trained with (the two differ
  at float round-off only).
  """
  return nn.LayerNorm(
    epsilon=eps,
    dtype=dtype,
    param_dtype=param_dtype,
    use_fast_variance=fast_variance,
    scale_init=_names_init(nn.initializers.ones_init(), ("norm",)),
    bias_init=_names_init(nn.initializers.zeros_init(), ("norm",)),
    name=name,
  )


# ----------------------------------------------------------------------------------------
# Time embedding
# ----------------------------------------------------------------------------------------


def timestep_embedding(
  timesteps: jax.Array,
  dim: int,
  flip_sin_to_cos: bool = True,
  freq_shift: float = 0.0,
  max_period: float = 10000.0,
) -> jax.Array:
  """Sinusoidal embedding of timesteps, diffusers' ``get_timestep_embedding``.

  timesteps: (B,) int or float (diffusion step index, not normalised) -> (B, dim) float32.
  Frequencies exp(-ln(max_period) * i / (dim/2 - freq_shift)), i < dim/2; the output is
  [cos, sin] when ``flip_sin_to_cos`` (SD layout) else [sin, cos]; odd ``dim`` pads a 0.
  """
  t = jnp.asarray(timesteps, jnp.float32).reshape(-1)
  half = dim // 2
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  args = t[:, None] * jnp.exp(exponent)[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """MLP on the sinusoidal embedding: linear_1 -> SiLU -> linear_2. (B, C) -> (B, features)."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = dense(self.features, ("embed", "mlp"), name="linear_1", **kw)(x)
    x = nn.silu(x)
    return dense(self.features, ("mlp", "embed"), name="linear_2", **kw)(x)


# ----------------------------------------------------------------------------------------
# Convolutional blocks
# ----------------------------------------------------------------------------------------


class ResnetBlock2D(nn.Module):
  """diffusers ``ResnetBlock2D`` (time_embedding_norm='default', output_scale_factor 1).

  x: (B, H, W, Cin), temb: (B, T) or None -> (B, H, W, out_channels).
  h = conv1(SiLU(GN(x))) [+ time_emb_proj(SiLU(temb))]; h = conv2(dropout(SiLU(GN(h))));
  out = shortcut(x) + h, shortcut a 1x1 conv when Cin != out_channels.
  """

  out_channels: int
  groups: int = 32
  eps: float = 1e-5
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = group_norm(self.groups, self.eps, name="norm1", **kw)(x)
    h = conv(self.out_channels, 3, name="conv1", **kw)(nn.silu(h))
    if temb is not None:
      t = dense(self.out_channels, ("embed", "conv_out"), name="time_emb_proj", **kw)(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = nn.silu(group_norm(self.groups, self.eps, name="norm2", **kw)(h))
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    h = conv(self.out_channels, 3, name="conv2", **kw)(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, name="conv_shortcut", **kw)(x)
    return nn.with_logical_constraint(x + h, IMAGE_AXES)


class Downsample2D(nn.Module):
  """Stride-2 3x3 conv named ``conv``: (B, H, W, C) -> (B, H/2, W/2, out_channels).

  padding=1: symmetric (UNet). padding=0: pad one row/column at the bottom/right, then
  an unpadded conv (diffusers' VAE encoder).
  """

  out_channels: int
  padding: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.padding == 0:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return conv(
      self.out_channels,
      3,
      stride=2,
      padding=self.padding,
      name="conv",
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )(x)


class Upsample2D(nn.Module):
  """Nearest-neighbour x2 then a 3x3 conv named ``conv``: (B,H,W,C) -> (B,2H,2W,out)."""

  out_channels: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(self.out_channels, 3, name="conv", dtype=self.dtype, param_dtype=self.param_dtype)(
      x
    )


# ----------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------


def multi_head_attention(
  x,
  context=None,
  *,
  heads: int,
  head_dim: int,
  out_features: int,
  qkv_bias: bool,
  dtype: Dtype,
  param_dtype: Dtype,
  mask=None,
  causal: bool = False,
  proj_names: Sequence[str] = DIFFUSERS_QKV,
  kernel_init=None,
):
  """Creates the q/k/v/output projections in the calling module's scope and applies them.

  Must be called from inside a compact method. x: (B, Lq, Dq) queries, context:
  (B, Lk, Dk) keys/values or None (self-attention) -> (B, Lq, out_features).
  mask: (B, Lk) bool/int, 1 = a key that may be attended (padding keys 0), or None.
  causal: query i attends to keys j <= i only. Parameters ``proj_names`` =
  (q, k, v, out): q/k/v kernels D -> (heads, head_dim) ('embed', 'heads', 'kv'), with a
  (heads, head_dim) bias when ``qkv_bias``; out kernel (heads, head_dim) -> out_features
  ('heads', 'kv', 'embed') with bias. ``kernel_init``: None for lecun_normal (``Dense``).
  Uses ``jax.nn.dot_product_attention`` (cuDNN flash attention on GPU where it applies,
  XLA elsewhere); scale 1/sqrt(head_dim).
  """
  kv = x if context is None else context
  kw = dict(dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init)
  q, k, v = (
    nn.with_logical_constraint(
      dense((heads, head_dim), ("embed", "heads", "kv"), name=n, use_bias=qkv_bias, **kw)(y),
      HEAD_AXES,
    )
    for n, y in zip(proj_names[:3], (x, kv, kv))
  )  # (B, L, heads, hd)
  attn_mask = None if mask is None else (mask != 0)[:, None, None, :]  # (B, 1, 1, Lk)
  out = jax.nn.dot_product_attention(q, k, v, mask=attn_mask, is_causal=causal)
  out = nn.with_logical_constraint(out, HEAD_AXES)  # (B, Lq, heads, hd)
  out = dense(out_features, ("heads", "kv", "embed"), n_in=2, name=proj_names[3], **kw)(out)
  return nn.with_logical_constraint(out, TOKEN_AXES)


class Attention(nn.Module):
  """Multi-head attention (diffusers ``Attention`` without norms; BERT/CLIP self-attention
  with ``proj_names=BERT_QKV``): ``multi_head_attention`` as a submodule.

  x: (B, Lq, Dq); context: (B, Lk, Dk) or None (self-attention); mask: (B, Lk) or None
  -> (B, Lq, Dq). Parameters ``proj_names``: q/k/v D -> (heads, head_dim) (bias only
  when ``qkv_bias``), out (heads, head_dim) -> Dq with bias.
  """

  heads: int
  head_dim: int
  qkv_bias: bool = False
  causal: bool = False
  proj_names: Sequence[str] = DIFFUSERS_QKV
  kernel_init: Any = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, mask=None):
    return multi_head_attention(
      x,
      context,
      heads=self.heads,
      head_dim=self.head_dim,
      out_features=x.shape[-1],
      qkv_bias=self.qkv_bias,
      mask=mask,
      causal=self.causal,
      proj_names=self.proj_names,
      kernel_init=self.kernel_init,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )


class AttentionBlock2D(nn.Module):
  """Spatial self-attention with a GroupNorm and a residual: the VAE mid-block's
  diffusers ``Attention(..., norm_num_groups, residual_connection=True, bias=True)``.

  x: (B, H, W, C) -> (B, H, W, C); ``heads`` heads of width C / heads. Parameters
  group_norm, to_q, to_k, to_v, to_out_0 (q/k/v with bias).
  """

  groups: int = 32
  eps: float = 1e-6
  heads: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = group_norm(
      self.groups, self.eps, name="group_norm", dtype=self.dtype, param_dtype=self.param_dtype
    )(x)
    h = multi_head_attention(
      h.reshape(b, hgt * wid, c),
      None,
      heads=self.heads,
      head_dim=c // self.heads,
      out_features=c,
      qkv_bias=True,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
    )
    return x + h.reshape(b, hgt, wid, c)


class GEGLUFeedForward(nn.Module):
  """diffusers ``FeedForward(activation_fn='geglu')``: net_0/proj D -> 2*4D, split into
  (hidden, gate), hidden * GELU(gate) (exact erf GELU), net_2: 4D -> D. (B, L, D) -> same."""

  mult: int = 4
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    inner = d * self.mult
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = _Proj(2 * inner, **kw, name="net_0")(x)
    h, gate = jnp.split(h, 2, axis=-1)
    h = h * nn.gelu(gate, approximate=False)
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    return dense(d, ("mlp", "embed"), name="net_2", **kw)(h)


class _Proj(nn.Module):
  """Holds the GEGLU input projection as ``net_0/proj`` (diffusers' ``ff.net.0.proj``)."""

  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return dense(
      self.features, ("embed", "mlp"), name="proj", dtype=self.dtype, param_dtype=self.param_dtype
    )(x)


class BasicTransformerBlock(nn.Module):
  """Pre-LayerNorm transformer block: self-attention, cross-attention on ``context``,
  GEGLU feed-forward, each with a residual. x: (B, L, D), context: (B, Lc, Dc) -> (B, L, D).
  """

  heads: int
  head_dim: int
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn = dict(heads=self.heads, head_dim=self.head_dim, **kw)
    x = x + Attention(**attn, name="attn1")(layer_norm(1e-5, name="norm1", **kw)(x))
    x = x + Attention(**attn, name="attn2")(layer_norm(1e-5, name="norm2", **kw)(x), context)
    x = x + GEGLUFeedForward(
      dropout=self.dropout, deterministic=self.deterministic, name="ff", **kw
    )(layer_norm(1e-5, name="norm3", **kw)(x))
    return nn.with_logical_constraint(x, TOKEN_AXES)


class Transformer2DModel(nn.Module):
  """diffusers ``Transformer2DModel`` on continuous input.

  x: (B, H, W, C), context: (B, Lc, Dc) -> (B, H, W, C). GroupNorm (eps 1e-6), proj_in to
  inner = heads * head_dim (1x1 conv, or a linear layer when ``use_linear_projection``),
  ``num_layers`` BasicTransformerBlocks over the H*W tokens, proj_out back to C, residual.
  """

  heads: int
  head_dim: int
  num_layers: int = 1
  groups: int = 32
  use_linear_projection: bool = False
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, hgt, wid, c = x.shape
    inner = self.heads * self.head_dim
    h = group_norm(self.groups, 1e-6, name="norm", **kw)(x)
    if self.use_linear_projection:
      h = dense(inner, ("conv_in", "embed"), name="proj_in", **kw)(h.reshape(b, hgt * wid, c))
    else:
      h = conv(inner, 1, name="proj_in", **kw)(h).reshape(b, hgt * wid, inner)
    h = nn.with_logical_constraint(h, TOKEN_AXES)
    for i in range(self.num_layers):
      h = BasicTransformerBlock(
        self.heads,
        self.head_dim,
        deterministic=self.deterministic,
        name=f"transformer_blocks_{i}",
        **kw,
      )(h, context)
    if self.use_linear_projection:
      h = dense(c, ("embed", "conv_out"), name="proj_out", **kw)(h).reshape(b, hgt, wid, c)
    else:
      h = conv(c, 1, name="proj_out", **kw)(h.reshape(b, hgt, wid, inner))
    return nn.with_logical_constraint(h + x, IMAGE_AXES)
