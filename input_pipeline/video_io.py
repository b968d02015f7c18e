"""Video decoding at 25 fps, per-clip face alignment (dlib landmarks), audio/video lengths.

Used by the MEAD and CREMA-D TFDS builders to turn a recorded clip into aligned face
crops: ``frames`` (T, S, S, 3) uint8, ``landmarks`` (T, 68, 2) float32 in crop pixels,
``audio`` (T * sample_rate / fps,) float32 (``load_clip``).

Decoding: the ffmpeg binary bundled with ``imageio-ffmpeg`` resamples the stream to
``fps`` with its ``fps`` filter (frames are dropped / duplicated to the nearest time, so a
1 s clip gives 25 frames whatever its native rate) and, optionally, scales it so the
longest side is at most ``max_side`` pixels (keeps 1080p MEAD decoding cheap).

Faces (``align_clip``): ``emotalker_jax.faces.landmarks.track_landmarks`` follows the face
(dlib HOG detection every ``detect_every`` frames, 68 landmarks on every frame, outlier
rejection and a short moving average); then ONE similarity transform per clip,
``faces.align.alignment_matrix`` of the per-point median of the smoothed track, and every
frame is warped with it (``align.warp_to_crop``); the landmarks are mapped into crop
pixels with the same matrix. The face mask is the landmark hull (``align.face_hull_mask``),
derived from the stored landmarks when read, not stored.

Lengths (``av_length``): the audio's duration is compared with the video's in frames;
``input_pipeline.frame_records`` reports mismatches per build and skips clips that are off
by more than ``frame_records.MAX_AV_MISMATCH_FRAMES``.

The Haar-cascade box crops at the end of this file (``detect_faces``, ``crop_faces``,
``face_mask_in_crop``, ``CROP_SCALE``, ``CROP_SHIFT_Y``) are kept only for
``emotalker_jax/inference/inputs.py`` until its faces-API version lands; nothing in
input_pipeline uses them.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import os
import re
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np

from emotalker_jax.audio import load_audio
from emotalker_jax.faces import align
from emotalker_jax.faces import landmarks as L

FPS = 25


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------
def read_video(
  path: str | os.PathLike,
  fps: float = FPS,
  max_side: int | None = None,
  max_frames: int | None = None,
) -> np.ndarray:
  """Decodes a video file to RGB frames resampled to ``fps``: (T, H, W, 3) uint8.

  Args:
    path: any file ffmpeg reads (mp4, flv, avi, ...).
    fps: output frame rate; ffmpeg's ``fps`` filter drops/duplicates frames to it.
    max_side: if set, frames are scaled (aspect kept, even sizes) so that the longest side
      is at most this many pixels; smaller videos are left alone.
    max_frames: stop after this many output frames.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: ffmpeg cannot decode the file or it holds no video frames.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video file {path!r} not found; check the path")
  filters = [f"fps={float(fps):g}"]
  if max_side:
    m = int(max_side)
    filters.append(f"scale='if(gte(iw,ih),min(iw,{m}),-2)':'if(gte(iw,ih),-2,min(ih,{m}))'")
  out_params = ["-vf", ",".join(filters), "-an"]
  if max_frames is not None:
    out_params += ["-frames:v", str(int(max_frames))]
  frames = []
  try:
    gen = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24", output_params=out_params)
    meta = next(gen)
    w, h = meta["size"]
    for raw in gen:
      frames.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3))
  except (OSError, RuntimeError, StopIteration, KeyError) as e:
    raise ValueError(
      f"cannot decode video {path!r}: {e}; check the file is a complete video ffmpeg can read"
    ) from None
  if not frames:
    raise ValueError(f"video {path!r} has no frames; check the file is a complete video")
  return np.stack(frames)


def write_video(
  path: str | os.PathLike,
  frames: np.ndarray,
  fps: float = FPS,
  codec: str | None = None,
  quality: float | None = 8,
) -> None:
  """Writes (T, H, W, 3) uint8 RGB frames to ``path`` with the bundled ffmpeg.

  The container follows the extension (``.mp4`` -> H.264, ``.flv`` -> Sorenson FLV1,
  ``.avi`` -> MPEG-4). H and W must be even for yuv420p.
  """
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
  if codec is None:
    codec = {".flv": "flv", ".avi": "mpeg4"}.get(os.path.splitext(path)[1].lower(), "libx264")
  h, w = frames.shape[1:3]
  writer = imageio_ffmpeg.write_frames(
    path,
    (w, h),
    fps=fps,
    codec=codec,
    quality=quality,
    macro_block_size=1,
    ffmpeg_log_level="error",
  )
  writer.send(None)
  for f in frames:
    writer.send(np.ascontiguousarray(f))
  writer.close()


def count_frames(path: str | os.PathLike, fps: float = FPS) -> int:
  """Frames ``read_video(path, fps)`` would return, counted by ffmpeg without keeping them
  (used for the audio/video length check when ``max_frames`` truncates the decode)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video file {path!r} not found; check the path")
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-i", path, "-map", "0:v:0"]
  cmd += ["-vf", f"fps={float(fps):g}", "-f", "null", "-"]
  out = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
  counts = re.findall(r"frame=\s*(\d+)", out.stderr)
  if out.returncode != 0 or not counts:
    raise ValueError(
      f"cannot count the frames of video {path!r}: {out.stderr.strip()[-300:]}; check the "
      "file is a complete video ffmpeg can read"
    )
  return int(counts[-1])


# ---------------------------------------------------------------------------------------
# Per-clip alignment
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class AlignedClip:
  """A clip aligned to the canonical face crop.

  frames (T, S, S, 3) uint8; landmarks (T, 68, 2) float32 crop pixels (the smoothed track
  mapped through ``matrix``); matrix (2, 3) float64 source-frame -> crop pixels (one for
  the whole clip); found (T,) bool (a detection within ``detect_every`` frames);
  replaced (T,) bool (the frame's points were interpolated: no face or an outlier).
  """

  frames: np.ndarray
  landmarks: np.ndarray
  matrix: np.ndarray
  found: np.ndarray
  replaced: np.ndarray


def clip_alignment(points: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
  """The one (2, 3) source -> crop similarity of a clip with landmark track (T, 68, 2):
  ``align.alignment_matrix`` of the per-point temporal median."""
  return align.alignment_matrix(np.median(np.asarray(points, np.float64), axis=0), size, zoom)


def align_clip(
  frames: np.ndarray,
  size: int,
  detect_every: int = 5,
  smooth_window: int = L.SMOOTH_WINDOW,
  zoom: float = 1.0,
  source: str = "the video",
) -> AlignedClip:
  """Aligns every frame of a clip (T, H, W, 3) uint8 with one similarity transform.

  Why one transform per clip rather than one per frame: per-frame alignment would cancel
  the speaker's natural head motion (every frame re-centred and re-rotated on its own eyes
  and mouth), so the model could neither see nor learn it, and landmark jitter would
  become whole-image jitter; and the target and reference frames an example draws from a
  clip would sit in different crops. With the median of the smoothed track, the crop
  follows where the head is over the clip, the motion inside it stays as recorded, and
  any two frames of the clip share one crop (pixel (u, v) is the same place in both).

  Raises ValueError naming ``source`` when no sampled frame has a face.
  """
  track = L.track_landmarks(frames, detect_every, smooth_window, source=source)
  m = clip_alignment(track.points, size, zoom)
  crops = np.stack([align.warp_to_crop(f, m, size) for f in frames])
  points = align.transform_points(track.points, m)
  return AlignedClip(crops, points, m, track.found, track.replaced)


# ---------------------------------------------------------------------------------------
# A whole clip: video + audio -> aligned arrays
# ---------------------------------------------------------------------------------------
def fit_audio(
  audio: np.ndarray, num_frames: int, fps: float = FPS, sample_rate: int = 16000
) -> np.ndarray:
  """Trims or zero-pads a waveform to exactly ``num_frames * sample_rate / fps`` samples."""
  n = int(round(num_frames * sample_rate / fps))
  audio = np.asarray(audio, np.float32)[:n]
  if audio.shape[0] < n:
    audio = np.pad(audio, (0, n - audio.shape[0]))
  return audio


def av_length(
  video_frames: int, audio_samples: int, fps: float = FPS, sample_rate: int = 16000
) -> dict:
  """The audio/video length comparison of one clip: {video_frames, audio_frames (float,
  the audio's duration in video frames), diff_frames (audio - video; < 0: audio shorter)}."""
  audio_frames = float(audio_samples) * float(fps) / float(sample_rate)
  return {
    "video_frames": int(video_frames),
    "audio_frames": round(audio_frames, 3),
    "diff_frames": round(audio_frames - int(video_frames), 3),
  }


class AVLengthError(ValueError):
  """A clip's audio and video lengths differ by more than allowed; ``av``: ``av_length``."""

  def __init__(self, message: str, av: dict):
    super().__init__(message, av)  # both in args, so it pickles across worker processes
    self.av = av

  def __str__(self) -> str:
    return str(self.args[0])


def load_clip(
  video_path: str,
  audio_path: str | None,
  size: int,
  fps: float = FPS,
  sample_rate: int = 16000,
  max_frames: int | None = None,
  max_side: int | None = 960,
  detect_every: int = 5,
  smooth_window: int = L.SMOOTH_WINDOW,
  max_av_mismatch: float | None = None,
) -> dict:
  """Reads one recorded clip and aligns it (``align_clip``).

  Returns dict: ``frames`` (T, size, size, 3) uint8 at ``fps``; ``landmarks`` (T, 68, 2)
  float32 crop pixels; ``landmarks_replaced`` (T,) bool; ``matrix`` (2, 3) float32
  decoded-frame -> crop pixels; ``audio`` (T * sample_rate / fps,) float32 in [-1, 1] at
  ``sample_rate`` (from ``audio_path``, else the video's own track; trimmed / zero-padded
  to the video's length); ``av_length`` (``av_length`` of the whole video, before
  ``max_frames``, against the whole audio).
  Raises ValueError("no face found in <file>") when the detector finds no face, and
  ``AVLengthError`` (before any face work) when ``max_av_mismatch`` is set and the audio
  and video lengths differ by more than that many frames.
  """
  frames = read_video(video_path, fps=fps, max_side=max_side, max_frames=max_frames)
  audio = load_audio(audio_path or video_path, sample_rate)
  full = frames.shape[0]
  if max_frames is not None and full >= int(max_frames):
    full = count_frames(video_path, fps)
  av = av_length(full, audio.shape[0], fps, sample_rate)
  if max_av_mismatch is not None and abs(av["diff_frames"]) > float(max_av_mismatch):
    side = "shorter" if av["diff_frames"] < 0 else "longer"
    raise AVLengthError(
      f"the audio {audio_path or video_path} is {abs(av['diff_frames']):.1f} frames {side} "
      f"than the video {video_path} ({av['audio_frames']:.1f} vs {full} frames at {fps:g} "
      f"fps; at most {float(max_av_mismatch):g} allowed): check that the two files belong "
      "together",
      av,
    )
  clip = align_clip(frames, size, detect_every, smooth_window, source=str(video_path))
  return {
    "frames": clip.frames,
    "landmarks": clip.landmarks,
    "landmarks_replaced": clip.replaced,
    "matrix": clip.matrix.astype(np.float32),
    "audio": fit_audio(audio, frames.shape[0], fps, sample_rate),
    "av_length": av,
  }


# ---------------------------------------------------------------------------------------
# Haar-cascade box crops: only for emotalker_jax/inference/inputs.py (see the module doc)
# ---------------------------------------------------------------------------------------
CROP_SCALE = 1.8  # crop side = CROP_SCALE * max(face box w, h)
CROP_SHIFT_Y = 0.05  # crop centre = face centre + CROP_SHIFT_Y * face h (downwards)
MASK_SCALE = (1.05, 1.25)  # face-mask ellipse semi-axes = MASK_SCALE * (w/2, h/2)
MASK_SHIFT_Y = 0.12  # ellipse centre = face centre + MASK_SHIFT_Y * face h
DETECT_MAX_SIDE = 480  # frames are downscaled to this for detection (speed)

Box = np.ndarray  # (4,) float32 x0, y0, x1, y1 pixels of the frame (x1/y1 exclusive)
Detector = Callable[[np.ndarray], np.ndarray | None]


@functools.cache
def _cascade(name: str = "haarcascade_frontalface_default.xml"):
  path = os.path.join(cv2.data.haarcascades, name)
  clf = cv2.CascadeClassifier(path)
  if clf.empty():
    raise FileNotFoundError(
      f"OpenCV Haar cascade {path!r} could not be loaded; reinstall opencv-python-headless"
    )
  return clf


def detect_faces(frame: np.ndarray, min_size_frac: float = 0.08) -> np.ndarray:
  """All frontal faces in an RGB frame (H, W, 3) uint8: (N, 4) float32 boxes, largest first.

  Runs OpenCV's ``haarcascade_frontalface_default`` on the histogram-equalised grey image,
  downscaled so its longest side is at most ``DETECT_MAX_SIDE``; boxes are in pixels of
  ``frame``. ``min_size_frac``: smallest face side as a fraction of the shorter side.
  """
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"frame must be (H, W, 3), got {frame.shape}")
  h, w = frame.shape[:2]
  s = min(1.0, DETECT_MAX_SIDE / max(h, w))
  img = (
    frame
    if s == 1.0
    else cv2.resize(
      frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
    )
  )
  grey = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY))
  min_side = max(16, int(min_size_frac * min(grey.shape)))
  found = _cascade().detectMultiScale(
    grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
  )
  if len(found) == 0:
    return np.zeros((0, 4), np.float32)
  found = np.asarray(found, np.float32)
  boxes = (
    np.stack(
      [found[:, 0], found[:, 1], found[:, 0] + found[:, 2], found[:, 1] + found[:, 3]], axis=1
    )
    / s
  )
  order = np.argsort(-(found[:, 2] * found[:, 3]), kind="stable")
  return boxes[order].astype(np.float32)


def haar_detector(frame: np.ndarray) -> Box | None:
  """The default ``Detector``: the largest Haar face box (4,) float32, or None."""
  boxes = detect_faces(frame)
  return boxes[0] if len(boxes) else None


def track_face_boxes(
  frames: np.ndarray,
  detect_every: int = 5,
  smoothing: int = 9,
  detector: Detector = haar_detector,
  source: str = "the video",
) -> np.ndarray:
  """Per-frame face boxes of a clip (T, H, W, 3): (T, 4) float32.

  The detector runs on frames 0, k, 2k, ... and the last frame (k = ``detect_every``);
  frames in between (and frames where it finds nothing) get boxes interpolated linearly
  in time from the detected ones (held constant past the ends); then a centred moving
  average of ``smoothing`` frames (edge-padded) removes detector jitter.

  Raises ValueError("no face found in <source>") when no sampled frame has a face.
  """
  frames = np.asarray(frames)
  t = frames.shape[0]
  if t == 0:
    raise ValueError(f"{source} has no frames")
  k = max(1, int(detect_every))
  idx = sorted(set(range(0, t, k)) | {t - 1})
  times, boxes = [], []
  for i in idx:
    b = detector(frames[i])
    if b is not None:
      times.append(i)
      boxes.append(np.asarray(b, np.float32))
  if not boxes:
    raise ValueError(f"no face found in {source}; the clip needs a frontal, unoccluded face")
  boxes = np.stack(boxes)
  grid = np.arange(t)
  track = np.stack([np.interp(grid, times, boxes[:, j]) for j in range(4)], axis=1)
  return smooth_boxes(track, smoothing)


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
  """Centred moving average of a (T, 4) box track over ``window`` frames (edge-padded)."""
  boxes = np.asarray(boxes, np.float64)
  w = int(window)
  if w <= 1 or boxes.shape[0] <= 1:
    return boxes.astype(np.float32)
  half = w // 2
  padded = np.pad(boxes, ((half, w - 1 - half), (0, 0)), mode="edge")
  kernel = np.ones(w) / w
  out = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(4)], axis=1)
  return out.astype(np.float32)


def crop_box_for_face(
  face_box: np.ndarray, scale: float = CROP_SCALE, shift_y: float = CROP_SHIFT_Y
) -> np.ndarray:
  """Square crop box(es) around face box(es) (..., 4): side ``scale * max(w, h)``."""
  fb = np.asarray(face_box, np.float32)
  w, h = fb[..., 2] - fb[..., 0], fb[..., 3] - fb[..., 1]
  cx, cy = (fb[..., 0] + fb[..., 2]) / 2, (fb[..., 1] + fb[..., 3]) / 2 + shift_y * h
  half = scale * np.maximum(w, h) / 2
  return np.stack([cx - half, cy - half, cx + half, cy + half], axis=-1).astype(np.float32)


def _crop_resize(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
  """Integer crop of ``box`` (edge-replicated outside the frame) resized to size x size."""
  h, w = frame.shape[:2]
  x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
  side = max(1, int(round(max(box[2] - box[0], box[3] - box[1]))))
  x1, y1 = x0 + side, y0 + side
  pl, pt, pr, pb = max(0, -x0), max(0, -y0), max(0, x1 - w), max(0, y1 - h)
  patch = frame[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
  if patch.size == 0:  # box entirely outside: replicate the nearest edge pixel
    patch = frame[
      np.clip(y0, 0, h - 1) : np.clip(y0, 0, h - 1) + 1,
      np.clip(x0, 0, w - 1) : np.clip(x0, 0, w - 1) + 1,
    ]
    patch = np.broadcast_to(patch, (side, side, frame.shape[2]))
  elif pl or pt or pr or pb:
    patch = cv2.copyMakeBorder(np.ascontiguousarray(patch), pt, pb, pl, pr, cv2.BORDER_REPLICATE)
  interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
  return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def face_mask_in_crop(face_box: np.ndarray, crop_box: np.ndarray, size: int) -> np.ndarray:
  """(size, size) uint8 0/1 ellipse covering the face box, in crop coordinates."""
  s = size / max(1e-6, float(crop_box[2] - crop_box[0]))
  w, h = (face_box[2] - face_box[0]) * s, (face_box[3] - face_box[1]) * s
  cx = ((face_box[0] + face_box[2]) / 2 - crop_box[0]) * s
  cy = ((face_box[1] + face_box[3]) / 2 - crop_box[1]) * s + MASK_SHIFT_Y * h
  mask = np.zeros((size, size), np.uint8)
  shift = 4  # sub-pixel precision of cv2.ellipse
  cv2.ellipse(
    mask,
    (int(round(cx * 16)), int(round(cy * 16))),
    (
      max(1, int(round(MASK_SCALE[0] * w / 2 * 16))),
      max(1, int(round(MASK_SCALE[1] * h / 2 * 16))),
    ),
    0,
    0,
    360,
    1,
    -1,
    lineType=cv2.LINE_8,
    shift=shift,
  )
  return mask


@dataclasses.dataclass
class FaceCrops:
  """Face crops of a clip. frames (T, S, S, 3) uint8; face_mask (T, S, S) uint8 0/1;
  face_boxes / crop_boxes (T, 4) float32 in source-frame pixels."""

  frames: np.ndarray
  face_mask: np.ndarray
  face_boxes: np.ndarray
  crop_boxes: np.ndarray


def crop_faces(
  frames: np.ndarray,
  size: int,
  face_boxes: np.ndarray | None = None,
  smoothing: int = 9,
  detect_every: int = 5,
  scale: float = CROP_SCALE,
  detector: Detector = haar_detector,
  source: str = "the video",
) -> FaceCrops:
  """Square face crops of a clip (T, H, W, 3) uint8, resized to ``size``.

  Args:
    face_boxes: (4,) one fixed box or (T, 4) per-frame boxes; None -> ``track_face_boxes``
      (Haar detection every ``detect_every`` frames, moving average of ``smoothing``).
    scale: crop side / face-box side (1.8 keeps hair, some background and pose).
  """
  frames = np.asarray(frames)
  t = frames.shape[0]
  if face_boxes is None:
    face_boxes = track_face_boxes(frames, detect_every, smoothing, detector, source)
  face_boxes = np.broadcast_to(np.asarray(face_boxes, np.float32), (t, 4)).copy()
  crop_boxes = crop_box_for_face(face_boxes, scale)
  out = np.stack([_crop_resize(frames[i], crop_boxes[i], size) for i in range(t)])
  masks = np.stack([face_mask_in_crop(face_boxes[i], crop_boxes[i], size) for i in range(t)])
  return FaceCrops(out, masks, face_boxes, crop_boxes)
