"""Benchmarks: JAX vs PyTorch on the same model, FLOPs and roofline, compile time, memory.

    emotalker bench sampler|unet|train-step|compile|pipeline|all --config configs/X.py \
        [--config.a=b ...] --json OUT.json
    emotalker bench report --json-dir docs/bench --out docs/BENCHMARKS.md

Every result is a JSON-able dict carrying the machine (``machine_info``), the library
versions (``versions``), the config name and overrides, batch and dtype. Timings are
medians (with min and max) of ``repeats`` runs after ``warmup`` runs; when two programs are
compared they run alternately in one process (A B A B ...), so load from other processes
hits both alike, and the ratio is taken from the same run.

What each benchmark measures:

* ``run_sampler_bench``: frames/s of the whole guided sampler of METHOD.md (DDIM inversion
  of one source latent, eq. 4, with ``sampler.inversion_iters`` fixed-point refinements;
  ``steps`` guided DDIM steps with classifier-free guidance in one batched UNet call on
  [cond; uncond], eq. 5; the identity constraint, eq. 6; the autoencoder decode of the B
  frames) for our jitted ``lax.scan`` sampler and for the *same model* in PyTorch:
  diffusers ``UNet2DConditionModel`` + ``AutoencoderKL`` built from a diffusers config
  equivalent to ours (random torch weights, seeded) and converted into our params with
  ``checkpoints.convert_state_dict``, sampled with diffusers' ``DDIMScheduler`` (the
  inversion is a hand-written torch loop with the same equations, since
  ``DDIMInverseScheduler`` has no fixed-point refinement), eagerly and with
  ``torch.compile`` (UNet and decoder compiled). The cross-attention context is an input:
  fixed random tokens of the config's width, identical for both. Outputs are compared
  before any timing (``max_abs_output_diff``).
* ``run_unet_bench``: one UNet forward and forward+backward: FLOPs from XLA's cost
  analysis of the compiled program, achieved FLOP/s, and that as a fraction of this
  machine's dense matmul FLOP/s measured in the same run (``roofline_fraction``); on a GPU
  also the fraction of the vendor's dense bf16 peak (``mfu``).
* ``run_train_step_bench``: the real jitted train step (``training.loop.build_trainer``):
  step time, examples/s, FLOPs/step, roofline fraction, MFU on GPU, peak memory, with the
  UNet's remat on and off.
* ``run_compile_bench``: sampler compile time at 10/25/50 steps
  (``diffusion.compile_bench.run_bench``) and the train step's.
* ``run_pipeline_bench``: input pipeline examples/s (``input_pipeline.pipeline.benchmark``)
  vs the train step's consumption rate.

The JSON keys checks read are fixed: sampler ``jax_frames_per_s``,
``torch_eager_frames_per_s``, ``torch_compile_frames_per_s``,
``ratio_torch_eager_over_jax`` (PyTorch time / JAX time; > 1: JAX is faster),
``max_abs_output_diff``; unet ``flops``, ``achieved_flops_per_s``, ``matmul_flops_per_s``,
``roofline_fraction``; compile ``compile_s`` (per step count) and ``ratio_50_over_10``.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import glob
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

WHATS = ("sampler", "unet", "train-step", "compile", "pipeline")

# Vendor dense bf16 peaks (FLOP/s), by a substring of the device name (first match wins).
VENDOR_BF16_PEAK = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),       # SXM: 989.4 TFLOP/s dense bf16
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
)


def _log(progress, msg: str) -> None:
  if progress is not None:
    progress(msg)


def _stderr(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# -----------------------------------------------------------------------------------------
# Machine, versions, statistics
# -----------------------------------------------------------------------------------------

def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
  try:
    with open("/proc/cpuinfo") as fh:
      for line in fh:
        if line.lower().startswith(("model name", "hardware", "cpu model")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info() -> dict:
  """CPU model and cores, the JAX backend and its devices, the GPU name if any, load."""
  import jax
  dev = jax.devices()[0]
  try:
    affinity = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    affinity = os.cpu_count()
  info = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
          "platform": dev.platform, "device_kind": dev.device_kind,
          "num_devices": jax.device_count(),
          "gpu": dev.device_kind if dev.platform == "gpu" else None,
          "host": platform.platform()}
  try:
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    pass
  return info


def versions() -> dict:
  """Versions of python, numpy, jax, jaxlib, flax and (when installed) torch, diffusers."""
  from importlib import metadata
  out = {"python": platform.python_version()}
  for name in ("numpy", "jax", "jaxlib", "flax", "torch", "diffusers"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def vendor_bf16_peak(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of a known GPU (by name), else None (CPUs: None)."""
  for key, peak in VENDOR_BF16_PEAK:
    if key.lower() in device_kind.lower():
      return peak
  return None


def stats(times: Sequence[float]) -> dict:
  """{'median_s', 'min_s', 'max_s', 'n', 'all_s'} of a list of seconds."""
  t = [float(x) for x in times]
  return {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "n": len(t),
          "all_s": [round(x, 6) for x in t]}


def interleaved_timings(fns: dict[str, Callable[[], Any]], repeats: int,
                        progress=None, label: str = "timing") -> dict[str, list[float]]:
  """Runs every fn once per round, in order, for ``repeats`` rounds (A B A B ...).

  Each fn must block until its work is done (the result is discarded). Returns
  {name: [seconds per round]}.
  """
  from tqdm import tqdm
  out = {k: [] for k in fns}
  for _ in tqdm(range(int(repeats)), desc=label, disable=progress is None, leave=False):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      out[name].append(time.perf_counter() - t0)
  return out


def _finite_or_none(x):
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _clean(obj):
  """NaN/inf -> None, numpy scalars -> Python, tuples -> lists (for strict JSON)."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float):
    return _finite_or_none(obj)
  return obj


def write_json(path: str, result: dict) -> None:
  """Writes ``result`` as strict JSON (NaN -> null), creating the folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as fh:
    json.dump(_clean(result), fh, indent=2, allow_nan=False)
    fh.write("\n")
  os.replace(tmp, path)


def _config_summary(config, overrides: Sequence[str] = ()) -> dict:
  return {"config": str(config.get("name", "?")), "overrides": list(overrides),
          "dtype": str(config.dtype)}


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float((cost or {}).get("flops", float("nan")))


def _memory_analysis(compiled) -> dict:
  try:
    mem = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    return {}
  if mem is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes", "alias_size_in_bytes")
  return {f: int(getattr(mem, f, 0) or 0) for f in fields}


def _block(x):
  import jax
  return jax.block_until_ready(x)


def _unbox(tree):
  import flax.linen as nn
  return nn.meta.unbox(tree)


# -----------------------------------------------------------------------------------------
# Dense matmul rate (the roofline's compute ceiling, measured in the same run)
# -----------------------------------------------------------------------------------------

def default_matmul_n() -> int:
  import jax
  return 8192 if jax.devices()[0].platform == "gpu" else 2048


def make_matmul(n: int, dtype: str = "float32", seed: int = 0):
  """(fn() -> blocks on one jitted n x n @ n x n matmul, flops per call (2 n^3), the
  compiled program's XLA-counted flops)."""
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.key(seed))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
  compiled = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
  _block(compiled(a, b))
  return (lambda: _block(compiled(a, b))), 2.0 * n ** 3, _cost_flops(compiled)


def make_torch_matmul(n: int, dtype: str = "float32", seed: int = 0):
  """(fn() -> one torch n x n matmul, synchronised; flops 2 n^3) on the device the sampler's
  PyTorch side uses, or None when torch is not installed. Context for the roofline: the
  rate a vendor BLAS (MKL / oneDNN / cuBLAS) reaches on this machine."""
  try:
    import torch
  except ImportError:
    return None
  device = _torch_device()
  g = torch.Generator().manual_seed(int(seed))
  tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
  a = torch.randn(n, n, generator=g).to(device=device, dtype=tdt)
  b = torch.randn(n, n, generator=g).to(device=device, dtype=tdt)

  def fn():
    with torch.inference_mode():
      torch.mm(a, b)
    if device == "cuda":
      torch.cuda.synchronize()
  fn()
  return fn, 2.0 * n ** 3


def _repeat_fn(fn: Callable[[], Any], min_s: float = 0.2, max_inner: int = 64):
  """(fn called k times in a row, k) with k chosen so one sample takes >= min_s (short GPU
  kernels otherwise measure launch overhead). Dispatch is async; only the last is waited on,
  which is correct because successive calls are serialised on the device."""
  t0 = time.perf_counter()
  fn()
  dt = max(time.perf_counter() - t0, 1e-6)
  k = int(min(max_inner, max(1, math.ceil(min_s / dt))))
  if k == 1:
    return fn, 1

  def many():
    for _ in range(k):
      fn()
  return many, k


# -----------------------------------------------------------------------------------------
# 1. The guided sampler, JAX vs PyTorch (diffusers)
# -----------------------------------------------------------------------------------------

def _latent_hw(config) -> tuple[int, int]:
  from emotalker_jax.model_stats import latent_size
  s = latent_size(config)
  return s, s


def diffusers_unet_kwargs(config) -> dict:
  """Keyword arguments of a diffusers ``UNet2DConditionModel`` equivalent to config.unet."""
  from emotalker_jax.models.unet import UNetSpec
  s = UNetSpec.from_config(config.unet)
  if s.context_embedding != "none":
    raise ValueError(f"config.unet.context_embedding={s.context_embedding!r} has no diffusers "
                     "equivalent; compare against diffusers with context_embedding='none'")

  def one(v):
    return v[0] if len(set(v)) == 1 else tuple(v)
  h, _ = _latent_hw(config)
  return dict(sample_size=h, in_channels=s.in_channels, out_channels=s.out_channels,
              block_out_channels=tuple(s.block_out_channels),
              down_block_types=tuple(s.down_block_types), up_block_types=tuple(s.up_block_types),
              layers_per_block=one(s.layers_per_block), attention_head_dim=one(s.heads),
              cross_attention_dim=s.cross_attention_dim,
              transformer_layers_per_block=one(s.transformer_layers_per_block),
              norm_num_groups=s.norm_num_groups, use_linear_projection=s.use_linear_projection,
              flip_sin_to_cos=s.flip_sin_to_cos, freq_shift=int(s.freq_shift),
              norm_eps=s.norm_eps)


def diffusers_vae_kwargs(config) -> dict:
  """Keyword arguments of a diffusers ``AutoencoderKL`` equivalent to config.autoencoder."""
  from emotalker_jax.models.autoencoder import AutoencoderSpec
  s = AutoencoderSpec.from_config(config.autoencoder)
  n = len(s.block_out_channels)
  kw = dict(in_channels=s.in_channels, out_channels=s.out_channels,
            latent_channels=s.latent_channels, block_out_channels=tuple(s.block_out_channels),
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            layers_per_block=s.layers_per_block, norm_num_groups=s.norm_num_groups,
            scaling_factor=s.scaling_factor, mid_block_add_attention=s.mid_block_add_attention,
            use_quant_conv=s.use_quant_conv, use_post_quant_conv=s.use_post_quant_conv)
  if s.shift_factor:
    kw["shift_factor"] = s.shift_factor
  return kw


def build_torch_models(config, seed: int = 0):
  """(diffusers UNet2DConditionModel, diffusers AutoencoderKL) in eval mode with seeded random
  weights, checked to have the same layout as our config (ValueError otherwise)."""
  import torch
  from diffusers import AutoencoderKL as TorchVAE
  from diffusers import UNet2DConditionModel
  from emotalker_jax import checkpoints as ck
  from emotalker_jax.models.autoencoder import AutoencoderSpec
  from emotalker_jax.models.unet import UNetSpec

  torch.manual_seed(int(seed))
  unet = UNet2DConditionModel(**diffusers_unet_kwargs(config)).eval()
  torch.manual_seed(int(seed) + 1)
  vae = TorchVAE(**diffusers_vae_kwargs(config)).eval()
  ours = UNetSpec.from_config(config.unet)
  theirs = UNetSpec.from_config(ck.unet_config_from_diffusers(dict(unet.config)))
  if dataclasses.replace(theirs, remat=ours.remat, dropout=ours.dropout) != ours:
    raise ValueError(f"the diffusers UNet built from config.unet has another layout: "
                     f"{theirs} vs ours {ours}")
  ours_v = AutoencoderSpec.from_config(config.autoencoder)
  theirs_v = AutoencoderSpec.from_config(ck.vae_config_from_diffusers(dict(vae.config)))
  if theirs_v != ours_v:
    raise ValueError(f"the diffusers AutoencoderKL built from config.autoencoder has another "
                     f"layout: {theirs_v} vs ours {ours_v}")
  return unet, vae


def torch_params_to_ours(config, unet, vae) -> tuple[dict, dict]:
  """The torch models' weights converted into our (UNet params, autoencoder params) trees
  with ``checkpoints.convert_state_dict`` (float32 numpy leaves)."""
  import jax
  from emotalker_jax import checkpoints as ck
  from emotalker_jax.models.autoencoder import build_autoencoder, init_autoencoder
  from emotalker_jax.models.unet import build_unet, init_unet

  def state(m):
    return {k: v.detach().cpu().float().numpy() for k, v in m.state_dict().items()}
  unet_model, vae_model = build_unet(config), build_autoencoder(config)
  target_u = jax.eval_shape(lambda: init_unet(unet_model, jax.random.key(0)))["params"]
  target_v = jax.eval_shape(lambda: init_autoencoder(vae_model, jax.random.key(0)))["params"]
  pu, _ = ck.convert_state_dict(state(unet), target_u, source="diffusers UNet2DConditionModel")
  pv, _ = ck.convert_state_dict(state(vae), target_v, source="diffusers AutoencoderKL")
  return pu, pv


def bench_spacing(config, steps: int) -> tuple[str, str | None]:
  """The timestep spacing both samplers use: the config's when diffusers' DDIMScheduler
  steps between the same levels, else 'trailing' (then 'leading'); (spacing, note or None).

  DDIMScheduler's step goes from t to t - T // steps, so it matches our sampler (which
  steps to the next visited level) only when the levels are evenly spaced by T // steps.
  """
  T = int(config.diffusion.num_train_timesteps)
  want = str(config.sampler.spacing)
  for cand in (want, "trailing", "leading"):
    try:
      if _diffusers_compatible(T, steps, cand):
        note = None if cand == want else (
            f"config spacing {want!r} visits levels that diffusers' DDIMScheduler does not step "
            f"between at {steps} steps; both samplers use {cand!r} instead (same cost)")
        return cand, note
    except ValueError:
      continue
  raise ValueError(f"no timestep spacing works with diffusers' DDIMScheduler for T={T}, "
                   f"steps={steps}; pick a step count that divides {T}")


def _diffusers_compatible(T: int, steps: int, spacing: str) -> bool:
  from emotalker_jax.diffusion.sampler import ddim_timesteps
  ts = ddim_timesteps(T, steps, spacing)[::-1]
  ratio = T // steps
  prev = list(ts[1:]) + [None]
  return all((p is None and t - ratio < 0) or (p is not None and t - ratio == p)
             for t, p in zip(ts, prev))


def make_ddim_scheduler(config, steps: int, spacing: str):
  """diffusers DDIMScheduler with our betas, prediction type, no clipping, ᾱ_final = 1."""
  from diffusers import DDIMScheduler
  from emotalker_jax.diffusion import schedule as sched_lib
  schedule = sched_lib.from_config(config.diffusion)
  names = {"uniform": "linspace", "leading": "leading", "trailing": "trailing"}
  s = DDIMScheduler(num_train_timesteps=schedule.num_train_timesteps,
                    trained_betas=np.asarray(schedule.betas, np.float32),
                    clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                    prediction_type=schedule.prediction_type,
                    timestep_spacing=names[spacing])
  s.set_timesteps(int(steps))
  return s


@dataclasses.dataclass
class SamplerProblem:
  """Fixed inputs of one sampler benchmark (numpy, NHWC, float32).

  z_src (1,h,w,C) source latent; spatial_src (1,h,w,Cs) and ctx_src (1,L,D) its condition;
  spatial (B,h,w,Cs), ctx (B,L,D) the frames' conditions; ctx_null (1,L,D) the null tokens
  (the uncond branch keeps the frames' spatial condition); mask (h,w) the eq. 6 mask M.
  """
  batch: int
  steps: int
  spacing: str
  guidance: float
  inversion_iters: int
  z_src: np.ndarray
  spatial_src: np.ndarray
  ctx_src: np.ndarray
  spatial: np.ndarray
  ctx: np.ndarray
  ctx_null: np.ndarray
  mask: np.ndarray
  lam: np.ndarray                  # (steps,) constraint weights lambda_k
  spacing_note: str | None = None


def make_sampler_problem(config, batch: int, steps: int, seed: int = 0) -> SamplerProblem:
  from emotalker_jax.diffusion import sampler as samp
  from emotalker_jax.model_stats import context_length
  h, w = _latent_hw(config)
  f = int(config.data.image_size) // h
  c_lat = int(config.autoencoder.latent_channels)
  c_sp = int(config.unet.in_channels) - c_lat
  L, D = context_length(config), int(config.unet.cross_attention_dim)
  rng = np.random.default_rng(int(seed))
  normal = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
  constraint = samp.ConstraintConfig.from_config(config.sampler.constraint)
  face = np.zeros((h * f, w * f), np.float32)
  face[h // 4 * f: (3 * h + 3) // 4 * f, w // 4 * f: (3 * w + 3) // 4 * f] = 1.0
  mask = np.asarray(samp.latent_mask_from_face_mask(face, (h, w), constraint.m_face))
  spacing, note = bench_spacing(config, steps)
  return SamplerProblem(
      batch=int(batch), steps=int(steps), spacing=spacing,
      guidance=float(config.sampler.guidance),
      inversion_iters=int(config.sampler.get("inversion_iters", 0)),
      z_src=normal(1, h, w, c_lat), spatial_src=normal(1, h, w, c_sp), ctx_src=normal(1, L, D),
      spatial=normal(batch, h, w, c_sp), ctx=normal(batch, L, D), ctx_null=normal(1, L, D),
      mask=mask, lam=np.asarray(constraint.step_weights(steps), np.float32), spacing_note=note)


def make_jax_sampler(config, unet_params, vae_params, prob: SamplerProblem):
  """(fn() -> images (B, H, W, 3) numpy, compile seconds) of our jitted sampler + decode.

  One jitted program: ``sampler.generate_latents`` (inversion, guided constrained DDIM as
  ``lax.scan``s, CFG in one batched UNet call) and ``autoencoder.decode_latent``.
  """
  import jax
  import jax.numpy as jnp
  from emotalker_jax.diffusion import sampler as samp
  from emotalker_jax.diffusion import schedule as sched_lib
  from emotalker_jax.models.autoencoder import build_autoencoder, decode_latent
  from emotalker_jax.models.unet import build_unet

  unet, vae = build_unet(config), build_autoencoder(config)
  denoise = samp.concat_condition_denoiser(
      lambda p, x, t, c: unet.apply({"params": p}, x, t, c))
  schedule = sched_lib.from_config(config.diffusion)
  constraint = samp.ConstraintConfig.from_config(config.sampler.constraint)

  @jax.jit
  def run(up, vp, schedule, z_src, cond_src, cond, uncond, mask, guidance, constraint):
    z = samp.generate_latents(functools.partial(denoise, up), schedule, z_src, cond_src, cond,
                              steps=prob.steps, eta=0.0, spacing=prob.spacing,
                              guidance=guidance, uncond=uncond, constraint=constraint,
                              mask=mask, inversion_iters=prob.inversion_iters)
    return decode_latent(vae, vp, z)

  dev = jax.devices()[0]
  put = lambda x: jax.device_put(jnp.asarray(x), dev)  # noqa: E731
  args = (jax.tree.map(put, unet_params), jax.tree.map(put, vae_params), schedule,
          put(prob.z_src), {"spatial": put(prob.spatial_src), "context": put(prob.ctx_src)},
          {"spatial": put(prob.spatial), "context": put(prob.ctx)},
          {"spatial": put(prob.spatial), "context": put(prob.ctx_null)},
          put(prob.mask), jnp.float32(prob.guidance), constraint)
  t0 = time.perf_counter()
  compiled = run.lower(*args).compile()
  compile_s = time.perf_counter() - t0

  def fn():
    return np.asarray(_block(compiled(*args)))
  return fn, compile_s


def make_torch_sampler(unet_fn, decode_fn, scheduler, prob: SamplerProblem, *, device: str,
                       scaling_factor: float, shift_factor: float = 0.0,
                       autocast_dtype=None):
  """fn() -> images (B, H, W, 3) numpy: the same sampler in PyTorch.

  unet_fn(sample NCHW, t (N,) int64, context (N,L,D)) -> eps/v NCHW; decode_fn(z NCHW) ->
  image NCHW. The inversion follows ``sampler.ddim_invert`` (eq. 4 with fixed-point
  refinements) on the scheduler's ᾱ; sampling is ``scheduler.step`` (eta = 0) on the CFG
  output out_c + (w - 1)(out_c - out_u) of one batched UNet call, then the eq. 6 blend.
  """
  import torch

  def t_(x):
    x = np.asarray(x)
    if x.ndim == 4:
      x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.array(x, np.float32, copy=True, order="C")).to(device)

  B = prob.batch
  z_src, sp_src, ctx_src = t_(prob.z_src), t_(prob.spatial_src), t_(prob.ctx_src)
  sp, ctx = t_(prob.spatial), t_(prob.ctx)
  sp2 = torch.cat([sp, sp], 0)
  ctx2 = torch.cat([ctx, t_(prob.ctx_null).expand(B, -1, -1)], 0)
  mask = t_(prob.mask)[None, None]                                   # (1,1,h,w)
  lam = [float(x) for x in prob.lam]
  acp = scheduler.alphas_cumprod.to(torch.float32)
  ts_desc = [int(t) for t in scheduler.timesteps]
  ts_up = ts_desc[::-1]
  pred_type = scheduler.config.prediction_type
  w = float(prob.guidance)

  def to_eps(out, z, a):
    if pred_type == "epsilon":
      return out
    return a.sqrt() * out + (1 - a).sqrt() * z              # v -> eps

  def unet(z, t, spatial, context):
    tt = torch.full((z.shape[0],), t, dtype=torch.int64, device=device)
    return unet_fn(torch.cat([z, spatial], 1), tt, context).float()

  def fn():
    ctx_mgr = (torch.autocast(device_type=device, dtype=autocast_dtype)
               if autocast_dtype is not None else _nullcontext())
    with torch.inference_mode(), ctx_mgr:
      # eq. (4): DDIM inversion with fixed-point refinement, z0 -> Z_T.
      z = z_src.float()
      ups = []
      a_c = torch.tensor(1.0)
      for t in ts_up:
        a_n = acp[t]
        y = z
        for _ in range(prob.inversion_iters + 1):
          eps = to_eps(unet(y, t, sp_src, ctx_src), y, a_n)
          x0 = (z - (1 - a_c).sqrt() * eps) / a_c.sqrt()
          y = a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps
        z, a_c = y, a_n
        ups.append(z)
      traj = ups[:-1][::-1] + [z_src.float()]
      # eqs. (5), (6): guided DDIM from Z_T (shared by the B frames) + the constraint.
      x = z.expand(B, -1, -1, -1).contiguous()
      for k, t in enumerate(ts_desc):
        out = unet(torch.cat([x, x], 0), t, sp2, ctx2)
        out_c, out_u = out[:B], out[B:]
        guided = out_c + (w - 1.0) * (out_c - out_u)
        x = scheduler.step(guided, t, x, eta=0.0, return_dict=False)[0].float()
        if lam[k] > 0.0:
          wm = lam[k] * mask
          x = x * (1.0 - wm) + traj[k] * wm
      img = decode_fn(x / scaling_factor + shift_factor).float()
    if device == "cuda":
      torch.cuda.synchronize()
    return img.cpu().numpy().transpose(0, 2, 3, 1)
  return fn


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def _torch_device() -> str:
  import jax
  import torch
  if jax.devices()[0].platform == "gpu" and torch.cuda.is_available():
    return "cuda"
  return "cpu"


def run_sampler_bench(config, *, batch: int = 4, steps: int | None = None, repeats: int = 5,
                      warmup: int = 1, torch_compile: bool = True,
                      compile_backend: str = "inductor", seed: int = 0, progress=None,
                      return_outputs: bool = False) -> dict:
  """Frames/s of the guided sampler, JAX vs PyTorch eager vs torch.compile (module doc).

  Outputs of all implementations are computed and compared first (same weights, same
  source latent and conditions, eta = 0). Then ``warmup`` untimed rounds and ``repeats``
  timed rounds, alternating the implementations. frames/s = batch / median seconds.
  torch.compile failures are recorded (``torch_compile_error``), not raised.
  """
  import torch
  steps = int(steps or config.sampler.steps)
  prob = make_sampler_problem(config, batch, steps, seed)
  device = _torch_device()
  bf16 = str(config.dtype) == "bfloat16"
  import jax
  device_note = None
  if jax.devices()[0].platform != "cpu" and device == "cpu":
    device_note = ("JAX runs on the accelerator but this torch build has no CUDA: the PyTorch "
                   "side ran on the CPU (install a CUDA torch for a like-for-like comparison)")
    _log(progress, f"sampler: warning: {device_note}")
  _log(progress, f"sampler: building diffusers models and converting weights ({config.name})")
  unet_t, vae_t = build_torch_models(config, seed)
  unet_p, vae_p = torch_params_to_ours(config, unet_t, vae_t)
  unet_t, vae_t = unet_t.to(device), vae_t.to(device)
  scheduler = make_ddim_scheduler(config, steps, prob.spacing)
  from emotalker_jax.diffusion.sampler import ddim_timesteps
  ours_ts = ddim_timesteps(config.diffusion.num_train_timesteps, steps, prob.spacing)[::-1]
  if [int(t) for t in scheduler.timesteps] != [int(t) for t in ours_ts]:
    raise ValueError(f"DDIMScheduler timesteps {list(scheduler.timesteps)} differ from ours "
                     f"{list(ours_ts)} (spacing {prob.spacing!r})")
  vcfg = vae_t.config
  torch_kw = dict(device=device, scaling_factor=float(vcfg.scaling_factor),
                  shift_factor=float(getattr(vcfg, "shift_factor", None) or 0.0),
                  autocast_dtype=torch.bfloat16 if bf16 else None)

  def eager_unet(x, t, c):
    return unet_t(x, t, encoder_hidden_states=c, return_dict=False)[0]

  def eager_decode(z):
    return vae_t.decode(z, return_dict=False)[0]

  _log(progress, "sampler: compiling the JAX sampler")
  jax_fn, jax_compile_s = make_jax_sampler(config, unet_p, vae_p, prob)
  torch_eager = make_torch_sampler(eager_unet, eager_decode, scheduler, prob, **torch_kw)
  fns = {"jax": jax_fn, "torch_eager": torch_eager}
  outputs = {"jax": jax_fn(), "torch_eager": torch_eager()}
  compile_error, compile_warmup_s = None, None
  if torch_compile:
    _log(progress, f"sampler: torch.compile (backend {compile_backend}; the first call "
                   "compiles, minutes on a CPU)")
    try:
      c_unet = torch.compile(eager_unet, backend=compile_backend, dynamic=False)
      c_decode = torch.compile(eager_decode, backend=compile_backend, dynamic=False)
      torch_compiled = make_torch_sampler(c_unet, c_decode, scheduler, prob, **torch_kw)
      t0 = time.perf_counter()
      outputs["torch_compile"] = torch_compiled()
      compile_warmup_s = time.perf_counter() - t0
      fns["torch_compile"] = torch_compiled
    except Exception as e:  # noqa: BLE001 - recorded in the JSON; eager figures still stand
      compile_error = f"{type(e).__name__}: {str(e)[:2000]}"
      _log(progress, f"sampler: torch.compile failed: {compile_error[:300]}")

  ref = outputs["torch_eager"]
  scale = float(np.abs(ref).max())
  diff = float(np.abs(outputs["jax"] - ref).max())
  tol = (5e-2 if bf16 else 1e-3) * max(scale, 1e-6)
  diffs = {f"{k}_vs_torch_eager": float(np.abs(v - ref).max())
           for k, v in outputs.items() if k != "torch_eager"}
  agree = all(d <= tol for d in diffs.values())
  _log(progress, f"sampler: max |JAX - torch eager| = {diff:.3g} (max |output| {scale:.3g}, "
                 f"tolerance {tol:.3g})")
  if not agree and not bf16:
    raise RuntimeError(f"JAX and PyTorch samplers disagree beyond {tol:.3g}: {diffs}; the "
                       "timings would compare different programs")

  for _ in range(int(warmup)):
    for fn in fns.values():
      fn()
  times = interleaved_timings(fns, repeats, progress, label=f"sampler {config.name}")
  st = {k: stats(v) for k, v in times.items()}
  fps = {k: batch / v["median_s"] for k, v in st.items()}
  res = {
      "benchmark": "sampler",
      "batch": int(batch), "steps": steps, "spacing": prob.spacing,
      "spacing_note": prob.spacing_note, "guidance": prob.guidance,
      "inversion_iters": prob.inversion_iters, "eta": 0.0,
      "constraint": {k: config.sampler.constraint[k] for k in config.sampler.constraint},
      "image_size": int(config.data.image_size), "latent_shape": list(prob.z_src.shape[1:]),
      "context_shape": list(prob.ctx.shape[1:]),
      "unet_calls_per_run": {"inversion_batch_1": steps * (prob.inversion_iters + 1),
                             "sampling_batch_2B": steps},
      "torch_device": device, "torch_device_note": device_note, "torch_threads": torch.get_num_threads(),
      "torch_autocast": "bfloat16" if bf16 else None,
      "torch_compile_backend": compile_backend if torch_compile else None,
      "repeats": int(repeats), "warmup": int(warmup),
      "timings": st,
      "jax_frames_per_s": fps["jax"],
      "torch_eager_frames_per_s": fps["torch_eager"],
      "torch_compile_frames_per_s": fps.get("torch_compile"),
      "ratio_torch_eager_over_jax": st["torch_eager"]["median_s"] / st["jax"]["median_s"],
      "ratio_torch_compile_over_jax": (st["torch_compile"]["median_s"] / st["jax"]["median_s"]
                                       if "torch_compile" in st else None),
      "ratio_torch_eager_over_jax_per_round": stats(
          [e / j for e, j in zip(times["torch_eager"], times["jax"])]),
      "max_abs_output_diff": diff,
      "max_abs_output_diffs": diffs,
      "max_abs_output": scale,
      "outputs_agree": agree, "agreement_tolerance": tol,
      "jax_compile_s": jax_compile_s,
      "torch_compile_first_call_s": compile_warmup_s,
      "torch_compile_error": compile_error,
  }
  if return_outputs:
    res["_outputs"] = outputs
  return res


# -----------------------------------------------------------------------------------------
# 2. UNet forward / forward+backward: FLOPs and roofline
# -----------------------------------------------------------------------------------------

def run_unet_bench(config, *, batch: int = 4, repeats: int = 5, warmup: int = 1,
                   matmul_n: int | None = None, seed: int = 0, torch_matmul: bool = True,
                   progress=None) -> dict:
  """One UNet forward and forward+backward (grad of mean(out^2) w.r.t. the params) at the
  config's latent size; FLOPs from XLA cost analysis, achieved FLOP/s, roofline fraction vs
  a jitted dense matmul (config dtype, n = ``matmul_n``) timed in the same rounds; the same
  matmul in torch (vendor BLAS) is timed alongside for context."""
  import jax
  import jax.numpy as jnp
  from emotalker_jax.model_stats import context_length, count_params
  from emotalker_jax.models.unet import build_unet, init_unet

  model = build_unet(config)
  spec = model.spec
  h, w = _latent_hw(config)
  L = context_length(config)
  k = jax.random.split(jax.random.key(int(seed)), 4)
  params = _unbox(init_unet(model, k[0], context_len=L))["params"]
  x = jax.random.normal(k[1], (batch, h, w, spec.in_channels), jnp.float32)
  t = jax.random.randint(k[2], (batch,), 0, int(config.diffusion.num_train_timesteps))
  c = jax.random.normal(k[3], (batch, L, spec.cross_attention_dim), jnp.float32)

  def fwd(p, x, t, c):
    return model.apply({"params": p}, x, t, c)

  def loss(p, x, t, c):
    return jnp.mean(jnp.square(model.apply({"params": p}, x, t, c)))

  _log(progress, f"unet: compiling forward and forward+backward ({config.name}, batch {batch})")
  t0 = time.perf_counter()
  c_fwd = jax.jit(fwd).lower(params, x, t, c).compile()
  t1 = time.perf_counter()
  c_fb = jax.jit(jax.value_and_grad(loss)).lower(params, x, t, c).compile()
  t2 = time.perf_counter()
  hlo = c_fwd.as_text() or ""
  dev = jax.devices()[0]
  n = int(matmul_n or default_matmul_n())
  mm_fn, mm_flops, mm_xla_flops = make_matmul(n, str(config.dtype))
  f_fwd = lambda: _block(c_fwd(params, x, t, c))  # noqa: E731
  f_fb = lambda: _block(c_fb(params, x, t, c))  # noqa: E731
  for _ in range(int(warmup)):
    f_fwd(), f_fb(), mm_fn()
  (f_fwd_k, k_fwd), (f_fb_k, k_fb), (mm_k, k_mm) = (_repeat_fn(f) for f in (f_fwd, f_fb, mm_fn))
  fns = {"matmul": mm_k, "forward": f_fwd_k, "forward_backward": f_fb_k}
  per_call = {"matmul": k_mm, "forward": k_fwd, "forward_backward": k_fb}
  tmm = make_torch_matmul(n, str(config.dtype)) if torch_matmul else None
  if tmm is not None:
    fns["torch_matmul"], per_call["torch_matmul"] = _repeat_fn(tmm[0])
  times = interleaved_timings(fns, repeats, progress, label=f"unet {config.name}")
  st = {name: stats([s / per_call[name] for s in v]) for name, v in times.items()}
  mm_rate = mm_flops / st["matmul"]["median_s"]
  peak = vendor_bf16_peak(dev.device_kind) if dev.platform == "gpu" else None
  flops_fwd, flops_fb = _cost_flops(c_fwd), _cost_flops(c_fb)

  def fig(flops, s):
    rate = flops / s["median_s"]
    out = {"flops": flops, "achieved_flops_per_s": rate, "roofline_fraction": rate / mm_rate,
           "time": s}
    if peak:
      out["mfu"] = rate / peak
    return out

  fw, fb = fig(flops_fwd, st["forward"]), fig(flops_fb, st["forward_backward"])
  return {
      "benchmark": "unet", "batch": int(batch),
      "input_shape": [int(batch), h, w, spec.in_channels],
      "context_shape": [int(batch), L, spec.cross_attention_dim],
      "params": count_params(params), "remat": bool(spec.remat),
      "repeats": int(repeats), "calls_per_sample": per_call,
      "flops": fw["flops"], "achieved_flops_per_s": fw["achieved_flops_per_s"],
      "matmul_flops_per_s": mm_rate, "roofline_fraction": fw["roofline_fraction"],
      "mfu": fw.get("mfu"), "vendor_bf16_peak_flops_per_s": peak,
      "forward": fw, "forward_backward": fb,
      "matmul": {"n": n, "dtype": str(config.dtype), "flops": mm_flops,
                 "xla_flops": mm_xla_flops, "time": st["matmul"]},
      "torch_matmul_flops_per_s": (mm_flops / st["torch_matmul"]["median_s"]
                                   if "torch_matmul" in st else None),
      "roofline_fraction_vs_torch_matmul": (fw["achieved_flops_per_s"] * st["torch_matmul"][
          "median_s"] / mm_flops if "torch_matmul" in st else None),
      "compile_s": {"forward": t1 - t0, "forward_backward": t2 - t1},
      "cudnn_fused_attention": "__cudnn$fmha" in hlo,
  }


# -----------------------------------------------------------------------------------------
# 3. Train step: time, examples/s, FLOPs, roofline, memory, remat on/off
# -----------------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) of this process to its current RSS.

  Returns True only when the reset took effect (VmHWM read back within 16 MiB of VmRSS):
  some kernels and sandboxes accept the write to /proc/self/clear_refs and ignore it.
  """
  try:
    with open("/proc/self/clear_refs", "w") as fh:
      fh.write("5")
  except OSError:
    return False
  status = _proc_status_bytes("VmHWM", "VmRSS")
  if status is None:
    return False
  hwm, rss = status
  return hwm <= rss + 16 * 2 ** 20


def _proc_status_bytes(*fields: str) -> tuple[int, ...] | None:
  """The named ``/proc/self/status`` fields (kB there) in bytes; None off Linux."""
  found = {}
  try:
    with open("/proc/self/status") as fh:
      for line in fh:
        name = line.split(":", 1)[0]
        if name in fields:
          found[name] = int(line.split()[1]) * 1024
  except OSError:
    return None
  if len(found) != len(fields):
    return None
  return tuple(found[f] for f in fields)


def peak_rss_bytes() -> int:
  """The process's peak resident set size: VmHWM from /proc (resettable), else getrusage."""
  status = _proc_status_bytes("VmHWM")
  if status is not None:
    return status[0]
  import resource
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(r) * (1 if sys.platform == "darwin" else 1024)


def device_peak_bytes() -> int | None:
  import jax
  try:
    ms = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - CPU backends may not implement it
    return None
  v = ms.get("peak_bytes_in_use")
  return int(v) if v is not None else None


def synthetic_train_batch(config, batch: int, seed: int = 0) -> dict:
  """A host batch of ``training.step.batch_spec(config)`` (what the pipeline yields): random
  frames in [-1, 1], audio features, Dirichlet emotion labels, {0, 1} region boxes and
  prompt strings in place of the tokens (``Trainer.device_batch`` tokenizes them)."""
  from emotalker_jax.emotions import EMOTIONS
  from emotalker_jax.training.step import TOKEN_KEYS, batch_spec, region_loss_weights
  r = np.random.default_rng(int(seed))
  emo = r.dirichlet(np.ones(len(EMOTIONS)) * 0.3, batch).astype(np.float32)
  out = {"prompt": np.array([f"a little {EMOTIONS[i]}" for i in emo.argmax(1)])}
  for key, spec in batch_spec(config, batch).items():
    if key in TOKEN_KEYS:
      continue
    if key in ("emotion", "prompt_emotion"):
      out[key] = emo
    elif key == "audio_mel":
      out[key] = r.standard_normal(spec.shape).astype(np.float32)
    elif key in region_loss_weights(config):         # a random box per example
      box = np.zeros(spec.shape, np.float32)
      s = spec.shape[1]
      for i, (y, x) in enumerate(r.integers(0, s // 2, (batch, 2))):
        box[i, y:y + s // 2, x:x + s // 2] = 1.0
      out[key] = box
    else:
      out[key] = r.uniform(-1, 1, spec.shape).astype(np.float32)
  return out


def _with(config, **kv):
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for key, v in kv.items():
      node = cfg
      *path, last = key.split(".")
      for p in path:
        node = node[p]
      node[last] = v
  return cfg


def _train_variant(config, text, *, steps: int, warmup: int, mm_fn, mm_flops, progress):
  import jax
  from flax import linen as nn
  from emotalker_jax.training import loop
  remat = bool(config.unet.remat)
  trainer = loop.build_trainer(config, text=text)
  batch = trainer.device_batch(synthetic_train_batch(config, int(config.train.batch_size)))
  _log(progress, f"train-step: compiling (remat={remat})")
  with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
    t0 = time.perf_counter()
    lowered = trainer.step_fn.lower(trainer.state, trainer.frozen, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
  flops = _cost_flops(compiled)
  mem = _memory_analysis(compiled)
  state = trainer.state
  holder = {"state": state}

  def step():
    with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
      holder["state"], metrics = compiled(holder["state"], trainer.frozen, batch)
    _block((holder["state"].step, metrics["loss"]))
    return metrics

  rss_reset = reset_peak_rss()
  for _ in range(int(warmup)):
    step()
  times = interleaved_timings({"matmul": mm_fn, "step": step}, steps, progress,
                              label=f"train-step remat={remat}")
  loss = float(step()["loss"])
  st = {k: stats(v) for k, v in times.items()}
  b = int(config.train.batch_size)
  rate = flops / st["step"]["median_s"]
  mm_rate = mm_flops / st["matmul"]["median_s"]
  dev = jax.devices()[0]
  peak = vendor_bf16_peak(dev.device_kind) if dev.platform == "gpu" else None
  dev_peak = device_peak_bytes() if dev.platform != "cpu" else None
  out = {"remat": remat, "batch": b, "num_devices": int(trainer.mesh.size),
         "step_time": st["step"], "step_s": st["step"]["median_s"],
         "examples_per_s": b / st["step"]["median_s"],
         "flops_per_step": flops, "achieved_flops_per_s": rate,
         "matmul_flops_per_s": mm_rate, "roofline_fraction": rate / mm_rate,
         "mfu": rate / peak if peak else None,
         "peak_memory_bytes": dev_peak if dev_peak is not None else peak_rss_bytes(),
         "peak_memory_source": ("device memory_stats peak_bytes_in_use (process-wide high "
                                "water mark)" if dev_peak is not None else
                                ("process peak RSS (VmHWM, reset before this variant's "
                                 "steps)" if rss_reset else "process peak RSS, not resettable here: "
                                 "includes everything this process ran before")),
         "xla_memory_analysis": mem, "lower_s": t1 - t0, "compile_s": t2 - t1,
         "final_loss": loss}
  del trainer, holder, state, compiled
  return out


def run_train_step_bench(config, *, remat: Sequence[bool] = (True, False), steps: int = 5,
                         warmup: int = 1, batch: int | None = None, matmul_n: int | None = None,
                         progress=None) -> dict:
  """The jitted train step of ``training.loop.build_trainer`` on a synthetic batch, per remat
  setting (remat on first: device peak memory is a process-wide high-water mark).

  FLOPs/step are XLA's count for the (per-device) compiled step; roofline fraction is
  achieved / a dense matmul timed alternately with the steps; peak memory is the device's
  peak bytes in use (GPU/TPU) or the process's peak RSS (CPU).
  """
  from emotalker_jax.models.text_encoder import load_text_encoder
  if batch:
    config = _with(config, **{"train.batch_size": int(batch)})
  text = load_text_encoder(config.text.path or None, kind=config.text.encoder,
                           max_length=int(config.text.max_length))
  n = int(matmul_n or default_matmul_n())
  mm_fn, mm_flops, _ = make_matmul(n, str(config.dtype))
  variants = {}
  for r in remat:
    variants["on" if r else "off"] = _train_variant(
        _with(config, **{"unet.remat": bool(r)}), text, steps=steps, warmup=warmup,
        mm_fn=mm_fn, mm_flops=mm_flops, progress=progress)
  default = variants.get("on" if bool(config.unet.remat) else "off") or next(
      iter(variants.values()))
  return {"benchmark": "train_step", "batch": int(config.train.batch_size),
          "steps": int(steps), "matmul": {"n": n, "dtype": str(config.dtype)},
          "config_remat": bool(config.unet.remat),
          "examples_per_s": default["examples_per_s"], "step_s": default["step_s"],
          "flops_per_step": default["flops_per_step"],
          "roofline_fraction": default["roofline_fraction"], "mfu": default["mfu"],
          "remat": variants}


# -----------------------------------------------------------------------------------------
# 4. Compile time: the sampler at 10/25/50 steps, and the train step
# -----------------------------------------------------------------------------------------

def run_compile_bench(config, *, steps_list: Sequence[int] = (10, 25, 50), frames: int = 4,
                      repeats: int = 2, train_step: bool = True, progress=None) -> dict:
  """``diffusion.compile_bench.run_bench`` (sampler compile time vs steps, from cold caches)
  plus the train step's trace+lower and compile seconds (from cold caches)."""
  import jax
  from flax import linen as nn
  from emotalker_jax.diffusion import compile_bench
  res = compile_bench.run_bench(config, tuple(steps_list), frames=frames, repeats=repeats,
                                progress=(progress or (lambda m: None)))
  res.pop("machine", None)
  res["benchmark"] = "compile"
  if train_step:
    from emotalker_jax.training import loop
    _log(progress, "compile: the train step (cold caches)")
    trainer = loop.build_trainer(config)
    batch = trainer.device_batch(synthetic_train_batch(config, int(config.train.batch_size)))
    jax.clear_caches()
    with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
      t0 = time.perf_counter()
      lowered = trainer.step_fn.lower(trainer.state, trainer.frozen, batch)
      t1 = time.perf_counter()
      lowered.compile()
      t2 = time.perf_counter()
    res["train_step"] = {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0,
                         "batch": int(config.train.batch_size),
                         "remat": bool(config.unet.remat)}
  return res


# -----------------------------------------------------------------------------------------
# 5. Input pipeline vs the train step's consumption
# -----------------------------------------------------------------------------------------

def run_pipeline_bench(config, *, workers: Sequence[int] = (0, 2), batches: int = 20,
                       data_dir: str | None = None, train_examples_per_s: float | None = None,
                       train_steps: int = 3, progress=None) -> dict:
  """Training-pipeline examples/s per grain worker count vs the train step's examples/s
  (measured here unless given). ratio > 1: the pipeline keeps up with the step."""
  from input_pipeline import pipeline as pl
  name = pl.dataset_name(config)
  data_dir = data_dir or config.data.data_dir
  folder = os.path.join(data_dir, *name.split("/"))
  if not os.path.isdir(folder):
    if not name.startswith("synthetic_talk"):
      raise FileNotFoundError(f"dataset {name} not found under {data_dir} ({folder}); build "
                              "the TFDS dataset first (see input_pipeline/)")
    size = name.split("/")[1] if "/" in name else "tiny"
    _log(progress, f"pipeline: {name} not under {data_dir}: building it (as `emotalker synth "
                   f"--out {data_dir} --size {size}` does)")
    from input_pipeline import synthetic_talk
    synthetic_talk.get_builder(size, data_dir).download_and_prepare()
  _log(progress, f"pipeline: {name}, workers {list(workers)}, batch "
                 f"{int(config.train.batch_size)}")
  rows = pl.benchmark(name, data_dir, "train", workers=tuple(int(w) for w in workers),
                      batch_size=int(config.train.batch_size), batches=int(batches),
                      image_size=int(config.data.image_size))
  measured_here = train_examples_per_s is None
  if measured_here:
    ts = run_train_step_bench(config, remat=(bool(config.unet.remat),), steps=train_steps,
                              progress=progress)
    train_examples_per_s = ts["examples_per_s"]
  best = max(rows, key=lambda r: r["examples_per_s"])
  return {"benchmark": "pipeline", "dataset": name, "batch": int(config.train.batch_size),
          "image_size": int(config.data.image_size), "per_workers": rows,
          "pipeline_examples_per_s": best["examples_per_s"], "best_workers": best["workers"],
          "train_step_examples_per_s": train_examples_per_s,
          "train_step_measured_here": measured_here,
          "ratio_pipeline_over_train_step": best["examples_per_s"] / train_examples_per_s}


# -----------------------------------------------------------------------------------------
# Running several and recording
# -----------------------------------------------------------------------------------------

def header(config, overrides: Sequence[str], command: str, note: str | None = None) -> dict:
  """What every JSON carries: machine, versions, config, command (+ an optional note)."""
  out = {"machine": machine_info(), "versions": versions(), **_config_summary(config, overrides),
         "command": command, "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
         "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                                "JAX_PLATFORMS")}}
  if note:
    out["note"] = note
  return out


def run_one(what: str, config, opts: dict, progress=None, prior: dict | None = None) -> dict:
  """Runs benchmark ``what`` with options ``opts`` (keys as the CLI's)."""
  prior = prior or {}
  if what == "sampler":
    return run_sampler_bench(config, batch=opts["batch"], steps=opts.get("steps"),
                             repeats=opts["repeats"], warmup=opts["warmup"],
                             torch_compile=opts.get("torch_compile", True),
                             compile_backend=opts.get("compile_backend", "inductor"),
                             seed=opts.get("seed", 0), progress=progress)
  if what == "unet":
    return run_unet_bench(config, batch=opts["batch"], repeats=opts["repeats"],
                          warmup=opts["warmup"], matmul_n=opts.get("matmul_n"),
                          progress=progress)
  if what == "train-step":
    return run_train_step_bench(config, remat=opts.get("remat", (True, False)),
                                steps=opts["repeats"], warmup=opts["warmup"],
                                batch=opts.get("train_batch"), matmul_n=opts.get("matmul_n"),
                                progress=progress)
  if what == "compile":
    return run_compile_bench(config, steps_list=opts.get("compile_steps", (10, 25, 50)),
                             frames=opts["batch"], repeats=opts.get("compile_repeats", 2),
                             progress=progress)
  if what == "pipeline":
    ts = prior.get("train-step") or {}
    cfg = config
    if opts.get("train_batch"):
      cfg = _with(config, **{"train.batch_size": int(opts["train_batch"])})
    return run_pipeline_bench(cfg, workers=opts.get("workers", (0, 2)),
                              batches=opts.get("pipeline_batches", 20),
                              data_dir=opts.get("data_dir"),
                              train_examples_per_s=ts.get("examples_per_s"),
                              progress=progress)
  raise ValueError(f"unknown benchmark {what!r}; use one of {WHATS + ('all', 'report')}")


ALL_ORDER = ("unet", "train-step", "pipeline", "compile", "sampler")


def run_all(config, opts: dict, *, base: dict, json_path: str | None, progress=None) -> dict:
  """Every benchmark in ALL_ORDER; the JSON is rewritten after each section, a failing
  section records its error and the others still run."""
  out = dict(base, benchmark="all", results={})
  for what in ALL_ORDER:
    _log(progress, f"== {what}")
    try:
      out["results"][what] = run_one(what, config, opts, progress, prior=out["results"])
    except Exception as e:  # noqa: BLE001 - one section's failure must not lose the others
      out["results"][what] = {"benchmark": what.replace("-", "_"),
                              "error": f"{type(e).__name__}: {str(e)[:2000]}"}
      _log(progress, f"{what} failed: {out['results'][what]['error'][:300]}")
    if json_path:
      write_json(json_path, out)
  return out


# -----------------------------------------------------------------------------------------
# docs/BENCHMARKS.md from the JSON files
# -----------------------------------------------------------------------------------------

REPORT_INTRO = """\
# Benchmarks

Generated by `emotalker bench report --json-dir docs/bench --out docs/BENCHMARKS.md` from the
JSON files in `docs/bench/` (do not edit the tables by hand: re-run the benchmark, then the
report). Every row names the command that produced it; the JSON holds the machine, library
versions, load average, config overrides and every individual timing.

How the figures are made (`emotalker_jax/bench.py`):

- **Timings** are medians of `--repeats` runs after `--warmup` untimed runs, with min and
  max. Programs that are compared run alternately in one process (A B A B ...), so load
  from other processes hits them alike, and ratios come from the same run.
- **sampler**: the whole guided sampler of METHOD.md for a batch of B frames: DDIM
  inversion of one source latent (eq. 4, with `sampler.inversion_iters` fixed-point
  refinements), `--steps` guided DDIM steps (eq. 5; classifier-free guidance as one batched
  UNet call on [cond; uncond]), the identity constraint (eq. 6) and the autoencoder decode.
  *JAX*: one jitted program (`sampler.generate_latents`, `lax.scan` loops, + decode).
  *PyTorch*: the same model in diffusers (`UNet2DConditionModel`, `AutoencoderKL`, built
  from a diffusers config equal to ours, seeded random weights converted into our params
  with `checkpoints.convert_state_dict`), sampled with diffusers' `DDIMScheduler` (the
  inversion is a torch loop with the same equations), eager and with `torch.compile`
  (UNet and decoder). The cross-attention context is an input (fixed random tokens of the
  config's width, identical for both). Outputs are compared before timing: the column
  "max abs diff" is max |JAX - PyTorch eager| over the decoded frames (eta = 0, same
  weights and inputs). "eager/JAX" = PyTorch eager time / JAX time (> 1: JAX faster).
- **unet**: one UNet forward, and forward+backward (gradient of mean(out²) w.r.t. the
  parameters); FLOPs from XLA's cost analysis of the compiled program (a multiply-add
  counts 2); achieved FLOP/s = FLOPs / median time; *roofline* = achieved / the dense
  matmul FLOP/s of this machine, measured in the same rounds (a jitted n×n matmul in the
  config's dtype: n = 2048 on CPU, 8192 on GPU; the same matmul in torch, i.e. a vendor
  BLAS, is shown beside it for context). On a GPU, *MFU* = achieved / the vendor's
  dense bf16 peak (H100 SXM and H200: 989 TFLOP/s).
- **train-step**: the real jitted, sharded train step (`training.loop.build_trainer`:
  autoencoder encode, frozen text encoder, EIB, UNet forward/backward, AdamW, EMA) on a
  synthetic batch, with the UNet's remat on and off. Peak memory: the device's
  `peak_bytes_in_use` on a GPU, the process's peak RSS on a CPU (reset before each
  variant); the XLA column is the compiled step's temporary buffer size.
- **compile**: sampler compile time (trace+lower+compile, cold caches, min over rounds) at
  10/25/50 steps (`diffusion/compile_bench.py`): the step loops are scans, so the ratio
  50/10 should stay near 1; and the train step's compile time.
- **pipeline**: examples/s of the grain training pipeline (`input_pipeline.pipeline.benchmark`)
  per worker count vs the train step's examples/s (ratio > 1: the input keeps up).

## Reproducing on a GPU (H100 / H200)

Install a CUDA JAX and a CUDA PyTorch in the venv (the lock file pins CPU builds), then run
the same commands with bf16 compute:

```bash
.venv/bin/pip install -U "jax[cuda12]==0.10.2"
# torch 2.13.0 built for the driver's CUDA version: PyTorch's install page gives the pip
# command (a CUDA wheel index); the CPU build from requirements/lock.txt cannot use the GPU
B="--config configs/base256.py --config.dtype=bfloat16"
# UNet forward / forward+backward: FLOPs, roofline vs a bf16 8192^2 matmul, MFU, cuDNN attention
.venv/bin/emotalker bench unet $B --batch 16 --json docs/bench/gpu_base256_unet_bf16.json
# train step (global batch config.train.batch_size = 64), remat on/off: MFU, peak memory
.venv/bin/emotalker bench train-step $B --json docs/bench/gpu_base256_train_step_bf16.json
# sampler at 256x256, 25 guided steps (goal >= 25 frames/s), JAX vs PyTorch eager/compile
.venv/bin/emotalker bench sampler $B --batch 32 --steps 25 \
    --json docs/bench/gpu_base256_sampler_bf16.json
# sampler compile time at 10/25/50 steps and the train step's
.venv/bin/emotalker bench compile $B --batch 32 --json docs/bench/gpu_base256_compile_bf16.json
# everything on the tiny config (its pipeline section reads data/tfds synthetic_talk/tiny,
# built on first use; base256's 'full' dataset takes long to render)
.venv/bin/emotalker bench all --config configs/tiny.py --json docs/bench/gpu_tiny.json
.venv/bin/emotalker bench report --json-dir docs/bench --out docs/BENCHMARKS.md
```

On a GPU the matmul reference is a bf16 8192² matmul, MFU is reported against the vendor
peak, the PyTorch side runs on `cuda` under `torch.autocast(bfloat16)`, and the unet JSON's
`cudnn_fused_attention` says whether XLA's compiled UNet calls cuDNN's fused attention
(`__cudnn$fmha*` custom calls). With bf16 the JAX/PyTorch agreement is checked against a
looser tolerance (5% of the output's range) and recorded, not enforced.
Note that in jax 0.10.2 `jax.nn.dot_product_attention(..., implementation=None)` (what
`models/layers.py` calls) runs XLA's attention, not cuDNN's: `cudnn_fused_attention` is
false unless the layers ask for `implementation='cudnn'` on a GPU.
"""


def _fmt(x, digits: int = 3) -> str:
  if x is None:
    return "–"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, int):
    return f"{x:,}"
  if isinstance(x, float):
    if not math.isfinite(x):
      return "–"
    if x == 0:
      return "0"
    if abs(x) >= 1000:
      return f"{x:,.0f}"
    return f"{x:.{digits}g}"
  return str(x)


def _si(x, unit: str = "") -> str:
  if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
    return "–"
  for p, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= p:
      return f"{x / p:.3g} {s}{unit}"
  return f"{x:.3g} {unit}".strip()


def _mib(x) -> str:
  return "–" if not x else f"{x / 2 ** 20:,.0f} MiB"


def _machine_str(doc: dict) -> str:
  m = doc.get("machine", {})
  if m.get("gpu"):
    return f"{m['gpu']} (x{m.get('num_devices', 1)})"
  load = m.get("load_average")
  load_s = f", load {load[0]:.1f}" if load else ""
  threads = f", {doc['threads']} thread{'s' if doc['threads'] > 1 else ''}" if doc.get(
      "threads") else ""
  return (f"CPU {m.get('cpu_model', '?')} ({m.get('cpu_affinity', m.get('cpu_count', '?'))} "
          f"cores{threads}{load_s})")


def _spread(t: dict | None, batch: int | None = None) -> str:
  """'median [min–max]' of a timing in ms, or in frames/s when batch is given."""
  if not t:
    return "–"
  if batch:
    return (f"{batch / t['median_s']:.3g} [{batch / t['max_s']:.3g}–{batch / t['min_s']:.3g}]")
  ms = lambda v: f"{v * 1e3:,.0f}" if v >= 1.0 else f"{v * 1e3:.3g}"  # noqa: E731
  return f"{ms(t['median_s'])} [{ms(t['min_s'])}–{ms(t['max_s'])}]"


def _cmd(doc: dict) -> str:
  return f"`{doc.get('command', '?')}`"


def _sections(doc: dict):
  """(section dict, its top-level doc) pairs of one JSON file (an 'all' file has several)."""
  if doc.get("benchmark") == "all":
    for what, res in doc.get("results", {}).items():
      yield what, res, doc
  else:
    yield str(doc.get("benchmark", "?")).replace("_", "-"), doc, doc


def _row(cells) -> str:
  return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _is_gpu(top: dict) -> bool:
  return bool(top.get("machine", {}).get("gpu"))


def render_goals(tables: dict) -> str:
  """The issue's goals, each with the recorded figures that speak to it (from the JSON)."""
  lines = ["## Goals and where they stand\n",
           _row(["goal", "measured (config, machine)", "met?"]), _row(["---"] * 3)]

  def add(goal, rows, empty):
    if not rows:
      lines.append(_row([goal, empty, "–"]))
    for text, ok in rows:
      lines.append(_row([goal, text, "yes" if ok else "no"]))

  def ok_num(v, goal):
    return v is not None and v >= goal
  add("CPU: sampler time PyTorch eager / JAX >= 1.5",
      [(f"{_fmt(r.get('ratio_torch_eager_over_jax'))} (torch.compile/JAX "
        f"{_fmt(r.get('ratio_torch_compile_over_jax'))}; {top.get('config')}, B={r.get('batch')}, "
        f"{r.get('steps')} steps, {_machine_str(top)})",
        ok_num(r.get("ratio_torch_eager_over_jax"), 1.5))
       for _, r, top in tables["sampler"] if not _is_gpu(top)], "no CPU sampler run recorded")
  add("CPU: UNet forward roofline >= 0.6 of the measured matmul rate",
      [(f"{_fmt(r.get('roofline_fraction'))} ({top.get('config')}, B={r.get('batch')}, "
        f"{_machine_str(top)})", ok_num(r.get("roofline_fraction"), 0.6))
       for _, r, top in tables["unet"] if not _is_gpu(top)], "no CPU UNet run recorded")
  add("GPU: train-step MFU >= 0.45 (bf16)",
      [(f"{_fmt(v.get('mfu'))} (remat {k}; {top.get('config')}, {top.get('dtype')}, "
        f"{_machine_str(top)})", ok_num(v.get("mfu"), 0.45))
       for _, r, top in tables["train-step"] if _is_gpu(top)
       for k, v in r.get("remat", {}).items()], "no GPU run recorded yet (commands: Reproducing on a GPU)")
  add("GPU: sampler >= 25 frames/s at 256x256, 25 guided steps (bf16)",
      [(f"{_fmt(r.get('jax_frames_per_s'))} frames/s ({top.get('config')}, B={r.get('batch')}, "
        f"{top.get('dtype')}, {_machine_str(top)})", ok_num(r.get("jax_frames_per_s"), 25.0))
       for _, r, top in tables["sampler"] if _is_gpu(top) and r.get("image_size") == 256
       and r.get("steps") == 25], "no GPU run recorded yet (commands: Reproducing on a GPU)")
  add("GPU: cuDNN fused (flash) attention in the compiled UNet",
      [(f"{_fmt(r.get('cudnn_fused_attention'))} ({top.get('config')}, {top.get('dtype')}, "
        f"{_machine_str(top)})", bool(r.get("cudnn_fused_attention")))
       for _, r, top in tables["unet"] if _is_gpu(top)], "no GPU run recorded yet (commands: Reproducing on a GPU)")
  lines.append("")
  return "\n".join(lines)


def render_report(docs: Sequence[tuple[str, dict]]) -> str:
  """The markdown of docs/BENCHMARKS.md from (file name, JSON dict) pairs."""
  tables = {w: [] for w in WHATS}
  notes, errors = [], []
  for name, doc in docs:
    if doc.get("note"):
      notes.append(f"- `{name}`: {doc['note']}")
    for what, r, top in _sections(doc):
      if what == "train-step" or what == "train_step":
        what = "train-step"
      if what not in tables:
        continue
      if r.get("error"):
        errors.append(f"- `{name}` {what}: {r['error'][:300]}")
        continue
      tables[what].append((name, r, top))

  out = [REPORT_INTRO, render_goals(tables), "## Results\n"]
  base = lambda top: [_machine_str(top), top.get("config", "?"), top.get("dtype", "?")]  # noqa: E731

  out.append("### Sampler: JAX vs PyTorch (frames/s, median [min–max])\n")
  out.append(_row(["machine", "config", "dtype", "B", "steps", "JAX", "PyTorch eager",
                   "torch.compile", "eager/JAX", "compile/JAX", "max abs diff", "command"]))
  out.append(_row(["---"] * 12))
  for name, r, top in tables["sampler"]:
    t = r.get("timings", {})
    b = r.get("batch")
    comp = _spread(t.get("torch_compile"), b) if t.get("torch_compile") else (
        "failed" if r.get("torch_compile_error") else "–")
    out.append(_row(base(top) + [b, r.get("steps"), _spread(t.get("jax"), b),
                                 _spread(t.get("torch_eager"), b), comp,
                                 _fmt(r.get("ratio_torch_eager_over_jax")),
                                 _fmt(r.get("ratio_torch_compile_over_jax")),
                                 f"{_fmt(r.get('max_abs_output_diff'), 2)} (of "
                                 f"{_fmt(r.get('max_abs_output'), 2)})", _cmd(top)]))
  out.append("")

  out.append("### UNet forward and forward+backward: FLOPs and roofline\n")
  out.append(_row(["machine", "config", "dtype", "B", "fwd FLOPs", "fwd FLOP/s",
                   "fwd ms", "matmul FLOP/s (XLA / torch)", "fwd roofline", "fwd+bwd FLOPs",
                   "fwd+bwd FLOP/s", "fwd+bwd roofline", "MFU fwd / fwd+bwd", "command"]))
  out.append(_row(["---"] * 14))
  for name, r, top in tables["unet"]:
    fw, fb = r.get("forward", {}), r.get("forward_backward", {})
    mfu = (f"{_fmt(fw.get('mfu'))} / {_fmt(fb.get('mfu'))}" if fw.get("mfu") else "–")
    out.append(_row(base(top) + [r.get("batch"), _si(r.get("flops")),
                                 _si(r.get("achieved_flops_per_s")),
                                 _spread(fw.get("time")),
                                 f"{_si(r.get('matmul_flops_per_s'))} / "
                                 f"{_si(r.get('torch_matmul_flops_per_s'))}",
                                 _fmt(r.get("roofline_fraction")), _si(fb.get("flops")),
                                 _si(fb.get("achieved_flops_per_s")),
                                 _fmt(fb.get("roofline_fraction")), mfu, _cmd(top)]))
  out.append("")

  out.append("### Train step (remat on / off)\n")
  out.append(_row(["machine", "config", "dtype", "B", "remat", "step ms", "examples/s",
                   "FLOPs/step", "FLOP/s", "roofline", "MFU", "peak memory",
                   "XLA temp", "command"]))
  out.append(_row(["---"] * 14))
  for name, r, top in tables["train-step"]:
    for key, v in r.get("remat", {}).items():
      out.append(_row(base(top) + [v.get("batch"), key, _spread(v.get("step_time")),
                                   _fmt(v.get("examples_per_s")), _si(v.get("flops_per_step")),
                                   _si(v.get("achieved_flops_per_s")),
                                   _fmt(v.get("roofline_fraction")), _fmt(v.get("mfu")),
                                   _mib(v.get("peak_memory_bytes")),
                                   _mib(v.get("xla_memory_analysis", {}).get(
                                       "temp_size_in_bytes")), _cmd(top)]))
  out.append("")

  out.append("### Compile time (s: trace+lower+compile, cold caches, min over rounds)\n")
  out.append(_row(["machine", "config", "dtype", "sampler 10 steps", "25 steps", "50 steps",
                   "ratio 50/10", "train step", "command"]))
  out.append(_row(["---"] * 9))
  for name, r, top in tables["compile"]:
    tot = r.get("total_compile_s", {})
    ts = r.get("train_step", {})
    out.append(_row(base(top) + [_fmt(tot.get("10")), _fmt(tot.get("25")), _fmt(tot.get("50")),
                                 _fmt(r.get("ratio_50_over_10")), _fmt(ts.get("total_s")),
                                 _cmd(top)]))
  out.append("")

  out.append("### Input pipeline vs train step (examples/s)\n")
  out.append(_row(["machine", "config", "dtype", "B", "pipeline per workers", "best",
                   "train step", "pipeline / train step", "command"]))
  out.append(_row(["---"] * 9))
  for name, r, top in tables["pipeline"]:
    per = ", ".join(f"{p['workers']}w: {_fmt(float(p['examples_per_s']))}"
                    for p in r.get("per_workers", []))
    out.append(_row(base(top) + [r.get("batch"), per, _fmt(r.get("pipeline_examples_per_s")),
                                 _fmt(r.get("train_step_examples_per_s")),
                                 _fmt(r.get("ratio_pipeline_over_train_step")), _cmd(top)]))
  out.append("")
  if notes:
    out.append("### Notes recorded with the runs\n")
    out.extend(notes)
    out.append("")
  if errors:
    out.append("### Failed sections\n")
    out.extend(errors)
    out.append("")
  return "\n".join(out)


def write_report(json_dir: str, out_path: str) -> str:
  """Reads every ``*.json`` in ``json_dir`` (sorted by name), writes the markdown report."""
  if not os.path.isdir(json_dir):
    raise FileNotFoundError(f"--json-dir {json_dir} not found; run a benchmark with "
                            f"--json {json_dir}/NAME.json first")
  docs = []
  for path in sorted(glob.glob(os.path.join(json_dir, "*.json"))):
    with open(path) as fh:
      try:
        docs.append((os.path.basename(path), json.load(fh)))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-run its benchmark") from None
  if not docs:
    raise FileNotFoundError(f"no *.json files in {json_dir}; run a benchmark with "
                            f"--json {json_dir}/NAME.json first")
  text = render_report(docs)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, "w") as fh:
    fh.write(text)
  return text
