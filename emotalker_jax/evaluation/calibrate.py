"""Intensity calibration: measure ``sampler.intensity_gamma`` on *training* identities.

The demo generator draws a faint emotion beside a strong one at about 40 % of what the
benchmark renders (docs/RESULTS.md), so "mostly surprised, a little scared" comes out as
surprise alone, while a faint emotion alone is drawn. The sampler can build the emotion
tokens from s_k' = m (s_k / m) ** gamma, m = max_k s_k, instead of s
(``models.eib.calibrate_intensities``): gamma < 1 lifts every intensity below the
strongest toward it, and leaves the strongest, zeros, the order, and any one-emotion
vector as they are.

``fit_intensity_gamma`` picks gamma from a grid. For every label of
``calibration_labels()`` (each emotion alone at 0.5, and seven (0.8, 0.3) mixtures, none a
pair of ``evaluate.MIXED_PROMPTS``) given as explicit intensities, on the neutral
reference clip of the first *training* identities (the generator saw them; the
evaluation's held-out identities are not touched), the judge reads the generated frames
and the benchmark's own renderings of the same label on the same clips. The chosen gamma
minimises the intensity error (``metrics.intensity_error``: mean |generated reading -
rendered reading| over the frames and the label's emotions, the measure that also sees a
secondary emotion drawn too strong), ties going to the gamma nearest 1 (the least change).
Top-1 / top-2 accuracy are reported beside it for every gamma, but do not choose: top-2
cannot tell a faithful secondary emotion from an exaggerated one, so maximising it (or
matching the ground truth's score) rewards exaggeration.

The calibration is opt-in (``emotalker calibrate``, ``emotalker demo --calibrate``); the
evaluation's headline mixed figure is always the model's own, uncalibrated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import time

import numpy as np

from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS
from emotalker_jax.evaluation import metrics
from emotalker_jax.evaluation.evaluate import (
  MIXED_PROMPTS,
  EvalSettings,
  Source,
  _Runner,
  label_vector,
)
from input_pipeline import synthetic_talk as st
from input_pipeline.synthetic import clips, face_model

DEFAULT_GAMMAS = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2)
SINGLE_STRENGTH = 0.5
MIXTURE_STRENGTHS = (0.8, 0.3)


def calibration_labels() -> list[tuple[str, np.ndarray]]:
  """(name, (8,) label) pairs: the 7 non-neutral emotions alone at SINGLE_STRENGTH, then
  each as the strong part of a MIXTURE_STRENGTHS mixture with the next emotion in MEAD
  order (surprised with angry); pairs of the evaluation's MIXED_PROMPTS are skipped."""
  held_out = {frozenset(k for k, v in lab.items() if v > 0) for _, lab in MIXED_PROMPTS}
  emotions = [e for e in EMOTIONS if e != "neutral"]
  out = [(f"{e} {SINGLE_STRENGTH:g}", label_vector({e: SINGLE_STRENGTH})) for e in emotions]
  hi, lo = MIXTURE_STRENGTHS
  for i, e in enumerate(emotions):
    for f in emotions[i + 1 :] + emotions[:i]:
      if frozenset((e, f)) not in held_out:
        out.append((f"{e} {hi:g} + {f} {lo:g}", label_vector({e: hi, f: lo})))
        break
  return out


def training_sources(size: str, num_identities: int, synthetic_seed: int = 0) -> list[Source]:
  """The neutral reference clip of the first ``num_identities`` *train* identities of
  synthetic_talk/<size>, rendered in-process (the same function that built the split)."""
  cfg = st.make_config(size, seed=synthetic_seed)
  ids = list(st.split_identities(cfg)["train"])
  if not 0 < num_identities <= len(ids):
    raise ValueError(
      f"--identities must be in [1, {len(ids)}] (train identities of "
      f"synthetic_talk/{size}), got {num_identities}"
    )
  out = []
  for i in ids[:num_identities]:
    params = face_model.sample_identity(i, cfg.seed)
    spec = clips.ClipSpec(i, 0, label_vector({"neutral": 1.0}), True)
    rec = clips.render_clip(spec, params, cfg.image_size, cfg.frames_per_clip, cfg.seed)
    out.append(
      Source(
        i,
        rec["frames"][0],
        rec["face_mask"][0],
        rec["audio"],
        rec["frames"],
        identity_params=np.asarray(params, np.float32),
        synthetic_seed=int(synthetic_seed),
      )
    )
  return out


def fit_intensity_gamma(
  gen,
  judge,
  sources: Sequence[Source],
  st: EvalSettings,
  gammas: Sequence[float] = DEFAULT_GAMMAS,
  log: Callable[[str], None] = print,
) -> dict:
  """Measures every gamma of ``gammas`` (see the module docstring) and returns
  {"intensity_gamma": the chosen, "per_gamma": [{gamma, intensity_error,
  intensity_error_single, intensity_error_mixed, single_top1, mixed_top2, l1}],
  "ground_truth": {intensity_error (the renderings against their labels: the floor),
  single_top1, mixed_top2} (the judge on the renderings), "labels", "identities", "frames",
  "steps", "guidance", "seconds"}."""
  gammas = [float(g) for g in gammas]
  if not gammas or min(gammas) <= 0:
    raise ValueError(f"--gammas must be numbers > 0, got {gammas}")
  st.validate()
  labels = calibration_labels()
  run = _Runner(gen, judge, sources, st)
  t0 = time.perf_counter()
  truth = {
    (name, s.identity): run.renderings(s, v, st.frames)["intensities"]
    for name, v in labels
    for s in sources
  }
  kind = {name: "mixed" if np.count_nonzero(v) > 1 else "single" for name, v in labels}
  rows = []
  for k, g in enumerate(gammas):
    err = {"single": [], "mixed": []}
    top2, top1, l1 = [], [], []
    for name, v in labels:
      for s in sources:
        p = judge.predict(run.frames_of(s, st.frames, intensities=v, intensity_gamma=g))[
          "intensities"
        ]
        ref = truth[(name, s.identity)]
        err[kind[name]].append(metrics.intensity_error(p, ref, v))
        l1.append(np.abs(p - ref).sum(-1))
        if kind[name] == "mixed":
          top2.append(metrics.top2_correct(p, v))
        else:
          top1.append(np.argmax(p, -1) == int(np.argmax(v)))
    single, mixed = float(np.concatenate(top1).mean()), float(np.concatenate(top2).mean())
    rows.append(
      {
        "gamma": g,
        "intensity_error": float(np.mean(err["single"] + err["mixed"])),
        "intensity_error_single": float(np.mean(err["single"])),
        "intensity_error_mixed": float(np.mean(err["mixed"])),
        "single_top1": single,
        "mixed_top2": mixed,
        "l1": float(np.concatenate(l1).mean()),
      }
    )
    done = time.perf_counter() - t0
    log(
      f"[calibrate] {k + 1}/{len(gammas)} gamma {g:g}: intensity error "
      f"{rows[-1]['intensity_error']:.3f} (mixtures {rows[-1]['intensity_error_mixed']:.3f}),"
      f" single top-1 {single:.2f}, mixed top-2 {mixed:.2f}; {done:.0f} s, "
      f"ETA {done / (k + 1) * (len(gammas) - k - 1):.0f} s"
    )
  gt_single = float(
    np.concatenate(
      [
        np.argmax(truth[(n, s.identity)], -1) == int(np.argmax(v))
        for n, v in labels
        if kind[n] == "single"
        for s in sources
      ]
    ).mean()
  )
  gt_mixed = float(
    np.concatenate(
      [
        metrics.top2_correct(truth[(n, s.identity)], v)
        for n, v in labels
        if kind[n] == "mixed"
        for s in sources
      ]
    ).mean()
  )
  gt_err = float(
    np.mean(
      [metrics.intensity_error(truth[(n, s.identity)], v, v) for n, v in labels for s in sources]
    )
  )
  best = min(rows, key=lambda r: (round(r["intensity_error"], 9), abs(r["gamma"] - 1.0)))
  log(
    f"[calibrate] ground truth: intensity error vs the labels {gt_err:.3f}, single top-1 "
    f"{gt_single:.2f}, mixed top-2 {gt_mixed:.2f} -> intensity_gamma {best['gamma']:g}"
  )
  sc = gen.config.sampler
  return {
    "intensity_gamma": best["gamma"],
    "per_gamma": rows,
    "ground_truth": {"intensity_error": gt_err, "single_top1": gt_single, "mixed_top2": gt_mixed},
    "labels": [name for name, _ in labels],
    "identities": [s.identity for s in sources],
    "frames": st.frames,
    "steps": int(sc.steps if st.steps is None else st.steps),
    "guidance": float(sc.guidance if st.guidance is None else st.guidance),
    "seconds": round(time.perf_counter() - t0, 1),
    "num_emotions": NUM_EMOTIONS,
  }
