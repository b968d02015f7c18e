"""``emotalker judge train|evaluate``: the judge network that the evaluation reads faces with.

  emotalker judge train --size tiny --out data/judge_tiny [--data-dir data/tfds]
  emotalker judge evaluate --judge data/judge_tiny [--data-dir data/tfds]

``train`` renders frames of reserved identities, trains a judge, saves it to OUT
(params.safetensors + config.json) and, unless ``--no-eval``, writes its held-out figures
to OUT/heldout.json and prints them as markdown; ``evaluate`` does the latter for a trained
judge. The trainer is ``emotalker_jax.training.judge``, the model
``emotalker_jax.evaluation.judge``.
"""

from __future__ import annotations

import argparse
import os
import sys

# The judge sizes of emotalker_jax.evaluation.judge.SIZES, spelt out so that building the
# parser does not import JAX (tests/test_judge.py checks that the two agree).
JUDGE_SIZES = ("tiny", "small")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from input_pipeline.synthetic.sizes import SIZES as DATA_SIZES

  sub = parser.add_subparsers(dest="judge_command", metavar="{train,evaluate}", required=True)
  t = sub.add_parser("train", help="render frames, train a judge, evaluate it on held-out ids")
  t.add_argument("--size", default="tiny", choices=JUDGE_SIZES)
  t.add_argument("--out", required=True, help="directory for params.safetensors + config.json")
  t.add_argument(
    "--data-dir",
    default=None,
    help="TFDS data_dir with synthetic_talk built (test split for evaluation); "
    "omitted: the test split is rendered in-process",
  )
  t.add_argument("--seed", type=int, default=None)
  t.add_argument("--steps", type=int, default=None)
  t.add_argument("--num-identities", type=int, default=None)
  t.add_argument(
    "--challenging-fraction",
    type=float,
    default=None,
    help="share of the training identities drawn as challenging identities (default 0; "
    "0.25 for a judge that reads the challenging splits' faces)",
  )
  t.add_argument("--no-eval", action="store_true")
  t.add_argument("--json", default=None, help="held-out figures JSON (default OUT/heldout.json)")
  t.add_argument("--quiet", action="store_true")
  e = sub.add_parser("evaluate", help="held-out figures of a trained judge")
  e.add_argument("--judge", required=True)
  e.add_argument("--size", default="tiny", choices=tuple(DATA_SIZES))
  e.add_argument("--data-dir", default=None)
  e.add_argument("--extra-identities", type=int, default=32)
  e.add_argument("--json", default=None, help="held-out figures JSON (default JUDGE/heldout.json)")
  e.add_argument("--quiet", action="store_true")


def _train(args) -> int:
  import time

  from emotalker_jax.evaluation.judge import get_config, save_judge
  from emotalker_jax.training.judge import evaluate_judge, train_judge, write_report

  overrides = {
    k: getattr(args, k)
    for k in ("steps", "num_identities", "seed", "challenging_fraction")
    if getattr(args, k) is not None
  }
  config = get_config(args.size, **overrides)
  t0 = time.perf_counter()
  judge, log = train_judge(config, progress=not args.quiet)
  log["wall_s"] = round(time.perf_counter() - t0, 2)
  save_judge(args.out, judge, {"train_log": log})
  print(
    f"judge saved to {args.out}: render {log['render_s']} s, train {log['train_s']} s "
    f"({config.steps} steps), total {log['wall_s']} s",
    file=sys.stderr,
  )
  if args.no_eval:
    return 0
  figures = evaluate_judge(judge, args.size, args.data_dir, progress=not args.quiet)
  path = args.json or os.path.join(args.out, "heldout.json")
  print(write_report(figures, args.size, path, {"judge": args.out, "train_wall_s": log["wall_s"]}))
  print(f"\nfigures written to {path}", file=sys.stderr)
  return 0


def _evaluate(args) -> int:
  from emotalker_jax.evaluation.judge import load_judge
  from emotalker_jax.training.judge import evaluate_judge, write_report

  judge = load_judge(args.judge)
  figures = evaluate_judge(
    judge, args.size, args.data_dir, extra_identities=args.extra_identities, progress=not args.quiet
  )
  path = args.json or os.path.join(args.judge, "heldout.json")
  print(write_report(figures, args.size, path, {"judge": args.judge}))
  print(f"\nfigures written to {path}", file=sys.stderr)
  return 0


def run(args) -> int:
  return _train(args) if args.judge_command == "train" else _evaluate(args)
