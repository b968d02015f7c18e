"""One UNet forward and forward+backward: FLOPs, achieved FLOP/s, roofline fraction, MFU.

FLOPs come from XLA's cost analysis of the compiled program; the roofline's ceiling is this
machine's dense matmul FLOP/s measured in the same rounds; on a known GPU the MFU is the
fraction of the vendor's dense bf16 peak.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from emotalker_jax.bench import torch_ref
from emotalker_jax.bench.common import (
  block,
  cost_flops,
  default_matmul_n,
  device_bf16_peak,
  interleaved_timings,
  log,
  make_matmul,
  repeat_fn,
  stats,
  unbox,
)
from emotalker_jax.bench.model_stats import context_length, count_params, latent_size
from emotalker_jax.models.unet import build_unet, init_unet


def run_unet_bench(
  config,
  *,
  batch: int = 4,
  repeats: int = 5,
  warmup: int = 1,
  matmul_n: int | None = None,
  seed: int = 0,
  torch_matmul: bool = True,
  progress=None,
) -> dict:
  """One UNet forward and forward+backward (grad of mean(out^2) w.r.t. the params) at the
  config's latent size; FLOPs from XLA cost analysis, achieved FLOP/s, roofline fraction vs
  a jitted dense matmul (config dtype, n = ``matmul_n``) timed in the same rounds; the same
  matmul in torch (vendor BLAS) is timed alongside for context."""
  model = build_unet(config)
  spec = model.spec
  h = w = latent_size(config)
  L = context_length(config)
  k = jax.random.split(jax.random.key(int(seed)), 4)
  params = unbox(init_unet(model, k[0], context_len=L))["params"]
  x = jax.random.normal(k[1], (batch, h, w, spec.in_channels), jnp.float32)
  t = jax.random.randint(k[2], (batch,), 0, int(config.diffusion.num_train_timesteps))
  c = jax.random.normal(k[3], (batch, L, spec.cross_attention_dim), jnp.float32)

  def fwd(p, x, t, c):
    return model.apply({"params": p}, x, t, c)

  def loss(p, x, t, c):
    return jnp.mean(jnp.square(model.apply({"params": p}, x, t, c)))

  log(progress, f"unet: compiling forward and forward+backward ({config.name}, batch {batch})")
  t0 = time.perf_counter()
  c_fwd = jax.jit(fwd).lower(params, x, t, c).compile()
  t1 = time.perf_counter()
  c_fb = jax.jit(jax.value_and_grad(loss)).lower(params, x, t, c).compile()
  t2 = time.perf_counter()
  hlo = c_fwd.as_text() or ""
  n = int(matmul_n or default_matmul_n())
  mm_fn, mm_flops, mm_xla_flops = make_matmul(n, str(config.dtype))
  f_fwd = lambda: block(c_fwd(params, x, t, c))  # noqa: E731
  f_fb = lambda: block(c_fb(params, x, t, c))  # noqa: E731
  for _ in range(int(warmup)):
    f_fwd(), f_fb(), mm_fn()
  (f_fwd_k, k_fwd), (f_fb_k, k_fb), (mm_k, k_mm) = (repeat_fn(f) for f in (f_fwd, f_fb, mm_fn))
  fns = {"matmul": mm_k, "forward": f_fwd_k, "forward_backward": f_fb_k}
  per_call = {"matmul": k_mm, "forward": k_fwd, "forward_backward": k_fb}
  tmm = torch_ref.make_torch_matmul(n, str(config.dtype)) if torch_matmul else None
  if tmm is not None:
    fns["torch_matmul"], per_call["torch_matmul"] = repeat_fn(tmm[0])
  times = interleaved_timings(fns, repeats, progress, label=f"unet {config.name}")
  st = {name: stats([s / per_call[name] for s in v]) for name, v in times.items()}
  mm_rate = mm_flops / st["matmul"]["median_s"]
  peak = device_bf16_peak()
  flops_fwd, flops_fb = cost_flops(c_fwd), cost_flops(c_fb)

  def fig(flops, s):
    rate = flops / s["median_s"]
    out = {
      "flops": flops,
      "achieved_flops_per_s": rate,
      "roofline_fraction": rate / mm_rate,
      "time": s,
    }
    if peak:
      out["mfu"] = rate / peak
    return out

  fw, fb = fig(flops_fwd, st["forward"]), fig(flops_fb, st["forward_backward"])
  return {
    "benchmark": "unet",
    "batch": int(batch),
    "input_shape": [int(batch), h, w, spec.in_channels],
    "context_shape": [int(batch), L, spec.cross_attention_dim],
    "params": count_params(params),
    "remat": bool(spec.remat),
    "repeats": int(repeats),
    "calls_per_sample": per_call,
    "flops": fw["flops"],
    "achieved_flops_per_s": fw["achieved_flops_per_s"],
    "matmul_flops_per_s": mm_rate,
    "roofline_fraction": fw["roofline_fraction"],
    "mfu": fw.get("mfu"),
    "vendor_bf16_peak_flops_per_s": peak,
    "forward": fw,
    "forward_backward": fb,
    "matmul": {
      "n": n,
      "dtype": str(config.dtype),
      "flops": mm_flops,
      "xla_flops": mm_xla_flops,
      "time": st["matmul"],
    },
    "torch_matmul_flops_per_s": (
      mm_flops / st["torch_matmul"]["median_s"] if "torch_matmul" in st else None
    ),
    "roofline_fraction_vs_torch_matmul": (
      fw["achieved_flops_per_s"] * st["torch_matmul"]["median_s"] / mm_flops
      if "torch_matmul" in st
      else None
    ),
    "compile_s": {"forward": t1 - t0, "forward_backward": t2 - t1},
    "cudnn_fused_attention": "__cudnn$fmha" in hlo,
  }
