"""Benchmarks: JAX vs PyTorch on the same model, FLOPs and roofline, compile time, memory.

    emotalker bench sampler|unet|train-step|compile|pipeline|gpu|stats|all \
        --config configs/X.py [--config.a=b ...] --json OUT.json
    emotalker bench report --json-dir docs/bench --out docs/BENCHMARKS.md
    bash emotalker_jax/bench/gpu.sh [--wheels DIR]      # the GPU goals, one JSON

Every result is a JSON-able dict carrying the machine (``common.machine_info``), the library
versions (``common.versions``), the config name and overrides, batch and dtype. Timings are
medians (with min and max) of ``repeats`` runs after ``warmup`` runs; when two programs are
compared they run alternately in one process (A B A B ...), so load from other processes
hits both alike, and the ratio is taken from the same run.

One module per benchmark:

* ``sampler``: frames/s of the whole guided sampler of METHOD.md, our jitted ``lax.scan``
  sampler (``diffusion.sampler.generate_latents`` + decode) vs the same model in PyTorch
  (``torch_ref``: diffusers UNet/VAE with converted weights, ``DDIMScheduler``; eager and
  ``torch.compile``); outputs compared before any timing (``max_abs_output_diff``).
* ``unet``: one UNet forward and forward+backward: XLA-counted FLOPs, achieved FLOP/s, the
  fraction of this machine's dense matmul FLOP/s (``roofline_fraction``), MFU on a GPU.
* ``train_step``: the real jitted train step (``training.loop.build_trainer``): step time,
  examples/s, FLOPs/step, roofline fraction, MFU on GPU, peak memory, remat on and off.
* ``compile_time``: the generation's compile time at 10/25/50 steps and the train step's.
* ``pipeline``: input pipeline examples/s vs the train step's consumption rate.
* ``gpu``: the three GPU goals in one run (train-step MFU, sampler frames/s, ratio).
* ``model_stats``: parameter counts and the FLOPs of one UNet forward (``bench stats``).
* ``report``: docs/BENCHMARKS.md from the JSON files.

The JSON keys checks read are fixed: sampler ``jax_frames_per_s``,
``torch_eager_frames_per_s``, ``torch_compile_frames_per_s``,
``ratio_torch_eager_over_jax`` (PyTorch time / JAX time; > 1: JAX is faster),
``max_abs_output_diff``; unet ``flops``, ``achieved_flops_per_s``, ``matmul_flops_per_s``,
``roofline_fraction``; compile ``compile_s`` (per step count) and ``ratio_50_over_10``;
gpu ``train_step_mfu``, ``sampler_frames_per_s``, ``ratio_torch_eager_over_jax``.
"""

from emotalker_jax.bench.common import (
  header,
  interleaved_timings,
  make_matmul,
  stats,
  stderr,
  write_json,
)
from emotalker_jax.bench.compile_time import run_compile_bench
from emotalker_jax.bench.gpu import run_gpu_bench
from emotalker_jax.bench.pipeline import run_pipeline_bench
from emotalker_jax.bench.report import render_report, write_report
from emotalker_jax.bench.sampler import run_sampler_bench
from emotalker_jax.bench.suite import ALL_ORDER, WHATS, run_all, run_one
from emotalker_jax.bench.train_step import peak_rss_bytes, reset_peak_rss, run_train_step_bench
from emotalker_jax.bench.unet import run_unet_bench

__all__ = [
  "header",
  "interleaved_timings",
  "make_matmul",
  "stats",
  "stderr",
  "write_json",
  "run_compile_bench",
  "run_gpu_bench",
  "run_pipeline_bench",
  "render_report",
  "write_report",
  "run_sampler_bench",
  "ALL_ORDER",
  "WHATS",
  "run_all",
  "run_one",
  "peak_rss_bytes",
  "reset_peak_rss",
  "run_train_step_bench",
  "run_unet_bench",
]
