"""Inference: a trained EmoTalker checkpoint + a portrait + audio + an emotion -> frames.

* ``inputs``: portraits (``prepare_portrait``: face detection, landmarks and alignment, or
  a centre crop; ``read_portrait``, ``centre_face_mask``, ``is_greyscale``) and audio
  (``load_generation_audio``, ``check_audio``, ``num_frames_for``).
* ``generator``: ``load_generator(workdir)`` -> ``Generator``; ``Generator.stream`` (a
  ``FrameStream`` of chunks) and ``Generator.generate`` (all frames) (the pure encode /
  invert / sample-chunk / decode functions it compiles).
* ``outputs``: mp4 with audio (from an array or a stream of chunks), PNG frames,
  paste-back into the photo (``render_frames``), contact sheets, png / npz, all written
  atomically.
* ``paths``: local paths as before, ``gs://`` (any ``scheme://``) through ``etils.epath``,
  never turned local (read into memory; written as whole-object uploads).
* ``dataset``: ``generate-dataset``'s manifest, shards, per-shard done / failure logs and
  the merge view (``merge_status``, ``write_merged``).

The checkpoint config, calibration.json and the weights are read by
``emotalker_jax.checkpoints``.
"""

from emotalker_jax.inference.generator import (
  MAX_CACHED_INVERSIONS,
  FrameStream,
  Generator,
  load_generator,
)
from emotalker_jax.inference.inputs import (
  CROP_MODES,
  DEFAULT_MAX_AUDIO_SECONDS,
  MAX_PORTRAIT_SIDE,
  MIN_PORTRAIT_SIDE,
  Portrait,
  centre_face_mask,
  check_audio,
  is_greyscale,
  load_generation_audio,
  num_frames_for,
  prepare_portrait,
  read_portrait,
  seed_for,
)
from emotalker_jax.inference.outputs import (
  PngFrames,
  SheetFrames,
  check_frames_dir,
  contact_sheet,
  render_frames,
  sheet_indices,
  tap,
  to_portrait_colour,
  write_mp4,
  write_npz,
  write_png,
)

__all__ = [
  "CROP_MODES",
  "DEFAULT_MAX_AUDIO_SECONDS",
  "MAX_CACHED_INVERSIONS",
  "MAX_PORTRAIT_SIDE",
  "MIN_PORTRAIT_SIDE",
  "FrameStream",
  "Generator",
  "PngFrames",
  "Portrait",
  "SheetFrames",
  "centre_face_mask",
  "check_audio",
  "check_frames_dir",
  "contact_sheet",
  "is_greyscale",
  "load_generation_audio",
  "load_generator",
  "num_frames_for",
  "prepare_portrait",
  "read_portrait",
  "render_frames",
  "seed_for",
  "sheet_indices",
  "tap",
  "to_portrait_colour",
  "write_mp4",
  "write_npz",
  "write_png",
]
