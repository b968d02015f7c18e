"""Generation inputs: a portrait (file or array -> the model's face crop and face mask) and
a driving waveform (checked; its length sets the number of frames).

Portraits: ``prepare_portrait`` (greyscale -> RGB, alpha over white, Haar face crop or a
centre crop, resize to ``config.data.image_size``, face mask). Audio: ``load_generation_audio``
and ``check_audio`` (>= one frame, <= a maximum duration, silence warns in
``Generator.generate``). ``seed_for``: the per-row seed of a dataset run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emotalker_jax.audio import load_audio
from input_pipeline import video_io as V

MIN_PORTRAIT_SIDE = 64  # pixels: smaller inputs are refused (unless already model size)
MAX_PORTRAIT_SIDE = 8192  # pixels: larger inputs are refused before decoding
DEFAULT_MAX_AUDIO_SECONDS = 600.0
CROP_MODES = ("face", "center")


# ---------------------------------------------------------------------------------------
# Portraits
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Portrait:
  """A prepared portrait. image (S, S, 3) uint8 RGB; face_mask (S, S) uint8 {0, 1};
  face_box (4,) float32 x0, y0, x1, y1 in source pixels (None for a centre crop);
  crop: 'face' | 'center' | 'as_is'; source_size (W, H) of the input."""

  image: np.ndarray
  face_mask: np.ndarray
  face_box: np.ndarray | None
  crop: str
  source_size: tuple[int, int]


def _to_rgb(arr: np.ndarray, source: str) -> np.ndarray:
  """(H, W) / (H, W, 1|2|3|4) uint8|uint16 -> (H, W, 3) uint8; alpha composited over white."""
  arr = np.asarray(arr)
  if arr.dtype == np.uint16:
    arr = (arr >> 8).astype(np.uint8)
  elif arr.dtype == bool:
    arr = arr.astype(np.uint8) * 255
  if arr.dtype != np.uint8:
    raise ValueError(f"portrait {source} has dtype {arr.dtype}; give 8-bit (uint8) RGB pixels")
  if arr.ndim == 2:
    arr = arr[..., None]
  if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(
      f"portrait {source} has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)"
    )
  c = arr.shape[-1]
  if c in (2, 4):  # grey+alpha / RGBA: composite over white
    rgb = arr[..., : c - 1].astype(np.float32)
    alpha = arr[..., c - 1 :].astype(np.float32) / 255.0
    arr = np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    c -= 1
  if c == 1:
    arr = np.repeat(arr, 3, axis=-1)
  return np.ascontiguousarray(arr)


def read_portrait(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB (EXIF orientation applied; greyscale ->
  RGB; alpha composited over white). Size limits are checked from the header, before the
  pixels are decoded.

  Raises FileNotFoundError (missing file) or ValueError (not an image, too large).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"portrait {path!r} not found; check the path")
  if os.path.isdir(path):
    raise ValueError(f"portrait {path!r} is a directory; pass an image file (PNG, JPEG, ...)")
  try:
    with Image.open(path) as im:
      w, h = im.size
      if max(w, h) > MAX_PORTRAIT_SIDE:  # before decoding (the small side: prepare_portrait)
        _check_size(w, h, repr(path), None)
      im = ImageOps.exif_transpose(im)
      if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, np.float64) / (257.0 if im.mode.startswith("I;16") else 1.0)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
      elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        arr = np.asarray(im.convert("RGBA"))
      elif im.mode in ("L", "1"):
        arr = np.asarray(im.convert("L"))
      else:
        arr = np.asarray(im.convert("RGB"))
  except UnidentifiedImageError:
    raise ValueError(
      f"cannot read portrait {path!r}: not an image file Pillow can decode; "
      "pass a PNG or JPEG photo"
    ) from None
  except (OSError, SyntaxError) as e:
    raise ValueError(
      f"cannot read portrait {path!r}: {e}; the file is damaged or "
      "truncated, pass a complete PNG or JPEG"
    ) from None
  return _to_rgb(arr, repr(path))


def _check_size(w: int, h: int, source: str, size: int | None) -> None:
  if max(w, h) > MAX_PORTRAIT_SIDE:
    raise ValueError(
      f"portrait {source} is {w}x{h}, larger than {MAX_PORTRAIT_SIDE} px on a "
      "side; downscale it first"
    )
  if min(w, h) < MIN_PORTRAIT_SIDE and not (size is not None and w == h == size):
    raise ValueError(
      f"portrait {source} is {w}x{h}, at least {MIN_PORTRAIT_SIDE} px needed "
      f"on each side (or exactly the model size)"
    )


def centre_face_mask(size: int) -> np.ndarray:
  """(size, size) uint8 face mask for a portrait that is already a centred face crop.

  The ellipse that a Haar face box would give in the crop ``crop_faces`` makes around it:
  face side = size / CROP_SCALE, centred so the crop is the whole image (the same geometry
  as the MEAD/CREMA-D training crops; it also covers the synthetic benchmark's faces).
  """
  side = size / V.CROP_SCALE
  cx, cy = size / 2.0, size / 2.0 - V.CROP_SHIFT_Y * side
  face = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
  return V.face_mask_in_crop(face, np.array([0, 0, size, size], np.float32), size)


def prepare_portrait(
  image,
  size: int,
  detect: bool = True,
  source: str | None = None,
) -> Portrait:
  """A portrait file or array -> the model's (size, size, 3) uint8 input and face mask.

  Args:
    image: a path, or an array (H, W) / (H, W, 1|3|4) uint8 (RGB order).
    size: ``config.data.image_size``.
    detect: True ('face' crop): the largest Haar face, a square of ``CROP_SCALE`` times its
      box around it (edge-replicated past the border), resized; the face mask is the
      ellipse of the box (as the MEAD/CREMA-D builders). False ('center' crop, for
      portraits that are already centred faces, e.g. synthetic ones): the central square,
      resized, with ``centre_face_mask``. An image of exactly size x size is taken as is.
  Raises:
    FileNotFoundError / ValueError with the fix: unreadable file, smaller than 64 px,
    larger than 8192 px, no face found (suggests ``--crop center``).
  """
  if isinstance(image, (str, os.PathLike)):
    source = source or repr(os.fspath(image))
    arr = read_portrait(image)
  else:
    source = source or "(array)"
    arr = _to_rgb(image, source)
  h, w = arr.shape[:2]
  _check_size(w, h, source, size)
  if (h, w) == (size, size):
    return Portrait(arr.copy(), centre_face_mask(size), None, "as_is", (w, h))
  if detect:
    boxes = V.detect_faces(arr)
    if len(boxes) == 0:
      raise ValueError(
        f"no face found in portrait {source}; use a frontal, unoccluded face "
        "photo, or pass --crop center if the image is already a centred face "
        "crop (e.g. a synthetic portrait)"
      )
    crops = V.crop_faces(arr[None], size, face_boxes=boxes[0], source=source)
    return Portrait(crops.frames[0], crops.face_mask[0].astype(np.uint8), boxes[0], "face", (w, h))
  s = min(h, w)
  y0, x0 = (h - s) // 2, (w - s) // 2
  sq = np.ascontiguousarray(arr[y0 : y0 + s, x0 : x0 + s])
  interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
  out = cv2.resize(sq, (size, size), interpolation=interp)
  return Portrait(out, centre_face_mask(size), None, "center", (w, h))


# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------
def num_frames_for(num_samples: int, sample_rate: int, fps: float) -> int:
  """Video frames covered by ``num_samples`` of audio: floor(duration * fps)."""
  return int(math.floor(int(num_samples) * float(fps) / int(sample_rate) + 1e-9))


def check_audio(
  audio: np.ndarray,
  sample_rate: int,
  fps: float = 25.0,
  max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
  source: str = "the audio",
) -> int:
  """Validates a (L,) waveform; returns the number of video frames N it drives.

  Raises ValueError when it is not 1-D, shorter than one frame (1/fps s) or longer than
  ``max_seconds``. Silence is allowed (``generate`` warns).
  """
  audio = np.asarray(audio)
  if audio.ndim != 1:
    raise ValueError(f"audio {source} must be a mono (L,) waveform, got shape {audio.shape}")
  dur = audio.shape[0] / float(sample_rate)
  n = num_frames_for(audio.shape[0], sample_rate, fps)
  if n < 1:
    raise ValueError(
      f"audio {source} is {dur * 1000:.0f} ms long; at least "
      f"{1000.0 / fps:.0f} ms (one video frame at {fps:g} fps) is needed"
    )
  if max_seconds and dur > float(max_seconds):
    raise ValueError(
      f"audio {source} is {dur:.1f} s long, over the limit of "
      f"{float(max_seconds):g} s; cut it, or raise the limit with "
      "--max-audio-seconds"
    )
  return n


def load_generation_audio(
  path: str | os.PathLike,
  sample_rate: int,
  fps: float = 25.0,
  max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
) -> np.ndarray:
  """``audio.load_audio`` + ``check_audio``: (L,) float32 at ``sample_rate``. The silence
  warning is left to ``Generator.generate`` (once per clip)."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    audio = load_audio(path, sample_rate)
  for w in caught:
    if "is silent" not in str(w.message):
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  check_audio(audio, sample_rate, fps, max_seconds, source=repr(os.fspath(path)))
  return audio


def seed_for(row_id: str, seed: int) -> int:
  """A per-row seed derived from the row id and the run's seed (stable across runs and
  machines): the first 4 bytes of sha256('<seed>/<id>') as an int in [0, 2^31)."""
  d = hashlib.sha256(f"{int(seed)}/{row_id}".encode()).digest()
  return int.from_bytes(d[:4], "big") & 0x7FFFFFFF
