"""Input-pipeline examples/s (``input_pipeline.pipeline.benchmark``) per grain worker count
vs the train step's consumption rate (ratio > 1: the input keeps up)."""

from __future__ import annotations

from collections.abc import Sequence
import os

from emotalker_jax.bench.common import log
from emotalker_jax.bench.train_step import run_train_step_bench
from input_pipeline import pipeline as pl
from input_pipeline import synthetic_talk


def run_pipeline_bench(
  config,
  *,
  workers: Sequence[int] = (0, 2),
  batches: int = 20,
  data_dir: str | None = None,
  train_examples_per_s: float | None = None,
  train_steps: int = 3,
  progress=None,
) -> dict:
  """Training-pipeline examples/s per grain worker count vs the train step's examples/s
  (measured here unless given). ratio > 1: the pipeline keeps up with the step."""
  name = pl.dataset_name(config)
  data_dir = data_dir or config.data.data_dir
  folder = os.path.join(data_dir, *name.split("/"))
  if not os.path.isdir(folder):
    if not name.startswith("synthetic_talk"):
      raise FileNotFoundError(
        f"dataset {name} not found under {data_dir} ({folder}); build "
        "the TFDS dataset first (see input_pipeline/)"
      )
    size = name.split("/")[1] if "/" in name else "tiny"
    log(
      progress,
      f"pipeline: {name} not under {data_dir}: building it (as `emotalker synth "
      f"--out {data_dir} --size {size}` does)",
    )
    synthetic_talk.get_builder(size, data_dir).download_and_prepare()
  log(progress, f"pipeline: {name}, workers {list(workers)}, batch {int(config.train.batch_size)}")
  rows = pl.benchmark(
    name,
    data_dir,
    "train",
    workers=tuple(int(w) for w in workers),
    batch_size=int(config.train.batch_size),
    batches=int(batches),
    image_size=int(config.data.image_size),
  )
  measured_here = train_examples_per_s is None
  if measured_here:
    ts = run_train_step_bench(
      config, remat=(bool(config.unet.remat),), steps=train_steps, progress=progress
    )
    train_examples_per_s = ts["examples_per_s"]
  best = max(rows, key=lambda r: r["examples_per_s"])
  return {
    "benchmark": "pipeline",
    "dataset": name,
    "batch": int(config.train.batch_size),
    "image_size": int(config.data.image_size),
    "per_workers": rows,
    "pipeline_examples_per_s": best["examples_per_s"],
    "best_workers": best["workers"],
    "train_step_examples_per_s": train_examples_per_s,
    "train_step_measured_here": measured_here,
    "ratio_pipeline_over_train_step": best["examples_per_s"] / train_examples_per_s,
  }
