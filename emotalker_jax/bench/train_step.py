"""The real jitted train step (``training.loop.build_trainer``): step time, examples/s,
FLOPs/step, roofline fraction, MFU on a GPU, peak memory, with the UNet's remat on and off.

Peak memory is the device's ``peak_bytes_in_use`` on an accelerator, the process's peak RSS
(bytes, VmHWM, reset before each variant where the kernel allows) on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
import resource
import sys
import time

from flax import linen as nn
import jax
import numpy as np

from emotalker_jax.bench.common import (
  block,
  cost_flops,
  default_matmul_n,
  device_bf16_peak,
  interleaved_timings,
  log,
  make_matmul,
  memory_analysis,
  stats,
  with_overrides,
)
from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.models.text_encoder import load_text_encoder
from emotalker_jax.training import loop
from emotalker_jax.training.prompt_pool import pool_enabled
from emotalker_jax.training.step import (
  REF_LATENT_KEY,
  TEXT_STATES_KEY,
  TOKEN_KEYS,
  batch_spec,
  cache_reference_latents,
  region_loss_weights,
)


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
  return hwm <= rss + 16 * 2**20


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
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(r) * (1 if sys.platform == "darwin" else 1024)


def device_peak_bytes() -> int | None:
  try:
    ms = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - CPU backends may not implement it
    return None
  v = ms.get("peak_bytes_in_use")
  return int(v) if v is not None else None


# The pool size measured by ``compare_frozen_inputs`` when the config has none (the step's
# cost does not depend on it: the states arrive as an input either way).
PROMPT_POOL_COMPARED = 64


def cached_frozen_inputs(config) -> bool:
  """Whether the config passes in both frozen outputs (pooled text states and reference
  latents); a config with only one of them is compared against neither."""
  return pool_enabled(config) and cache_reference_latents(config)


def synthetic_train_batch(config, batch: int, seed: int = 0) -> dict:
  """A host batch of ``training.step.batch_spec(config)`` (what the pipeline yields): random
  frames in [-1, 1], audio features, Dirichlet emotion labels, {0, 1} region boxes and
  prompt strings in place of the tokens (``Trainer.device_batch`` tokenizes them)."""
  r = np.random.default_rng(int(seed))
  emo = r.dirichlet(np.ones(len(EMOTIONS)) * 0.3, batch).astype(np.float32)
  out = {"prompt": np.array([f"a little {EMOTIONS[i]}" for i in emo.argmax(1)])}
  for key, spec in batch_spec(config, batch).items():
    if key in TOKEN_KEYS or key == TEXT_STATES_KEY:  # device_batch makes them from prompts
      continue
    if key == REF_LATENT_KEY:  # device_batch encodes the reference frames, by their ids
      s = spec.shape[0], int(config.data.image_size), int(config.data.image_size), 3
      out["x_ref"] = r.uniform(-1, 1, s).astype(np.float32)
      out["ref_clip_id"], out["ref_frame"] = np.arange(batch), np.zeros(batch, np.int64)
      continue
    if key in ("emotion", "prompt_emotion"):
      out[key] = emo
    elif key == "audio_mel":
      out[key] = r.standard_normal(spec.shape).astype(np.float32)
    elif key in region_loss_weights(config):  # a random box per example
      box = np.zeros(spec.shape, np.float32)
      s = spec.shape[1]
      for i, (y, x) in enumerate(r.integers(0, s // 2, (batch, 2))):
        box[i, y : y + s // 2, x : x + s // 2] = 1.0
      out[key] = box
    else:
      out[key] = r.uniform(-1, 1, spec.shape).astype(np.float32)
  return out


def _train_variant(config, text, *, steps: int, warmup: int, mm_fn, mm_flops, progress):
  remat = bool(config.unet.remat)
  trainer = loop.build_trainer(config, text=text)
  batch = trainer.device_batch(synthetic_train_batch(config, int(config.train.batch_size)))
  log(progress, f"train-step: compiling (remat={remat})")
  with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
    t0 = time.perf_counter()
    lowered = trainer.step_fn.lower(trainer.state, trainer.frozen, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
  flops = cost_flops(compiled)
  mem = memory_analysis(compiled)
  state = trainer.state
  holder = {"state": state}

  def step():
    with jax.set_mesh(trainer.mesh), nn.logical_axis_rules(trainer.rules):
      holder["state"], metrics = compiled(holder["state"], trainer.frozen, batch)
    block((holder["state"].step, metrics["loss"]))
    return metrics

  rss_reset = reset_peak_rss()
  for _ in range(int(warmup)):
    step()
  times = interleaved_timings(
    {"matmul": mm_fn, "step": step}, steps, progress, label=f"train-step remat={remat}"
  )
  loss = float(step()["loss"])
  st = {k: stats(v) for k, v in times.items()}
  b = int(config.train.batch_size)
  rate = flops / st["step"]["median_s"]
  mm_rate = mm_flops / st["matmul"]["median_s"]
  peak = device_bf16_peak()
  dev_peak = device_peak_bytes() if jax.devices()[0].platform != "cpu" else None
  out = {
    "remat": remat,
    "batch": b,
    "num_devices": int(trainer.mesh.size),
    "step_time": st["step"],
    "step_s": st["step"]["median_s"],
    "examples_per_s": b / st["step"]["median_s"],
    "flops_per_step": flops,
    "achieved_flops_per_s": rate,
    "matmul_flops_per_s": mm_rate,
    "roofline_fraction": rate / mm_rate,
    "mfu": rate / peak if peak else None,
    "peak_memory_bytes": dev_peak if dev_peak is not None else peak_rss_bytes(),
    "peak_memory_source": (
      "device memory_stats peak_bytes_in_use (process-wide high water mark)"
      if dev_peak is not None
      else (
        "process peak RSS (VmHWM, reset before this variant's steps)"
        if rss_reset
        else "process peak RSS, not resettable here: includes everything this process ran before"
      )
    ),
    "xla_memory_analysis": mem,
    "lower_s": t1 - t0,
    "compile_s": t2 - t1,
    "final_loss": loss,
  }
  return out


def run_train_step_bench(
  config,
  *,
  remat: Sequence[bool] = (True, False),
  steps: int = 5,
  warmup: int = 1,
  batch: int | None = None,
  matmul_n: int | None = None,
  compare_frozen_inputs: bool = False,
  progress=None,
) -> dict:
  """The jitted train step of ``training.loop.build_trainer`` on a synthetic batch, per remat
  setting (remat on first: device peak memory is a process-wide high-water mark).

  ``compare_frozen_inputs``: also the first remat setting with the frozen networks' inputs
  the other way, so ``frozen_inputs`` holds both, measured in this run: 'in_step' (the text
  tower and the reference frames' encoding inside the step: train.prompt_pool_size 0,
  cache_reference_latents False) and 'cached' (both passed in, ``training/frozen_cache.py``;
  a pool of PROMPT_POOL_COMPARED when the config has none), and their ratios.

  FLOPs/step are XLA's count for the (per-device) compiled step; roofline fraction is
  achieved / a dense matmul timed alternately with the steps; peak memory is the device's
  peak bytes in use (GPU/TPU) or the process's peak RSS (CPU).
  """
  if batch:
    config = with_overrides(config, **{"train.batch_size": int(batch)})
  text = load_text_encoder(
    config.text.path or None, kind=config.text.encoder, max_length=int(config.text.max_length)
  )
  n = int(matmul_n or default_matmul_n())
  mm_fn, mm_flops, _ = make_matmul(n, str(config.dtype))
  variants = {}
  for r in remat:
    variants["on" if r else "off"] = _train_variant(
      with_overrides(config, **{"unet.remat": bool(r)}),
      text,
      steps=steps,
      warmup=warmup,
      mm_fn=mm_fn,
      mm_flops=mm_flops,
      progress=progress,
    )
  default = variants.get("on" if bool(config.unet.remat) else "off") or next(
    iter(variants.values())
  )
  frozen_inputs = None
  if compare_frozen_inputs:
    cached = cached_frozen_inputs(config)
    first = "on" if remat[0] else "off"
    other = with_overrides(
      config,
      **{
        "unet.remat": bool(remat[0]),
        "train.prompt_pool_size": 0 if cached else PROMPT_POOL_COMPARED,
        "train.cache_reference_latents": not cached,
      },
    )
    measured = _train_variant(
      other, text, steps=steps, warmup=warmup, mm_fn=mm_fn, mm_flops=mm_flops, progress=progress
    )
    fast, slow = (variants[first], measured) if cached else (measured, variants[first])
    frozen_inputs = {
      "remat": first,
      "in_step": slow,
      "cached": fast,
      "step_ratio_in_step_over_cached": slow["step_s"] / fast["step_s"],
      "flops_ratio_in_step_over_cached": slow["flops_per_step"] / fast["flops_per_step"],
    }
  return {
    "benchmark": "train_step",
    "batch": int(config.train.batch_size),
    "steps": int(steps),
    "matmul": {"n": n, "dtype": str(config.dtype)},
    "config_remat": bool(config.unet.remat),
    "examples_per_s": default["examples_per_s"],
    "step_s": default["step_s"],
    "flops_per_step": default["flops_per_step"],
    "roofline_fraction": default["roofline_fraction"],
    "mfu": default["mfu"],
    "remat": variants,
    "frozen_inputs": frozen_inputs,
  }
