"""Runs one benchmark by name with the CLI's options, or all of them recording as it goes."""

from __future__ import annotations

from emotalker_jax.bench.common import log, with_overrides, write_json
from emotalker_jax.bench.compile_time import run_compile_bench
from emotalker_jax.bench.gpu import run_gpu_bench
from emotalker_jax.bench.model_stats import model_stats
from emotalker_jax.bench.pipeline import run_pipeline_bench
from emotalker_jax.bench.sampler import run_sampler_bench
from emotalker_jax.bench.train_step import run_train_step_bench
from emotalker_jax.bench.unet import run_unet_bench

WHATS = ("sampler", "unet", "train-step", "compile", "pipeline", "gpu", "stats")
ALL_ORDER = ("unet", "train-step", "pipeline", "compile", "sampler")


def run_one(what: str, config, opts: dict, progress=None, prior: dict | None = None) -> dict:
  """Runs benchmark ``what`` with options ``opts`` (keys as the CLI's)."""
  prior = prior or {}
  if what == "sampler":
    return run_sampler_bench(
      config,
      batch=opts["batch"],
      steps=opts.get("steps"),
      repeats=opts["repeats"],
      warmup=opts["warmup"],
      torch_compile=opts.get("torch_compile", True),
      compile_backend=opts.get("compile_backend", "inductor"),
      seed=opts.get("seed", 0),
      progress=progress,
    )
  if what == "unet":
    return run_unet_bench(
      config,
      batch=opts["batch"],
      repeats=opts["repeats"],
      warmup=opts["warmup"],
      matmul_n=opts.get("matmul_n"),
      progress=progress,
    )
  if what == "train-step":
    return run_train_step_bench(
      config,
      remat=opts.get("remat", (True, False)),
      steps=opts["repeats"],
      warmup=opts["warmup"],
      batch=opts.get("train_batch"),
      matmul_n=opts.get("matmul_n"),
      compare_frozen_inputs=bool(opts.get("compare_frozen_inputs", False)),
      progress=progress,
    )
  if what == "compile":
    return run_compile_bench(
      config,
      steps_list=opts.get("compile_steps", (10, 25, 50)),
      frames=opts["batch"],
      repeats=opts.get("compile_repeats", 2),
      progress=progress,
    )
  if what == "pipeline":
    ts = prior.get("train-step") or {}
    cfg = config
    if opts.get("train_batch"):
      cfg = with_overrides(config, **{"train.batch_size": int(opts["train_batch"])})
    return run_pipeline_bench(
      cfg,
      workers=opts.get("workers", (0, 2)),
      batches=opts.get("pipeline_batches", 20),
      data_dir=opts.get("data_dir"),
      train_examples_per_s=ts.get("examples_per_s"),
      photo_tree=bool(opts.get("photo_tree", False)),
      pod_hosts=opts.get("pod_hosts"),
      pod_step_s=opts.get("pod_step_s"),
      progress=progress,
    )
  if what == "gpu":
    return run_gpu_bench(
      config,
      batch=opts["batch"],
      steps=opts.get("steps") or 25,
      repeats=opts["repeats"],
      warmup=opts["warmup"],
      train_batch=opts.get("train_batch"),
      matmul_n=opts.get("matmul_n"),
      seed=opts.get("seed", 0),
      progress=progress,
    )
  if what == "stats":
    return model_stats(
      config,
      opts["batch"],
      opts.get("size"),
      opts.get("context_len"),
      flops=opts.get("flops", True),
    )
  raise ValueError(f"unknown benchmark {what!r}; use one of {WHATS + ('all', 'report')}")


def run_all(config, opts: dict, *, base: dict, json_path: str | None, progress=None) -> dict:
  """Every benchmark in ALL_ORDER; the JSON is rewritten after each section, a failing
  section records its error and the others still run."""
  out = dict(base, benchmark="all", results={})
  for what in ALL_ORDER:
    log(progress, f"== {what}")
    try:
      out["results"][what] = run_one(what, config, opts, progress, prior=out["results"])
    except Exception as e:  # noqa: BLE001 - one section's failure must not lose the others
      out["results"][what] = {
        "benchmark": what.replace("-", "_"),
        "error": f"{type(e).__name__}: {str(e)[:2000]}",
      }
      log(progress, f"{what} failed: {out['results'][what]['error'][:300]}")
    if json_path:
      write_json(json_path, out)
  return out
