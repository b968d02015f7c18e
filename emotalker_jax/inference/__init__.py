"""Inference: a trained EmoTalker checkpoint + a portrait + audio + an emotion -> frames.

* ``inputs``: portraits (``prepare_portrait``, ``read_portrait``, ``centre_face_mask``) and
  audio (``load_generation_audio``, ``check_audio``, ``num_frames_for``).
* ``generator``: ``load_generator(workdir)`` -> ``Generator``; ``Generator.generate`` (the
  pure encode / invert / sample-chunk / decode functions it compiles).
* ``outputs``: mp4 with audio, contact sheets, png / npz, all written atomically.

The checkpoint config, calibration.json and the weights are read by
``emotalker_jax.checkpoints``.
"""

from emotalker_jax.inference.generator import MAX_CACHED_INVERSIONS, Generator, load_generator
from emotalker_jax.inference.inputs import (
  CROP_MODES,
  DEFAULT_MAX_AUDIO_SECONDS,
  MAX_PORTRAIT_SIDE,
  MIN_PORTRAIT_SIDE,
  Portrait,
  centre_face_mask,
  check_audio,
  load_generation_audio,
  num_frames_for,
  prepare_portrait,
  read_portrait,
  seed_for,
)
from emotalker_jax.inference.outputs import contact_sheet, write_mp4, write_npz, write_png

__all__ = [
  "CROP_MODES",
  "DEFAULT_MAX_AUDIO_SECONDS",
  "MAX_CACHED_INVERSIONS",
  "MAX_PORTRAIT_SIDE",
  "MIN_PORTRAIT_SIDE",
  "Generator",
  "Portrait",
  "centre_face_mask",
  "check_audio",
  "contact_sheet",
  "load_generation_audio",
  "load_generator",
  "num_frames_for",
  "prepare_portrait",
  "read_portrait",
  "seed_for",
  "write_mp4",
  "write_npz",
  "write_png",
]
