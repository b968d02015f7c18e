"""Compile time of the whole generation (inversion + guided constrained DDIM) vs step count.

    python -m emotalker_jax.diffusion.compile_bench --config configs/tiny.py --json OUT.json

Compiles ``sampler.generate_latents`` (the cached jitted function that ``emotalker generate``
runs: DDIM inversion of the source, CFG with one batched denoiser call, the eq. (6)
constraint) for 10, 25 and 50 steps, each from cold caches (``jax.clear_caches()``), and
prints trace+lower and XLA compile seconds (wall, and process CPU seconds, which shared
machines disturb less), one run's seconds, the compiled HLO's size, and
``ratio_50_over_10`` of the total compile times (min over ``--repeats`` interleaved rounds). The step loops are ``lax.scan``s, so the ratio should stay near 1
(target <= 1.2). The denoiser is the config's UNet (``models/unet.py``) with random
weights, or a small conv stand-in when that module is not available.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _standin_denoiser(config):
  """A small conv denoiser with time and context inputs (used when no UNet module exists)."""
  import flax.linen as nn
  import jax.numpy as jnp

  class StandIn(nn.Module):
    out_channels: int
    width: int = 32

    @nn.compact
    def __call__(self, sample, timesteps, context, train: bool = False):
      del train
      t = jnp.asarray(timesteps, jnp.float32)[:, None] / 1000.0
      temb = nn.Dense(self.width)(jnp.concatenate([jnp.sin(t * 10.0), jnp.cos(t * 10.0)], -1))
      cemb = nn.Dense(self.width)(context.mean(axis=1))
      h = nn.Conv(self.width, (3, 3))(sample)
      h = nn.silu(h + (temb + cemb)[:, None, None])
      h = nn.silu(nn.Conv(self.width, (3, 3))(h))
      return nn.Conv(self.out_channels, (3, 3))(h)

  return StandIn(out_channels=config.unet.out_channels), "standin_conv"


def _build_denoiser(config):
  try:
    from emotalker_jax.models.unet import build_unet
  except ImportError:
    return _standin_denoiser(config)
  return build_unet(config), "unet"


def _machine() -> dict:
  import jax
  import flax
  import jaxlib
  dev = jax.devices()[0]
  return {"platform": dev.platform, "device_kind": dev.device_kind,
          "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
          "python": platform.python_version(), "host": platform.platform(),
          "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                       "flax": flax.__version__}}


def run_bench(config, steps_list=(10, 25, 50), frames: int = 4, repeats: int = 3,
              seed: int = 0, progress=print) -> dict:
  """Measures compile (and one run) time of the generation function for each step count.

  Returns a JSON-able dict; ``compile_s[str(steps)]`` is the min over ``repeats`` of
  trace+lower+compile seconds from cold caches.
  """
  import jax
  import jax.numpy as jnp
  import flax.linen as nn

  from emotalker_jax.diffusion import sampler as samp
  from emotalker_jax.diffusion import schedule as sched_lib

  model, kind = _build_denoiser(config)
  f = 2 ** (len(config.autoencoder.block_out_channels) - 1)
  h = w = config.data.image_size // f
  c_lat = config.autoencoder.latent_channels
  c_sp = config.unet.in_channels - c_lat
  ctx_len = config.audio.tokens_per_frame + config.eib.num_emotions + config.eib.num_text_tokens
  ctx_dim = config.context_dim

  ks = jax.random.split(jax.random.key(seed), 8)
  sample0 = jnp.zeros((1, h, w, config.unet.in_channels), jnp.float32)
  params = nn.unbox(model.init(ks[0], sample0, jnp.zeros((1,), jnp.int32),
                               jnp.zeros((1, ctx_len, ctx_dim), jnp.float32)))["params"]

  def cond(key, b):
    k1, k2 = jax.random.split(key)
    return {"spatial": jax.random.normal(k1, (b, h, w, c_sp)),
            "context": jax.random.normal(k2, (b, ctx_len, ctx_dim))}

  denoise_apply = samp.concat_condition_denoiser(
      lambda p, x, t, ctx: model.apply({"params": p}, x, t, ctx))
  schedule = sched_lib.from_config(config.diffusion)
  constraint = samp.ConstraintConfig.from_config(config.sampler.constraint)
  face = jnp.zeros((config.data.image_size,) * 2).at[h // 4 * f: 3 * h // 4 * f, :].set(1.0)
  mask = samp.latent_mask_from_face_mask(face, (h, w), constraint.m_face)
  args = (params, schedule, jax.random.normal(ks[1], (1, h, w, c_lat)), cond(ks[2], 1),
          cond(ks[3], frames), cond(ks[4], 1), mask, ks[5], float(config.sampler.guidance),
          constraint)
  static = dict(denoise_apply=denoise_apply, eta=float(config.sampler.eta),
                spacing=config.sampler.spacing,
                inversion_iters=int(config.sampler.get("inversion_iters", 0)),
                batch_sharding=None, return_trajectory=False)

  def measure(steps):
    jax.clear_caches()
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = samp._generate_jit.lower(*args, steps=steps, **static)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    out = compiled(*args)
    jax.block_until_ready(out)
    t3 = time.perf_counter()
    hlo_chars[steps] = len(compiled.as_text())
    return t1 - t0, t2 - t1, t3 - t2, c2 - c0

  hlo_chars = {}
  measure(2)   # warm-up: one-off imports and lazy initialisation, not counted
  # Rounds interleave the step counts, so load from other processes hits them alike.
  all_runs = {steps: [] for steps in steps_list}
  for r in range(repeats):
    for steps in steps_list:
      all_runs[steps].append(measure(steps))
      lo, co, ru, cpu = all_runs[steps][-1]
      progress(f"round {r + 1}/{repeats} steps={steps:3d}: trace+lower {lo:6.2f} s  "
               f"compile {co:6.2f} s  (cpu {cpu:6.2f} s)  run {ru:6.3f} s")
  res = {}
  for steps, runs in all_runs.items():
    lower = min(r[0] for r in runs)
    comp = min(r[1] for r in runs)
    total = min(r[0] + r[1] for r in runs)
    run = min(r[2] for r in runs)
    cpu = min(r[3] for r in runs)
    res[steps] = dict(lower_s=lower, compile_s=comp, total_s=total, run_s=run, cpu_s=cpu)
    progress(f"steps={steps:3d} (min of {repeats}): trace+lower {lower:6.2f} s  "
             f"compile {comp:6.2f} s  total {total:6.2f} s  cpu {cpu:6.2f} s  run {run:6.3f} s  "
             f"HLO {hlo_chars[steps]} chars")
  out = {
      "benchmark": "sampler_compile_time",
      "machine": _machine(),
      "config": config.get("name", "?"),
      "denoiser": kind,
      "frames": frames, "latent_shape": [h, w, c_lat], "context": [ctx_len, ctx_dim],
      "sampler": {"eta": static["eta"], "spacing": static["spacing"],
                  "guidance": float(config.sampler.guidance),
                  "inversion_iters": static["inversion_iters"],
                  "constraint": {k: getattr(constraint, k) for k in
                                 ("strength", "schedule", "until", "m_face", "init")}},
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


def main(argv=None) -> int:
  from emotalker_jax.config_utils import load_config, split_config_args
  argv = list(sys.argv[1:] if argv is None else argv)
  config_args, rest = split_config_args(argv)
  p = argparse.ArgumentParser(prog="python -m emotalker_jax.diffusion.compile_bench",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--json", default=None, help="write the results here as JSON")
  p.add_argument("--steps", default="10,25,50", help="comma-separated step counts")
  p.add_argument("--frames", type=int, default=4, help="frames per batch")
  p.add_argument("--repeats", type=int, default=3,
                 help="rounds of compiles per step count (min taken)")
  args = p.parse_args(rest)
  path = next((a.split("=", 1)[1] for a in config_args if a.startswith("--config=")),
              "configs/tiny.py")
  overrides = [a for a in config_args if not a.startswith("--config=")]
  try:
    config = load_config(path, overrides)
    steps = tuple(int(s) for s in args.steps.split(","))
  except (ValueError, FileNotFoundError) as e:
    print(f"compile_bench: error: {e}", file=sys.stderr)
    return 2
  result = run_bench(config, steps, frames=args.frames, repeats=args.repeats)
  if "ratio_50_over_10" in result:
    print(f"ratio_50_over_10 = {result['ratio_50_over_10']:.3f} (wall; process CPU time: "
          f"{result['ratio_50_over_10_cpu']:.3f})")
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
      json.dump(result, fh, indent=2)
    print(f"wrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
