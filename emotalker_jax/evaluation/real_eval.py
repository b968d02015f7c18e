"""``emotalker eval --data mead|crema_d``: a trained generator on a prepared real test split,
measured with real-face models (``evaluation/real_faces.py``: dlib, fer) instead of the
synthetic benchmark's judge.

For each clip (``input_pipeline.frame_records.read_clips``' records, or any iterable of
dicts with the same keys): the source frame is the first frame of a neutral clip of the same
identity (the first one met: ``is_neutral_reference`` or a neutral label), else the clip's
own first frame; the prompt is the clip's dominant emotion as the synthetic evaluation's one-word
prompt (``evaluate.SINGLE_PROMPTS``; ``prompt='label'``: the label vector itself as explicit
intensities); the first ``max_frames`` frames are generated from the clip's own audio, then
compared with the clip's frames (the ground truth, GT). The generator starts from a still
photo, so the GT's head motion is not in the condition: PSNR / SSIM and the landmark
distances are loose reconstruction measures, read beside their GT floors.

Per clip (the bootstrap unit), with the same measure on the GT frames beside it:

* identity_similarity (CSIM): dlib cosine of each generated frame's face to the source
  frame's face; GT: the clip's own frames to the source frame (the ceiling).
* emotion_accuracy: fer top-1 per frame == the label's emotion (7 classes; contempt clips
  are left out and counted in ``n_contempt_excluded``); GT: fer on the clip's frames.
* m_lmd / f_lmd: mouth (48-67) / all-68 landmark distance of the generated frames to the
  dataset's GT landmarks, per frame over the GT's inter-ocular distance (``*_px``: pixels at
  the data's resolution); GT floor: the landmarks re-detected on the GT frames.
* lip_sync_correlation: mouth opening vs the audio RMS envelope, best lag within +-2 frames
  (``lip_sync_correlation_lag0``: at lag 0); GT: the same on the GT frames.
* psnr / ssim against the GT frames (dm-pix, [0, 1]); flicker outside the mouth box.

Metrics are computed at the data's resolution: generated frames are resized (bicubic) to
it when the generator's differs, and the source frame to the generator's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import dataclasses
import math
import os
import time

import cv2
import numpy as np

from emotalker_jax.checkpoints import atomic_output
from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.evaluation import metrics
from emotalker_jax.evaluation import real_faces as rf
from emotalker_jax.evaluation.evaluate import SINGLE_PROMPTS
from emotalker_jax.evaluation.results import write_metrics_json
from emotalker_jax.faces import align, landmarks
from input_pipeline.pipeline import mouth_region

REAL_DATASETS = ("mead", "crema_d")
# The keys every real metrics.json starts with.
REAL_METRIC_KEYS = (
  "emotion_accuracy",
  "identity_similarity",
  "lip_sync_correlation",
  "m_lmd",
  "f_lmd",
  "psnr_vs_ground_truth",
  "ssim_vs_ground_truth",
  "flicker",
  "faces_found_fraction",
  "n_clips",
  "n_frames",
)
# Each figure and the same measure on the ground-truth frames: a ceiling (CSIM, accuracy,
# sync, faces found) or a floor (landmark distances, flicker).
REAL_CEILINGS = {
  "emotion_accuracy": "emotion_accuracy_ground_truth",
  "identity_similarity": "identity_similarity_ground_truth",
  "lip_sync_correlation": "lip_sync_ground_truth_frames",
  "lip_sync_correlation_lag0": "lip_sync_ground_truth_frames_lag0",
  "m_lmd": "m_lmd_ground_truth",
  "f_lmd": "f_lmd_ground_truth",
  "m_lmd_px": "m_lmd_px_ground_truth",
  "f_lmd_px": "f_lmd_px_ground_truth",
  "flicker": "flicker_ground_truth",
  "faces_found_fraction": "faces_found_fraction_ground_truth",
}
# Per-clip figures: each gets a <key>_ci and an n_undefined count.
UNIT_KEYS = (
  *REAL_CEILINGS,
  *REAL_CEILINGS.values(),
  "psnr_vs_ground_truth",
  "ssim_vs_ground_truth",
)


@dataclasses.dataclass
class RealEvalSettings:
  """max_clips: clips read (None: the whole split); max_frames: frames generated and
  compared per clip (25 fps: 50 = 2 s); prompt: 'text' (one-word prompt of the label's
  emotion, through the EIB) or 'label' (the label as explicit intensities); n_boot:
  bootstrap replicates of each ``*_ci``."""

  max_clips: int | None = None
  max_frames: int = 50
  steps: int | None = None
  guidance: float | None = None
  seed: int = 0
  batch_frames: int = 8
  n_boot: int = 1000
  prompt: str = "text"
  max_lag: int = rf.MAX_LAG

  def validate(self) -> RealEvalSettings:
    for name in ("max_frames", "batch_frames", "n_boot"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
    if self.max_frames < 3:
      raise ValueError(f"--max-frames must be >= 3 for a correlation, got {self.max_frames}")
    if self.max_clips is not None and int(self.max_clips) < 1:
      raise ValueError(f"--max-clips must be >= 1 (or left out), got {self.max_clips}")
    if self.prompt not in ("text", "label"):
      raise ValueError(f"--prompt must be 'text' or 'label', got {self.prompt!r}")
    if int(self.max_lag) < 0:
      raise ValueError(f"max_lag must be >= 0, got {self.max_lag}")
    return self


def prompt_for(label) -> str:
  """The synthetic evaluation's one-word prompt (``SINGLE_PROMPTS``) of an (8,) label's
  dominant emotion."""
  return SINGLE_PROMPTS[int(np.argmax(np.asarray(label, np.float64)))]


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(T, H, W, 3) uint8 -> (T, h, w, 3) (area when shrinking, bicubic when enlarging)."""
  h, w = size
  if frames.shape[1:3] == (h, w):
    return frames
  interp = cv2.INTER_AREA if h < frames.shape[1] else cv2.INTER_CUBIC
  return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


@dataclasses.dataclass
class SourceFrame:
  """A clip's source: frame (S, S, 3) uint8, its dataset landmarks (68, 2) px, the id of
  the clip it comes from, and its dlib descriptor (128,) (NaN when dlib finds no face)."""

  frame: np.ndarray
  points: np.ndarray
  clip_id: int
  descriptor: np.ndarray


def source_from(clip: dict) -> SourceFrame:
  frame = np.asarray(clip["frames"][0], np.uint8)
  a = rf.analyse_frames(frame[None], source=f"clip {clip['clip_id']}'s first frame")
  return SourceFrame(
    frame, np.asarray(clip["landmarks"][0], np.float32), int(clip["clip_id"]), a.descriptors[0]
  )


def is_neutral(clip: dict) -> bool:
  e = np.asarray(clip["emotion"], np.float64)
  return bool(clip.get("is_neutral_reference")) or (
    e[EMOTIONS.index("neutral")] > 0 and np.count_nonzero(e > 1e-6) == 1
  )


def clip_metrics(
  gen_frames: np.ndarray,
  clip: dict,
  source: SourceFrame,
  classifier,
  max_lag: int = rf.MAX_LAG,
) -> dict:
  """Every per-clip figure of the module docstring (floats, NaN when undefined) for
  generated frames (T, S, S, 3) uint8 at the data's resolution against the clip's first T
  GT frames, landmarks and audio."""
  t = len(gen_frames)
  gt = np.asarray(clip["frames"][:t], np.uint8)
  gt_pts = np.asarray(clip["landmarks"][:t], np.float32)
  fps, sr = float(clip["fps"]), int(clip["sample_rate"])
  audio = np.asarray(clip["audio"], np.float32)[: int(round(t * sr / fps))]
  label = np.asarray(clip["emotion"], np.float32)
  a = {
    "": rf.analyse_frames(gen_frames, classifier, source=f"clip {clip['clip_id']} (generated)"),
    "_ground_truth": rf.analyse_frames(gt, classifier, source=f"clip {clip['clip_id']}"),
  }
  size = gt.shape[1]
  hull = align.face_hull_mask(gt_pts[0], size)
  box = np.max([mouth_region(hull, gt_pts[i]) for i in range(t)], axis=0)
  out = {}
  for suffix, an in a.items():
    sync = rf.lip_sync(an.mouth_opening, audio, fps=fps, sr=sr, max_lag=max_lag)
    out["identity_similarity" + suffix] = rf.identity_similarity(an.descriptors, source.descriptor)
    out["emotion_accuracy" + suffix] = rf.emotion_accuracy(an.emotion_probs, label)
    for name, idx in (("m_lmd", landmarks.MOUTH), ("f_lmd", None)):
      out[name + suffix] = rf.landmark_distance(an.points, gt_pts, idx, "iod")
      out[name + "_px" + suffix] = rf.landmark_distance(an.points, gt_pts, idx, "px")
    sync_key = "lip_sync_correlation" if not suffix else "lip_sync_ground_truth_frames"
    out[sync_key] = sync["r"]
    out[sync_key + "_lag0"] = sync["lag0"]
    out["lip_sync_lag" + suffix] = sync["lag"]
    out["faces_found_fraction" + suffix] = an.faces_found_fraction
    out["flicker" + suffix] = metrics.flicker(gen_frames if not suffix else gt, box)
  ps = metrics.psnr_ssim(gen_frames / 255.0, gt / 255.0)
  out["psnr_vs_ground_truth"], out["ssim_vs_ground_truth"] = ps["psnr"], ps["ssim"]
  return out


def generate_for(gen, clip: dict, source: SourceFrame, st: RealEvalSettings) -> np.ndarray:
  """The generated frames (T, S_data, S_data, 3) uint8 of a clip: the source frame (resized
  to the generator's size) with the clip's first ``max_frames`` frames of audio and the
  prompt of ``st.prompt``."""
  fps, sr = float(clip["fps"]), int(clip["sample_rate"])
  if sr != int(gen.sample_rate) or abs(fps - float(gen.fps)) > 1e-6:
    raise ValueError(
      f"clip {clip['clip_id']} is {fps:g} fps / {sr} Hz but the checkpoint generates "
      f"{gen.fps:g} fps / {gen.sample_rate} Hz; prepare the data at the checkpoint's rates"
    )
  t = min(int(st.max_frames), len(clip["frames"]))
  s = int(gen.image_size)
  k = s / source.frame.shape[0]
  portrait = _resize(source.frame[None], (s, s))[0]
  face_mask = align.face_hull_mask(source.points * k, s)
  label = np.asarray(clip["emotion"], np.float32)
  cond = {"prompt": prompt_for(label)} if st.prompt == "text" else {"intensities": label}
  out, _ = gen.generate(
    portrait,
    np.asarray(clip["audio"], np.float32)[: int(round(t * sr / fps))],
    **cond,
    steps=st.steps,
    guidance=st.guidance,
    seed=st.seed,
    face_mask=face_mask,
    batch_frames=min(st.batch_frames, t),
  )
  gt_hw = tuple(np.asarray(clip["frames"][0]).shape[:2])
  return _resize(np.asarray(out[:t]), gt_hw)


def _truncate(clip: dict, frames: int) -> dict:
  """The clip with only what the evaluation reads of its first ``frames`` frames."""
  c = dict(clip)
  n = int(round(frames * int(clip["sample_rate"]) / float(clip["fps"])))
  # Copies, not views: a clip kept waiting for its identity's source holds only these.
  c["frames"] = np.array(clip["frames"][:frames], np.uint8)
  c["landmarks"] = np.array(clip["landmarks"][:frames], np.float32)
  c["audio"] = np.array(clip["audio"][:n], np.float32)
  return c


def evaluate_real(
  gen,
  clips: Iterable[dict],
  classifier,
  st: RealEvalSettings,
  log: Callable[[str], None] = print,
  generate: Callable | None = None,
) -> dict:
  """The figures of the module docstring over ``clips`` (read once; a clip whose identity
  has no neutral source yet waits, truncated to ``max_frames``, until one comes or the
  clips end). ``generate(gen, clip, source, st) -> frames`` replaces ``generate_for``
  (tests: an oracle). Returns REAL_METRIC_KEYS first, the GT figures, ``<key>_ci`` for
  UNIT_KEYS (95 % bootstrap over clips), ``n_undefined``, per-emotion accuracy and the
  per-clip details."""
  st.validate()
  generate = generate or generate_for
  t0 = time.perf_counter()
  sources: dict[int, SourceFrame] = {}
  waiting: dict[int, list[dict]] = {}
  rows: list[dict] = []
  n_frames = 0

  def process(clip: dict, src: SourceFrame) -> None:
    nonlocal n_frames
    f = generate(gen, clip, src, st)
    n_frames += len(f)
    m = clip_metrics(f, clip, src, classifier, st.max_lag)
    label = np.asarray(clip["emotion"], np.float32)
    rows.append(
      {
        "clip_id": int(clip["clip_id"]),
        "identity": int(clip["identity"]),
        "actor": str(clip.get("actor", "")),
        "emotion": EMOTIONS[int(np.argmax(label))],
        "label": label.tolist(),
        "prompt": prompt_for(label) if st.prompt == "text" else None,
        "source_clip": src.clip_id,
        "frames": int(len(f)),
        **m,
      }
    )
    log(
      f"[eval] clip {clip['clip_id']} ({rows[-1]['emotion']}, identity {clip['identity']}): "
      f"CSIM {m['identity_similarity']:.3f} (GT {m['identity_similarity_ground_truth']:.3f}), "
      f"faces {m['faces_found_fraction']:.2f}, {len(rows)} clips, "
      f"{time.perf_counter() - t0:.0f} s"
    )

  for n, clip in enumerate(clips):
    if st.max_clips is not None and n >= st.max_clips:
      break
    clip = _truncate(clip, int(st.max_frames))
    ident = int(clip["identity"])
    if ident not in sources and is_neutral(clip):
      sources[ident] = source_from(clip)
      for c in waiting.pop(ident, []):
        process(c, sources[ident])
    if ident in sources:
      process(clip, sources[ident])
    else:
      waiting.setdefault(ident, []).append(clip)
  for group in waiting.values():  # identities without a neutral clip: their own first frame
    for c in group:
      process(c, source_from(c))
  if not rows:
    raise ValueError("no clips to evaluate: the split is empty (check --data-dir and --split)")
  rows.sort(key=lambda r: r["clip_id"])
  return summarise(rows, st, n_frames, time.perf_counter() - t0)


def summarise(rows: list[dict], st: RealEvalSettings, n_frames: int, seconds: float) -> dict:
  """Per-clip rows -> the result: each figure the mean over clips where it is defined."""
  col = lambda k: np.array([r[k] for r in rows], np.float64)  # noqa: E731
  mean = lambda v: float(np.nanmean(v)) if (~np.isnan(v)).any() else float("nan")  # noqa: E731
  out = {k: mean(col(k)) for k in REAL_METRIC_KEYS[:-2]}
  out["n_clips"], out["n_frames"] = len(rows), int(n_frames)
  for k in UNIT_KEYS:
    out.setdefault(k, mean(col(k)))
  for k in UNIT_KEYS:
    out[f"{k}_ci"] = metrics.bootstrap_ci(col(k)[:, None], n_boot=st.n_boot, seed=st.seed)
  out["n_contempt_excluded"] = sum(r["emotion"] in rf.UNSCORABLE_EMOTIONS for r in rows)
  out["n_undefined"] = {k: int(np.isnan(col(k)).sum()) for k in UNIT_KEYS}
  per, per_gt = {}, {}
  for e in EMOTIONS:
    mine = [r for r in rows if r["emotion"] == e]
    if mine and e not in rf.UNSCORABLE_EMOTIONS:
      per[e] = mean(np.array([r["emotion_accuracy"] for r in mine], np.float64))
      per_gt[e] = mean(np.array([r["emotion_accuracy_ground_truth"] for r in mine], np.float64))
  out["emotion_accuracy_per_emotion"] = per
  out["emotion_accuracy_per_emotion_ground_truth"] = per_gt
  out["clips_per_emotion"] = {e: sum(r["emotion"] == e for r in rows) for e in EMOTIONS}
  out.update(
    {
      "details": {"clips": rows},
      "settings": dataclasses.asdict(st),
      "seconds": round(seconds, 1),
    }
  )
  return out


def _fmt(v, digits: int = 3) -> str:
  if isinstance(v, float) and math.isinf(v):
    return str(v)  # PSNR of identical frames
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "undefined"
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(result: dict, meta: dict, title: str) -> str:
  """The report: each figure with its 95 % interval and its ground-truth ceiling / floor,
  then accuracy per emotion."""
  lines = [f"# {title}", ""] + [f"- {k}: `{v}`" for k, v in meta.items()]
  und = {k: v for k, v in result["n_undefined"].items() if v}
  lines += [
    "",
    f"{result['n_clips']} clips, {result['n_frames']} generated frames; "
    f"{result['n_contempt_excluded']} contempt clips left out of the emotion accuracy (fer "
    "has no contempt class). Intervals: 95 % percentile bootstrap over clips. Undefined "
    "(left out): " + (", ".join(f"{k} {v}" for k, v in und.items()) or "none"),
    "",
    "| metric | value | 95% interval | ground truth (ceiling / floor) |",
    "|---|---|---|---|",
  ]
  for k in (*REAL_METRIC_KEYS[:-2], "lip_sync_correlation_lag0", "m_lmd_px", "f_lmd_px"):
    ci, g = result.get(f"{k}_ci"), REAL_CEILINGS.get(k)
    ci_s = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
    g_s = f"{_fmt(result[g])} ({g})" if g else ""
    lines.append(f"| {k} | {_fmt(result[k])} | {ci_s} | {g_s} |")
  lines += ["", "| emotion | clips | accuracy | on the ground truth |", "|---|---|---|---|"]
  for e in EMOTIONS:
    n = result["clips_per_emotion"][e]
    if n and e in rf.UNSCORABLE_EMOTIONS:
      lines.append(f"| {e} | {n} | left out (no fer class) | |")
    elif n:
      acc = result["emotion_accuracy_per_emotion"].get(e)
      gt = result["emotion_accuracy_per_emotion_ground_truth"].get(e)
      lines.append(f"| {e} | {n} | {_fmt(acc)} | {_fmt(gt)} |")
  return "\n".join(lines) + "\n"


def write_real_outputs(out: str, result: dict, meta: dict, title: str) -> dict:
  """metrics.json (REAL_METRIC_KEYS first, strict JSON: NaN / inf -> null) and eval.md in
  ``out``, replaced atomically. Returns {name: path}."""
  paths = {"metrics": write_metrics_json(out, result, meta)}
  paths["report"] = os.path.join(out, "eval.md")
  with atomic_output(paths["report"]) as tmp:
    with open(tmp, "w") as fh:
      fh.write(markdown(result, meta, title))
  return paths
