"""Identity: dlib's ResNet face descriptor (128-D; dlib's model, trained on about three
million faces, 99.38 % on LFW) and the cosine similarity between two of them.

dlib's own threshold is a Euclidean distance of 0.6 between descriptors (about a cosine
of 0.82 for these near-unit vectors); the project reports cosine similarity (CSIM).
"""

from __future__ import annotations

import numpy as np

from emotalker_jax.faces import models

CHIP_JITTER = 0  # dlib's optional random re-crops per descriptor; 0 = deterministic


def face_descriptor(image: np.ndarray, points: np.ndarray) -> np.ndarray:
  """The 128-D descriptor (float32) of the face with 68 landmarks ``points`` (68, 2) in an
  (H, W, 3) uint8 RGB image (dlib aligns its own 150 x 150 chip from the landmarks)."""
  dlib = models.dlib_module()
  p = np.round(np.asarray(points, np.float64)).astype(int)
  x0, y0 = p.min(0)
  x1, y1 = p.max(0)
  rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
  shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in p])
  img = np.ascontiguousarray(np.asarray(image, np.uint8))
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  return np.asarray(
    models.face_embedder().compute_face_descriptor(img, shape, CHIP_JITTER), np.float32
  )


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Cosine of descriptors (..., D) and (..., D) -> (...,)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  num = (a * b).sum(-1)
  den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return (num / np.maximum(den, 1e-12)).astype(np.float32)
