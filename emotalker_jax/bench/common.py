"""What every benchmark shares: the machine and library versions, timing statistics,
interleaved timing, XLA cost/memory figures, the dense-matmul reference rate, strict JSON.

Timings are seconds (``time.perf_counter``); FLOPs are XLA's cost-analysis counts (a
multiply-add counts 2); memory is bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import copy
from importlib import metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

# Vendor dense bf16 peaks (FLOP/s), by a substring of the device name (first match wins).
VENDOR_BF16_PEAK = (
  ("H100 PCIe", 756e12),
  ("H100", 989e12),  # SXM: 989.4 TFLOP/s dense bf16
  ("H200", 989e12),
  ("GH200", 989e12),
  ("A100", 312e12),
  ("L40S", 362e12),
)


def log(progress, msg: str) -> None:
  """Calls ``progress(msg)`` unless progress is None (benchmarks run quietly by default)."""
  if progress is not None:
    progress(msg)


def stderr(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# -----------------------------------------------------------------------------------------
# Machine, versions
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
  dev = jax.devices()[0]
  try:
    affinity = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    affinity = os.cpu_count()
  info = {
    "cpu_model": cpu_model(),
    "cpu_count": os.cpu_count(),
    "cpu_affinity": affinity,
    "platform": dev.platform,
    "device_kind": dev.device_kind,
    "num_devices": jax.device_count(),
    "gpu": dev.device_kind if dev.platform == "gpu" else None,
    "host": platform.platform(),
  }
  try:
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    pass
  return info


def versions() -> dict:
  """Versions of python, numpy, jax, jaxlib, flax and (when installed) torch, diffusers."""
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


def device_bf16_peak() -> float | None:
  """The vendor bf16 peak of JAX's first device when it is a known GPU, else None."""
  dev = jax.devices()[0]
  return vendor_bf16_peak(dev.device_kind) if dev.platform == "gpu" else None


def config_summary(config, overrides: Sequence[str] = ()) -> dict:
  return {"config": str(config.name), "overrides": list(overrides), "dtype": str(config.dtype)}


def header(config, overrides: Sequence[str], command: str, note: str | None = None) -> dict:
  """What every JSON carries: machine, versions, config, command (+ an optional note)."""
  out = {
    "machine": machine_info(),
    "versions": versions(),
    **config_summary(config, overrides),
    "command": command,
    "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    "env": {
      k: os.environ.get(k)
      for k in ("XLA_FLAGS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "JAX_PLATFORMS")
    },
  }
  if note:
    out["note"] = note
  return out


def with_overrides(config, **kv):
  """A deep copy of ``config`` with dotted keys set, e.g. ``{'unet.remat': False}``."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for key, v in kv.items():
      node = cfg
      *path, last = key.split(".")
      for p in path:
        node = node[p]
      node[last] = v
  return cfg


# -----------------------------------------------------------------------------------------
# Timing statistics
# -----------------------------------------------------------------------------------------


def stats(times: Sequence[float]) -> dict:
  """{'median_s', 'min_s', 'max_s', 'n', 'all_s'} of a list of seconds."""
  t = [float(x) for x in times]
  return {
    "median_s": statistics.median(t),
    "min_s": min(t),
    "max_s": max(t),
    "n": len(t),
    "all_s": [round(x, 6) for x in t],
  }


def interleaved_timings(
  fns: dict[str, Callable[[], Any]], repeats: int, progress=None, label: str = "timing"
) -> dict[str, list[float]]:
  """Runs every fn once per round, in order, for ``repeats`` rounds (A B A B ...).

  Each fn must block until its work is done (the result is discarded). Returns
  {name: [seconds per round]}.
  """
  out = {k: [] for k in fns}
  for _ in tqdm(range(int(repeats)), desc=label, disable=progress is None, leave=False):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      out[name].append(time.perf_counter() - t0)
  return out


def repeat_fn(fn: Callable[[], Any], min_s: float = 0.2, max_inner: int = 64):
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
# XLA figures of a compiled program
# -----------------------------------------------------------------------------------------


def cost_flops(compiled) -> float:
  """XLA's FLOP count of a compiled program (nan when the backend gives none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float((cost or {}).get("flops", float("nan")))


def memory_analysis(compiled) -> dict:
  """The compiled program's buffer sizes in bytes ({} where the backend has none)."""
  try:
    mem = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    return {}
  if mem is None:
    return {}
  fields = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
    "alias_size_in_bytes",
  )
  return {f: int(getattr(mem, f, 0) or 0) for f in fields}


def block(x):
  return jax.block_until_ready(x)


def unbox(tree):
  return nn.meta.unbox(tree)


# -----------------------------------------------------------------------------------------
# Dense matmul rate (the roofline's compute ceiling, measured in the same run)
# -----------------------------------------------------------------------------------------


def default_matmul_n() -> int:
  return 8192 if jax.devices()[0].platform == "gpu" else 2048


def make_matmul(n: int, dtype: str = "float32", seed: int = 0):
  """(fn() -> blocks on one jitted n x n @ n x n matmul, flops per call (2 n^3), the
  compiled program's XLA-counted flops)."""
  ka, kb = jax.random.split(jax.random.key(seed))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
  compiled = jax.jit(lambda x, y: x @ y).lower(a, b).compile()
  block(compiled(a, b))
  return (lambda: block(compiled(a, b))), 2.0 * n**3, cost_flops(compiled)


# -----------------------------------------------------------------------------------------
# Strict JSON
# -----------------------------------------------------------------------------------------


def _clean(obj):
  """NaN/inf -> None, numpy scalars -> Python, tuples -> lists (for strict JSON)."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json(path: str, result: dict) -> None:
  """Writes ``result`` as strict JSON (NaN -> null), creating the folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as fh:
    json.dump(_clean(result), fh, indent=2, allow_nan=False)
    fh.write("\n")
  os.replace(tmp, path)
