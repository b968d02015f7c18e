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
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

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
