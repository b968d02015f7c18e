"""Parameter counts and FLOPs of the UNet (and autoencoder) of a config.

    emotalker bench stats --config configs/base256.py [--config.a=b ...] [--batch 1]

Parameter counts come from ``jax.eval_shape`` of the init (no memory, no compute). FLOPs
of one UNet forward come from XLA's cost model of the compiled program
(``jax.jit(f).lower(...).compile().cost_analysis()['flops']``) at batch 1 (``--batch``),
on latents of image_size / f (f = 2 ** (len(autoencoder.block_out_channels) - 1)) with
``config.unet.in_channels`` channels and the config's context length. Compiling the large
configs on CPU takes a minute or two. XLA counts a multiply-add as 2 FLOPs.
"""

from __future__ import annotations

import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emotalker_jax.models.autoencoder import build_autoencoder, init_autoencoder
from emotalker_jax.models.conditioner import num_context_tokens
from emotalker_jax.models.unet import build_unet, init_unet


def count_params(tree: Any) -> int:
  """Total number of elements in a (possibly abstract / boxed) params tree."""
  return int(sum(int(x.size) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def latent_size(config) -> int:
  """Latent height/width for the config's frames: image_size // f."""
  f = 2 ** (len(config.autoencoder.block_out_channels) - 1)
  return int(config.data.image_size) // f


def context_length(config) -> int:
  """Cross-attention tokens per frame: audio tokens + EIB tokens (+ landmark tokens)."""
  n_eib = int(config.eib.num_emotions) + int(config.eib.num_text_tokens)
  return int(num_context_tokens(config, n_eib))


def unet_param_count(config) -> int:
  model = build_unet(config)
  return count_params(jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))["params"])


def autoencoder_param_count(config) -> int:
  model = build_autoencoder(config)
  return count_params(jax.eval_shape(lambda: init_autoencoder(model, jax.random.key(0)))["params"])


def unet_forward_cost(
  config, batch: int = 1, size: int | None = None, context_len: int | None = None
) -> dict:
  """XLA cost analysis of one jitted UNet forward: {'flops', 'bytes accessed', 'compile_s',
  'input_shape', 'context_shape'}."""
  model = build_unet(config)
  spec = model.spec
  size = size or latent_size(config)
  context_len = context_len or context_length(config)
  abstract = jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), nn.meta.unbox(abstract))
  x = jax.ShapeDtypeStruct((batch, size, size, spec.in_channels), jnp.float32)
  t = jax.ShapeDtypeStruct((batch,), jnp.int32)
  c = jax.ShapeDtypeStruct((batch, context_len, spec.cross_attention_dim), jnp.float32)
  t0 = time.perf_counter()
  compiled = jax.jit(lambda p, x, t, c: model.apply(p, x, t, c)).lower(params, x, t, c).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  cost = dict(cost or {})
  return {
    "flops": float(cost.get("flops", float("nan"))),
    "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
    "compile_s": compile_s,
    "input_shape": list(x.shape),
    "context_shape": list(c.shape),
    "dtype": str(model.dtype),
  }


def model_stats(
  config,
  batch: int = 1,
  size: int | None = None,
  context_len: int | None = None,
  flops: bool = True,
) -> dict:
  """{'benchmark', 'config', 'unet_params', 'autoencoder_params'} and, with ``flops``, the
  'unet_forward' cost of ``unet_forward_cost`` (batch ``batch``, latent H=W ``size``)."""
  out = {
    "benchmark": "model_stats",
    "config": config.name,
    "unet_params": unet_param_count(config),
    "autoencoder_params": autoencoder_param_count(config),
  }
  if flops:
    out["unet_forward"] = unet_forward_cost(config, batch, size, context_len)
  return out


def summary_lines(s: dict) -> list[str]:
  """The human-readable lines of a ``model_stats`` result."""
  lines = [
    f"config {s['config']}: UNet {s['unet_params']:,} params "
    f"({s['unet_params'] / 1e6:.1f} M), autoencoder {s['autoencoder_params']:,} params "
    f"({s['autoencoder_params'] / 1e6:.1f} M)"
  ]
  if "unet_forward" in s:
    f = s["unet_forward"]
    lines.append(
      f"UNet forward, input {tuple(f['input_shape'])}, context "
      f"{tuple(f['context_shape'])}, {f['dtype']}: {f['flops'] / 1e9:.4g} GFLOPs "
      f"({f['flops']:.4e} FLOPs; XLA cost analysis; compile "
      f"{f['compile_s']:.1f} s)"
    )
  return lines
