"""``emotalker demo --mode quick|full --out demo_out``: the end-to-end demo (``make demo``).

Stages, each skipped when its output already exists (so a second run reuses the trained
checkpoints), each printing its progress:

1. ``emotalker synth``: the procedural benchmark at 32x32: ``synthetic_talk/demo`` (128
   train identities) in full mode, ``synthetic_talk/tiny`` (12) in quick mode.
2. ``emotalker eib-train``: the Emotion Intensity Block on FED.
3. the judge (``emotalker judge train --size tiny``).
4. ``emotalker train --stage autoencoder``: the KL autoencoder on the frames (it measures
   the latent shift / scale, which the next stage gets as config overrides).
5. ``emotalker train``: EmoTalker on the synthetic set (full: an f=2 autoencoder; quick:
   configs/tiny.py's model).
6. generation for a held-out (test-split) identity: the same portrait and audio under the
   8 single-emotion prompts (the paper's Figure 2), one emotion at increasing strengths
   (Figure 3), mixed prompts, and a talking clip as mp4 with its audio.
7. ``emotalker eval``'s protocol on all held-out identities of the size
   (``evaluation/evaluate.py``): ``metrics.json``, ``eval.md``; with ``--ablations`` also
   ``ablations.json`` and ``tradeoff.png`` (the same as ``emotalker eval --ablations`` on
   ``OUT/run_full``).
Then ``report.md`` with the figures, the metrics and the settings, ``summary.json``.

The sampler is uncalibrated (``intensity_gamma`` 1): every figure is the model's own.
``--calibrate`` adds, before stage 6, ``emotalker calibrate``'s measurement on training
identities (``evaluation/calibrate.py``), saved as ``OUT/run_<mode>/calibration.json``
and used by the later stages; the evaluation then reports the mixed figures both ways.

Every stage runs with ``configs/demo.py:<mode>``: the model, the data size, each stage's
step counts and the demo's own settings (its ``demo`` section) live there. Full mode's step
counts are set so that the whole demo fits 40 minutes on a 2-core CPU machine
(measured per stage in ``summary.json``'s ``stage_seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEMO_CONFIG = "configs/demo.py"  # loaded as configs/demo.py:<mode>
MODES = ("quick", "full")
FIG2_PROMPTS = (
  "neutral",
  "angry",
  "contemptuous",
  "disgusted",
  "fearful",
  "happy",
  "sad",
  "surprised",
)
FIG3_EMOTION = "happy"
FIG3_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIXED_PROMPTS = (
  "mostly happy, a bit surprised",
  "a little sad and fearful",
  "angry with a hint of disgust",
  "surprised and slightly scared",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--mode",
    choices=MODES,
    default="full",
    help="quick: ~10 min at reduced quality; full: the real demo",
  )
  p.add_argument("--out", default="demo_out", help="everything lands here")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--ablations",
    action="store_true",
    help="the evaluation stage also runs `emotalker eval --ablations` (~8 more "
    "minutes in full mode): ablations.json, tradeoff.png",
  )
  p.add_argument(
    "--calibrate",
    action="store_true",
    help="measure the sampler's intensity calibration on training identities "
    "(`emotalker calibrate`, ~1 minute) and sample with it; the headline "
    "figures stay uncalibrated",
  )


def _stage(title: str, cmd: list[str], done: bool) -> float | None:
  """Runs ``cmd`` unless ``done``; its wall time in seconds (None: reused)."""
  if done:
    print(f"[demo] {title}: reusing existing output", flush=True)
    return None
  print(f"[demo] {title}: {' '.join(cmd)}", flush=True)
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True)
  return time.perf_counter() - t0


def run(args) -> int:
  from emotalker_jax.config_utils import load_config
  from input_pipeline import synthetic_talk as st

  config_path = f"{DEMO_CONFIG}:{args.mode}"
  c = load_config(config_path)
  size, train_steps, sample_steps = c.data.synthetic_size, c.train.steps, c.sampler.steps
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  exe = [sys.executable, "-m", "emotalker_jax.cli"]
  data = os.path.join(out, "data")
  run_dir = os.path.join(out, f"run_{args.mode}")
  eib_dir = os.path.join(out, f"eib_{args.mode}")
  cfg = ["--config", config_path, f"--config.data.data_dir={data}", f"--config.seed={args.seed}"]
  ae_dir = os.path.join(run_dir, "autoencoder")
  times = {}
  n = 8 if args.calibrate else 7
  times["synth"] = _stage(
    f"1/{n} synthetic benchmark",
    exe + ["synth", "--out", data, "--size", size],
    st.is_built(size, data),
  )
  times["eib"] = _stage(
    f"2/{n} EIB on FED",
    exe + ["eib-train", "--out", eib_dir, "--config", config_path],
    os.path.isfile(os.path.join(eib_dir, "metrics.json")),
  )
  judge_dir = os.path.join(out, "judge_tiny")
  times["judge"] = _stage(
    f"3/{n} judge",
    exe + ["judge", "train", "--size", "tiny", "--out", judge_dir],
    os.path.isfile(os.path.join(judge_dir, "config.json")),
  )
  times["autoencoder"] = _stage(
    f"4/{n} autoencoder",
    exe + ["train", "--stage", "autoencoder", "--workdir", run_dir] + cfg,
    os.path.isfile(os.path.join(ae_dir, "params.safetensors")),
  )
  times["train"] = _stage(
    f"5/{n} EmoTalker",
    exe
    + ["train", "--workdir", run_dir]
    + cfg
    + _latent_calibration(ae_dir)
    + [
      f"--config.train.autoencoder_checkpoint={ae_dir}",
      f"--config.train.eib_checkpoint={eib_dir}",
    ]
    + _eib_text_path(eib_dir)
    + [
      # only the diffusion stage: the autoencoder stage keeps config.train.ckpt_every
      f"--config.train.ckpt_every={max(100, train_steps // 4)}",
    ],
    os.path.isfile(os.path.join(run_dir, "train_done.json")),
  )
  with open(os.path.join(run_dir, "train_done.json"), "w") as fh:
    json.dump({"steps": train_steps}, fh)
  from emotalker_jax.inference import load_generator

  # Uncalibrated unless --calibrate (a calibration.json of an earlier --calibrate run
  # is then used when it matches this checkpoint, these settings and this judge).
  gen = load_generator(
    run_dir,
    [f"--config.sampler.steps={sample_steps}"]
    + ([] if args.calibrate else ["--config.sampler.intensity_gamma=1.0"]),
    judge=judge_dir,
  )
  if args.calibrate:
    t0 = time.perf_counter()
    calibrated = calibrate_demo(gen, judge_dir, c, args.seed, f"6/{n}")
    times["calibrate"] = None if calibrated is None else time.perf_counter() - t0
  print(f"[demo] {n - 1}/{n} generation for a held-out identity", flush=True)
  t0 = time.perf_counter()
  summary = generate_figures(gen, data, out, sample_steps, args.seed, size)
  times["figures"] = time.perf_counter() - t0
  print(f"[demo] {n}/{n} evaluation on all held-out identities (emotalker eval)", flush=True)
  t0 = time.perf_counter()
  summary["metrics"] = evaluate_demo(
    gen, judge_dir, data, out, c, args.seed, ablations=args.ablations
  )
  times["eval"] = time.perf_counter() - t0
  # A reused stage keeps the wall time it took when it ran (from the last summary.json).
  prev = _previous_summary(out)
  reused = sorted(k for k, v in times.items() if v is None)
  summary["stage_seconds"] = {
    k: (prev.get("stage_seconds", {}).get(k) if v is None else v) for k, v in times.items()
  }
  summary["reused_stages"] = reused
  summary["demo_seconds"] = round(sum(v or 0.0 for v in summary["stage_seconds"].values()), 1)
  summary.update(_provenance(args))
  eib_metrics = os.path.join(eib_dir, "metrics.json")
  if os.path.isfile(eib_metrics):
    with open(eib_metrics) as fh:
      summary["eib_test"] = json.load(fh).get("test")
  with open(os.path.join(out, "summary.json"), "w") as fh:
    json.dump(summary, fh, indent=2, default=float)
  write_report(out, summary, args.mode)
  print(f"[demo] done: {os.path.join(out, 'report.md')}")
  return 0


def _eib_text_path(eib_dir: str) -> list[str]:
  """[--config.text.path=EIB/text_encoder] when the EIB fine-tuned its text tower (the
  generator must read the states its EIB head was trained on), else []."""
  from emotalker_jax.checkpoints.eib import TEXT_ENCODER_DIR

  tuned = os.path.join(eib_dir, TEXT_ENCODER_DIR)
  return [f"--config.text.path={tuned}"] if os.path.isdir(tuned) else []


def _previous_summary(out: str) -> dict:
  path = os.path.join(out, "summary.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as fh:
    return json.load(fh)


def _provenance(args) -> dict:
  """The code and machine a run used: git commit (when run from a checkout), CPU count,
  platform, versions."""
  import platform

  import jax

  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(
      ["git", "-C", here, "rev-parse", "--short", "HEAD"],
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
    dirty = bool(
      subprocess.run(
        ["git", "-C", here, "status", "--porcelain"], capture_output=True, text=True, check=True
      ).stdout.strip()
    )
  except (OSError, subprocess.CalledProcessError):
    commit, dirty = None, None
  return {
    "mode": args.mode,
    "seed": args.seed,
    "calibrate": bool(args.calibrate),
    "commit": commit,
    "uncommitted_changes": dirty,
    "machine": {
      "cpus": os.cpu_count(),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
    },
  }


def _latent_calibration(ae_dir: str) -> list[str]:
  """The autoencoder's measured latent shift/scale as config overrides for the diffusion
  stage (``train --stage autoencoder`` writes them into its config.json)."""
  path = os.path.join(ae_dir, "config.json")
  if not os.path.isfile(path):
    return []
  with open(path) as fh:
    saved = json.load(fh)
  return [
    f"--config.autoencoder.{k}={float(saved[k])!r}"
    for k in ("shift_factor", "scaling_factor")
    if saved.get(k) is not None
  ]


def calibrate_demo(gen, judge_dir: str, c, seed: int, stage: str) -> dict | None:
  """``--calibrate``: ``emotalker calibrate``'s measurement on ``c.demo.calib_identities``
  training identities (``c``: the demo config); writes the workdir's calibration.json and
  sets ``gen``'s sampler.intensity_gamma to the result. Skipped (returns None) when
  ``load_generator`` has applied a calibration.json of this step, these settings and this
  judge."""
  from emotalker_jax.checkpoints import read_calibration, write_calibration
  from emotalker_jax.evaluation import calibrate as cal
  from emotalker_jax.evaluation.evaluate import EvalSettings, log_stderr
  from emotalker_jax.evaluation.judge import load_judge

  title = f"[demo] {stage} intensity calibration on training identities"
  if gen.calibration is not None:
    print(f"{title}: reusing existing output", flush=True)
    return None
  d = c.demo
  print(
    f"{title} (emotalker calibrate --identities {d.calib_identities} --frames "
    f"{d.calib_frames} --gammas {','.join(f'{g:g}' for g in d.calib_gammas)})",
    flush=True,
  )
  st = EvalSettings(
    num_identities=d.calib_identities, frames=d.calib_frames, steps=c.sampler.steps, seed=seed
  ).validate()
  sources = cal.training_sources(c.data.synthetic_size, d.calib_identities)
  result = cal.fit_intensity_gamma(
    gen, load_judge(judge_dir), sources, st, tuple(d.calib_gammas), log=log_stderr
  )
  write_calibration(gen, result, judge_dir)
  gen.calibration = read_calibration(gen.checkpoint_dir, gen.step)
  gen.config.sampler.intensity_gamma = float(result["intensity_gamma"])
  return result


def evaluate_demo(
  gen, judge_dir: str, data: str, out: str, c, seed: int, ablations: bool = False
) -> dict:
  """``emotalker eval``'s protocol with the demo's generator (``c``: the demo config):
  writes metrics.json, eval.md
  (and with ``ablations`` ablations.json, tradeoff.png) into ``out``; returns the headline
  metrics."""
  from emotalker_jax.evaluation import evaluate as ev
  from emotalker_jax.evaluation import intervals
  from emotalker_jax.evaluation.judge import load_judge
  from emotalker_jax.evaluation.results import evaluate_and_write

  st = ev.EvalSettings(
    num_identities=None,
    frames=c.demo.eval_frames,
    sweep_frames=c.demo.get("eval_sweep_frames"),
    lip_frames=25,
    steps=c.sampler.steps,
    seed=seed,
  ).validate()
  sources, where = ev.heldout_sources(c.data.synthetic_size, data, st.num_identities)
  result, _ = evaluate_and_write(
    gen,
    load_judge(judge_dir),
    sources,
    st,
    out,
    {
      "judge": judge_dir,
      "data": where,
      "command": "emotalker demo (stage 8: emotalker eval's protocol)",
    },
    ablations=ablations,
    log=ev.log_stderr,
  )
  return {
    k: result[k]
    for k in ev.METRIC_KEYS
    + intervals.CEILING_KEYS
    + ("mixed_intensity_error", "intensity_spearman_frames", "flicker", "intensity_gamma")
    if k in result
  }


def generate_figures(gen, data: str, out: str, steps: int, seed: int, size: str) -> dict:
  import numpy as np

  from emotalker_jax.evaluation.evaluate import heldout_sources
  from emotalker_jax.inference import write_mp4, write_png

  src = heldout_sources(size, data, 1)[0][0]
  portrait, audio, identity, face_mask = src.portrait, src.audio, src.identity, src.face_mask
  short = audio[: int(0.2 * 16000)]  # 5 frames per figure cell
  kw = dict(steps=steps, seed=seed, face_mask=face_mask, batch_frames=8)

  def row(prompts=None, intensities=None):
    frames, infos = [], []
    for p, s in zip(prompts or [None] * len(intensities), intensities or [None] * len(prompts)):
      f, info = gen.generate(portrait, short, prompt=p, intensities=s, **kw)
      frames.append(f[len(f) // 2])
      infos.append(info.get("intensities"))
    return np.concatenate([portrait] + frames, axis=1), infos

  fig2, fig2_int = row(prompts=list(FIG2_PROMPTS))
  write_png(os.path.join(out, "fig2_emotions.png"), _upscale(fig2))
  from emotalker_jax.evaluation.evaluate import one_hot

  strengths = [one_hot(FIG3_EMOTION, a) for a in FIG3_STRENGTHS]
  fig3, _ = row(intensities=strengths)
  write_png(os.path.join(out, "fig3_strength.png"), _upscale(fig3))
  mixed, mixed_int = row(prompts=list(MIXED_PROMPTS))
  write_png(os.path.join(out, "fig_mixed.png"), _upscale(mixed))
  frames, info = gen.generate(portrait, audio, prompt="very happy", **kw)
  write_mp4(os.path.join(out, "clip_happy.mp4"), _upscale(frames, 4), audio)
  return {
    "identity": identity,
    "data": size,
    "checkpoint_step": gen.step,
    "sampler_steps": steps,
    "guidance": float(gen.config.sampler.guidance),
    "constraint": dict(gen.config.sampler.constraint),
    "intensity_gamma": gen.intensity_gamma,
    "fig2_prompts": list(FIG2_PROMPTS),
    "fig2_intensities": fig2_int,
    "mixed_prompts": list(MIXED_PROMPTS),
    "mixed_intensities": mixed_int,
    "clip_frames": int(len(frames)),
    "clip_frames_per_s": info.get("frames_per_s"),
  }


def _upscale(img, k: int = 4):
  import numpy as np

  return np.repeat(np.repeat(img, k, axis=-3), k, axis=-2)


def _metrics_table(out: str) -> list[str]:
  """The headline table (value, 95 % interval, ceiling, target) of OUT/metrics.json."""
  from emotalker_jax.evaluation.results import headline_table

  path = os.path.join(out, "metrics.json")
  if not os.path.isfile(path):
    return ["(no metrics.json)"]
  with open(path) as fh:
    return headline_table(json.load(fh))


def write_report(out: str, s: dict, mode: str) -> None:
  lines = (
    [
      f"# EmoTalker demo ({mode})",
      "",
      f"Checkpoint step {s['checkpoint_step']}, DDIM steps {s['sampler_steps']}, "
      f"guidance {s['guidance']}, constraint {s['constraint']}, intensity calibration "
      f"gamma {s.get('intensity_gamma', 1.0):g} (1: uncalibrated), "
      f"held-out identity {s['identity']} of synthetic_talk/{s['data']}.",
      "",
      "## Figure 2: one portrait, 8 emotion prompts",
      "",
      f"Prompts: {', '.join(s['fig2_prompts'])} (first cell: the source portrait).",
      "",
      "![fig2](fig2_emotions.png)",
      "",
      f"## Figure 3: '{FIG3_EMOTION}' at strengths {list(FIG3_STRENGTHS)}",
      "",
      "![fig3](fig3_strength.png)",
      "",
      "## Mixed prompts",
      "",
      f"{'; '.join(s['mixed_prompts'])}",
      "",
      "![mixed](fig_mixed.png)",
      "",
      f"## Talking clip: `clip_happy.mp4` ({s['clip_frames']} frames with audio)",
      "",
      "## Metrics on the held-out identities (judge network; details: eval.md)",
      "",
    ]
    + _metrics_table(out)
    + [
      "",
      "![trade-off](tradeoff.png)" if os.path.isfile(os.path.join(out, "tradeoff.png")) else "",
      "",
      "## EIB intensities read from the prompts",
      "",
      "| prompt | top emotions |",
      "|---|---|",
    ]
  )
  for p, d in zip(
    s["fig2_prompts"] + s["mixed_prompts"], s["fig2_intensities"] + s["mixed_intensities"]
  ):
    if d:
      top = sorted(d.items(), key=lambda kv: -kv[1])[:3]
      lines.append(f"| {p} | {', '.join(f'{k} {v:.2f}' for k, v in top)} |")
  if s.get("eib_test"):
    lines += [
      "",
      "## EIB on FED's held-out test split",
      "",
      "```",
      json.dumps(
        {k: s["eib_test"][k] for k in ("top1", "top2_mixed", "mae") if k in s["eib_test"]}
      ),
      "```",
    ]
  lines += [
    "",
    "Stage wall times (s): "
    + json.dumps(
      {k: (round(v, 1) if v is not None else None) for k, v in s["stage_seconds"].items()}
    ),
  ]
  with open(os.path.join(out, "report.md"), "w") as fh:
    fh.write("\n".join(lines) + "\n")
