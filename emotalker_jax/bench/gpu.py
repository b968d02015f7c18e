"""The three GPU goals in one run (what ``bench/gpu.sh`` measures): the train step's MFU,
the guided sampler's frames/s and the PyTorch/JAX sampler time ratio.

On a GPU of known peak the MFU is achieved FLOP/s / the vendor's dense bf16 peak; elsewhere
(a CPU smoke run at tiny size) it is achieved / the dense matmul FLOP/s measured in the same
rounds, and ``mfu_reference`` says which.
"""

from __future__ import annotations

from emotalker_jax.bench.common import device_bf16_peak, log
from emotalker_jax.bench.sampler import run_sampler_bench
from emotalker_jax.bench.train_step import run_train_step_bench

# The goals (docs/BENCHMARKS.md): train-step MFU, sampler frames/s at 256x256.
GOAL_MFU = 0.45
GOAL_FRAMES_PER_S = 25.0


def run_gpu_bench(
  config,
  *,
  batch: int = 32,
  steps: int = 25,
  repeats: int = 3,
  warmup: int = 1,
  train_batch: int | None = None,
  matmul_n: int | None = None,
  seed: int = 0,
  progress=None,
) -> dict:
  """The train step with the config's remat setting (``repeats`` timed steps) and the
  sampler at ``batch`` frames, ``steps`` guided steps, JAX vs PyTorch eager (no
  torch.compile: inductor takes minutes at base256).

  Returns {'benchmark': 'gpu', 'train_step_mfu', 'mfu_reference', 'sampler_frames_per_s',
  'ratio_torch_eager_over_jax' (PyTorch time / JAX time = JAX frames/s / PyTorch frames/s;
  > 1: JAX faster), 'image_size', 'steps', 'goals', 'results': {'train-step', 'sampler'}}.
  """
  log(progress, "== train-step")
  ts = run_train_step_bench(
    config,
    remat=(bool(config.unet.remat),),
    steps=repeats,
    warmup=warmup,
    batch=train_batch,
    matmul_n=matmul_n,
    progress=progress,
  )
  log(progress, "== sampler")
  sp = run_sampler_bench(
    config,
    batch=batch,
    steps=steps,
    repeats=repeats,
    warmup=warmup,
    torch_compile=False,
    seed=seed,
    progress=progress,
  )
  peak = device_bf16_peak()
  mfu = ts["mfu"] if peak else ts["roofline_fraction"]
  fps = sp["jax_frames_per_s"]
  return {
    "benchmark": "gpu",
    "train_step_mfu": mfu,
    "mfu_reference": (
      f"vendor dense bf16 peak {peak:.4g} FLOP/s"
      if peak
      else "dense matmul FLOP/s measured in the same rounds (no known GPU peak)"
    ),
    "sampler_frames_per_s": fps,
    "ratio_torch_eager_over_jax": sp["ratio_torch_eager_over_jax"],
    "image_size": int(config.data.image_size),
    "steps": int(steps),
    "batch": int(batch),
    "train_batch": ts["batch"],
    "goals": {
      "train_step_mfu_ge_0.45": mfu >= GOAL_MFU,
      "sampler_25_frames_per_s_at_256_25_steps": (
        fps >= GOAL_FRAMES_PER_S and int(config.data.image_size) == 256 and int(steps) == 25
      ),
    },
    "results": {"train-step": ts, "sampler": sp},
  }


def summary_lines(r: dict) -> list[str]:
  """The printed summary of a ``run_gpu_bench`` result."""
  g = r["goals"]
  return [
    f"train-step MFU {r['train_step_mfu']:.3f} ({r['mfu_reference']}; batch "
    f"{r['train_batch']}) goal >= {GOAL_MFU}: "
    f"{'met' if g['train_step_mfu_ge_0.45'] else 'not met'}",
    f"sampler {r['sampler_frames_per_s']:.4g} frames/s at {r['image_size']}x"
    f"{r['image_size']}, {r['steps']} guided steps, batch {r['batch']} goal >= "
    f"{GOAL_FRAMES_PER_S:g}: "
    f"{'met' if g['sampler_25_frames_per_s_at_256_25_steps'] else 'not met'}",
    f"sampler PyTorch eager time / JAX time {r['ratio_torch_eager_over_jax']:.3f} "
    "(> 1: JAX faster)",
  ]
