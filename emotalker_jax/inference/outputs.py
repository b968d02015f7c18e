"""Generation outputs, each written atomically (``checkpoints.atomic_output``: a temp file in
the same folder, fsync, os.replace): H.264 mp4 with the audio muxed, a contact-sheet PNG,
npz arrays.
"""

from __future__ import annotations

import os
import tempfile

import imageio_ffmpeg
import numpy as np
from PIL import Image
from scipy.io import wavfile

from emotalker_jax.checkpoints import TMP_PREFIX, atomic_output


def write_mp4(
  path: str | os.PathLike,
  frames: np.ndarray,
  audio: np.ndarray | None,
  sample_rate: int = 16000,
  fps: float = 25.0,
  quality: float = 8,
) -> None:
  """Writes (N, H, W, 3) uint8 frames as H.264 mp4 with the waveform (L,) float32 muxed
  as AAC (bundled ffmpeg, one pass), atomically. H, W must be even."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(
      f"frames must be (N, H, W, 3) uint8 with N >= 1, got {frames.shape} {frames.dtype}"
    )
  h, w = frames.shape[1:3]
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  wav = None
  try:
    if audio is not None:  # scratch wav beside the output (a killed run's is cleaned up)
      fd, wav = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=".wav")
      os.close(fd)
      pcm = np.clip(np.rint(np.asarray(audio, np.float32) * 32767.0), -32768, 32767)
      wavfile.write(wav, int(sample_rate), pcm.astype(np.int16))
    with atomic_output(path) as tmp:
      writer = imageio_ffmpeg.write_frames(
        tmp,
        (w, h),
        fps=fps,
        codec="libx264",
        quality=quality,
        macro_block_size=1,
        ffmpeg_log_level="error",
        audio_path=wav,
        audio_codec="aac" if wav else None,
        output_params=["-movflags", "+faststart"],
      )
      writer.send(None)
      for f in frames:
        writer.send(np.ascontiguousarray(f))
      writer.close()
  finally:
    if wav is not None and os.path.exists(wav):
      os.remove(wav)


def contact_sheet(
  frames: np.ndarray,
  portrait: np.ndarray | None = None,
  cells: int = 16,
  columns: int = 4,
  min_cell: int = 128,
) -> np.ndarray:
  """A grid image (uint8 RGB) of the portrait (first cell, when given) and up to the rest
  of ``cells`` frames evenly spaced over the clip; cells upscaled (nearest) by an integer
  factor to at least ``min_cell`` px."""
  frames = np.asarray(frames)
  items = [] if portrait is None else [np.asarray(portrait)]
  k = max(1, cells - len(items))
  idx = np.unique(np.round(np.linspace(0, len(frames) - 1, min(k, len(frames)))).astype(int))
  items += [frames[i] for i in idx]
  s = items[0].shape[0]
  f = max(1, -(-min_cell // s))
  cols = min(columns, len(items))
  rows = -(-len(items) // cols)
  sheet = np.full((rows * s, cols * s, 3), 255, np.uint8)
  for j, im in enumerate(items):
    r, c = divmod(j, cols)
    sheet[r * s : (r + 1) * s, c * s : (c + 1) * s] = im
  return np.repeat(np.repeat(sheet, f, axis=0), f, axis=1)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes an RGB uint8 image as PNG, atomically."""
  with atomic_output(path) as tmp:
    Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")


def write_npz(path: str | os.PathLike, **arrays) -> None:
  """``np.savez`` of the arrays, atomically."""
  with atomic_output(path) as tmp:
    with open(tmp, "wb") as fh:
      np.savez(fh, **arrays)
