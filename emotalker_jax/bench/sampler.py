"""Frames/s of the whole guided sampler of METHOD.md, JAX vs the same model in PyTorch.

DDIM inversion of one source latent (eq. 4, with ``sampler.inversion_iters`` fixed-point
refinements); ``steps`` guided DDIM steps with classifier-free guidance in one batched UNet
call on [cond; uncond] (eq. 5); the identity constraint (eq. 6); the autoencoder decode of
the B frames. JAX: one jitted program around ``diffusion.sampler.generate_latents`` (the
``lax.scan`` sampler) and ``autoencoder.decode_latent``. PyTorch: ``bench.torch_ref`` (eager
and ``torch.compile``). The cross-attention context is an input: fixed random tokens of the
config's width, identical for both. Outputs are compared before any timing.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from emotalker_jax.bench import torch_ref
from emotalker_jax.bench.common import block, interleaved_timings, log, stats
from emotalker_jax.bench.model_stats import context_length, latent_size
from emotalker_jax.diffusion import sampler as samp
from emotalker_jax.diffusion import schedule as sched_lib
from emotalker_jax.models.autoencoder import build_autoencoder, decode_latent
from emotalker_jax.models.unet import build_unet


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
  lam: np.ndarray  # (steps,) constraint weights lambda_k
  spacing_note: str | None = None


def make_sampler_problem(config, batch: int, steps: int, seed: int = 0) -> SamplerProblem:
  """Seeded random inputs of the config's shapes, a central face box as the eq. 6 mask,
  and the timestep spacing both samplers can use (``torch_ref.bench_spacing``)."""
  h = w = latent_size(config)
  f = int(config.data.image_size) // h
  c_lat = int(config.autoencoder.latent_channels)
  c_sp = int(config.unet.in_channels) - c_lat
  L, D = context_length(config), int(config.unet.cross_attention_dim)
  rng = np.random.default_rng(int(seed))
  normal = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
  constraint = samp.ConstraintConfig.from_config(config.sampler.constraint)
  face = np.zeros((h * f, w * f), np.float32)
  face[h // 4 * f : (3 * h + 3) // 4 * f, w // 4 * f : (3 * w + 3) // 4 * f] = 1.0
  mask = np.asarray(samp.latent_mask_from_face_mask(face, (h, w), constraint.m_face))
  spacing, note = torch_ref.bench_spacing(config, steps)
  return SamplerProblem(
    batch=int(batch),
    steps=int(steps),
    spacing=spacing,
    guidance=float(config.sampler.guidance),
    inversion_iters=int(config.sampler.inversion_iters),
    z_src=normal(1, h, w, c_lat),
    spatial_src=normal(1, h, w, c_sp),
    ctx_src=normal(1, L, D),
    spatial=normal(batch, h, w, c_sp),
    ctx=normal(batch, L, D),
    ctx_null=normal(1, L, D),
    mask=mask,
    lam=np.asarray(constraint.step_weights(steps), np.float32),
    spacing_note=note,
  )


def make_jax_sampler(config, unet_params, vae_params, prob: SamplerProblem):
  """(fn() -> images (B, H, W, 3) numpy, compile seconds) of our jitted sampler + decode.

  One jitted program: ``sampler.generate_latents`` (inversion, guided constrained DDIM as
  ``lax.scan``s, CFG in one batched UNet call) and ``autoencoder.decode_latent``.
  """
  unet, vae = build_unet(config), build_autoencoder(config)
  denoise = samp.concat_condition_denoiser(lambda p, x, t, c: unet.apply({"params": p}, x, t, c))
  schedule = sched_lib.from_config(config.diffusion)
  constraint = samp.ConstraintConfig.from_config(config.sampler.constraint)

  @jax.jit
  def run(up, vp, schedule, z_src, cond_src, cond, uncond, mask, guidance, constraint):
    z = samp.generate_latents(
      functools.partial(denoise, up),
      schedule,
      z_src,
      cond_src,
      cond,
      steps=prob.steps,
      eta=0.0,
      spacing=prob.spacing,
      guidance=guidance,
      uncond=uncond,
      constraint=constraint,
      mask=mask,
      inversion_iters=prob.inversion_iters,
    )
    return decode_latent(vae, vp, z)

  dev = jax.devices()[0]
  put = lambda x: jax.device_put(jnp.asarray(x), dev)  # noqa: E731
  args = (
    jax.tree.map(put, unet_params),
    jax.tree.map(put, vae_params),
    schedule,
    put(prob.z_src),
    {"spatial": put(prob.spatial_src), "context": put(prob.ctx_src)},
    {"spatial": put(prob.spatial), "context": put(prob.ctx)},
    {"spatial": put(prob.spatial), "context": put(prob.ctx_null)},
    put(prob.mask),
    jnp.float32(prob.guidance),
    constraint,
  )
  t0 = time.perf_counter()
  compiled = run.lower(*args).compile()
  compile_s = time.perf_counter() - t0

  def fn():
    return np.asarray(block(compiled(*args)))

  return fn, compile_s


def run_sampler_bench(
  config,
  *,
  batch: int = 4,
  steps: int | None = None,
  repeats: int = 5,
  warmup: int = 1,
  torch_compile: bool = True,
  compile_backend: str = "inductor",
  seed: int = 0,
  progress=None,
  return_outputs: bool = False,
) -> dict:
  """Frames/s of the guided sampler, JAX vs PyTorch eager vs torch.compile (module doc).

  Outputs of all implementations are computed and compared first (same weights, same
  source latent and conditions, eta = 0). Then ``warmup`` untimed rounds and ``repeats``
  timed rounds, alternating the implementations. frames/s = batch / median seconds.
  torch.compile failures are recorded (``torch_compile_error``), not raised.
  """
  torch = torch_ref.torch
  torch_ref.require_torch()
  steps = int(steps or config.sampler.steps)
  prob = make_sampler_problem(config, batch, steps, seed)
  device = torch_ref.torch_device()
  bf16 = str(config.dtype) == "bfloat16"
  device_note = None
  if jax.devices()[0].platform != "cpu" and device == "cpu":
    device_note = (
      "JAX runs on the accelerator but this torch build has no CUDA: the PyTorch "
      "side ran on the CPU (install a CUDA torch for a like-for-like comparison)"
    )
    log(progress, f"sampler: warning: {device_note}")
  log(progress, f"sampler: building diffusers models and converting weights ({config.name})")
  unet_t, vae_t = torch_ref.build_torch_models(config, seed)
  unet_p, vae_p = torch_ref.torch_params_to_ours(config, unet_t, vae_t)
  unet_t, vae_t = unet_t.to(device), vae_t.to(device)
  scheduler = torch_ref.make_ddim_scheduler(config, steps, prob.spacing)
  ours_ts = samp.ddim_timesteps(config.diffusion.num_train_timesteps, steps, prob.spacing)[::-1]
  if [int(t) for t in scheduler.timesteps] != [int(t) for t in ours_ts]:
    raise ValueError(
      f"DDIMScheduler timesteps {list(scheduler.timesteps)} differ from ours "
      f"{list(ours_ts)} (spacing {prob.spacing!r})"
    )
  vcfg = vae_t.config
  torch_kw = dict(
    device=device,
    scaling_factor=float(vcfg.scaling_factor),
    shift_factor=float(getattr(vcfg, "shift_factor", None) or 0.0),
    autocast_dtype=torch.bfloat16 if bf16 else None,
  )

  def eager_unet(x, t, c):
    return unet_t(x, t, encoder_hidden_states=c, return_dict=False)[0]

  def eager_decode(z):
    return vae_t.decode(z, return_dict=False)[0]

  log(progress, "sampler: compiling the JAX sampler")
  jax_fn, jax_compile_s = make_jax_sampler(config, unet_p, vae_p, prob)
  torch_eager = torch_ref.make_torch_sampler(eager_unet, eager_decode, scheduler, prob, **torch_kw)
  fns = {"jax": jax_fn, "torch_eager": torch_eager}
  outputs = {"jax": jax_fn(), "torch_eager": torch_eager()}
  compile_error, compile_warmup_s = None, None
  if torch_compile:
    log(
      progress,
      f"sampler: torch.compile (backend {compile_backend}; the first call "
      "compiles, minutes on a CPU)",
    )
    try:
      c_unet = torch.compile(eager_unet, backend=compile_backend, dynamic=False)
      c_decode = torch.compile(eager_decode, backend=compile_backend, dynamic=False)
      torch_compiled = torch_ref.make_torch_sampler(c_unet, c_decode, scheduler, prob, **torch_kw)
      t0 = time.perf_counter()
      outputs["torch_compile"] = torch_compiled()
      compile_warmup_s = time.perf_counter() - t0
      fns["torch_compile"] = torch_compiled
    except Exception as e:  # noqa: BLE001 - recorded in the JSON; eager figures still stand
      compile_error = f"{type(e).__name__}: {str(e)[:2000]}"
      log(progress, f"sampler: torch.compile failed: {compile_error[:300]}")

  ref = outputs["torch_eager"]
  scale = float(np.abs(ref).max())
  diff = float(np.abs(outputs["jax"] - ref).max())
  tol = (5e-2 if bf16 else 1e-3) * max(scale, 1e-6)
  diffs = {
    f"{k}_vs_torch_eager": float(np.abs(v - ref).max())
    for k, v in outputs.items()
    if k != "torch_eager"
  }
  agree = all(d <= tol for d in diffs.values())
  log(
    progress,
    f"sampler: max |JAX - torch eager| = {diff:.3g} (max |output| {scale:.3g}, "
    f"tolerance {tol:.3g})",
  )
  if not agree and not bf16:
    raise RuntimeError(
      f"JAX and PyTorch samplers disagree beyond {tol:.3g}: {diffs}; the "
      "timings would compare different programs"
    )

  for _ in range(int(warmup)):
    for fn in fns.values():
      fn()
  times = interleaved_timings(fns, repeats, progress, label=f"sampler {config.name}")
  st = {k: stats(v) for k, v in times.items()}
  fps = {k: batch / v["median_s"] for k, v in st.items()}
  res = {
    "benchmark": "sampler",
    "batch": int(batch),
    "steps": steps,
    "spacing": prob.spacing,
    "spacing_note": prob.spacing_note,
    "guidance": prob.guidance,
    "inversion_iters": prob.inversion_iters,
    "eta": 0.0,
    "constraint": {k: config.sampler.constraint[k] for k in config.sampler.constraint},
    "image_size": int(config.data.image_size),
    "latent_shape": list(prob.z_src.shape[1:]),
    "context_shape": list(prob.ctx.shape[1:]),
    "unet_calls_per_run": {
      "inversion_batch_1": steps * (prob.inversion_iters + 1),
      "sampling_batch_2B": steps,
    },
    "torch_device": device,
    "torch_device_note": device_note,
    "torch_threads": torch.get_num_threads(),
    "torch_autocast": "bfloat16" if bf16 else None,
    "torch_compile_backend": compile_backend if torch_compile else None,
    "repeats": int(repeats),
    "warmup": int(warmup),
    "timings": st,
    "jax_frames_per_s": fps["jax"],
    "torch_eager_frames_per_s": fps["torch_eager"],
    "torch_compile_frames_per_s": fps.get("torch_compile"),
    "ratio_torch_eager_over_jax": st["torch_eager"]["median_s"] / st["jax"]["median_s"],
    "ratio_torch_compile_over_jax": (
      st["torch_compile"]["median_s"] / st["jax"]["median_s"] if "torch_compile" in st else None
    ),
    "ratio_torch_eager_over_jax_per_round": stats(
      [e / j for e, j in zip(times["torch_eager"], times["jax"])]
    ),
    "max_abs_output_diff": diff,
    "max_abs_output_diffs": diffs,
    "max_abs_output": scale,
    "outputs_agree": agree,
    "agreement_tolerance": tol,
    "jax_compile_s": jax_compile_s,
    "torch_compile_first_call_s": compile_warmup_s,
    "torch_compile_error": compile_error,
  }
  if return_outputs:
    res["_outputs"] = outputs
  return res
