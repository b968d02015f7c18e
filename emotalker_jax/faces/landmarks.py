"""68 facial landmarks (iBUG 300-W markup) from dlib's shape predictor, on photos and clips.

Points are (x, y) float32 pixels of the image they were found in. Index groups (the
subject's right eye is on the image's left):

  jaw 0-16, right brow 17-21, left brow 22-26, nose bridge 27-30, nostrils 31-35,
  right eye 36-41, left eye 42-47, outer lips 48-59, inner lips 60-67.

``track_landmarks`` follows a face through a clip: the detector runs every ``detect_every``
frames, boxes are interpolated in between, the predictor runs on every frame, and
``smooth_track`` rejects outlier frames (a jump from the temporal median larger than
``OUTLIER_IOD`` inter-ocular distances, or no face) and replaces them by interpolation,
then averages over a short centred window (short, so lip motion survives).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from emotalker_jax.faces import detect, models

NUM_LANDMARKS = 68
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)
EYES_AND_BROWS = np.concatenate([BROWS, RIGHT_EYE, LEFT_EYE])
MOUTH = np.arange(48, 68)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)

# The point each point becomes in a left-right mirrored image.
MIRROR = np.array(
  list(range(16, -1, -1))  # jaw
  + list(range(26, 16, -1))  # brows
  + [27, 28, 29, 30]  # nose bridge
  + [35, 34, 33, 32, 31]  # nostrils
  + [45, 44, 43, 42, 47, 46]  # right eye <- left eye
  + [39, 38, 37, 36, 41, 40]  # left eye <- right eye
  + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
  + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)

OUTLIER_IOD = 0.25  # a frame further than this from the temporal median is an outlier
MEDIAN_WINDOW = 7  # frames, for the outlier test
SMOOTH_WINDOW = 3  # frames, the centred moving average after outliers are replaced


def find_landmarks(image: np.ndarray, box: np.ndarray) -> np.ndarray:
  """The 68 landmarks of the face in ``box`` (4,) x0, y0, x1, y1 of an (H, W[, 3]) uint8
  image: (68, 2) float32 pixels. Runs on the luma, like the detector."""
  dlib = models.dlib_module()
  b = np.asarray(box, np.float64)
  rect = dlib.rectangle(
    int(round(b[0])), int(round(b[1])), int(round(b[2])) - 1, int(round(b[3])) - 1
  )
  shape = models.landmark_predictor()(detect.to_grey(image), rect)
  return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(..., 68, 2) -> the right and left eye centres (..., 2) (means of their six points)."""
  p = np.asarray(points, np.float32)
  return p[..., RIGHT_EYE, :].mean(-2), p[..., LEFT_EYE, :].mean(-2)


def inter_ocular(points: np.ndarray) -> np.ndarray:
  """Distance between the eye centres (...,) pixels: the scale of landmark errors."""
  r, l = eye_centres(points)
  return np.linalg.norm(l - r, axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
  """Inner-lip gap (mean of points 61-67, 62-66, 63-65) over the inter-ocular distance:
  (..., 68, 2) -> (...,) float32, 0 for a closed mouth."""
  p = np.asarray(points, np.float32)
  gap = np.linalg.norm(p[..., [61, 62, 63], :] - p[..., [67, 66, 65], :], axis=-1).mean(-1)
  return (gap / np.maximum(inter_ocular(p), 1e-6)).astype(np.float32)


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
  """The landmarks of the left-right mirrored image of width ``width``: (..., 68, 2)."""
  p = np.asarray(points, np.float32)[..., MIRROR, :].copy()
  p[..., 0] = (width - 1) - p[..., 0]
  return p


@dataclasses.dataclass
class LandmarkTrack:
  """Landmarks of a clip. points (T, 68, 2) float32 pixels (smoothed); found (T,) bool:
  a face was detected near the frame; replaced (T,) bool: the frame's points were
  interpolated (no face, or an outlier)."""

  points: np.ndarray
  found: np.ndarray
  replaced: np.ndarray


def _interpolate_boxes(times: list[int], boxes: list[np.ndarray], t: int) -> np.ndarray:
  grid = np.arange(t)
  b = np.stack(boxes)
  return np.stack([np.interp(grid, times, b[:, j]) for j in range(4)], axis=1)


def track_landmarks(
  frames: np.ndarray,
  detect_every: int = 5,
  smooth_window: int = SMOOTH_WINDOW,
  source: str = "the video",
) -> LandmarkTrack:
  """Landmarks of the largest face on every frame of a clip (T, H, W, 3) uint8.

  Raises ValueError naming ``source`` when no sampled frame has a face.
  """
  frames = np.asarray(frames)
  t = frames.shape[0]
  if t == 0:
    raise ValueError(f"{source} has no frames")
  k = max(1, int(detect_every))
  times, boxes = [], []
  for i in sorted(set(range(0, t, k)) | {t - 1}):
    faces = detect.detect_faces(frames[i])
    if faces:
      times.append(i)
      boxes.append(faces[0].box)
  if not boxes:
    raise ValueError(f"no face found in {source}; the clip needs a frontal, unoccluded face")
  track_boxes = _interpolate_boxes(times, boxes, t)
  points = np.stack([find_landmarks(frames[i], track_boxes[i]) for i in range(t)])
  # A frame counts as found when a detection lies within k frames of it.
  found = np.zeros(t, bool)
  for i in times:
    found[max(0, i - k + 1) : i + k] = True
  points, replaced = smooth_track(points, found, smooth_window)
  return LandmarkTrack(points, found, replaced)


def smooth_track(
  points: np.ndarray,
  valid: np.ndarray | None = None,
  smooth_window: int = SMOOTH_WINDOW,
  median_window: int = MEDIAN_WINDOW,
  outlier_iod: float = OUTLIER_IOD,
) -> tuple[np.ndarray, np.ndarray]:
  """Outlier rejection and smoothing of a landmark track (T, 68, 2).

  A frame is replaced when it is not ``valid`` or its mean point distance to the centred
  temporal median (``median_window`` frames) exceeds ``outlier_iod`` times the clip's
  median inter-ocular distance; replaced frames are interpolated linearly in time from
  the kept ones (held at the ends). Then a centred moving average of ``smooth_window``
  frames (edge-padded). Returns (points (T, 68, 2) float32, replaced (T,) bool).
  """
  p = np.asarray(points, np.float64)
  t = p.shape[0]
  valid = np.ones(t, bool) if valid is None else np.asarray(valid, bool).copy()
  half = median_window // 2
  padded = np.pad(p, ((half, half), (0, 0), (0, 0)), mode="edge")
  windows = np.stack([padded[i : i + t] for i in range(2 * half + 1)])
  median = np.median(windows, axis=0)
  iod = float(np.median(inter_ocular(p[valid]))) if valid.any() else 1.0
  jump = np.linalg.norm(p - median, axis=-1).mean(-1)
  keep = valid & (jump <= outlier_iod * max(iod, 1e-6))
  if not keep.any():
    keep = valid if valid.any() else np.ones(t, bool)
  grid = np.arange(t)
  kept = np.flatnonzero(keep)
  flat = p.reshape(t, -1)
  fixed = np.stack([np.interp(grid, kept, flat[kept, j]) for j in range(flat.shape[1])], 1)
  fixed = fixed.reshape(p.shape)
  w = int(smooth_window)
  if w > 1 and t > 1:
    lo = w // 2
    pad = np.pad(fixed, ((lo, w - 1 - lo), (0, 0), (0, 0)), mode="edge")
    fixed = np.mean([pad[i : i + t] for i in range(w)], axis=0)
  return fixed.astype(np.float32), ~keep


def locate_face(
  image: np.ndarray, face_index: int | None = None, source: str = "the image"
) -> tuple[detect.Face, np.ndarray]:
  """Detects the faces of a photo (H, W[, 3]) uint8, picks one (``detect.choose_face``:
  the largest, warning when there are several) and finds its landmarks (68, 2)."""
  face = detect.choose_face(detect.detect_faces(image), face_index, source)
  return face, find_landmarks(image, face.box)
