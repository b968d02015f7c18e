"""The evaluation protocol of ``emotalker eval``: a trained generator, judged on held-out
identities of the synthetic benchmark by the judge network (``evaluation/judge.py``).

For each of ``num_identities`` test-split identities of ``synthetic_talk/<size>`` the source
is frame 0 of the identity's neutral reference clip (its face mask and its audio go with
it), and every condition generates ``frames`` frames from the start of that audio:

* **single**: the 8 one-word prompts of ``SINGLE_PROMPTS`` through the EIB -> judge top-1
  per frame against the prompt's emotion (``emotion_accuracy``); the judge embeddings of the
  same frames against the source's embedding (``identity_similarity``), and again with the
  identity constraint off (strength 0: ``identity_similarity_no_constraint``).
* **mixed**: ``MIXED_PROMPTS`` -> the judge's top-2 set per frame against the prompt's two
  emotions (``mixed_top2_accuracy``); again with the labels given as explicit intensities
  (``mixed_top2_accuracy_explicit``: the generator alone, without the EIB).
* **paraphrases**: ``PARAPHRASES``, one prompt per emotion in phrasings FED never
  generates -> judge top-1 per frame (``paraphrase_emotion_accuracy``).
* **sweep**: explicit intensities s_k = a (a in ``SWEEP_STRENGTHS``, the rest 0, as the
  benchmark labels a clip of that strength) for the 7 non-neutral emotions -> Spearman of
  the judge's intensity k against a, on the mean
  per strength (``intensity_spearman``, ``metrics.intensity_spearman``).
* **lip**: ``lip_frames`` frames (the reference clip's audio, explicit neutral) -> Pearson
  of the judge's mouth opening with the audio envelope per clip (``lip_sync_correlation``),
  next to the same figure on the clip's ground-truth frames (the ceiling), and PSNR / SSIM
  of the generated against the ground-truth frames (same identity, audio and emotion; the
  head motion and blinks of the ground truth are not in the condition, so this is a loose
  reconstruction measure).
* **ceiling**: the judge on ground-truth test frames of the same identities and on their
  autoencoder reconstructions: no generator that decodes through this autoencoder can do
  better than the latter. And the judge on the benchmark's own rendering of each
  ``MIXED_PROMPTS`` label for each source (the reference clip's speech and motion, that
  label instead of neutral; ``ceiling_mixed_top2_labels``): what a perfect generator
  would score on exactly the mixed prompts of the metric.

Ablations (``run_ablations``) repeat *single* under one change at a time (constraint
strength, init noise vs Z_T, guidance, one-hot intensities instead of text, lower-face
mask) and report emotion accuracy and identity similarity for each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from emotalker_jax.diffusion import sampler
from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS
from emotalker_jax.evaluation import intervals, metrics
from emotalker_jax.evaluation.judge import test_clips
from emotalker_jax.fed import BARE
from emotalker_jax.models.autoencoder import decode_latent, encode_to_latent
from input_pipeline.pipeline import mouth_region
from input_pipeline.synthetic import clips

# One-word prompts per emotion, MEAD order (the EIB reads each as that emotion at 0.7).
SINGLE_PROMPTS = (
  "neutral",
  "angry",
  "contemptuous",
  "disgusted",
  "fearful",
  "happy",
  "sad",
  "surprised",
)
# Mixed prompts and their labels under FED's rules (docs/FED.md, "label rules"); the
# metric uses only each label's top-2 set.
MIXED_PROMPTS = (
  ("mostly happy, a bit surprised", {"happy": 0.8, "surprised": 0.3}),
  ("sad and fearful", {"sad": 0.7, "fear": 0.7}),
  ("mostly angry, a little disgusted", {"angry": 0.8, "disgusted": 0.3}),
  ("mostly surprised, a little scared", {"surprised": 0.8, "fear": 0.3}),
)
# Prompts in none of FED's sentence frames (some with words FED does not have either),
# each naming one emotion: does an unseen phrasing still move the face the right way?
PARAPHRASES = (
  ("nothing special, she is just reading out the weather report", "neutral"),
  ("he is fuming after that meeting", "angry"),
  ("she rolls her eyes and sneers at his excuse", "contempt"),
  ("he wrinkles his nose at the smell of the rotten food", "disgusted"),
  ("he is terrified of the dark basement", "fear"),
  ("honestly, she could not be happier about the news", "happy"),
  ("tears are running down her face", "sad"),
  ("she jumps back, wide-eyed, at the sudden bang", "surprised"),
)
SWEEP_STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
# The keys every metrics.json carries (checks read them).
METRIC_KEYS = (
  "emotion_accuracy",
  "mixed_top2_accuracy",
  "intensity_spearman",
  "identity_similarity",
  "identity_similarity_no_constraint",
  "lip_sync_correlation",
  "n_identities",
  "n_frames",
)


@dataclasses.dataclass
class EvalSettings:
  """What ``evaluate`` generates. num_identities: held-out identities (None: every test
  identity of the benchmark size, 8 for ``demo``, 4 for ``tiny``); frames: frames per
  condition (0.04 s each at 25 fps); sweep_frames: frames per (emotion, strength) cell of the
  intensity sweep (None: ``frames``; its Spearman is over 5 strengths x 7 emotions, so
  fewer frames a cell still rank the strengths); batch_frames: the most frames per compiled chunk (a
  condition of fewer frames is one chunk of exactly its frames, so no padding is sampled);
  n_boot: bootstrap replicates of every ``*_ci`` interval."""

  num_identities: int | None = None
  frames: int = 4
  sweep_frames: int | None = None
  lip_frames: int = 25
  steps: int | None = None  # DDIM steps (None: the checkpoint's config.sampler.steps)
  guidance: float | None = None
  seed: int = 0
  batch_frames: int = 8
  n_boot: int = 1000

  def validate(self) -> EvalSettings:
    for name in ("frames", "sweep_frames", "lip_frames", "batch_frames", "n_boot"):
      if getattr(self, name) is not None and int(getattr(self, name)) < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
    if self.num_identities is not None and int(self.num_identities) < 1:
      raise ValueError(
        f"--identities must be >= 1 (or left out: all held-out identities), "
        f"got {self.num_identities}"
      )
    if self.lip_frames < 3:
      raise ValueError(f"--lip-frames must be >= 3 for a correlation, got {self.lip_frames}")
    return self


@dataclasses.dataclass
class Source:
  """A held-out identity's source: portrait (S,S,3) uint8, face mask (S,S), audio (L,)
  float32 16 kHz, ground-truth frames of the reference clip (T,S,S,3) uint8; and every
  CLIP_STRIDE-th frame of all its test clips (N,S,S,3) uint8 with their labels (N,8);
  mouth_box (S,S) {0,1}: the union over the reference clip's frames of the mouth's
  landmark box (``pipeline.mouth_region``), which ``flicker`` leaves out."""

  identity: int
  portrait: np.ndarray
  face_mask: np.ndarray
  audio: np.ndarray
  truth: np.ndarray
  clip_frames: np.ndarray | None = None
  clip_emotions: np.ndarray | None = None
  identity_params: np.ndarray | None = None  # (P,) the renderer's identity vector u
  synthetic_seed: int = 0
  mouth_box: np.ndarray | None = None


CLIP_STRIDE = 5


def heldout_sources(
  size: str,
  data_dir: str | None,
  num_identities: int | None = None,
  synthetic_seed: int = 0,
  split: str = "test",
) -> tuple[list[Source], str]:
  """The first ``num_identities`` (None: all) identities (by id) of a held-out split
  ('test', or 'challenging' / 'challenging_dev': ``judge.test_clips``) with their neutral
  reference clip. Reads ``data_dir``'s TFDS build when given (test), else renders the
  split."""
  recs, where = test_clips(size, data_dir, synthetic_seed, split, num_identities)
  refs = sorted(
    (r for r in recs if bool(r["is_neutral_reference"])), key=lambda r: int(r["identity"])
  )
  if num_identities is None:
    num_identities = len(refs)
  if len(refs) < num_identities:
    raise ValueError(
      f"synthetic_talk/{size} has {len(refs)} {split} identities, fewer than "
      f"--identities {num_identities}"
    )
  out = []
  for r in refs[:num_identities]:
    mine = [q for q in recs if int(q["identity"]) == int(r["identity"])]
    frames = np.concatenate([np.asarray(q["frames"])[::CLIP_STRIDE] for q in mine])
    labels = np.concatenate(
      [
        np.repeat(
          np.asarray(q["emotion"], np.float32)[None], len(np.asarray(q["frames"])[::CLIP_STRIDE]), 0
        )
        for q in mine
      ]
    )
    masks, lms = np.asarray(r["face_mask"]), np.asarray(r["landmarks"], np.float32)
    box = np.max([mouth_region(masks[t], lms[t]) for t in range(len(masks))], axis=0)
    out.append(
      Source(
        int(r["identity"]),
        np.asarray(r["frames"][0]),
        np.asarray(r["face_mask"][0]),
        np.asarray(r["audio"], np.float32),
        np.asarray(r["frames"]),
        frames,
        labels,
        np.asarray(r["identity_params"], np.float32),
        int(synthetic_seed),
        box,
      )
    )
  return out, where


def render_reference_clip(src: Source, emotion: np.ndarray, frames: int) -> np.ndarray:
  """The first ``frames`` frames (frames, S, S, 3) uint8 of ``src``'s reference clip as the
  benchmark renders it with intensities ``emotion`` (8,) instead of neutral: the same
  identity, speech, head motion and blinks (with the neutral label: ``src.truth``)."""
  if src.identity_params is None:
    raise ValueError(
      f"source identity {src.identity} has no identity_params: only "
      "synthetic_talk sources (heldout_sources) can be re-rendered"
    )
  spec = clips.ClipSpec(src.identity, 0, np.asarray(emotion, np.float32), True)
  rec = clips.render_clip(
    spec, src.identity_params, src.portrait.shape[0], len(src.truth), src.synthetic_seed
  )
  return rec["frames"][:frames]


class Renderings:
  """The judge's readings of ``render_reference_clip`` (the ground truth of a condition:
  the same identity, clip and label), computed once per (identity, label, frames)."""

  def __init__(self, judge):
    self.judge, self._cache = judge, {}

  def __call__(self, src: Source, label: np.ndarray, frames: int) -> dict:
    key = (src.identity, tuple(np.round(np.asarray(label, np.float64), 6)), int(frames))
    if key not in self._cache:
      self._cache[key] = self.judge.predict(render_reference_clip(src, label, frames))
    return self._cache[key]


def mixed_label_ceiling(
  judge, sources: Sequence[Source], frames: int, renderings: Renderings | None = None
) -> dict:
  """The judge's top-2 accuracy on ground-truth renderings of the ``MIXED_PROMPTS`` labels
  (``render_reference_clip``, ``frames`` per source): the mixed metric's ceiling; units:
  (identities, prompts) top-2 accuracy per source and prompt."""
  renderings = renderings or Renderings(judge)
  units = np.zeros((len(sources), len(MIXED_PROMPTS)))
  per_prompt = {}
  for j, (prompt, label) in enumerate(MIXED_PROMPTS):
    v = label_vector(label)
    for i, s in enumerate(sources):
      p = renderings(s, v, frames)["intensities"]
      units[i, j] = metrics.emotion_accuracy(p, np.repeat(v[None], len(p), 0))["top2_mixed"]
    per_prompt[prompt] = float(units[:, j].mean())
  return {
    "mixed_top2": float(units.mean()),
    "per_prompt": per_prompt,
    "units": {"mixed_top2": units.tolist()},
  }


def autoencoder_ceiling(gen, judge, sources: Sequence[Source]) -> dict:
  """What the judge reads from the sources' ground-truth test frames and from their
  autoencoder reconstructions D(E(x)): an upper bound on any generator that decodes
  through this autoencoder (top-1 on single-emotion frames, top-2 on mixtures, PSNR)."""

  x = np.concatenate([s.clip_frames for s in sources])
  labels = np.concatenate([s.clip_emotions for s in sources])
  rt = jax.jit(lambda p, v: decode_latent(gen.vae, p, encode_to_latent(gen.vae, p, v)))
  rec = np.concatenate(
    [
      np.asarray(rt(gen.vae_params, jnp.asarray(x[i : i + 64] / 127.5 - 1.0, jnp.float32)))
      for i in range(0, len(x), 64)
    ]
  )
  rec = np.clip(np.rint((rec + 1.0) * 127.5), 0, 255).astype(np.uint8)
  out = {"frames": int(len(x))}
  for name, f in (("ground_truth", x), ("autoencoder", rec)):
    acc = metrics.emotion_accuracy(judge.predict(f)["intensities"], labels)
    out[name] = {"emotion_top1": acc["top1"], "mixed_top2": acc["top2_mixed"]}
  out["autoencoder_psnr"] = metrics.psnr_ssim(rec / 255.0, x / 255.0)["psnr"]
  return out


def one_hot(name: str, strength: float = 1.0) -> np.ndarray:
  """(8,) float32 in the benchmark's (and MEAD's) labelling: ``name`` at ``strength``, every
  other entry 0 (a level-1 'sad' clip is sad = 1/3, neutral = 0); strength 0 -> neutral 1."""
  v = np.zeros(NUM_EMOTIONS, np.float32)
  if strength <= 0:
    v[EMOTION_INDEX["neutral"]] = 1.0
  else:
    v[EMOTION_INDEX[name]] = strength
  return v


def single_prompt_label(emotion: str) -> np.ndarray:
  """FED's label of a one-word prompt: the emotion at ``fed.BARE`` (neutral: 1, as the
  benchmark labels its neutral clips)."""
  return one_hot(emotion) if emotion == "neutral" else one_hot(emotion, BARE)


def label_vector(d: dict) -> np.ndarray:
  v = np.zeros(NUM_EMOTIONS, np.float32)
  for k, x in d.items():
    v[EMOTION_INDEX[k]] = x
  return v


def _constraint(gen):
  """The checkpoint's sampler.ConstraintConfig (the default every variant changes)."""
  return sampler.ConstraintConfig.from_config(gen.config.sampler.constraint)


class _Runner:
  """Generates a condition for every source and judges the frames."""

  def __init__(self, gen, judge, sources: Sequence[Source], st: EvalSettings):
    self.gen, self.judge, self.sources, self.st = gen, judge, sources, st
    self.n_frames = 0
    self.seconds = 0.0
    self._src_embedding = {}
    self.renderings = Renderings(judge)

  def source_embedding(self, src: Source) -> np.ndarray:
    if src.identity not in self._src_embedding:
      self._src_embedding[src.identity] = self.judge.predict(src.portrait[None])["embedding"][0]
    return self._src_embedding[src.identity]

  def frames_of(
    self,
    src: Source,
    frames: int,
    *,
    prompt=None,
    intensities=None,
    constraint=None,
    guidance=None,
    mask=None,
    intensity_gamma=None,
  ) -> np.ndarray:
    """(frames, S, S, 3) uint8 generated for ``src``."""
    n_samples = int(round(frames * self.gen.sample_rate / self.gen.fps))
    t0 = time.perf_counter()
    out, _ = self.gen.generate(
      src.portrait,
      src.audio[:n_samples],
      prompt=prompt,
      intensities=intensities,
      steps=self.st.steps,
      guidance=self.st.guidance if guidance is None else guidance,
      constraint=constraint,
      seed=self.st.seed,
      face_mask=src.face_mask,
      batch_frames=min(self.st.batch_frames, frames),
      mask=mask,
      intensity_gamma=intensity_gamma,
    )
    self.seconds += time.perf_counter() - t0
    self.n_frames += len(out)
    return out


def _nanmean(units: np.ndarray) -> float:
  return float(np.nanmean(units)) if np.isfinite(units).any() else float("nan")


def _single(
  run: _Runner,
  use_text: bool = True,
  prompts: Sequence[str] = SINGLE_PROMPTS,
  ground_truth: bool = False,
  **kw,
) -> dict:
  """One condition per emotion (``prompts[e]`` names emotion e, MEAD order) for every
  source: top-1 accuracy (per frame) and identity similarity to the source portrait; with
  ``ground_truth`` also the identity similarity of the benchmark's rendering of each
  prompt's label on the same clip (the ceiling). 'units': (identities, prompts) arrays.

  Identity split by what was drawn (non-neutral prompts): the frames the judge reads as the
  asked emotion ('identity_similarity_expression_drawn') and the others ('..._missed'), so
  a high identity figure can be told apart from frames that copy the neutral portrait
  (units nan where a unit has no such frame; neutral's column is nan)."""
  preds, targets = [], []
  n_id, n_p = len(run.sources), len(prompts)
  acc_u, sim_u, sim_gt_u = np.zeros((n_id, n_p)), np.zeros((n_id, n_p)), np.zeros((n_id, n_p))
  drawn_u, missed_u = np.full((n_id, n_p), np.nan), np.full((n_id, n_p), np.nan)
  for i, src in enumerate(run.sources):
    emb_src = run.source_embedding(src)
    for e, prompt in enumerate(prompts):
      if use_text:
        f = run.frames_of(src, run.st.frames, prompt=prompt, **kw)
      else:
        f = run.frames_of(src, run.st.frames, intensities=one_hot(EMOTIONS[e]), **kw)
      p = run.judge.predict(f)
      preds.append(p["intensities"])
      targets.append(np.repeat(one_hot(EMOTIONS[e])[None], len(f), 0))
      hit = np.argmax(p["intensities"], -1) == e
      sim = metrics.cosine(p["embedding"], emb_src)
      acc_u[i, e], sim_u[i, e] = float(np.mean(hit)), float(np.mean(sim))
      if EMOTIONS[e] != "neutral":
        drawn_u[i, e] = float(np.mean(sim[hit])) if hit.any() else np.nan
        missed_u[i, e] = float(np.mean(sim[~hit])) if (~hit).any() else np.nan
      if ground_truth:
        r = run.renderings(src, single_prompt_label(EMOTIONS[e]), len(f))
        sim_gt_u[i, e] = float(np.mean(metrics.cosine(r["embedding"], emb_src)))
  acc = metrics.emotion_accuracy(np.concatenate(preds), np.concatenate(targets))
  out = {
    "emotion_accuracy": acc["top1"],
    "frames": int(sum(len(p) for p in preds)),
    "per_emotion": acc["per_emotion"],
    "confusion": acc["confusion"],
    "identity_similarity": float(sim_u.mean()),
    "identity_similarity_per_identity": {
      s.identity: float(sim_u[i].mean()) for i, s in enumerate(run.sources)
    },
    "identity_similarity_expression_drawn": _nanmean(drawn_u),
    "identity_similarity_expression_missed": _nanmean(missed_u),
    "units": {
      "emotion_accuracy": acc_u.tolist(),
      "identity_similarity": sim_u.tolist(),
      "identity_similarity_expression_drawn": drawn_u.tolist(),
      "identity_similarity_expression_missed": missed_u.tolist(),
    },
  }
  if ground_truth:
    out["identity_similarity_ground_truth"] = float(sim_gt_u.mean())
    out["units"]["identity_similarity_ground_truth"] = sim_gt_u.tolist()
  return out


def _mixed(run: _Runner, explicit: bool = False, intensity_gamma: float | None = None) -> dict:
  """MIXED_PROMPTS through the EIB, or (``explicit``) their label vectors given directly,
  which separates what the EIB reads from what the generator can draw. ``intensity_gamma``
  (None: the generator's, 1 unless a calibration is in use) is passed to every
  ``generate``. Per (identity, prompt): top-2 accuracy over the frames, and the intensity
  error of the judge's readings against its readings of the benchmark's rendering of the
  same label on the same clip (``metrics.intensity_error``), beside that rendering's own
  error against the label."""
  n_id, n_p = len(run.sources), len(MIXED_PROMPTS)
  top2_u, err_u, err_gt_u = np.zeros((n_id, n_p)), np.zeros((n_id, n_p)), np.zeros((n_id, n_p))
  for j, (prompt, label) in enumerate(MIXED_PROMPTS):
    v = label_vector(label)
    for i, src in enumerate(run.sources):
      cond = {"intensities": v} if explicit else {"prompt": prompt}
      p = run.judge.predict(
        run.frames_of(src, run.st.frames, intensity_gamma=intensity_gamma, **cond)
      )["intensities"]
      ref = run.renderings(src, v, len(p))["intensities"]
      top2_u[i, j] = metrics.emotion_accuracy(p, np.repeat(v[None], len(p), 0))["top2_mixed"]
      err_u[i, j] = metrics.intensity_error(p, ref, v)
      err_gt_u[i, j] = metrics.intensity_error(ref, v, v)
  names = [p for p, _ in MIXED_PROMPTS]
  return {
    "mixed_top2_accuracy": float(top2_u.mean()),
    "mixed_intensity_error": float(err_u.mean()),
    "mixed_intensity_error_ground_truth": float(err_gt_u.mean()),
    "per_prompt": dict(zip(names, top2_u.mean(0).tolist())),
    "intensity_error_per_prompt": dict(zip(names, err_u.mean(0).tolist())),
    "intensity_error_ground_truth_per_prompt": dict(zip(names, err_gt_u.mean(0).tolist())),
    "units": {
      "mixed_top2_accuracy": top2_u.tolist(),
      "mixed_intensity_error": err_u.tolist(),
      "mixed_intensity_error_ground_truth": err_gt_u.tolist(),
    },
  }


def _sweep(run: _Runner) -> dict:
  """Explicit s_k = a for the 7 non-neutral emotions and a in SWEEP_STRENGTHS; the judge's
  intensity k of the generated frames, and of the benchmark's renderings of the same labels
  (the ceiling). Spearman on the per-strength means and over the frames."""
  emotions = list(range(1, NUM_EMOTIONS))
  n_id, n_a = len(run.sources), len(SWEEP_STRENGTHS)
  f = run.st.sweep_frames or run.st.frames
  gen_r = np.zeros((n_id, len(emotions), n_a, f))
  gt_r = np.zeros_like(gen_r)
  for i, src in enumerate(run.sources):
    for j, e in enumerate(emotions):
      for k, a in enumerate(SWEEP_STRENGTHS):
        v = one_hot(EMOTIONS[e], a)
        gen_r[i, j, k] = run.judge.predict(run.frames_of(src, f, intensities=v))["intensities"][
          :, e
        ]
        gt_r[i, j, k] = run.renderings(src, v, f)["intensities"][:, e]
  out = {
    "strengths": list(SWEEP_STRENGTHS),
    "readings": gen_r.tolist(),
    "readings_ground_truth": gt_r.tolist(),
  }
  for name, r in (("", gen_r), ("_ground_truth", gt_r)):
    for red, suffix in (("mean", ""), ("none", "_frames")):
      m, per = metrics.sweep_spearman(r, SWEEP_STRENGTHS, reduce=red)
      out[f"intensity_spearman{suffix}{name}"] = m
      out[f"per_emotion{suffix}{name}"] = {EMOTIONS[e]: v for e, v in zip(emotions, per)}
  out["judge_intensity_means"] = {
    EMOTIONS[e]: gen_r[:, j].mean(axis=(0, 2)).tolist() for j, e in enumerate(emotions)
  }
  return out


def _lip(run: _Runner) -> dict:
  """The reference clip's audio with explicit neutral, ``lip_frames`` frames per source:
  lip sync (judge mouth opening vs audio envelope) beside the same on the ground-truth
  frames, PSNR / SSIM against them, and ``flicker`` outside the mouth box for both."""
  sr, fps = run.gen.sample_rate, run.gen.fps
  mouths, truths, audios, gens, refs, flick, flick_gt = [], [], [], [], [], [], []
  for src in run.sources:
    n = min(run.st.lip_frames, len(src.truth))
    f = run.frames_of(src, n, intensities=one_hot("neutral"))
    mouths.append(run.judge.predict(f)["mouth_open"])
    truths.append(run.judge.predict(src.truth[:n])["mouth_open"])
    audios.append(src.audio[: int(round(n * sr / fps))])
    gens.append(f)
    refs.append(src.truth[:n])
    box = src.mouth_box if src.mouth_box is not None else mouth_region(src.face_mask)
    flick.append(metrics.flicker(f, box))
    flick_gt.append(metrics.flicker(src.truth[:n], box))
  gen_sync = metrics.lip_sync_correlation(mouths, audios, fps, sr)
  true_sync = metrics.lip_sync_correlation(truths, audios, fps, sr)
  ps = metrics.psnr_ssim(np.concatenate(gens) / 255.0, np.concatenate(refs) / 255.0)
  col = lambda v: [[x] for x in v]  # noqa: E731 - (identities, 1): one clip each
  return {
    "lip_sync_correlation": gen_sync["mean"],
    "per_clip": gen_sync["per_clip"],
    "n_undefined": gen_sync["num_undefined"],
    "lip_sync_ground_truth_frames": true_sync["mean"],
    "n_undefined_ground_truth": true_sync["num_undefined"],
    "psnr_vs_ground_truth": ps["psnr"],
    "ssim_vs_ground_truth": ps["ssim"],
    "flicker": float(np.mean(flick)),
    "flicker_ground_truth": float(np.mean(flick_gt)),
    "units": {
      "lip_sync_correlation": col(gen_sync["per_clip"]),
      "lip_sync_ground_truth_frames": col(true_sync["per_clip"]),
      "flicker": col(flick),
      "flicker_ground_truth": col(flick_gt),
    },
  }


def evaluate(
  gen, judge, sources: Sequence[Source], st: EvalSettings, log: Callable[[str], None] = print
) -> dict:
  """The metrics of the module docstring. Returns a dict whose first keys are METRIC_KEYS
  (floats; n_* ints), then the other figures, ``<key>_ci`` [lo, hi] for ``intervals.CI_KEYS``,
  ``n_undefined`` {figure: units left out as undefined}, the details per part (with the
  per-unit values the intervals are drawn from) and the timing."""
  st.validate()
  run = _Runner(gen, judge, sources, st)
  t0 = time.perf_counter()
  parts = {}
  steps = [
    ("single", lambda: _single(run, ground_truth=True)),
    (
      "single_no_constraint",
      lambda: _single(run, constraint=dataclasses.replace(_constraint(gen), strength=0.0)),
    ),
    ("mixed", lambda: _mixed(run)),
    ("mixed_explicit", lambda: _mixed(run, explicit=True)),
  ]
  calibrated = gen.intensity_gamma != 1.0
  if calibrated:  # the headline is the model's own: the same prompts uncalibrated
    steps.append(("mixed_uncalibrated", lambda: _mixed(run, intensity_gamma=1.0)))
  steps += [
    ("paraphrases", lambda: _single(run, prompts=[p for p, _ in PARAPHRASES])),
    ("sweep", lambda: _sweep(run)),
    ("lip", lambda: _lip(run)),
    ("ceiling", lambda: autoencoder_ceiling(gen, judge, sources)),
    ("ceiling_labels", lambda: mixed_label_ceiling(judge, sources, st.frames, run.renderings)),
  ]
  for k, (name, fn) in enumerate(steps):
    t = time.perf_counter()
    parts[name] = fn()
    log(
      f"[eval] {k + 1}/{len(steps)} {name}: {run.n_frames} frames so far, "
      f"{time.perf_counter() - t:.0f} s"
    )
  single, nc, sw, lip = parts["single"], parts["single_no_constraint"], parts["sweep"], parts["lip"]
  mixed = parts["mixed_uncalibrated" if calibrated else "mixed"]
  out = {
    "emotion_accuracy": single["emotion_accuracy"],
    "mixed_top2_accuracy": mixed["mixed_top2_accuracy"],
    "intensity_spearman": sw["intensity_spearman"],
    "identity_similarity": single["identity_similarity"],
    "identity_similarity_no_constraint": nc["identity_similarity"],
    "lip_sync_correlation": lip["lip_sync_correlation"],
    "n_identities": len(sources),
    "n_frames": run.n_frames,
    "identity_similarity_ground_truth": single["identity_similarity_ground_truth"],
    "identity_similarity_constraint_gain": single["identity_similarity"]
    - nc["identity_similarity"],
    "identity_similarity_expression_drawn": single["identity_similarity_expression_drawn"],
    "identity_similarity_expression_missed": single["identity_similarity_expression_missed"],
    "identity_similarity_expression_drawn_no_constraint": nc[
      "identity_similarity_expression_drawn"
    ],
    "identity_similarity_expression_missed_no_constraint": nc[
      "identity_similarity_expression_missed"
    ],
    "mixed_intensity_error": mixed["mixed_intensity_error"],
    "mixed_intensity_error_ground_truth": mixed["mixed_intensity_error_ground_truth"],
    "intensity_spearman_frames": sw["intensity_spearman_frames"],
    "intensity_spearman_ground_truth": sw["intensity_spearman_ground_truth"],
    "intensity_spearman_frames_ground_truth": sw["intensity_spearman_frames_ground_truth"],
    "flicker": lip["flicker"],
    "flicker_ground_truth": lip["flicker_ground_truth"],
    "lip_sync_ground_truth_frames": lip["lip_sync_ground_truth_frames"],
    "psnr_vs_ground_truth": lip["psnr_vs_ground_truth"],
    "ssim_vs_ground_truth": lip["ssim_vs_ground_truth"],
    "emotion_accuracy_no_constraint": nc["emotion_accuracy"],
    "paraphrase_emotion_accuracy": parts["paraphrases"]["emotion_accuracy"],
    "mixed_top2_accuracy_explicit": parts["mixed_explicit"]["mixed_top2_accuracy"],
    "mixed_intensity_error_explicit": parts["mixed_explicit"]["mixed_intensity_error"],
    "intensity_gamma": gen.intensity_gamma,
    "mixed_top2_accuracy_uncalibrated": mixed["mixed_top2_accuracy"],
    "ceiling_emotion_accuracy_autoencoder": parts["ceiling"]["autoencoder"]["emotion_top1"],
    "ceiling_emotion_accuracy_ground_truth": parts["ceiling"]["ground_truth"]["emotion_top1"],
    "ceiling_mixed_top2_autoencoder": parts["ceiling"]["autoencoder"]["mixed_top2"],
    "ceiling_mixed_top2_labels": parts["ceiling_labels"]["mixed_top2"],
  }
  if calibrated:
    out["mixed_top2_accuracy_calibrated"] = parts["mixed"]["mixed_top2_accuracy"]
    out["mixed_intensity_error_calibrated"] = parts["mixed"]["mixed_intensity_error"]
  out.update(intervals.intervals(parts, SWEEP_STRENGTHS, st.n_boot, st.seed))
  n_sweep = lambda key: sum(math.isnan(v) for v in sw[key].values())  # noqa: E731
  out["n_undefined"] = {
    "emotion_accuracy": 0,
    "mixed_top2_accuracy": 0,
    "mixed_intensity_error": 0,
    "identity_similarity": 0,
    "identity_similarity_no_constraint": 0,
    "identity_similarity_expression_drawn": _n_nan(single, "identity_similarity_expression_drawn"),
    "identity_similarity_expression_missed": _n_nan(
      single, "identity_similarity_expression_missed"
    ),
    "identity_similarity_expression_drawn_no_constraint": _n_nan(
      nc, "identity_similarity_expression_drawn"
    ),
    "identity_similarity_expression_missed_no_constraint": _n_nan(
      nc, "identity_similarity_expression_missed"
    ),
    "intensity_spearman": n_sweep("per_emotion"),
    "intensity_spearman_frames": n_sweep("per_emotion_frames"),
    "intensity_spearman_ground_truth": n_sweep("per_emotion_ground_truth"),
    "lip_sync_correlation": lip["n_undefined"],
    "lip_sync_ground_truth_frames": lip["n_undefined_ground_truth"],
    "flicker": 0,
  }
  out.update(
    {
      "details": parts,
      "settings": dataclasses.asdict(st),
      "identities": [s.identity for s in sources],
      "seconds": round(time.perf_counter() - t0, 1),
      "generation_seconds": round(run.seconds, 1),
    }
  )
  return out


def _n_nan(part: dict, key: str) -> int:
  """Units of a non-neutral prompt whose value is undefined (no such frame)."""
  u = np.asarray(part["units"][key], np.float64)
  cols = [e for e, name in enumerate(EMOTIONS) if name != "neutral" and e < u.shape[1]]
  return int(np.isnan(u[:, cols]).sum())


NO_CONSTRAINT_AT_ALL = "no identity constraint (init noise, strength 0)"


def ablation_variants(gen) -> list[tuple[str, dict]]:
  """(name, generate kwargs) for each ablation; 'default' first."""
  base = _constraint(gen)
  g0 = float(gen.config.sampler.guidance)
  out = [("default", {})]
  for s in (0.0, 0.25, 0.75, 1.0):
    if abs(s - base.strength) > 1e-9:
      out.append(
        (f"constraint strength {s:g}", {"constraint": dataclasses.replace(base, strength=s)})
      )
  other_init = "noise" if base.init == "inversion" else "inversion"
  out.append((f"init {other_init}", {"constraint": dataclasses.replace(base, init=other_init)}))
  # Neither half of the Z_T / z_hat_t constraint: sampled from noise, nothing pulled back.
  out.append(
    (NO_CONSTRAINT_AT_ALL, {"constraint": dataclasses.replace(base, init="noise", strength=0.0)})
  )
  for g in (1.0, 4.0):
    if abs(g - g0) > 1e-9:
      out.append((f"guidance {g:g}", {"guidance": g}))
  out.append(("one-hot intensities (no text)", {"use_text": False}))
  other_mask = "lower_face" if str(gen.config.data.mask) == "face" else "face"
  out.append((f"mask {other_mask}", {"mask": other_mask}))
  return out


def run_ablations(
  gen,
  judge,
  sources: Sequence[Source],
  st: EvalSettings,
  log: Callable[[str], None] = print,
  result: dict | None = None,
) -> list[dict]:
  """Emotion accuracy and identity similarity of the single-emotion conditions under each
  of ``ablation_variants``; rows in that order. ``result``: ``evaluate``'s output for the
  same generator, sources and settings, whose 'single' and 'single_no_constraint' parts
  are the 'default' and 'constraint strength 0' rows (not generated again)."""
  st.validate()
  base = _constraint(gen)
  done = {}
  if result is not None:
    done["default"] = result["details"]["single"]
    if base.strength != 0:
      done["constraint strength 0"] = result["details"]["single_no_constraint"]
  rows = []
  variants = ablation_variants(gen)
  ci = lambda v: metrics.bootstrap_ci(v, n_boot=st.n_boot, seed=st.seed)  # noqa: E731
  for k, (name, kw) in enumerate(variants):
    t = time.perf_counter()
    use_text = kw.pop("use_text", True)
    r = done.get(name) or _single(_Runner(gen, judge, sources, st), use_text=use_text, **kw)
    done.setdefault(name, r)
    c = kw.get("constraint", base)
    units = {key: np.asarray(v, np.float64) for key, v in r["units"].items()}
    # paired with the default: the same (identity, prompt) units
    gain = units["identity_similarity"] - np.asarray(
      done["default"]["units"]["identity_similarity"], np.float64
    )
    rows.append(
      {
        "variant": name,
        "emotion_accuracy": r["emotion_accuracy"],
        "emotion_accuracy_ci": ci(units["emotion_accuracy"]),
        "identity_similarity": r["identity_similarity"],
        "identity_similarity_ci": ci(units["identity_similarity"]),
        "identity_change_vs_default": float(gain.mean()),
        "identity_change_vs_default_ci": ci(gain),
        "identity_similarity_expression_drawn": r["identity_similarity_expression_drawn"],
        "identity_similarity_expression_drawn_ci": ci(
          units["identity_similarity_expression_drawn"]
        ),
        "constraint_strength": float(c.strength),
        "init": c.init,
        "guidance": float(
          kw.get(
            "guidance", st.guidance if st.guidance is not None else gen.config.sampler.guidance
          )
        ),
        "emotion_source": "prompt" if use_text else "intensities",
        "mask": kw.get("mask", str(gen.config.data.mask)),
        "frames": r["frames"],
      }
    )
    log(
      f"[eval] ablation {k + 1}/{len(variants)} {name}: emotion {r['emotion_accuracy']:.3f}, "
      f"identity {r['identity_similarity']:.3f} ({time.perf_counter() - t:.0f} s)"
    )
  return rows


def log_stderr(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)
