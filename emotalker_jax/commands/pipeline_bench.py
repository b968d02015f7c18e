"""``emotalker pipeline-bench [--dataset synthetic_talk/tiny] [--workers 0,1,2] [--json OUT]``.

Throughput of the grain training pipeline alone (examples/s per worker count, after 5
warm-up batches; ``input_pipeline.pipeline.benchmark_report``). A missing synthetic_talk
dataset is built under ``--data_dir`` first. ``emotalker bench pipeline`` compares the
pipeline with the train step of a config instead.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--dataset", default="synthetic_talk/tiny")
  p.add_argument(
    "--data_dir",
    default="data/tfds",
    help="TFDS data dir; synthetic_talk is built there first if missing",
  )
  p.add_argument("--split", default="train")
  p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--batches", type=int, default=50)
  p.add_argument("--image_size", type=int, default=None)
  p.add_argument(
    "--cache_mb",
    type=float,
    default=256.0,
    help="per-process clip cache (0: every example decodes its clips)",
  )
  p.add_argument(
    "--prompt",
    choices=("default", "simple"),
    default="default",
    help="default: FED prompts (fed.describe) when available; simple: simple_prompt",
  )
  p.add_argument("--json", default=None, help="also write the figures to this JSON file")


def run(args) -> int:
  import json
  import os

  from input_pipeline.pipeline import benchmark_report

  try:
    workers = [int(w) for w in args.workers.split(",")]
  except ValueError:
    raise ValueError(f"--workers {args.workers!r}: expected comma-separated integers") from None
  out = benchmark_report(
    args.dataset,
    args.data_dir,
    args.split,
    workers,
    args.batch_size,
    args.batches,
    args.image_size,
    args.cache_mb,
    args.prompt,
  )
  for r in out["results"]:
    print(
      f"workers={r['workers']}: {r['examples_per_s']} examples/s "
      f"(batch {r['batch_size']}, {r['batches']} batches, cache {r['cache_mb']} MiB, "
      f"startup {r['startup_s']} s)"
    )
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)
  return 0
