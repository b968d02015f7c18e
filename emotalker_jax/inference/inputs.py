"""Generation inputs: a portrait (file or array -> the model's face crop, its face mask and
what paste-back needs) and a driving waveform (checked; its length sets the number of
frames).

Portraits: ``prepare_portrait`` (greyscale -> RGB, alpha over white; crop 'face': dlib
detection on the luma, 68 landmarks, similarity alignment to the canonical crop and the
landmark-hull mask, ``emotalker_jax.faces``; crop 'center': the central square and
``centre_face_mask``). Audio: ``load_generation_audio`` and ``check_audio`` (>= one frame,
<= a maximum duration, silence warns in ``Generator.generate``). ``seed_for``: the per-row
seed of a dataset run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emotalker_jax.audio import load_audio
from emotalker_jax.faces import align, detect, landmarks
from emotalker_jax.inference import paths

MIN_PORTRAIT_SIDE = 64  # pixels: smaller photos are refused (but model size with 'center')
MAX_PORTRAIT_SIDE = 8192  # pixels: larger photos are refused before decoding
DEFAULT_MAX_AUDIO_SECONDS = 600.0
CROP_MODES = ("face", "center")
GREY_TOLERANCE = 2  # levels: channels this close count as grey (JPEG chroma noise)
MAX_UPSCALE = 2.0  # crop pixels per photo pixel above which a small face warns
GREYSCALE_WARNING = (
  "portrait {source} is greyscale; the model was trained on colour video and may tint "
  "the face it generates, so the output frames are turned grey (ITU-R 601 luma) to match "
  "the photo"
)
# centre_face_mask: the geometry of the training crops around a face box (video_io's).
_CENTRE_CROP_SCALE = 1.8  # crop side / face side
_CENTRE_SHIFT_Y = 0.05  # crop centre below the face centre, in face sides
_CENTRE_MASK_AXES = (1.05, 1.25)  # ellipse semi-axes, in half face sides
_CENTRE_MASK_SHIFT_Y = 0.12  # ellipse centre below the face centre, in face sides


# ---------------------------------------------------------------------------------------
# Portraits
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Portrait:
  """A prepared portrait: the model's input and what paste-back needs.

  image (S, S, 3) uint8 RGB, the model's input; face_mask (S, S) uint8 {0, 1} in the crop
  (crop 'face': the aligned landmark hull of jaw and brows; 'center': ``centre_face_mask``);
  face_box (4,) float32 x0, y0, x1, y1 photo pixels of the detection (None for 'center');
  crop: 'face' | 'center'; source_size (W, H) of the photo; photo (H, W, 3) uint8 RGB, the
  photo itself (greyscale repeated, alpha over white); matrix (2, 3) float64 photo -> crop
  similarity (``faces.align``; None for 'center'); landmarks (68, 2) float32 photo pixels
  (None for 'center'); greyscale: the photo has no colour (``is_greyscale``); num_faces:
  faces detected (0 for 'center'); face_index: the one used (0 = largest).
  """

  image: np.ndarray
  face_mask: np.ndarray
  face_box: np.ndarray | None
  crop: str
  source_size: tuple[int, int]
  photo: np.ndarray
  matrix: np.ndarray | None = None
  landmarks: np.ndarray | None = None
  greyscale: bool = False
  num_faces: int = 0
  face_index: int | None = None


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


def is_greyscale(rgb: np.ndarray, tolerance: int = GREY_TOLERANCE) -> bool:
  """True when an (H, W, 3) uint8 image has no colour: at 99 % of its pixels the channels
  differ by at most ``tolerance`` levels (a grey JPEG decoded to RGB is off by 1-2)."""
  x = np.asarray(rgb)[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)]
  spread = x.max(-1).astype(np.int16) - x.min(-1).astype(np.int16)
  return bool(np.percentile(spread, 99) <= tolerance)


def read_portrait(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB (EXIF orientation applied; greyscale ->
  RGB; alpha composited over white). Size limits are checked from the header, before the
  pixels are decoded.

  ``path``: local, or remote (``gs://...``, read into memory through ``etils.epath``).
  Raises FileNotFoundError (missing file) or ValueError (not an image, damaged or
  truncated, larger than ``MAX_PORTRAIT_SIDE``).
  """
  path = os.fspath(path)
  if not paths.exists(path):
    raise FileNotFoundError(f"portrait {path!r} not found; check the path")
  if paths.isdir(path):
    raise ValueError(f"portrait {path!r} is a directory; pass an image file (PNG, JPEG, ...)")
  # A remote file (gs://...) is read into memory through epath; a local one is opened.
  src = io.BytesIO(paths.read_bytes(path)) if paths.is_remote(path) else path
  try:
    with Image.open(src) as im:
      w, h = im.size
      _check_size(w, h, repr(path), check_min=False)  # before decoding
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


def _check_size(
  w: int, h: int, source: str, exempt: int | None = None, check_min: bool = True
) -> None:
  """Refuses photos over ``MAX_PORTRAIT_SIDE`` on a side, or (check_min) under
  ``MIN_PORTRAIT_SIDE`` unless exactly ``exempt`` x ``exempt``."""
  if max(w, h) > MAX_PORTRAIT_SIDE:
    raise ValueError(
      f"portrait {source} is {w}x{h}, larger than {MAX_PORTRAIT_SIDE} px on a "
      "side; downscale it first"
    )
  if check_min and min(w, h) < MIN_PORTRAIT_SIDE and not w == h == exempt:
    raise ValueError(
      f"portrait {source} is {w}x{h}, at least {MIN_PORTRAIT_SIDE} px needed on each "
      "side (a model-size image that is already a centred face: --crop center)"
    )


def centre_face_mask(size: int) -> np.ndarray:
  """(size, size) uint8 {0, 1} face mask for a portrait that is already a centred face crop.

  The ellipse the training crops put around a face box: the face side is size / 1.8 (the
  crop is 1.8 face sides, its centre 0.05 face sides below the face's); the ellipse's
  semi-axes are (1.05, 1.25) half-sides, its centre 0.12 sides below the face's. It
  covers the synthetic benchmark's faces.
  """
  side = size / _CENTRE_CROP_SCALE
  cx, cy = size / 2.0, size / 2.0 - _CENTRE_SHIFT_Y * side + _CENTRE_MASK_SHIFT_Y * side
  mask = np.zeros((size, size), np.uint8)
  axes = [max(1, int(round(a * side / 2 * 16))) for a in _CENTRE_MASK_AXES]
  # shift=4: the centre and axes in 1/16 pixel
  cv2.ellipse(
    mask, (int(round(cx * 16)), int(round(cy * 16))), axes, 0, 0, 360, 1, -1, cv2.LINE_8, 4
  )
  return mask


def prepare_portrait(
  image,
  size: int,
  crop: str = "face",
  face_index: int | None = None,
  source: str | None = None,
) -> Portrait:
  """A portrait file or array -> the model's (size, size, 3) uint8 input and face mask.

  Args:
    image: a path, or an array (H, W) / (H, W, 1|3|4) uint8 (RGB order; alpha over white).
    size: ``config.data.image_size``.
    crop: 'face': faces are detected on the luma (``faces.detect``; also when the photo
      is already size x size), the largest is used (a warning when there are several)
      or ``face_index`` (0 = largest), its 68 landmarks found and the face aligned to the
      canonical crop (``faces.align.align_face``: eyes near row 0.47 S, mouth near 0.74 S);
      the face mask is the aligned landmark hull. 'center': the image is already a
      centred face crop (e.g. a synthetic portrait): its central square, resized (area
      when shrinking, cubic when growing), with ``centre_face_mask``; no detection.
    face_index: which face with crop 'face' (None: the largest).
    source: the name used in messages (default: the path).
  Returns a ``Portrait``. A greyscale photo (``is_greyscale``) warns: the model was trained
  on colour video, so ``outputs.render_frames`` turns the generated frames grey.
  Raises:
    FileNotFoundError / ValueError with the fix: unreadable or truncated file, under 64 px
    (exactly the model size is allowed with 'center'), over 8192 px (from the header),
    no face found (suggests ``--crop center``), ``face_index`` out of range.
  """
  if crop not in CROP_MODES:
    raise ValueError(f"crop {crop!r} must be one of {CROP_MODES}")
  if isinstance(image, (str, os.PathLike)):
    source = source or repr(os.fspath(image))
    arr = read_portrait(image)
  else:
    source = source or "(array)"
    arr = _to_rgb(image, source)
  h, w = arr.shape[:2]
  _check_size(w, h, source, exempt=size if crop == "center" else None)
  grey = is_greyscale(arr)
  if crop == "center":
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = np.ascontiguousarray(arr[y0 : y0 + s, x0 : x0 + s])
    if s == size:
      out = sq.copy()
    else:
      interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
      out = cv2.resize(sq, (size, size), interpolation=interp)
    if grey:
      warnings.warn(GREYSCALE_WARNING.format(source=source), stacklevel=2)
    return Portrait(out, centre_face_mask(size), None, "center", (w, h), arr, greyscale=grey)
  faces = detect.detect_faces(arr)
  if not faces:
    raise ValueError(
      f"no face found in portrait {source}; use a photo with a frontal, unoccluded face "
      "at least 40 px across, or pass --crop center if the image is already a centred "
      "face crop (e.g. a synthetic portrait)"
    )
  face = detect.choose_face(faces, face_index, f"portrait {source}")
  points = landmarks.find_landmarks(arr, face.box)
  aligned = align.align_face(arr, points, size)
  if grey:  # after detection: a photo without a face only gets the error
    warnings.warn(GREYSCALE_WARNING.format(source=source), stacklevel=2)
  upscale = float(np.sqrt(abs(np.linalg.det(aligned.matrix[:, :2]))))
  if upscale > MAX_UPSCALE:
    warnings.warn(
      f"the face in portrait {source} is small ({int(face.box[2] - face.box[0])} px wide): "
      f"the {size}x{size} crop is upscaled {upscale:.1f}x from it and will look soft; "
      "use a larger photo of the face",
      stacklevel=2,
    )
  return Portrait(
    aligned.image,
    aligned.face_mask,
    face.box,
    "face",
    (w, h),
    arr,
    aligned.matrix,
    points,
    grey,
    len(faces),
    0 if face_index is None else int(face_index),
  )


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
  warning is left to ``Generator.generate`` (once per clip).

  ``path``: local, or remote (``gs://...``: fetched through ``etils.epath`` into a local
  scratch copy for the decoder, removed afterwards; messages name the remote path).
  """
  path = os.fspath(path)
  if paths.is_remote(path) and not paths.isfile(path):
    what = "a directory" if paths.isdir(path) else "not found"
    raise FileNotFoundError(f"audio file {path!r} {what}; check the path")
  with warnings.catch_warnings(record=True) as caught, paths.local_copy(path) as local:
    warnings.simplefilter("always")
    try:
      audio = load_audio(local, sample_rate)
    except (ValueError, FileNotFoundError) as e:
      if local == path:
        raise
      raise type(e)(str(e).replace(repr(local), repr(path)).replace(local, path)) from None
  for w in caught:
    if "is silent" not in str(w.message):
      msg = str(w.message).replace(local, path) if local != path else w.message
      warnings.warn_explicit(msg, w.category, w.filename, w.lineno)
  check_audio(audio, sample_rate, fps, max_seconds, source=repr(path))
  return audio


def seed_for(row_id: str, seed: int) -> int:
  """A per-row seed derived from the row id and the run's seed (stable across runs and
  machines): the first 4 bytes of sha256('<seed>/<id>') as an int in [0, 2^31)."""
  d = hashlib.sha256(f"{int(seed)}/{row_id}".encode()).digest()
  return int.from_bytes(d[:4], "big") & 0x7FFFFFFF
