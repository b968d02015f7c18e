"""``emotalker eib-train --out DIR [--config configs/tiny.py] [--steps N] [--fed DIR]``.

Trains the EIB's intensity head on FED (with the text tower's top config.eib.finetune_layers
layers) and writes it to DIR (checkpoint, config.json, eib.json, metrics.json, and the
tuned tower DIR/text_encoder when finetune_layers > 0); ``emotalker_jax.training.eib`` is the
trainer and says what each step does. Prints the summary figures as JSON.
"""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "configs/tiny.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", required=True, help="output folder for the trained EIB")
  parser.add_argument(
    "--steps", type=int, default=None, help="training steps (default: config.eib.steps)"
  )
  parser.add_argument(
    "--fed",
    default=None,
    help="folder with fed.jsonl from `emotalker fed` (default: generate the "
    "corpus in memory from config.eib.fed_size / fed_seed)",
  )
  parser.add_argument(
    "--batch-size",
    type=int,
    default=None,
    help="examples per step (default: config.eib.batch_size)",
  )
  parser.add_argument(
    "--encode-batch",
    type=int,
    default=256,
    help="prompts per text-encoder call when caching features",
  )
  parser.add_argument(
    "--config",
    dest="_config_placeholder",
    default=None,
    help=f"config file (default {DEFAULT_CONFIG}); --config.a.b=v overrides",
  )


def run(args) -> int:
  import json

  from emotalker_jax.config_utils import config_from_args
  from emotalker_jax.training.eib import train_eib

  config, path, overrides = config_from_args(args.config_args, DEFAULT_CONFIG)
  summary = train_eib(
    config,
    args.out,
    steps=args.steps,
    batch_size=args.batch_size,
    fed_dir=args.fed,
    encode_batch=args.encode_batch,
    config_path=path,
    overrides=overrides,
  )
  print(json.dumps(summary, indent=1))
  return 0
