"""MEAD / CREMA-D manual-download trees made from still photos with synthetic head motion.

For the builder tests and ``emotalker bench pipeline --photo-tree``: real faces (the
public-domain / CC0 photos in ``tests/data/faces``) and real speech (``tests/data/speech``,
16 kHz), laid out exactly as ``mead.scan_manual_dir`` / ``crema_d.scan_manual_dir`` read
a user's download:

  MEAD:    <root>/<actor>/video/front/<emotion>/level_<n>/<NNN>.mp4   (H.264, 25 fps)
           <root>/<actor>/audio/<emotion>/level_<n>/<NNN>.m4a         (AAC, 16 kHz)
  CREMA-D: <root>/VideoFlash/<actor>_<sentence>_<EMO>_<LVL>.flv      (FLV1, 25 fps)
           <root>/AudioWAV/<actor>_<sentence>_<EMO>_<LVL>.wav        (16-bit PCM, 16 kHz)

Each video is one photo, cut to a square around its face (``face_square``) and moved by a
small smooth affine per frame (``head_motion``: a few percent of translation and scale,
a few degrees of rotation, as a speaking head sways). Its audio is a stretch of the speech
clips (looped), ``PhotoClip.audio_frames`` long, so a clip with audio shorter or longer
than its video exercises the builders' length check.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import os
import pathlib
import subprocess

import cv2
import numpy as np
from scipy.io import wavfile

from emotalker_jax.audio import ffmpeg_exe, load_audio
from emotalker_jax.faces import detect
from input_pipeline import video_io

REPO_DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
PHOTOS_DIR = REPO_DATA / "faces"
SPEECH_DIR = REPO_DATA / "speech"
PHOTOS = ("astronaut.png", "obama.jpg", "obama2.jpg", "biden.jpg")  # one face each
NO_FACE_PHOTO = "chelsea.png"  # a cat: a clip the builders must skip
SAMPLE_RATE = 16000
FACE_MARGIN = 2.6  # square side = FACE_MARGIN * the face box's larger side


@dataclasses.dataclass(frozen=True)
class PhotoClip:
  """One clip: ``photo`` (a file name in the photos folder), ``frames`` video frames at
  ``fps``, audio of ``audio_frames`` frames' duration (None: as long as the video),
  ``seed`` for the motion and the speech offset."""

  photo: str
  frames: int
  audio_frames: float | None = None
  seed: int = 0
  fps: float = 25.0


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
  if not path.exists():
    raise FileNotFoundError(
      f"{what} {str(path)!r} not found; photo trees read the repository's tests/data "
      "(run from a source checkout, or pass photos_dir / speech_dir)"
    )
  return path


def read_photo(name: str, photos_dir: str | os.PathLike | None = None) -> np.ndarray:
  """A photo of the photos folder as (H, W, 3) uint8 RGB."""
  path = _require(pathlib.Path(photos_dir or PHOTOS_DIR) / name, "photo")
  img = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if img is None:
    raise ValueError(f"cannot read photo {str(path)!r}")
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def face_square(photo: np.ndarray, side: int) -> np.ndarray:
  """The (side, side, 3) uint8 square of ``FACE_MARGIN`` times the largest face's box,
  centred on it (edges replicated); the centre square when no face is found."""
  faces = detect.detect_faces(photo)
  h, w = photo.shape[:2]
  if faces:
    b = faces[0].box
    cx, cy, half = (
      (b[0] + b[2]) / 2,
      (b[1] + b[3]) / 2,
      FACE_MARGIN * max(b[2] - b[0], b[3] - b[1]) / 2,
    )
  else:
    cx, cy, half = w / 2, h / 2, min(h, w) / 2
  s = side / (2 * half)
  m = np.array([[s, 0, side / 2 - s * cx], [0, s, side / 2 - s * cy]], np.float64)
  return cv2.warpAffine(
    photo, m, (side, side), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
  )


def head_motion(
  image: np.ndarray,
  num_frames: int,
  seed: int = 0,
  shift: float = 0.03,
  angle_deg: float = 3.0,
  scale: float = 0.03,
) -> np.ndarray:
  """(T, H, W, 3) uint8: ``image`` (H, W, 3) under a smooth per-frame similarity.

  Translation up to ``shift`` of the side, rotation up to ``angle_deg`` and scale up to
  1 +- ``scale`` about the centre, each a sinusoid of a random period (1.5-4 s at 25 fps)
  and phase, so consecutive frames differ by a fraction of a pixel to a pixel."""
  rng = np.random.default_rng(seed)
  h, w = image.shape[:2]
  t = np.arange(int(num_frames), dtype=np.float64)
  period = rng.uniform(38, 100, 4)
  phase = rng.uniform(0, 2 * np.pi, 4)
  wave = np.sin(2 * np.pi * t[:, None] / period + phase)  # (T, 4)
  out = []
  for dx, dy, a, s in wave * [shift * w, shift * h, angle_deg, scale]:
    m = cv2.getRotationMatrix2D((w / 2, h / 2), a, 1.0 + s)
    m[:, 2] += (dx, dy)
    out.append(
      cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    )
  return np.stack(out)


def speech(
  num_samples: int, seed: int = 0, speech_dir: str | os.PathLike | None = None
) -> np.ndarray:
  """(num_samples,) float32: the speech clips back to back (looped), from a seed-dependent
  offset, at 16 kHz."""
  folder = _require(pathlib.Path(speech_dir or SPEECH_DIR), "speech folder")
  clips = [load_audio(str(p), SAMPLE_RATE) for p in sorted(folder.glob("*.wav"))]
  if not clips:
    raise FileNotFoundError(f"no .wav files in speech folder {str(folder)!r}")
  track = np.concatenate(clips)
  start = int(np.random.default_rng(seed).integers(track.size))
  reps = int(np.ceil((start + num_samples) / track.size)) + 1
  return np.tile(track, reps)[start : start + int(num_samples)].astype(np.float32)


def write_wav(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
  """16-bit PCM wav of a float waveform in [-1, 1]."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  wavfile.write(path, sample_rate, np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16))


def write_m4a(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
  """AAC in an .m4a container (MEAD's audio format), through a temporary wav."""
  wav = path + ".tmp.wav"
  write_wav(wav, audio, sample_rate)
  cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", wav]
  subprocess.run(cmd + ["-c:a", "aac", "-b:a", "128k", path], check=True)
  os.remove(wav)


def _clip_media(clip: PhotoClip, side: int, photos_dir, speech_dir, squares: dict):
  if clip.photo not in squares:
    squares[clip.photo] = face_square(read_photo(clip.photo, photos_dir), side)
  frames = head_motion(squares[clip.photo], clip.frames, clip.seed)
  audio_frames = clip.frames if clip.audio_frames is None else clip.audio_frames
  audio = speech(int(round(audio_frames * SAMPLE_RATE / clip.fps)), clip.seed, speech_dir)
  return frames, audio


def write_mead_tree(
  root: str | os.PathLike,
  clips: Mapping[tuple[str, str, int, int], PhotoClip],
  side: int = 192,
  photos_dir: str | os.PathLike | None = None,
  speech_dir: str | os.PathLike | None = None,
) -> list[str]:
  """Writes MEAD's layout: {(actor, emotion, level, number): PhotoClip}; side: the video's
  (even) width and height. Returns the video paths."""
  root, squares, out = os.fspath(root), {}, []
  for (actor, emotion, level, number), clip in sorted(clips.items()):
    frames, audio = _clip_media(clip, side, photos_dir, speech_dir, squares)
    rel = os.path.join(emotion, f"level_{int(level)}", f"{int(number):03d}")
    video = os.path.join(root, actor, "video", "front", rel + ".mp4")
    os.makedirs(os.path.dirname(video), exist_ok=True)
    video_io.write_video(video, frames, fps=clip.fps)
    m4a = os.path.join(root, actor, "audio", rel + ".m4a")
    os.makedirs(os.path.dirname(m4a), exist_ok=True)
    write_m4a(m4a, audio)
    out.append(video)
  return out


def write_crema_tree(
  root: str | os.PathLike,
  clips: Mapping[str, PhotoClip],
  side: int = 192,
  photos_dir: str | os.PathLike | None = None,
  speech_dir: str | os.PathLike | None = None,
) -> list[str]:
  """Writes CREMA-D's layout: {stem ("1001_DFA_ANG_XX"): PhotoClip}. Returns the videos."""
  root, squares, out = os.fspath(root), {}, []
  os.makedirs(os.path.join(root, "VideoFlash"), exist_ok=True)
  for stem, clip in sorted(clips.items()):
    frames, audio = _clip_media(clip, side, photos_dir, speech_dir, squares)
    video = os.path.join(root, "VideoFlash", stem + ".flv")
    video_io.write_video(video, frames, fps=clip.fps)
    write_wav(os.path.join(root, "AudioWAV", stem + ".wav"), audio)
    out.append(video)
  return out


def benchmark_mead_plan(
  actors: int = 4, clips_per_actor: int = 6, frames: int = 50
) -> dict[tuple[str, str, int, int], PhotoClip]:
  """A MEAD plan for the pipeline benchmark: ``actors`` train actors (M101, M102, ...;
  none of MEAD's test actors), each a neutral clip and emotional clips at levels 1-3, one
  photo per actor (cycling through ``PHOTOS``)."""
  emotions = ("neutral", "happy", "angry", "sad", "surprised", "fear", "disgusted", "contempt")
  plan = {}
  for a in range(int(actors)):
    actor = f"M{101 + a:03d}"
    for k in range(int(clips_per_actor)):
      emotion = emotions[k % len(emotions)]
      level = 1 if emotion == "neutral" else 1 + k % 3
      plan[(actor, emotion, level, 1 + k // len(emotions))] = PhotoClip(
        PHOTOS[a % len(PHOTOS)], int(frames), seed=100 * a + k
      )
  return plan
