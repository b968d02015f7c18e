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
  benchmark labels a clip of that strength) for the 7 non-neutral emotions -> Spearman of the judge's intensity k against a, on the mean
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

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS

# One-word prompts per emotion, MEAD order (the EIB reads each as that emotion at 0.7).
SINGLE_PROMPTS = ("neutral", "angry", "contemptuous", "disgusted", "fearful", "happy", "sad",
                  "surprised")
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
METRIC_KEYS = ("emotion_accuracy", "mixed_top2_accuracy", "intensity_spearman",
               "identity_similarity", "identity_similarity_no_constraint",
               "lip_sync_correlation", "n_identities", "n_frames")


@dataclasses.dataclass
class EvalSettings:
  """What ``evaluate`` generates. frames: frames per condition (0.04 s each at 25 fps);
  batch_frames: the most frames per compiled chunk (a condition of fewer frames is one
  chunk of exactly its frames, so no padding is sampled)."""
  num_identities: int = 4
  frames: int = 4
  lip_frames: int = 25
  steps: int | None = None          # DDIM steps (None: the checkpoint's config.sampler.steps)
  guidance: float | None = None
  seed: int = 0
  batch_frames: int = 8

  def validate(self) -> "EvalSettings":
    for name in ("num_identities", "frames", "lip_frames", "batch_frames"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
    if self.lip_frames < 3:
      raise ValueError(f"--lip-frames must be >= 3 for a correlation, got {self.lip_frames}")
    return self


@dataclasses.dataclass
class Source:
  """A held-out identity's source: portrait (S,S,3) uint8, face mask (S,S), audio (L,)
  float32 16 kHz, ground-truth frames of the reference clip (T,S,S,3) uint8; and every
  CLIP_STRIDE-th frame of all its test clips (N,S,S,3) uint8 with their labels (N,8)."""
  identity: int
  portrait: np.ndarray
  face_mask: np.ndarray
  audio: np.ndarray
  truth: np.ndarray
  clip_frames: np.ndarray | None = None
  clip_emotions: np.ndarray | None = None
  identity_params: np.ndarray | None = None   # (P,) the renderer's identity vector u
  synthetic_seed: int = 0


CLIP_STRIDE = 5


def heldout_sources(size: str, data_dir: str | None, num_identities: int,
                    synthetic_seed: int = 0) -> tuple[list[Source], str]:
  """The first ``num_identities`` test-split identities (by id) with their neutral
  reference clip. Reads ``data_dir``'s TFDS build when given, else renders the split."""
  from emotalker_jax.evaluation.judge import test_clips
  recs, where = test_clips(size, data_dir, synthetic_seed)
  refs = sorted((r for r in recs if bool(r["is_neutral_reference"])),
                key=lambda r: int(r["identity"]))
  if len(refs) < num_identities:
    raise ValueError(f"synthetic_talk/{size} has {len(refs)} test identities, fewer than "
                     f"--identities {num_identities}")
  out = []
  for r in refs[:num_identities]:
    mine = [q for q in recs if int(q["identity"]) == int(r["identity"])]
    frames = np.concatenate([np.asarray(q["frames"])[::CLIP_STRIDE] for q in mine])
    labels = np.concatenate([np.repeat(np.asarray(q["emotion"], np.float32)[None],
                                       len(np.asarray(q["frames"])[::CLIP_STRIDE]), 0)
                             for q in mine])
    out.append(Source(int(r["identity"]), np.asarray(r["frames"][0]),
                      np.asarray(r["face_mask"][0]), np.asarray(r["audio"], np.float32),
                      np.asarray(r["frames"]), frames, labels,
                      np.asarray(r["identity_params"], np.float32), int(synthetic_seed)))
  return out, where


def render_reference_clip(src: Source, emotion: np.ndarray, frames: int) -> np.ndarray:
  """The first ``frames`` frames (frames, S, S, 3) uint8 of ``src``'s reference clip as the
  benchmark renders it with intensities ``emotion`` (8,) instead of neutral: the same
  identity, speech, head motion and blinks (with the neutral label: ``src.truth``)."""
  from input_pipeline.synthetic import clips
  if src.identity_params is None:
    raise ValueError(f"source identity {src.identity} has no identity_params: only "
                     "synthetic_talk sources (heldout_sources) can be re-rendered")
  spec = clips.ClipSpec(src.identity, 0, np.asarray(emotion, np.float32), True)
  rec = clips.render_clip(spec, src.identity_params, src.portrait.shape[0], len(src.truth),
                          src.synthetic_seed)
  return rec["frames"][:frames]


def mixed_label_ceiling(judge, sources: Sequence[Source], frames: int) -> dict:
  """The judge's top-2 accuracy on ground-truth renderings of the ``MIXED_PROMPTS`` labels
  (``render_reference_clip``, ``frames`` per source): the mixed metric's ceiling."""
  from emotalker_jax.evaluation import metrics
  preds, targets, per_prompt = [], [], {}
  for prompt, label in MIXED_PROMPTS:
    v = label_vector(label)
    p = judge.predict(np.concatenate([render_reference_clip(s, v, frames)
                                      for s in sources]))["intensities"]
    t = np.repeat(v[None], len(p), 0)
    per_prompt[prompt] = metrics.emotion_accuracy(p, t)["top2_mixed"]
    preds.append(p)
    targets.append(t)
  acc = metrics.emotion_accuracy(np.concatenate(preds), np.concatenate(targets))
  return {"mixed_top2": acc["top2_mixed"], "per_prompt": per_prompt}


def autoencoder_ceiling(gen, judge, sources: Sequence[Source]) -> dict:
  """What the judge reads from the sources' ground-truth test frames and from their
  autoencoder reconstructions D(E(x)): an upper bound on any generator that decodes
  through this autoencoder (top-1 on single-emotion frames, top-2 on mixtures, PSNR)."""
  import jax
  import jax.numpy as jnp

  from emotalker_jax.evaluation import metrics
  from emotalker_jax.models.autoencoder import decode_latent, encode_to_latent
  x = np.concatenate([s.clip_frames for s in sources])
  labels = np.concatenate([s.clip_emotions for s in sources])
  rt = jax.jit(lambda p, v: decode_latent(gen.vae, p, encode_to_latent(gen.vae, p, v)))
  rec = np.concatenate([np.asarray(rt(gen.vae_params, jnp.asarray(x[i:i + 64] / 127.5 - 1.0,
                                                                    jnp.float32)))
                        for i in range(0, len(x), 64)])
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


def label_vector(d: dict) -> np.ndarray:
  v = np.zeros(NUM_EMOTIONS, np.float32)
  for k, x in d.items():
    v[EMOTION_INDEX[k]] = x
  return v


def _constraint(gen):
  """The checkpoint's sampler.ConstraintConfig (the default every variant changes)."""
  from emotalker_jax.diffusion import sampler
  return sampler.ConstraintConfig.from_config(gen.config.sampler.constraint)


class _Runner:
  """Generates a condition for every source and judges the frames."""

  def __init__(self, gen, judge, sources: Sequence[Source], st: EvalSettings):
    self.gen, self.judge, self.sources, self.st = gen, judge, sources, st
    self.n_frames = 0
    self.seconds = 0.0
    self._src_embedding = {}

  def source_embedding(self, src: Source) -> np.ndarray:
    if src.identity not in self._src_embedding:
      self._src_embedding[src.identity] = self.judge.predict(src.portrait[None])["embedding"][0]
    return self._src_embedding[src.identity]

  def frames_of(self, src: Source, frames: int, *, prompt=None, intensities=None,
                constraint=None, guidance=None, mask=None,
                intensity_gamma=None) -> np.ndarray:
    """(frames, S, S, 3) uint8 generated for ``src``."""
    n_samples = int(round(frames * self.gen.sample_rate / self.gen.fps))
    t0 = time.perf_counter()
    out, _ = self.gen.generate(
        src.portrait, src.audio[:n_samples], prompt=prompt, intensities=intensities,
        steps=self.st.steps, guidance=self.st.guidance if guidance is None else guidance,
        constraint=constraint, seed=self.st.seed, face_mask=src.face_mask,
        batch_frames=min(self.st.batch_frames, frames), mask=mask,
        intensity_gamma=intensity_gamma)
    self.seconds += time.perf_counter() - t0
    self.n_frames += len(out)
    return out

def _single(run: _Runner, use_text: bool = True, prompts: Sequence[str] = SINGLE_PROMPTS,
            **kw) -> dict:
  """One condition per emotion (``prompts[e]`` names emotion e, MEAD order) for every
  source: top-1 accuracy (per frame) and identity similarity to the source portrait."""
  from emotalker_jax.evaluation import metrics
  preds, targets, sims, per_id = [], [], [], {}
  for src in run.sources:
    emb_src = run.source_embedding(src)
    for e, prompt in enumerate(prompts):
      if use_text:
        f = run.frames_of(src, run.st.frames, prompt=prompt, **kw)
      else:
        f = run.frames_of(src, run.st.frames, intensities=one_hot(EMOTIONS[e]), **kw)
      p = run.judge.predict(f)
      preds.append(p["intensities"])
      targets.append(np.repeat(one_hot(EMOTIONS[e])[None], len(f), 0))
      sims.append(metrics.cosine(p["embedding"], emb_src))
    per_id[src.identity] = float(np.mean(np.concatenate(sims[-len(prompts):])))
  acc = metrics.emotion_accuracy(np.concatenate(preds), np.concatenate(targets))
  return {"emotion_accuracy": acc["top1"], "frames": int(sum(len(p) for p in preds)),
          "per_emotion": acc["per_emotion"],
          "confusion": acc["confusion"],
          "identity_similarity": float(np.mean(np.concatenate(sims))),
          "identity_similarity_per_identity": per_id}


def _mixed(run: _Runner, explicit: bool = False, intensity_gamma: float | None = None) -> dict:
  """MIXED_PROMPTS through the EIB, or (``explicit``) their label vectors given directly,
  which separates what the EIB reads from what the generator can draw. ``intensity_gamma``
  (None: the generator's calibration) is passed to every ``generate``."""
  from emotalker_jax.evaluation import metrics
  preds, targets, per_prompt = [], [], {}
  for prompt, label in MIXED_PROMPTS:
    ok = []
    for src in run.sources:
      cond = {"intensities": label_vector(label)} if explicit else {"prompt": prompt}
      p = run.judge.predict(run.frames_of(src, run.st.frames, intensity_gamma=intensity_gamma,
                                          **cond))["intensities"]
      t = np.repeat(label_vector(label)[None], len(p), 0)
      preds.append(p)
      targets.append(t)
      ok.append(metrics.emotion_accuracy(p, t)["top2_mixed"])
    per_prompt[prompt] = float(np.mean(ok))
  acc = metrics.emotion_accuracy(np.concatenate(preds), np.concatenate(targets))
  return {"mixed_top2_accuracy": acc["top2_mixed"], "per_prompt": per_prompt}


def _sweep(run: _Runner) -> dict:
  from emotalker_jax.evaluation import metrics
  strengths, emo, pred = [], [], []
  for src in run.sources:
    for e in range(1, NUM_EMOTIONS):
      for a in SWEEP_STRENGTHS:
        p = run.judge.predict(run.frames_of(src, run.st.frames, intensities=one_hot(EMOTIONS[e], a)))
        pred.append(p["intensities"][:, e])
        strengths += [a] * len(p["intensities"])
        emo += [e] * len(p["intensities"])
  pred, strengths, emo = np.concatenate(pred), np.array(strengths), np.array(emo)
  sp = metrics.intensity_spearman(strengths, pred, emo)
  means = {EMOTIONS[e]: [float(pred[(emo == e) & (strengths == a)].mean())
                         for a in SWEEP_STRENGTHS] for e in range(1, NUM_EMOTIONS)}
  return {"intensity_spearman": sp["mean"], "per_emotion": sp["per_emotion"],
          "strengths": list(SWEEP_STRENGTHS), "judge_intensity_means": means}


def _lip(run: _Runner) -> dict:
  from emotalker_jax.evaluation import metrics
  sr, fps = run.gen.sample_rate, run.gen.fps
  mouths, truths, audios, gens, refs = [], [], [], [], []
  for src in run.sources:
    n = min(run.st.lip_frames, len(src.truth))
    f = run.frames_of(src, n, intensities=one_hot("neutral"))
    mouths.append(run.judge.predict(f)["mouth_open"])
    truths.append(run.judge.predict(src.truth[:n])["mouth_open"])
    audios.append(src.audio[: int(round(n * sr / fps))])
    gens.append(f)
    refs.append(src.truth[:n])
  gen_sync = metrics.lip_sync_correlation(mouths, audios, fps, sr)
  true_sync = metrics.lip_sync_correlation(truths, audios, fps, sr)
  ps = metrics.psnr_ssim(np.concatenate(gens) / 255.0, np.concatenate(refs) / 255.0)
  return {"lip_sync_correlation": gen_sync["mean"], "per_clip": gen_sync["per_clip"],
          "lip_sync_ground_truth_frames": true_sync["mean"],
          "psnr_vs_ground_truth": ps["psnr"], "ssim_vs_ground_truth": ps["ssim"]}


def evaluate(gen, judge, sources: Sequence[Source], st: EvalSettings,
             log: Callable[[str], None] = print) -> dict:
  """The metrics of the module docstring. Returns a dict whose first keys are METRIC_KEYS
  (floats; n_* ints), then the details per part and the timing."""
  st.validate()
  run = _Runner(gen, judge, sources, st)
  t0 = time.perf_counter()
  parts = {}
  steps = [("single", lambda: _single(run)),
           ("single_no_constraint", lambda: _single(
               run, constraint=dataclasses.replace(_constraint(gen), strength=0.0))),
           ("mixed", lambda: _mixed(run)),
           ("mixed_explicit", lambda: _mixed(run, explicit=True))]
  calibrated = gen.intensity_gamma != 1.0
  if calibrated:    # the same prompts without the calibration, for comparison
    steps.append(("mixed_uncalibrated", lambda: _mixed(run, intensity_gamma=1.0)))
  steps += [("paraphrases", lambda: _single(run, prompts=[p for p, _ in PARAPHRASES])),
             ("sweep", lambda: _sweep(run)),
             ("lip", lambda: _lip(run)),
             ("ceiling", lambda: autoencoder_ceiling(gen, judge, sources)),
             ("ceiling_labels", lambda: mixed_label_ceiling(judge, sources, st.frames))]
  for k, (name, fn) in enumerate(steps):
    t = time.perf_counter()
    parts[name] = fn()
    log(f"[eval] {k + 1}/{len(steps)} {name}: {run.n_frames} frames so far, "
        f"{time.perf_counter() - t:.0f} s")
  out = {
      "emotion_accuracy": parts["single"]["emotion_accuracy"],
      "mixed_top2_accuracy": parts["mixed"]["mixed_top2_accuracy"],
      "intensity_spearman": parts["sweep"]["intensity_spearman"],
      "identity_similarity": parts["single"]["identity_similarity"],
      "identity_similarity_no_constraint":
          parts["single_no_constraint"]["identity_similarity"],
      "lip_sync_correlation": parts["lip"]["lip_sync_correlation"],
      "n_identities": len(sources),
      "n_frames": run.n_frames,
      "lip_sync_ground_truth_frames": parts["lip"]["lip_sync_ground_truth_frames"],
      "psnr_vs_ground_truth": parts["lip"]["psnr_vs_ground_truth"],
      "ssim_vs_ground_truth": parts["lip"]["ssim_vs_ground_truth"],
      "emotion_accuracy_no_constraint": parts["single_no_constraint"]["emotion_accuracy"],
      "paraphrase_emotion_accuracy": parts["paraphrases"]["emotion_accuracy"],
      "mixed_top2_accuracy_explicit": parts["mixed_explicit"]["mixed_top2_accuracy"],
      "intensity_gamma": gen.intensity_gamma,
      "mixed_top2_accuracy_uncalibrated":
          parts["mixed_uncalibrated" if calibrated else "mixed"]["mixed_top2_accuracy"],
      "ceiling_emotion_accuracy_autoencoder": parts["ceiling"]["autoencoder"]["emotion_top1"],
      "ceiling_mixed_top2_autoencoder": parts["ceiling"]["autoencoder"]["mixed_top2"],
      "ceiling_mixed_top2_labels": parts["ceiling_labels"]["mixed_top2"],
      "details": parts,
      "settings": dataclasses.asdict(st),
      "identities": [s.identity for s in sources],
      "seconds": round(time.perf_counter() - t0, 1),
      "generation_seconds": round(run.seconds, 1),
  }
  return out


def ablation_variants(gen) -> list[tuple[str, dict]]:
  """(name, generate kwargs) for each ablation; 'default' first."""
  base = _constraint(gen)
  g0 = float(gen.config.sampler.guidance)
  out = [("default", {})]
  for s in (0.0, 0.25, 0.75, 1.0):
    if abs(s - base.strength) > 1e-9:
      out.append((f"constraint strength {s:g}",
                  {"constraint": dataclasses.replace(base, strength=s)}))
  other_init = "noise" if base.init == "inversion" else "inversion"
  out.append((f"init {other_init}", {"constraint": dataclasses.replace(base, init=other_init)}))
  for g in (1.0, 4.0):
    if abs(g - g0) > 1e-9:
      out.append((f"guidance {g:g}", {"guidance": g}))
  out.append(("one-hot intensities (no text)", {"use_text": False}))
  other_mask = "lower_face" if str(gen.config.data.mask) == "face" else "face"
  out.append((f"mask {other_mask}", {"mask": other_mask}))
  return out


def run_ablations(gen, judge, sources: Sequence[Source], st: EvalSettings,
                  log: Callable[[str], None] = print, result: dict | None = None) -> list[dict]:
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
  for k, (name, kw) in enumerate(variants):
    t = time.perf_counter()
    use_text = kw.pop("use_text", True)
    r = done.get(name) or _single(_Runner(gen, judge, sources, st), use_text=use_text, **kw)
    c = kw.get("constraint", base)
    rows.append({"variant": name, "emotion_accuracy": r["emotion_accuracy"],
                 "identity_similarity": r["identity_similarity"],
                 "constraint_strength": float(c.strength), "init": c.init,
                 "guidance": float(kw.get("guidance", st.guidance if st.guidance is not None
                                          else gen.config.sampler.guidance)),
                 "emotion_source": "prompt" if use_text else "intensities",
                 "mask": kw.get("mask", str(gen.config.data.mask)), "frames": r["frames"]})
    log(f"[eval] ablation {k + 1}/{len(variants)} {name}: emotion {r['emotion_accuracy']:.3f}, "
        f"identity {r['identity_similarity']:.3f} ({time.perf_counter() - t:.0f} s)")
  return rows


def evaluate_and_write(gen, judge, sources: Sequence[Source], st: EvalSettings, out: str,
                       meta: dict, ablations: bool = False,
                       log: Callable[[str], None] = print) -> tuple[dict, dict]:
  """``evaluate`` (+ ``run_ablations``) and ``write_outputs`` into ``out``, with the
  sampler settings, checkpoint and wall time added to ``meta``. Returns (result, paths)."""
  t0 = time.perf_counter()
  result = evaluate(gen, judge, sources, st, log=log)
  rows = run_ablations(gen, judge, sources, st, log=log, result=result) if ablations else None
  sc = gen.config.sampler
  meta = {"checkpoint": gen.checkpoint_dir, "checkpoint_step": gen.step,
          "steps": st.steps or int(sc.steps),
          "guidance": float(sc.guidance if st.guidance is None else st.guidance),
          "constraint": dict(sc.constraint), "mask": str(gen.config.data.mask),
          "intensity_gamma": gen.intensity_gamma, **meta,
          "wall_seconds": round(time.perf_counter() - t0, 1)}
  return result, write_outputs(out, result, rows, meta)


def tradeoff_plot(rows: Sequence[dict], path: str, size: int = 480, legend_w: int = 300) -> None:
  """PNG scatter of identity similarity (x) against emotion accuracy (y): one numbered
  point per ablation row (legend on the right; the default in red); the constraint-strength
  rows are joined by a line in order of strength."""
  from PIL import Image, ImageDraw
  img = Image.new("RGB", (size + legend_w, size), "white")
  d = ImageDraw.Draw(img)
  m = 60
  xs = [r["identity_similarity"] for r in rows]
  lo, hi = min(min(xs) - 0.05, 0.0), max(max(xs) + 0.05, 1.0)

  def at(x, y):
    return (m + (x - lo) / (hi - lo) * (size - 2 * m), size - m - y * (size - 2 * m))
  d.rectangle([m, m, size - m, size - m], outline="black")
  for v in (0.0, 0.25, 0.5, 0.75, 1.0):
    d.text((m - 30, at(lo, v)[1] - 6), f"{v:.2f}", fill="black")
  for v in (lo, (lo + hi) / 2, hi):
    d.text((at(v, 0)[0] - 10, size - m + 6), f"{v:.2f}", fill="black")
  d.text((size // 2 - 60, size - 25), "identity similarity", fill="black")
  d.text((5, 20), "emotion accuracy (single prompts)", fill="black")
  line = sorted((r for r in rows if r["variant"] == "default"
                 or r["variant"].startswith("constraint strength")),
                key=lambda r: r["constraint_strength"])
  if len(line) > 1:
    d.line([at(r["identity_similarity"], r["emotion_accuracy"]) for r in line], fill="blue",
           width=2)
  for k, r in enumerate(rows):
    x, y = at(r["identity_similarity"], r["emotion_accuracy"])
    colour = "red" if r["variant"] == "default" else "blue"
    d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    d.text((x + 6, y - 12 - 10 * (k % 2)), str(k + 1), fill=colour)
    d.text((size + 5, m + 16 * k),
           f"{k + 1}. {r['variant']} ({r['identity_similarity']:.2f}, "
           f"{r['emotion_accuracy']:.2f})", fill=colour)
  img.save(path, format="PNG")


def markdown(result: dict, ablations: Sequence[dict] | None, meta: dict) -> str:
  """The report: headline metrics with the targets of issue #8, details, ablations."""
  targets = {"emotion_accuracy": ">= 0.90", "mixed_top2_accuracy": ">= 0.80",
             "intensity_spearman": ">= 0.8", "identity_similarity": ">= 0.9 and > no constraint",
             "lip_sync_correlation": ">= 0.5"}
  lines = ["# EmoTalker evaluation", ""]
  lines += [f"- {k}: `{v}`" for k, v in meta.items()]
  lines += ["", "| metric | value | target |", "|---|---|---|"]
  for k in METRIC_KEYS + ("lip_sync_ground_truth_frames", "psnr_vs_ground_truth",
                          "ssim_vs_ground_truth", "emotion_accuracy_no_constraint",
                          "paraphrase_emotion_accuracy", "mixed_top2_accuracy_explicit",
                          "intensity_gamma", "mixed_top2_accuracy_uncalibrated",
                          "ceiling_emotion_accuracy_autoencoder",
                          "ceiling_mixed_top2_autoencoder", "ceiling_mixed_top2_labels"):
    v = result[k]
    lines.append(f"| {k} | {v:.4f} | {targets.get(k, '')} |" if isinstance(v, float)
                 else f"| {k} | {v} | {targets.get(k, '')} |")
  single = result["details"]["single"]
  lines += ["", "Single prompts, top-1 per emotion: " + ", ".join(
      f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in single["per_emotion"].items())]
  lines += ["", "Confusion (rows: prompted emotion, columns: the judge's top-1):", "",
            "| prompted \\ judged | " + " | ".join(EMOTIONS) + " |",
            "|---" * (NUM_EMOTIONS + 1) + "|"]
  for e, row in zip(EMOTIONS, single["confusion"]):
    lines.append(f"| {e} | " + " | ".join(str(int(x)) for x in row) + " |")
  lines += ["", "Mixed prompts, top-2 accuracy: " + "; ".join(
      f"'{k}' {v:.2f}" for k, v in result["details"]["mixed"]["per_prompt"].items())]
  lines += ["", "The same on the benchmark's renderings of the labels (the ceiling): " + "; ".join(
      f"'{k}' {v:.2f}" for k, v in result["details"]["ceiling_labels"]["per_prompt"].items())]
  sw = result["details"]["sweep"]
  lines += ["", f"Strength sweep {sw['strengths']}, the judge's mean intensity per strength:", ""]
  for e, vals in sw["judge_intensity_means"].items():
    lines.append(f"- {e}: " + ", ".join(f"{v:.2f}" for v in vals)
                 + f" (Spearman {sw['per_emotion'][e]:.2f})")
  if ablations:
    lines += ["", "## Ablations (single prompts)", "",
              "| variant | emotion accuracy | identity similarity |", "|---|---|---|"]
    for r in ablations:
      lines.append(f"| {r['variant']} | {r['emotion_accuracy']:.3f} | "
                   f"{r['identity_similarity']:.3f} |")
    lines += ["", "![trade-off](tradeoff.png)"]
  return "\n".join(lines) + "\n"


def write_outputs(out: str, result: dict, ablations, meta: dict) -> dict:
  """metrics.json (METRIC_KEYS first), ablations.json + tradeoff.png, report.md in ``out``.
  Files are replaced atomically. Returns {name: path}."""
  from emotalker_jax.inference import atomic_output
  os.makedirs(out, exist_ok=True)
  paths = {"metrics": os.path.join(out, "metrics.json"), "report": os.path.join(out, "eval.md")}
  with atomic_output(paths["metrics"]) as tmp:
    with open(tmp, "w") as fh:
      json.dump(_nan_to_none({**result, "meta": meta}), fh, indent=2, default=_json_default,
                allow_nan=False)
  if ablations:
    paths["ablations"] = os.path.join(out, "ablations.json")
    with atomic_output(paths["ablations"]) as tmp:
      with open(tmp, "w") as fh:
        json.dump(_nan_to_none(list(ablations)), fh, indent=2, allow_nan=False)
    paths["plot"] = os.path.join(out, "tradeoff.png")
    with atomic_output(paths["plot"]) as tmp:
      tradeoff_plot(ablations, tmp)
  with atomic_output(paths["report"]) as tmp:
    with open(tmp, "w") as fh:
      fh.write(markdown(result, ablations, meta))
  return paths


def _nan_to_none(x: Any):
  """NaN (an undefined correlation) and inf (PSNR of identical frames) -> None, so the
  files are strict JSON (null)."""
  if isinstance(x, dict):
    return {k: _nan_to_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_nan_to_none(v) for v in x]
  if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
    return None
  return x


def _json_default(x: Any):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


def log_stderr(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)
