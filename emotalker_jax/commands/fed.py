"""``emotalker fed --out DIR [--size N] [--seed S]``: write the FED corpus.

Writes the TFDS dataset ``fed`` (array_record) under DIR (``DIR/fed/n<N>_seed<S>/<ver>/``)
and a JSONL copy, ``DIR/fed.jsonl`` (one record per line, with its split), then prints
the counts per split and category. Label rules: docs/FED.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from emotalker_jax.fed import DEFAULT_SIZE

  parser.add_argument("--out", required=True, help="output folder (TFDS data_dir + fed.jsonl)")
  parser.add_argument(
    "--size",
    type=int,
    default=DEFAULT_SIZE,
    help=f"records over train/validation/test (80/10/10); default {DEFAULT_SIZE}",
  )
  parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
  parser.add_argument("--no-tfds", action="store_true", help="write only the JSONL copy")


def run(args) -> int:
  from tqdm import tqdm

  from emotalker_jax import fed

  if args.size < 3:
    raise ValueError(f"--size {args.size} is too small; give at least 3 (one record per split)")
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise ValueError(f"--out {args.out!r} is a file; give a folder path")
  os.makedirs(args.out, exist_ok=True)
  sizes = fed.split_sizes(args.size)
  records = {}
  total = sum(sizes.values())
  with tqdm(total=total, desc="FED: generating", unit="prompt", file=sys.stderr) as bar:
    for split, n in sizes.items():
      records[split] = fed.generate_split(split, n, args.seed)
      bar.update(n)
  jsonl = os.path.join(args.out, "fed.jsonl")
  fed.write_jsonl([r for s in records for r in records[s]], jsonl)
  where = jsonl
  if not args.no_tfds:
    import tensorflow_datasets as tfds

    from input_pipeline import fed_tfds

    tfds.disable_progress_bar()
    with (
      tqdm(total=total, desc="FED: writing TFDS", unit="prompt", file=sys.stderr) as bar,
      contextlib.redirect_stdout(sys.stderr),
    ):  # tfds prints its own notes on stdout
      b = fed_tfds.builder(args.out, args.size, args.seed, records=records, progress=bar.update)
      b.download_and_prepare()
    where = f"{b.data_dir} and {jsonl}"
  counts = {s: dict(collections.Counter(r.category for r in records[s])) for s in records}
  print(
    json.dumps(
      {"out": where, "size": args.size, "seed": args.seed, "splits": sizes, "categories": counts},
      indent=1,
    )
  )
  return 0
