"""``emotalker calibrate``: measure the sampler's intensity calibration of a checkpoint on
training identities of the synthetic benchmark (``emotalker_jax/evaluation/calibrate.py``).

  emotalker calibrate --checkpoint WORKDIR [--judge data/judge_tiny] \\
      [--identities 3 --frames 2 --steps N] [--gammas 1,0.8,0.6,0.5,0.4,0.3,0.2]

Writes WORKDIR/calibration.json ({"intensity_gamma": g, "checkpoint_step": n, the score of
every gamma tried and the ground truth's, ...}); from then on `emotalker generate`,
`generate-dataset`, `eval` and `demo` sample that checkpoint step with
``sampler.intensity_gamma = g`` (a ``--config.sampler.intensity_gamma=G`` flag still wins).
Delete the file to sample
uncalibrated. Prints the chosen gamma and the table as JSON.
"""

from __future__ import annotations

import argparse
import json


def _gammas(text: str) -> tuple[float, ...]:
  try:
    out = tuple(float(x) for x in text.split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"--gammas {text!r}: give numbers > 0 separated by commas, e.g. 1,0.6,0.4"
    ) from None
  if not out or min(out) <= 0:
    raise argparse.ArgumentTypeError(
      f"--gammas {text!r}: give numbers > 0 separated by commas, e.g. 1,0.6,0.4"
    )
  return out


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--checkpoint", required=True, help="training workdir (or its checkpoints/)")
  p.add_argument("--judge", default="data/judge_tiny", help="judge folder (emotalker judge train)")
  p.add_argument("--identities", type=int, default=3, help="training identities to use")
  p.add_argument("--frames", type=int, default=2, help="frames per label and identity")
  p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: sampler.steps)")
  p.add_argument(
    "--gammas",
    type=_gammas,
    default=None,
    help="candidate gammas, comma-separated (default: "
    "evaluation.calibrate.DEFAULT_GAMMAS, 1,0.8,0.6,0.5,0.4,0.3,0.2)",
  )
  p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
  from emotalker_jax.commands.generate import quiet_fork_warning
  from emotalker_jax.config_utils import checkpoint_overrides
  from emotalker_jax.evaluation import calibrate as cal

  gammas = cal.DEFAULT_GAMMAS if args.gammas is None else args.gammas
  from emotalker_jax.checkpoints import write_calibration
  from emotalker_jax.evaluation.evaluate import EvalSettings, log_stderr
  from emotalker_jax.evaluation.judge import load_judge
  from emotalker_jax.inference import load_generator

  quiet_fork_warning()
  st = EvalSettings(
    num_identities=args.identities, frames=args.frames, steps=args.steps, seed=args.seed
  ).validate()
  judge = load_judge(args.judge)
  gen = load_generator(args.checkpoint, checkpoint_overrides(args.config_args))
  if judge.config.image_size != gen.image_size:
    raise ValueError(
      f"the judge in {args.judge} reads {judge.config.image_size}x"
      f"{judge.config.image_size} frames but the checkpoint makes "
      f"{gen.image_size}x{gen.image_size}; train a judge of that size"
    )
  size = str(gen.config.data.synthetic_size)
  sources = cal.training_sources(size, args.identities, int(gen.config.data.synthetic_seed))
  log_stderr(
    f"[calibrate] checkpoint step {gen.step}: {len(cal.calibration_labels())} labels "
    f"x {len(sources)} training identities of synthetic_talk/{size} x "
    f"{len(gammas)} gammas"
  )
  result = cal.fit_intensity_gamma(gen, judge, sources, st, gammas, log=log_stderr)
  path = write_calibration(gen, result, args.judge)
  print(
    json.dumps(
      {"intensity_gamma": result["intensity_gamma"], "out": path, "per_gamma": result["per_gamma"]},
      indent=2,
    )
  )
  return 0
