"""Compile time of the whole generation (inversion + guided constrained DDIM) vs step count,
and of the train step.

The generation compiled is ``diffusion.sampler.generate_latents_jit``, the program
``sampler.generate_latents_sharded`` runs: the one sampling path ``invert_source`` ->
``start_latent`` -> ``sample_frames`` (``emotalker generate`` compiles the same pieces as two
programs, inversion and frame chunks), i.e. DDIM inversion of the source, CFG with one
batched denoiser call built by ``sampler.concat_condition_denoiser`` and the eq. (6)
constraint, with the config's UNet (random weights) and sampler settings, at 10, 25 and 50
steps, each from cold caches (``jax.clear_caches()``). Reported: trace+lower and XLA compile
seconds (wall, and process CPU seconds, which shared machines disturb less), one run's
seconds, the compiled HLO's size, and ``ratio_50_over_10`` of the total compile times (min
over ``repeats`` interleaved rounds). The step loops are ``lax.scan``s, so the ratio should
stay near 1 (target <= 1.2).
"""

from __future__ import annotations

from collections.abc import Sequence
import time

from flax import linen as nn
import jax
import jax.numpy as jnp

from emotalker_jax.bench.common import log, unbox
from emotalker_jax.bench.model_stats import context_length, latent_size
from emotalker_jax.bench.train_step import synthetic_train_batch
from emotalker_jax.diffusion import sampler as samp
from emotalker_jax.diffusion import schedule as sched_lib
from emotalker_jax.models.unet import build_unet, init_unet
from emotalker_jax.training import loop


def sampler_compile_times(
  config,
  steps_list: Sequence[int] = (10, 25, 50),
  frames: int = 4,
  repeats: int = 3,
  seed: int = 0,
  progress=None,
) -> dict:
  """Measures compile (and one run) time of the generation function for each step count.

  Returns a JSON-able dict; ``total_compile_s[str(steps)]`` is the min over ``repeats`` of
  trace+lower+compile seconds from cold caches (``compile_s``: the XLA compile alone).
  """
  model = build_unet(config)
  h = w = latent_size(config)
  f = int(config.data.image_size) // h
  c_lat = int(config.autoencoder.latent_channels)
  c_sp = int(config.unet.in_channels) - c_lat
  ctx_len, ctx_dim = context_length(config), int(config.unet.cross_attention_dim)

  ks = jax.random.split(jax.random.key(seed), 8)
  params = unbox(init_unet(model, ks[0], context_len=ctx_len))["params"]

  def cond(key, b):
    k1, k2 = jax.random.split(key)
    return {
      "spatial": jax.random.normal(k1, (b, h, w, c_sp)),
      "context": jax.random.normal(k2, (b, ctx_len, ctx_dim)),
    }

  denoise = samp.concat_condition_denoiser(
    lambda p, x, t, ctx: model.apply({"params": p}, x, t, ctx)
  )
  schedule = sched_lib.from_config(config.diffusion)
  constraint = samp.ConstraintConfig.from_config(config.sampler.constraint)
  face = jnp.zeros((config.data.image_size,) * 2).at[h // 4 * f : 3 * h // 4 * f, :].set(1.0)
  mask = samp.latent_mask_from_face_mask(face, (h, w), constraint.m_face)
  eta, spacing = float(config.sampler.eta), str(config.sampler.spacing)
  inversion_iters = int(config.sampler.inversion_iters)
  args = (
    params,
    schedule,
    jax.random.normal(ks[1], (1, h, w, c_lat)),
    cond(ks[2], 1),
    cond(ks[3], frames),
    cond(ks[4], 1),
    mask,
    ks[5],
    float(config.sampler.guidance),
    constraint,
  )

  # The jitted function `generate_latents_sharded` (tests, eval, benchmarks) runs, with the
  # frame batch unsharded: its static knobs fixed here, the step count varied.
  static = dict(
    denoise_apply=denoise,
    eta=eta,
    spacing=spacing,
    inversion_iters=inversion_iters,
    batch_sharding=None,
    return_trajectory=False,
  )

  hlo_chars = {}

  def measure(steps):
    jax.clear_caches()
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = samp.generate_latents_jit.lower(*args, steps=steps, **static)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*args))
    t3 = time.perf_counter()
    hlo_chars[steps] = len(compiled.as_text())
    return t1 - t0, t2 - t1, t3 - t2, c2 - c0

  measure(2)  # warm-up: one-off imports and lazy initialisation, not counted
  # Rounds interleave the step counts, so load from other processes hits them alike.
  all_runs = {steps: [] for steps in steps_list}
  for r in range(repeats):
    for steps in steps_list:
      all_runs[steps].append(measure(steps))
      lo, co, ru, cpu = all_runs[steps][-1]
      log(
        progress,
        f"round {r + 1}/{repeats} steps={steps:3d}: trace+lower {lo:6.2f} s  "
        f"compile {co:6.2f} s  (cpu {cpu:6.2f} s)  run {ru:6.3f} s",
      )
  res = {}
  for steps, runs in all_runs.items():
    res[steps] = dict(
      lower_s=min(r[0] for r in runs),
      compile_s=min(r[1] for r in runs),
      total_s=min(r[0] + r[1] for r in runs),
      run_s=min(r[2] for r in runs),
      cpu_s=min(r[3] for r in runs),
    )
    v = res[steps]
    log(
      progress,
      f"steps={steps:3d} (min of {repeats}): trace+lower {v['lower_s']:6.2f} s  "
      f"compile {v['compile_s']:6.2f} s  total {v['total_s']:6.2f} s  cpu "
      f"{v['cpu_s']:6.2f} s  run {v['run_s']:6.3f} s  HLO {hlo_chars[steps]} chars",
    )
  out = {
    "benchmark": "compile",
    "frames": frames,
    "latent_shape": [h, w, c_lat],
    "context": [ctx_len, ctx_dim],
    "sampler": {
      "eta": eta,
      "spacing": spacing,
      "guidance": float(config.sampler.guidance),
      "inversion_iters": inversion_iters,
      "constraint": {
        k: getattr(constraint, k) for k in ("strength", "schedule", "until", "m_face", "init")
      },
    },
    "repeats": repeats,
    "lower_s": {str(k): v["lower_s"] for k, v in res.items()},
    "compile_s": {str(k): v["compile_s"] for k, v in res.items()},
    "total_compile_s": {str(k): v["total_s"] for k, v in res.items()},
    "total_compile_cpu_s": {str(k): v["cpu_s"] for k, v in res.items()},
    "run_s": {str(k): v["run_s"] for k, v in res.items()},
    "compiled_hlo_chars": {str(k): hlo_chars[k] for k in res},
  }
  if 10 in res and 50 in res:
    out["ratio_50_over_10"] = res[50]["total_s"] / res[10]["total_s"]
    out["ratio_50_over_10_cpu"] = res[50]["cpu_s"] / res[10]["cpu_s"]
  return out


def train_step_compile_time(config, progress=None) -> dict:
  """Trace+lower and compile seconds of the train step (``training.loop.build_trainer``)
  from cold caches, on a synthetic batch of ``config.train.batch_size``."""
  log(progress, "compile: the train step (cold caches)")
  trainer = loop.build_trainer(config)
  batch = trainer.device_batch(synthetic_train_batch(config, int(config.train.batch_size)))
  jax.clear_caches()
  with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
    t0 = time.perf_counter()
    lowered = trainer.step_fn.lower(trainer.state, trainer.frozen, batch)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
  return {
    "lower_s": t1 - t0,
    "compile_s": t2 - t1,
    "total_s": t2 - t0,
    "batch": int(config.train.batch_size),
    "remat": bool(config.unet.remat),
  }


def run_compile_bench(
  config,
  *,
  steps_list: Sequence[int] = (10, 25, 50),
  frames: int = 4,
  repeats: int = 2,
  train_step: bool = True,
  progress=None,
) -> dict:
  """``sampler_compile_times`` plus (``train_step``) the train step's compile time under
  'train_step'."""
  res = sampler_compile_times(
    config, tuple(steps_list), frames=frames, repeats=repeats, progress=progress
  )
  if train_step:
    res["train_step"] = train_step_compile_time(config, progress)
  return res
