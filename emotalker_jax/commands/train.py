"""`emotalker train --config configs/X.py --workdir DIR [--config.a.b=v ...]`.

Resumes automatically from DIR/checkpoints; SIGTERM saves and exits (preemption).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/")
  p.add_argument(
    "--stage",
    choices=("diffusion", "autoencoder"),
    default="diffusion",
    help="'autoencoder': stage 1, train E/D on the frames and write "
    "WORKDIR/autoencoder; 'diffusion' (default): EmoTalker itself",
  )
  p.add_argument(
    "--max-steps",
    type=int,
    default=None,
    help="stop after this many steps in this run (checkpointed; resume later)",
  )
  p.add_argument("--profile", action="store_true", help="jax.profiler trace of steps 2-5")
  p.add_argument(
    "--distributed",
    choices=("auto", "on", "off"),
    default="auto",
    help="jax.distributed.initialize() for multi-host jobs (default: auto)",
  )
  p.epilog = "config: --config configs/tiny.py plus --config.train.lr=1e-4 style overrides"


def run(args) -> int:
  import json
  import logging

  from emotalker_jax import parallel
  from emotalker_jax.config_utils import config_from_args

  config, _, _ = config_from_args(args.config_args)
  parallel.maybe_initialize_distributed(args.distributed)  # before any other JAX call
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
  logging.getLogger("emotalker_jax").setLevel(logging.INFO)
  if args.stage == "autoencoder":
    from emotalker_jax.training.autoencoder import train_autoencoder

    result = train_autoencoder(config, args.workdir, max_steps=args.max_steps)
  else:
    from emotalker_jax.training.loop import train

    result = train(config, args.workdir, max_steps=args.max_steps, profile=args.profile)
  print(json.dumps({"workdir": args.workdir, **result}))
  return 0
