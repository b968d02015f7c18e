"""Evaluation metrics, exactly as METHOD.md ("Metrics, precisely") defines them.

All functions take numpy arrays (anything ``np.asarray`` accepts) and return plain Python
floats / dicts, so every command reports the same numbers. Only ``psnr_ssim`` uses JAX
(dm-pix). Emotion axes are in MEAD order (``emotalker_jax.emotions.EMOTIONS``).

* ``emotion_accuracy``: single-emotion targets -> top-1 of the predicted intensities equals
  the target's dominant emotion; mixed targets (>= 2 non-zero emotions) -> the predicted
  top-2 set equals the target's two largest (``top2_correct``, tie-aware: the one top-2
  rule of the project, also used by eib-train's FED figures and the calibration).
* ``intensity_spearman``: per emotion, Spearman rank correlation between the prompted
  strength and the predicted intensity of that emotion over a sweep of >= 5 strengths;
  the mean over emotions.
* ``identity_similarity``: mean cosine between embeddings of generated frames and the
  source portrait's embedding.
* ``lip_sync_correlation``: per clip, Pearson correlation between the mouth opening per
  frame and the audio RMS envelope at the frame's window
  (``emotalker_jax.audio.frame_rms_envelope``); the mean over clips.
* ``psnr_ssim``: dm-pix PSNR and SSIM of [0, 1] images against the ground truth.
* ``intensity_error``: mean absolute difference, over frames and the label's emotions,
  between the judge's intensity readings of generated frames and of the benchmark's
  rendering of the same label (sees a secondary emotion drawn too strong, which top-2
  cannot).
* ``flicker``: mean absolute frame-to-frame change of the pixels outside the mouth box.
* ``bootstrap_ci``: the 95 % percentile bootstrap interval of a figure over its
  (identity, prompt) units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import dm_pix
import jax.numpy as jnp
import numpy as np
from scipy import stats

from emotalker_jax.audio import frame_rms_envelope
from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS

NONZERO_TOL = 1e-6  # a target intensity above this counts as present


def top2_correct(pred: np.ndarray, target: np.ndarray, tol: float = 1e-4) -> np.ndarray:
  """(N, K) predictions, (N, K) or (K,) targets -> (N,) bool: the predicted two largest
  emotions are the target's two largest; when the target ties at the boundary any of the
  tied emotions counts."""
  pred = np.asarray(pred)
  target = np.broadcast_to(np.asarray(target), pred.shape)  # one (K,) label for all rows
  top2 = np.argsort(-pred, axis=-1, kind="stable")[:, :2]
  second = -np.sort(-target, axis=-1)[:, 1]
  picked = np.take_along_axis(target, top2, axis=-1)
  return np.all(picked >= second[:, None] - tol, axis=-1)


def intensity_metrics(
  pred: np.ndarray, target: np.ndarray, is_mixed: np.ndarray, margin: float = 0.1
) -> dict:
  """FED metrics (the figures `emotalker eib-train` reports).

  top1: fraction of prompts with a clear dominant emotion (largest intensity >= the
  second + ``margin``) whose predicted argmax is that emotion. top2: fraction of mixed
  prompts (>= 2 emotions) whose predicted top-2 set is the target's (tie-aware). mae:
  mean |s_hat - s| over all prompts and the 8 emotions. Also per-emotion top-1 and a
  confusion matrix (rows: true dominant, columns: predicted argmax).
  """
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  is_mixed = np.asarray(is_mixed, bool)
  srt = -np.sort(-target, axis=-1)
  clear = (srt[:, 0] - srt[:, 1]) >= margin - 1e-6
  true_top = np.argmax(target, axis=-1)
  pred_top = np.argmax(pred, axis=-1)
  ok1 = (true_top == pred_top)[clear]
  ok2 = top2_correct(pred, target)[is_mixed]
  conf = np.zeros((NUM_EMOTIONS, NUM_EMOTIONS), np.int64)
  np.add.at(conf, (true_top[clear], pred_top[clear]), 1)
  per = {
    EMOTIONS[k]: (float(conf[k, k] / conf[k].sum()) if conf[k].sum() else None)
    for k in range(NUM_EMOTIONS)
  }
  return {
    "n": int(len(target)),
    "n_top1": int(clear.sum()),
    "n_mixed": int(is_mixed.sum()),
    "top1": float(ok1.mean()) if ok1.size else float("nan"),
    "top2_mixed": float(ok2.mean()) if ok2.size else float("nan"),
    "mae": float(np.mean(np.abs(pred - target))),
    "top1_per_emotion": per,
    "confusion": conf.tolist(),
  }


def emotion_accuracy(pred_intensities, target_intensities, tol: float = NONZERO_TOL) -> dict:
  """Emotion accuracy of predicted intensities (N, 8) against target intensities (N, 8).

  A row is *single* when exactly one target entry is > ``tol`` (neutral counts like any
  other emotion), *mixed* when two or more are. Rows with none are ignored.

  Returns:
    top1: over single rows, fraction with argmax(pred) == argmax(target) (nan if none);
    top2_mixed: over mixed rows, fraction whose predicted top-2 set is the target's two
      largest (ties at the target's second place: any tied emotion counts);
    overall: over single + mixed rows, the fraction correct by the rule of its kind;
    n_single, n_mixed;
    per_emotion: {name: top-1 accuracy of single rows whose target is that emotion, or None};
    confusion: (8, 8) nested list of counts over single rows, rows = target emotion,
      columns = predicted argmax.
  """
  pred = np.asarray(pred_intensities, np.float64)
  target = np.asarray(target_intensities, np.float64)
  if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != NUM_EMOTIONS:
    raise ValueError(
      f"emotion_accuracy needs (N, {NUM_EMOTIONS}) predictions and targets, got "
      f"{pred.shape} and {target.shape}"
    )
  present = (target > tol).sum(axis=1)
  single, mixed = present == 1, present >= 2
  true_top = np.argmax(target, axis=1)
  pred_top = np.argmax(pred, axis=1)
  ok1 = (true_top == pred_top) & single
  ok2 = np.zeros(len(pred), bool)
  if mixed.any():
    ok2[mixed] = top2_correct(pred[mixed], target[mixed])
  conf = np.zeros((NUM_EMOTIONS, NUM_EMOTIONS), np.int64)
  np.add.at(conf, (true_top[single], pred_top[single]), 1)
  per = {
    EMOTIONS[k]: (float(conf[k, k] / conf[k].sum()) if conf[k].sum() else None)
    for k in range(NUM_EMOTIONS)
  }
  n1, n2 = int(single.sum()), int(mixed.sum())
  return {
    "top1": float(ok1.sum() / n1) if n1 else float("nan"),
    "top2_mixed": float(ok2.sum() / n2) if n2 else float("nan"),
    "overall": float((ok1.sum() + ok2.sum()) / (n1 + n2)) if n1 + n2 else float("nan"),
    "n_single": n1,
    "n_mixed": n2,
    "per_emotion": per,
    "confusion": conf.tolist(),
  }


def intensity_spearman(
  prompt_strengths, predicted, emotion_ids, reduce: str = "mean", min_strengths: int = 5
) -> dict:
  """Intensity Spearman: does the predicted intensity follow the prompted strength?

  Args:
    prompt_strengths: (N,) the prompted strength of each frame's emotion.
    predicted: (N,) the predicted intensity of that emotion, or (N, 8) intensities (the
      column ``emotion_ids[n]`` is taken for row n).
    emotion_ids: (N,) int, the swept emotion of each frame.
    reduce: 'mean' (default): per emotion, the predicted intensities of the frames of each
      distinct strength are averaged, then Spearman's rho is taken over the distinct
      strengths; 'none': Spearman's rho over the individual frames (tied strengths get
      average ranks, which caps rho below 1).
    min_strengths: an emotion needs at least this many distinct strengths (METHOD.md: 5).
  Returns:
    mean: the mean over emotions of rho (``scipy.stats.spearmanr``); an emotion whose
      predictions are all equal has rho = nan and is left out of the mean (reported);
    per_emotion: {name: rho}; num_strengths: {name: count}.
  Raises ValueError when an emotion has fewer than ``min_strengths`` distinct strengths.
  """
  x = np.asarray(prompt_strengths, np.float64).reshape(-1)
  e = np.asarray(emotion_ids).reshape(-1).astype(np.int64)
  p = np.asarray(predicted, np.float64)
  if p.ndim == 2:
    p = p[np.arange(len(p)), e]
  p = p.reshape(-1)
  if not len(x) == len(e) == len(p):
    raise ValueError(
      f"intensity_spearman: lengths differ: strengths {len(x)}, emotion_ids "
      f"{len(e)}, predicted {len(p)}"
    )
  if reduce not in ("mean", "none"):
    raise ValueError(f"intensity_spearman: reduce must be 'mean' or 'none', got {reduce!r}")
  per, counts = {}, {}
  for k in np.unique(e):
    sel = e == k
    levels = np.unique(x[sel])
    name = EMOTIONS[k] if 0 <= k < NUM_EMOTIONS else str(k)
    counts[name] = int(len(levels))
    if len(levels) < min_strengths:
      raise ValueError(
        f"intensity_spearman: emotion {name} has {len(levels)} distinct "
        f"strengths; the sweep needs >= {min_strengths}"
      )
    if reduce == "mean":
      xs, ys = levels, np.array([p[sel][x[sel] == v].mean() for v in levels])
    else:
      xs, ys = x[sel], p[sel]
    if np.all(ys == ys[0]):
      per[name] = float("nan")
    else:
      per[name] = float(stats.spearmanr(xs, ys).statistic)
  vals = [v for v in per.values() if not math.isnan(v)]
  return {
    "mean": float(np.mean(vals)) if vals else float("nan"),
    "per_emotion": per,
    "num_strengths": counts,
  }


def cosine(a, b) -> np.ndarray:
  """Row-wise cosine similarity of (N, E) and (N, E) or (E,) arrays -> (N,) float64."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return np.sum(a * b, axis=-1)


def identity_similarity(gen_embeddings, source_embedding) -> float:
  """Mean over generated frames of cos(embedding of the frame, source portrait embedding).

  gen_embeddings: (N, E) (or (E,)); source_embedding: (E,) or (N, E) (one source per frame).
  Embeddings need not be normalised."""
  g = np.asarray(gen_embeddings, np.float64)
  if g.ndim == 1:
    g = g[None]
  s = np.asarray(source_embedding, np.float64)
  if s.shape[-1] != g.shape[-1]:
    raise ValueError(f"identity_similarity: embedding sizes differ: {g.shape} vs {s.shape}")
  if g.shape[0] == 0:
    return float("nan")
  return float(np.mean(cosine(g, s)))


def pearson(a, b) -> float:
  """Pearson correlation of two 1-D arrays; nan when either is constant or has < 2 points."""
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f"pearson: lengths differ: {a.shape} vs {b.shape}")
  if a.size < 2:
    return float("nan")
  a, b = a - a.mean(), b - b.mean()
  den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
  if den <= 1e-15:
    return float("nan")
  return float(np.dot(a, b) / den)


def lip_sync_correlation(
  mouth_open_per_frame, audio, fps: float = 25.0, sr: int = 16000, window_s: float | None = None
) -> dict:
  """Lip sync: per clip, Pearson(mouth opening per frame, audio RMS envelope at the frame's
  window); mean over clips.

  Args:
    mouth_open_per_frame: one clip (T,) or a list / (C, T) array of clips.
    audio: the matching waveform(s) (L,) or list / (C, L), at ``sr`` Hz.
    fps, sr: video frame rate and audio sample rate. The envelope of frame i is
      ``frame_rms_envelope``'s: RMS over a window of ``window_s`` (default 1 / fps) centred
      on (i + 0.5) / fps.
  Returns mean (over clips with a defined correlation), per_clip (list; nan where the
  mouth or the envelope is constant), num_clips, num_undefined.
  """
  mouths = (
    [np.asarray(m) for m in mouth_open_per_frame]
    if _is_batch(mouth_open_per_frame)
    else [np.asarray(mouth_open_per_frame)]
  )
  audios = [np.asarray(a) for a in audio] if _is_batch(audio) else [np.asarray(audio)]
  if len(mouths) != len(audios):
    raise ValueError(
      f"lip_sync_correlation: {len(mouths)} mouth tracks but {len(audios)} audio tracks"
    )
  per = []
  for m, a in zip(mouths, audios):
    env = frame_rms_envelope(a, len(m), fps=fps, sr=sr, window_s=window_s)
    per.append(pearson(m, env))
  vals = [v for v in per if not math.isnan(v)]
  return {
    "mean": float(np.mean(vals)) if vals else float("nan"),
    "per_clip": per,
    "num_clips": len(per),
    "num_undefined": len(per) - len(vals),
  }


def _is_batch(x) -> bool:
  if isinstance(x, (list, tuple)):
    return True
  return np.asarray(x).ndim == 2


def psnr_ssim(generated, reference) -> dict:
  """PSNR (dB) and SSIM (dm-pix defaults: 11x11 Gaussian, sigma 1.5, k1 0.01, k2 0.03) of
  images in [0, 1], (N, H, W, C) or (H, W, C), each computed per image then averaged.

  Returns {psnr, ssim, psnr_per_image, ssim_per_image}; PSNR of identical images is inf."""
  g = np.asarray(generated, np.float32)
  r = np.asarray(reference, np.float32)
  if g.shape != r.shape:
    raise ValueError(f"psnr_ssim: shapes differ: generated {g.shape} vs reference {r.shape}")
  if g.ndim == 3:
    g, r = g[None], r[None]
  if g.ndim != 4:
    raise ValueError(f"psnr_ssim needs (N, H, W, C) images, got {g.shape}")
  lo, hi = min(g.min(), r.min()), max(g.max(), r.max())
  if lo < -1e-6 or hi > 1 + 1e-6:
    raise ValueError(
      f"psnr_ssim expects images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
      "convert with x / 255 (uint8) or (x + 1) / 2 ([-1, 1])"
    )
  p = np.asarray(dm_pix.psnr(jnp.asarray(g), jnp.asarray(r)), np.float64).reshape(-1)
  s = np.asarray(dm_pix.ssim(jnp.asarray(g), jnp.asarray(r)), np.float64).reshape(-1)
  return {
    "psnr": float(np.mean(p)),
    "ssim": float(np.mean(s)),
    "psnr_per_image": p.tolist(),
    "ssim_per_image": s.tolist(),
  }


def _fmt(v: Any) -> str:
  if v is None:
    return "-"
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, (int, np.integer)):
    return str(int(v))
  if isinstance(v, (float, np.floating)):
    return f"{float(v):.4f}" if math.isfinite(v) else str(float(v))
  return str(v)


def metrics_table_markdown(
  metrics: Mapping[str, Any], meta: Mapping[str, Any] | None = None, title: str | None = None
) -> str:
  """A markdown table ``| metric | value |`` of ``metrics`` (nested dicts flattened with
  '.', lists left out), preceded by one ``- key: value`` line per ``meta`` entry (METHOD.md:
  checkpoint, config, identities, clips, frames, sampler settings, seed)."""
  lines = []
  if title:
    lines += [f"### {title}", ""]
  for k, v in (meta or {}).items():
    lines.append(f"- {k}: {_fmt(v)}")
  if meta:
    lines.append("")
  lines += ["| metric | value |", "|---|---|"]

  def walk(prefix, d):
    for k, v in d.items():
      name = f"{prefix}.{k}" if prefix else str(k)
      if isinstance(v, Mapping):
        walk(name, v)
      elif isinstance(v, (list, tuple, np.ndarray)):
        continue
      else:
        lines.append(f"| {name} | {_fmt(v)} |")

  walk("", metrics)
  return "\n".join(lines)


def confusion_markdown(confusion: Sequence[Sequence[int]], names: Sequence[str] = EMOTIONS) -> str:
  """An (8, 8) confusion matrix (rows true, columns predicted) as a markdown table."""
  conf = np.asarray(confusion, np.int64)
  head = "| true \\ pred | " + " | ".join(names) + " |"
  lines = [head, "|" + "---|" * (len(names) + 1)]
  for i, n in enumerate(names):
    lines.append(f"| {n} | " + " | ".join(str(int(v)) for v in conf[i]) + " |")
  return "\n".join(lines)


def intensity_error(
  pred_intensities, reference_intensities, label, tol: float = NONZERO_TOL
) -> float:
  """Mean |pred - reference| over the frames and over the emotions present in ``label``.

  pred_intensities, reference_intensities: (N, 8) or (8,) intensity readings (e.g. the
  judge on generated frames, and on the benchmark's rendering of the same label on the same
  clip: the ground truth's reading); label: (8,) the prompt's label, whose entries > tol
  select the emotions compared. Against ``reference = label`` itself this is the error of
  the reference: the floor of the measure for a judge that reads renderings so.
  """
  p = np.atleast_2d(np.asarray(pred_intensities, np.float64))
  r = np.atleast_2d(np.asarray(reference_intensities, np.float64))
  lab = np.asarray(label, np.float64).reshape(-1)
  if lab.shape != (NUM_EMOTIONS,) or p.shape[-1] != NUM_EMOTIONS:
    raise ValueError(
      f"intensity_error needs (N, {NUM_EMOTIONS}) readings and an "
      f"({NUM_EMOTIONS},) label, got {p.shape}, {r.shape}, {lab.shape}"
    )
  r = np.broadcast_to(r, p.shape)
  keep = lab > tol
  if not keep.any():
    raise ValueError("intensity_error: the label has no emotion above 0")
  return float(np.mean(np.abs(p[:, keep] - r[:, keep])))


def flicker(frames, mouth_box=None) -> float:
  """Temporal instability: mean over consecutive frame pairs and over the pixels outside
  ``mouth_box`` of |x_{t+1} - x_t|, with x in [0, 1] (uint8 frames are divided by 255).

  frames: (T, H, W, C) with T >= 2; mouth_box: (H, W) {0, 1} (1 = the mouth, left out:
  speech moves it on purpose) or None (every pixel). A still clip scores 0; the ground
  truth's head motion and blinks give it a floor above 0, so compare a generated clip
  with the ground truth of the same clip."""
  x = np.asarray(frames)
  x = x.astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0)
  if x.ndim != 4 or x.shape[0] < 2:
    raise ValueError(f"flicker needs (T >= 2, H, W, C) frames, got {x.shape}")
  d = np.abs(np.diff(x, axis=0)).mean(axis=-1)  # (T-1, H, W)
  keep = np.ones(x.shape[1:3], bool) if mouth_box is None else np.asarray(mouth_box) <= 0.5
  if keep.shape != x.shape[1:3]:
    raise ValueError(f"flicker: mouth box {keep.shape} does not match frames {x.shape[1:3]}")
  if not keep.any():
    raise ValueError("flicker: the mouth box covers the whole frame")
  return float(d[:, keep].mean())


def bootstrap_ci(
  unit_values=None,
  *,
  statistic=None,
  shape=None,
  n_boot: int = 2000,
  level: float = 0.95,
  seed: int = 0,
) -> list[float]:
  """Percentile bootstrap interval [lo, hi] of a figure over its (identity, prompt) units.

  unit_values: (I, P) one value per identity i and prompt (condition) p, nan where the
  value is undefined (left out, as the figure leaves it out); the figure is their nanmean.
  A replicate redraws, independently in every prompt column, I identities with
  replacement (stratified by prompt: the prompt set is the protocol's, the identities are
  the sample). For a figure that is not a mean of unit values give ``statistic``, a
  function of an (I, P) int array whose column p lists the identities drawn for prompt p
  (``np.arange(I)`` in every column gives the figure itself), and ``shape`` = (I, P).
  A constant figure gets a point interval; a figure undefined in every replicate gets
  [nan, nan]. Deterministic in ``seed``.
  """
  if (unit_values is None) == (statistic is None):
    raise ValueError("bootstrap_ci: give unit_values or statistic (with shape)")
  if statistic is None:
    v = np.asarray(unit_values, np.float64)
    if v.ndim == 1:
      v = v[:, None]
    if v.ndim != 2 or v.size == 0:
      raise ValueError(f"bootstrap_ci: unit_values must be (identities, prompts), got {v.shape}")
    shape = v.shape
    cols = np.arange(v.shape[1])

    def statistic(idx):  # noqa: E306
      w = v[idx, cols[None, :]]
      return float(np.nanmean(w)) if np.isfinite(w).any() else float("nan")

  if shape is None or len(shape) != 2:
    raise ValueError("bootstrap_ci: a statistic needs shape=(identities, prompts)")
  if not 0 < level < 1 or n_boot < 1:
    raise ValueError(
      f"bootstrap_ci: level must be in (0, 1) and n_boot >= 1, got {level}, {n_boot}"
    )
  n_id, n_p = int(shape[0]), int(shape[1])
  rng = np.random.default_rng(seed)
  reps = np.array([statistic(rng.integers(0, n_id, (n_id, n_p))) for _ in range(n_boot)])
  reps = reps[np.isfinite(reps)]
  if reps.size == 0:
    return [float("nan"), float("nan")]
  a = (1.0 - level) / 2
  lo, hi = np.quantile(reps, [a, 1.0 - a])
  if reps.min() == reps.max():  # exactly constant: no round-off in the quantile
    lo = hi = reps[0]
  return [float(lo), float(hi)]


def _rank_corr(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman's rho (average ranks for ties); nan when either side is constant."""
  return pearson(stats.rankdata(x), stats.rankdata(y))


def sweep_spearman(
  readings: np.ndarray, strengths: Sequence[float], reduce: str = "mean"
) -> tuple[float, list[float]]:
  """Intensity Spearman of a sweep: readings (I, E, A, F) = the judge's intensity of the
  swept emotion for identity i, emotion e, strength a, frame f. Per emotion, rho between
  strength and reading over the identities' frames (reduce 'none') or over the A
  per-strength means (reduce 'mean'); returns (mean over the emotions with a defined rho,
  per-emotion rho with nan where undefined)."""
  r = np.asarray(readings, np.float64)
  n_id, n_e, n_a, n_f = r.shape
  a = np.asarray(strengths, np.float64)
  per = []
  for e in range(n_e):
    if reduce == "mean":
      per.append(_rank_corr(a, r[:, e].mean(axis=(0, 2))))
    else:
      x = np.broadcast_to(a[None, :, None], (n_id, n_a, n_f)).reshape(-1)
      per.append(_rank_corr(x, r[:, e].reshape(-1)))
  ok = [v for v in per if not math.isnan(v)]
  return (float(np.mean(ok)) if ok else float("nan")), per
