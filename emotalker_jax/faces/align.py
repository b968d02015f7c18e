"""Similarity alignment of a face to the canonical crop, its face mask, and paste-back.

The canonical crop is FFHQ's: from the eye centres and the mouth corners, an axis ``x``
(the eye line, corrected by the eye-to-mouth direction), a side of
``max(2.0 * eye distance, 1.8 * eye-to-mouth distance) * 2 / zoom`` and a centre a tenth of
the eye-to-mouth vector below the eyes. The crop keeps the whole head with some hair and
neck; the eyes land near row 0.47 S, the mouth near 0.74 S.

Matrices are (2, 3) float64 affine maps from photo pixels to crop pixels (pixel centres at
integer coordinates, as dlib's landmarks and cv2's warps use them). ``paste_back`` warps
a generated crop back into the photo through the same matrix and blends it with a mask
that is zero outside the face hull, so every photo pixel outside the hull is unchanged.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from emotalker_jax.faces import landmarks as L

FEATHER_FRAC = 0.04  # feather width of the paste-back mask, as a fraction of the crop side


@dataclasses.dataclass
class AlignedFace:
  """One aligned face. image (S, S, 3) uint8; matrix (2, 3) float64 photo -> crop;
  points (68, 2) float32 landmarks in crop pixels; face_mask (S, S) uint8 {0, 1} (the
  landmark hull); photo_size (W, H) of the source."""

  image: np.ndarray
  matrix: np.ndarray
  points: np.ndarray
  face_mask: np.ndarray
  photo_size: tuple[int, int]


def alignment_matrix(points: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
  """(68, 2) landmarks -> the (2, 3) photo-to-crop similarity of the canonical crop."""
  p = np.asarray(points, np.float64)
  eye_r, eye_l = p[L.RIGHT_EYE].mean(0), p[L.LEFT_EYE].mean(0)
  eye_avg, eye_to_eye = (eye_r + eye_l) / 2, eye_l - eye_r
  mouth_avg = (p[48] + p[54]) / 2
  eye_to_mouth = mouth_avg - eye_avg
  # The eye line, turned towards the perpendicular of the eye-to-mouth vector.
  x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
  x /= max(np.hypot(*x), 1e-9)
  half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / float(zoom)
  x = x * half
  y = np.array([-x[1], x[0]])
  centre = eye_avg + eye_to_mouth * 0.1
  # crop (u, v) -> photo: corner + u / size * 2x + v / size * 2y; invert it.
  a = np.stack([2 * x / size, 2 * y / size], axis=1)
  return invert_affine(np.concatenate([a, (centre - x - y)[:, None]], axis=1))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Applies a (2, 3) affine map to points (..., 2)."""
  p = np.asarray(points, np.float64)
  m = np.asarray(matrix, np.float64)
  return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def face_hull_mask(points: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """The convex hull of the jaw and brows as an (H, W) uint8 {0, 1} mask (size: S or
  (H, W)); points (68, 2) in that image's pixels."""
  h, w = (size, size) if isinstance(size, int) else size
  hull_pts = np.asarray(points, np.float64)[np.concatenate([L.JAW, L.BROWS])]
  hull = cv2.convexHull(np.round(hull_pts * 16).astype(np.int32))
  mask = np.zeros((h, w), np.uint8)
  cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
  return mask


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
  """The (size, size, C) crop of ``image`` under ``matrix`` (bilinear, edges replicated;
  area-downscaled first when the crop shrinks the photo more than 2x, to avoid aliasing)."""
  m = np.asarray(matrix, np.float64)
  img = np.ascontiguousarray(image)
  scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop px per photo px
  k = int(np.floor(0.5 / scale)) if scale < 0.5 else 1
  if k > 1:
    h, w = img.shape[:2]
    img = cv2.resize(img, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    # small-image pixel q covers photo pixels k q ... k q + k - 1: centre k q + (k - 1) / 2.
    m = np.concatenate([k * m[:, :2], (m[:, :2] @ np.full(2, (k - 1) / 2) + m[:, 2])[:, None]], 1)
  return cv2.warpAffine(
    img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
  )


def align_face(image: np.ndarray, points: np.ndarray, size: int, zoom: float = 1.0) -> AlignedFace:
  """Aligns the face with landmarks ``points`` (68, 2) of an (H, W, 3) uint8 photo to the
  canonical (size, size) crop."""
  m = alignment_matrix(points, size, zoom)
  crop_pts = transform_points(points, m)
  h, w = image.shape[:2]
  return AlignedFace(
    warp_to_crop(image, m, size), m, crop_pts, face_hull_mask(crop_pts, size), (w, h)
  )


def feathered_mask(mask: np.ndarray, feather_px: float) -> np.ndarray:
  """A {0, 1} mask (H, W) -> float32 alpha in [0, 1] that ramps from 0 at the mask's edge
  to 1 about ``feather_px`` inside it and is exactly 0 outside the mask."""
  m = (np.asarray(mask) > 0).astype(np.uint8)
  if feather_px <= 0:
    return m.astype(np.float32)
  dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
  return np.clip(dist / float(feather_px), 0.0, 1.0).astype(np.float32)


def paste_back(
  photo: np.ndarray,
  crop: np.ndarray,
  matrix: np.ndarray,
  crop_mask: np.ndarray,
  feather_px: float | None = None,
) -> np.ndarray:
  """Blends a generated crop (S, S, 3) uint8 back into the photo (H, W, 3) uint8.

  ``crop_mask`` (S, S) {0, 1} (the aligned face's hull) is feathered inside the crop
  (``feather_px`` crop pixels, default ``FEATHER_FRAC * S``), warped to the photo with
  the inverse of ``matrix`` and clipped to the warped hull, so the result equals ``photo``
  exactly wherever the hull does not reach. Returns (H, W, 3) uint8.
  """
  photo = np.asarray(photo)
  s = crop.shape[0]
  h, w = photo.shape[:2]
  feather = FEATHER_FRAC * s if feather_px is None else float(feather_px)
  alpha_crop = feathered_mask(crop_mask, feather)
  inv = cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR
  m = np.asarray(matrix, np.float64)
  # Only the photo's box under the crop is touched.
  corners = transform_points(
    np.array([[0, 0], [s - 1, 0], [0, s - 1], [s - 1, s - 1]], np.float64), invert_affine(m)
  )
  x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
  x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [w, h])
  out = photo.copy()
  if x1 <= x0 or y1 <= y0:
    return out
  # The map from box pixels (photo pixel - (x0, y0)) to crop pixels.
  mb = m.copy()
  mb[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
  size = (int(x1 - x0), int(y1 - y0))
  face = cv2.warpAffine(
    np.ascontiguousarray(crop), mb, size, flags=inv, borderMode=cv2.BORDER_REPLICATE
  )
  alpha = cv2.warpAffine(
    alpha_crop, mb, size, flags=inv, borderMode=cv2.BORDER_CONSTANT, borderValue=0
  )
  hard = cv2.warpAffine(
    (np.asarray(crop_mask) > 0).astype(np.uint8),
    mb,
    size,
    flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST,
    borderMode=cv2.BORDER_CONSTANT,
    borderValue=0,
  )
  alpha = np.where(hard > 0, alpha, 0.0)[..., None]
  region = out[y0:y1, x0:x1].astype(np.float32)
  blended = np.rint(alpha * face.astype(np.float32) + (1.0 - alpha) * region).astype(np.uint8)
  inside = alpha[..., 0] > 0
  out[y0:y1, x0:x1][inside] = blended[inside]
  return out


def invert_affine(matrix: np.ndarray) -> np.ndarray:
  """The inverse of a (2, 3) affine map."""
  m = np.asarray(matrix, np.float64)
  a_inv = np.linalg.inv(m[:, :2])
  return np.concatenate([a_inv, (-a_inv @ m[:, 2])[:, None]], axis=1)
