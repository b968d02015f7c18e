"""Face detection: dlib's HOG frontal-face detector on the luma of the image.

Detection always runs on the ITU-R 601 luma (the grey image), so an RGB photo, its
greyscale copy and an RGBA version over white give the same boxes (dlib's colour mode
scores differently: on the astronaut photo it adds a box on the background). Large
photos are downscaled to at most ``DETECT_MAX_SIDE`` pixels on the long side for the
detector (speed), then upsampled 2x inside dlib so faces down to ~40 px (in the
downscaled image) are found; boxes come back in the photo's pixels.

Boxes are ``(x0, y0, x1, y1)`` float32 pixels (x right, y down, x1/y1 exclusive).
"""

from __future__ import annotations

import dataclasses
import warnings

import cv2
import numpy as np

from emotalker_jax.faces import models

DETECT_MAX_SIDE = 640  # the detector sees at most this many pixels on the long side
# dlib's SVM margin. On the test photos real faces score 1.0-2.0 and the false positives
# seen (the astronaut's suit when mirrored, background in colour mode) 0.1; dlib's own
# default, 0, keeps those.
MIN_SCORE = 0.3


@dataclasses.dataclass(frozen=True)
class Face:
  """One detection. box (4,) float32 x0, y0, x1, y1 pixels; score: the SVM margin."""

  box: np.ndarray
  score: float

  @property
  def area(self) -> float:
    return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def to_grey(image: np.ndarray) -> np.ndarray:
  """(H, W) or (H, W, 3) uint8 RGB -> (H, W) uint8 luma (cv2's RGB2GRAY, ITU-R 601)."""
  image = np.asarray(image)
  if image.ndim == 2:
    return np.ascontiguousarray(image.astype(np.uint8, copy=False))
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
  return cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2GRAY)


def detect_faces(image: np.ndarray, min_score: float = MIN_SCORE) -> list[Face]:
  """All frontal faces in an (H, W[, 3]) uint8 image, largest first.

  Returns a list of ``Face`` (empty when there is none). Scores below ``min_score`` are
  dropped.
  """
  grey = to_grey(image)
  h, w = grey.shape
  scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
  small = (
    grey
    if scale == 1.0
    else cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
  )
  # One 2x upsampling: the detector's window is 80 px, so faces down to ~40 px are found.
  rects, scores, _ = models.frontal_face_detector().run(small, 1, min_score)
  faces = []
  for r, s in zip(rects, scores):
    box = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32) / scale
    box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
    faces.append(Face(box, float(s)))
  faces.sort(key=lambda f: -f.area)
  return faces


def choose_face(
  faces: list[Face], face_index: int | None = None, source: str = "the image"
) -> Face:
  """The face to use: ``faces[face_index]`` (largest first), or the largest one with a
  warning when there are several.

  Raises ValueError when there is no face, or ``face_index`` is out of range.
  """
  if not faces:
    raise ValueError(
      f"no face found in {source}; use a photo with a frontal, unoccluded face at least "
      "40 px across"
    )
  if face_index is not None:
    if not 0 <= face_index < len(faces):
      raise ValueError(
        f"--face-index {face_index} but {source} has {len(faces)} face(s) "
        f"(0 = largest ... {len(faces) - 1})"
      )
    return faces[face_index]
  if len(faces) > 1:
    sizes = ", ".join(f"{int(f.box[2] - f.box[0])} px" for f in faces)
    warnings.warn(
      f"{source} has {len(faces)} faces ({sizes} wide); using the largest. Pick another "
      "with --face-index N (0 = largest)",
      stacklevel=2,
    )
  return faces[0]
