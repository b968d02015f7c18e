"""``emotalker eib-eval (--eib DIR | --baseline keyword) --prompts FILE [--half dev|test|all]
[--json OUT]``.

Scores an EIB (``models.eib.load_eib(DIR).predict``) or the keyword baseline on a human-style
prompt set (``tests/data/eib_human.jsonl``; figures: ``evaluation/eib_eval.py``). Prints a
per-category table (top-1 / top-2 of mixtures / ladder order, each with its bootstrap 95%
interval and n) and the three summary figures against their targets; ``--json`` writes
the scores, the missed rows and what was run. The default half is ``dev``: only the dev half
may guide design choices; give ``--half test`` only to report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--eib", default=None, help="folder written by `emotalker eib-train`")
  parser.add_argument(
    "--prompts", required=True, help="human prompt set JSONL (tests/data/eib_human.jsonl)"
  )
  parser.add_argument(
    "--half",
    choices=("dev", "test", "all"),
    default="dev",
    help="which half to score (default dev; test is for reporting only)",
  )
  parser.add_argument("--json", default=None, help="write the scores as JSON to this file")
  parser.add_argument(
    "--baseline",
    choices=("keyword",),
    default=None,
    help="score the fixed keyword baseline instead of an EIB",
  )
  parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates per interval")
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def fed_train_prompts(eib_dir: str) -> list[str]:
  """The train prompts of the FED corpus the EIB in ``eib_dir`` learnt from (eib.json names
  its source: a fed.jsonl, or generated from config.eib.fed_size / fed_seed)."""
  from emotalker_jax.checkpoints.eib import read_eib
  from emotalker_jax.training.eib import load_corpus

  config, info, _ = read_eib(eib_dir)
  source = info.get("fed", {}).get("source", "generated")
  fed_dir = None if source == "generated" else source
  corpus = load_corpus(fed_dir, int(config.eib.fed_size), int(config.eib.fed_seed))
  return [r.prompt for r in corpus["train"]]


def run(args) -> int:
  from emotalker_jax.evaluation import eib_eval

  if (args.eib is None) == (args.baseline is None):
    raise ValueError("give exactly one of --eib DIR or --baseline keyword")
  if not os.path.exists(args.prompts):
    raise FileNotFoundError(f"--prompts {args.prompts!r} not found")
  if args.eib is not None and not os.path.isdir(args.eib):
    raise FileNotFoundError(
      f"--eib {args.eib!r} is not a folder; train one with `emotalker eib-train --out DIR`"
    )
  if args.n_boot < 1:
    raise ValueError(f"--n-boot must be >= 1, got {args.n_boot}")
  rows = eib_eval.read_human_set(args.prompts, half=args.half)
  prompts = [r.prompt for r in rows]
  if args.eib is not None:
    from emotalker_jax.models.eib import load_eib

    s_hat, truncated = load_eib(args.eib).predict(prompts)
    if truncated.any():
      print(
        f"emotalker eib-eval: warning: {int(truncated.sum())} prompt(s) longer than the "
        "encoder's max_length were truncated",
        file=sys.stderr,
      )
  else:
    s_hat = eib_eval.keyword_baseline(prompts)
  scores = eib_eval.score_human_set(rows, s_hat, n_boot=args.n_boot, seed=args.seed)
  source = "keyword baseline" if args.eib is None else args.eib
  print(f"EIB {source} on {args.prompts} (half {args.half}, {len(rows)} prompts)")
  print(eib_eval.format_table(scores))
  if args.eib is not None:  # the same figures without rows met verbatim in FED's train split
    seen = eib_eval.seen_in_corpus(prompts, fed_train_prompts(args.eib))
    scores["unseen_in_fed_train"] = eib_eval.unseen_summary(
      rows, s_hat, seen, n_boot=args.n_boot, seed=args.seed
    )
    u = scores["unseen_in_fed_train"]
    print(f"\nwithout the {int(seen.sum())} prompt(s) found verbatim in FED's train split:")
    for k, fig in (u["summary"] or {}).items():
      print(f"{k:<13} {'-' if fig['value'] is None else eib_eval._cell(fig)}")
  if args.json:
    out = {
      "eib": args.eib,
      "baseline": args.baseline,
      "prompts": args.prompts,
      "half": args.half,
      "n_boot": args.n_boot,
      "seed": args.seed,
      **scores,
    }
    parent = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(parent, exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
      f.write("\n")
  return 0
