"""Generation outputs, each written atomically (``checkpoints.atomic_output``: a temp file in
the same folder, fsync, os.replace; a remote ``gs://`` target: a local scratch file uploaded
whole through ``etils.epath``, ``paths.write_target``): H.264 mp4 with the audio muxed, PNG
frames, a contact-sheet PNG, npz arrays.

The video writers consume frames chunk by chunk (``Generator.stream``): ``render_frames``
turns each generated chunk into output frames (grey for a greyscale photo, pasted back
into the photo), ``tap`` hands each chunk to a side consumer (``PngFrames``,
``SheetFrames``) on its way, and ``write_mp4`` encodes an array or an iterable of chunks,
so only a chunk of frames is held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import io
import os
import tempfile

import imageio_ffmpeg
import numpy as np
from PIL import Image
from scipy.io import wavfile

from emotalker_jax.checkpoints import TMP_PREFIX
from emotalker_jax.faces import align
from emotalker_jax.inference import paths

PNG_COMPRESS_LEVEL = 1  # zlib level of the PNG frames (lossless at any level; 1 is fast)


def _chunks_of(frames) -> Iterator[np.ndarray]:
  """An (N, H, W, 3) array or an iterable of (B, H, W, 3) / (H, W, 3) arrays -> (B, H, W, 3)
  uint8 chunks, checked."""
  if isinstance(frames, np.ndarray):
    frames = [frames]
  for c in frames:
    c = np.asarray(c)
    if c.ndim == 3:
      c = c[None]
    if c.ndim != 4 or c.shape[-1] != 3 or c.dtype != np.uint8:
      raise ValueError(f"frames must be (N, H, W, 3) uint8, got {c.shape} {c.dtype}")
    if len(c):
      yield c


def _even(chunk: np.ndarray) -> np.ndarray:
  """Pads (B, H, W, 3) by one replicated last row / column where H / W is odd (H.264 in
  4:2:0 needs even sides)."""
  h, w = chunk.shape[1:3]
  if h % 2 == 0 and w % 2 == 0:
    return chunk
  return np.pad(chunk, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(
  path: str | os.PathLike,
  frames,
  audio: np.ndarray | None,
  sample_rate: int = 16000,
  fps: float = 25.0,
  quality: float = 8,
) -> int:
  """Writes frames as H.264 mp4 (yuv420p) with the waveform (L,) float32 muxed as AAC
  (bundled ffmpeg, one pass), atomically; returns the number of frames written.

  frames: (N, H, W, 3) uint8, or an iterable of (B, H, W, 3) uint8 chunks of one size
  (encoded as they come: memory holds one chunk). An odd H or W gets one replicated last
  row / column (4:2:0 needs even sides). Raises ValueError for no frames or chunks of
  another size.
  """
  chunks = _chunks_of(frames)
  first = next(chunks, None)
  if first is None:
    raise ValueError("frames must be (N, H, W, 3) uint8 with N >= 1, got no frames")
  h, w = first.shape[1:3]
  path = os.fspath(path)
  if paths.is_remote(path):  # encoded in the system temp folder, then uploaded whole
    folder = None
  else:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
  wav, count = None, 0
  try:
    if audio is not None:  # scratch wav beside the output (a killed run's is cleaned up)
      fd, wav = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=".wav")
      os.close(fd)
      pcm = np.clip(np.rint(np.asarray(audio, np.float32) * 32767.0), -32768, 32767)
      wavfile.write(wav, int(sample_rate), pcm.astype(np.int16))
    with paths.write_target(path) as tmp:
      writer = imageio_ffmpeg.write_frames(
        tmp,
        (w + w % 2, h + h % 2),
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
      try:
        for c in _prepend(first, chunks):
          if c.shape[1:3] != (h, w):
            raise ValueError(f"frame chunks differ in size: {c.shape[1:3]} after {(h, w)}")
          for f in _even(c):
            writer.send(np.ascontiguousarray(f))
          count += len(c)
      finally:
        writer.close()
  finally:
    if wav is not None and os.path.exists(wav):
      os.remove(wav)
  return count


def _prepend(first, rest):
  yield first
  yield from rest


def tap(chunks: Iterable[np.ndarray], *consumers: Callable[[np.ndarray], None]):
  """Passes each chunk on after handing it to every consumer (in order)."""
  for c in chunks:
    for fn in consumers:
      fn(c)
    yield c


def check_frames_dir(folder: str | os.PathLike) -> str:
  """A folder for PNG frames: created when missing; refused (ValueError) when it is a file
  or already holds files (frames of another clip would mix in)."""
  folder = os.fspath(folder)
  if paths.exists(folder) and not paths.isdir(folder):
    raise ValueError(f"--frames-dir {folder!r} is a file; pass a new or empty folder")
  if paths.listdir(folder):
    raise ValueError(
      f"--frames-dir {folder!r} is not empty; pass a new or empty folder (frames of "
      "another clip would mix in)"
    )
  paths.makedirs(folder)
  return folder


class PngFrames:
  """A chunk consumer writing each frame (H, W, 3) uint8 as DIR/000000.png, 000001.png, ...
  (lossless; each through a ``.tmp-`` file renamed into place, so a killed run leaves no
  partial frame; not fsynced, unlike ``atomic_output``: one fsync per frame would
  dominate a long clip; a remote folder gets each frame as one object upload);
  ``count``: frames written so far."""

  def __init__(self, folder: str | os.PathLike):
    self.folder = os.fspath(folder)
    self.remote = paths.is_remote(self.folder)
    paths.makedirs(self.folder)
    self.count = 0

  def __call__(self, chunk: np.ndarray) -> None:
    for f in np.asarray(chunk):
      name = f"{self.count:06d}.png"
      if self.remote:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        (paths.as_path(self.folder) / name).write_bytes(buf.getvalue())
      else:
        tmp = os.path.join(self.folder, TMP_PREFIX + name)
        Image.fromarray(f).save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        os.replace(tmp, os.path.join(self.folder, name))
      self.count += 1


def sheet_indices(num_frames: int, cells: int = 16, portrait: bool = True) -> np.ndarray:
  """The frames a contact sheet shows: up to ``cells`` (one fewer with the portrait)
  evenly spaced over ``num_frames``, (K,) int sorted."""
  k = max(1, cells - int(portrait))
  idx = np.round(np.linspace(0, num_frames - 1, min(k, num_frames))).astype(int)
  return np.unique(idx)


def contact_sheet(
  frames: np.ndarray,
  portrait: np.ndarray | None = None,
  cells: int = 16,
  columns: int = 4,
  min_cell: int = 128,
) -> np.ndarray:
  """A grid image (uint8 RGB) of the portrait (first cell, when given) and up to the rest
  of ``cells`` frames (N, S, S, 3) evenly spaced over the clip (``sheet_indices``); cells
  upscaled (nearest) by an integer factor to at least ``min_cell`` px. Given only the
  frames ``sheet_indices`` picks (``SheetFrames``), it shows them all: the same sheet."""
  frames = np.asarray(frames)
  items = [] if portrait is None else [np.asarray(portrait)]
  items += [frames[i] for i in sheet_indices(len(frames), cells, portrait is not None)]
  s = items[0].shape[0]
  f = max(1, -(-min_cell // s))
  cols = min(columns, len(items))
  rows = -(-len(items) // cols)
  sheet = np.full((rows * s, cols * s, 3), 255, np.uint8)
  for j, im in enumerate(items):
    r, c = divmod(j, cols)
    sheet[r * s : (r + 1) * s, c * s : (c + 1) * s] = im
  return np.repeat(np.repeat(sheet, f, axis=0), f, axis=1)


class SheetFrames:
  """A chunk consumer keeping only the frames a contact sheet of ``num_frames`` shows;
  ``sheet(portrait)`` then equals ``contact_sheet(all frames, portrait)``."""

  def __init__(self, num_frames: int, cells: int = 16, portrait: bool = True):
    self.cells, self.seen, self.kept = cells, 0, []
    self.wanted = set(sheet_indices(num_frames, cells, portrait).tolist())

  def __call__(self, chunk: np.ndarray) -> None:
    for f in np.asarray(chunk):
      if self.seen in self.wanted:
        self.kept.append(f.copy())
      self.seen += 1

  def sheet(self, portrait: np.ndarray | None = None, **kw) -> np.ndarray:
    return contact_sheet(np.stack(self.kept), portrait, self.cells, **kw)


def to_portrait_colour(frames: np.ndarray, portrait) -> np.ndarray:
  """Frames (..., S, S, 3) uint8 as they are, or grey (ITU-R 601 luma in all three
  channels) when the portrait is greyscale (``Portrait.greyscale``)."""
  if not portrait.greyscale:
    return frames
  f = np.asarray(frames, np.float32)
  luma = np.rint(f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114)
  return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def render_frames(
  chunks: Iterable[np.ndarray],
  portrait,
  paste_back: bool = False,
  crops_tap: Callable[[np.ndarray], None] | None = None,
) -> Iterator[np.ndarray]:
  """Generated chunks (B, S, S, 3) uint8 -> output chunks, one at a time.

  ``to_portrait_colour`` first (grey for a greyscale portrait); ``crops_tap`` (e.g.
  ``SheetFrames``) sees those crops. paste_back: each frame is blended into
  ``portrait.photo`` through ``faces.align.paste_back`` (the aligned landmark hull,
  feathered inside; every photo pixel outside the warped hull unchanged) -> (B, H, W, 3)
  at the photo's size. Raises ValueError for paste-back of a portrait without an
  alignment (crop 'center').
  """
  if paste_back and portrait.matrix is None:
    raise ValueError(
      "paste-back needs the face's alignment in the photo (--crop face); a --crop center "
      "portrait has none: its output is the crop itself"
    )
  for c in chunks:
    c = to_portrait_colour(c, portrait)
    if crops_tap is not None:
      crops_tap(c)
    if paste_back:
      c = np.stack(
        [align.paste_back(portrait.photo, f, portrait.matrix, portrait.face_mask) for f in c]
      )
    yield c


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes an RGB uint8 image as PNG, atomically (local or remote, ``paths.write_target``)."""
  with paths.write_target(path) as tmp:
    Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")


def write_npz(path: str | os.PathLike, **arrays) -> None:
  """``np.savez`` of the arrays, atomically (local or remote, ``paths.write_target``)."""
  with paths.write_target(path) as tmp:
    with open(tmp, "wb") as fh:
      np.savez(fh, **arrays)
