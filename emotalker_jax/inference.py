"""Inference: a trained EmoTalker checkpoint + a portrait + audio + an emotion -> frames.

``load_generator(DIR)`` reads a training workdir (``emotalker train --workdir DIR``; DIR or
DIR/checkpoints), restores only what inference needs (the EMA parameters of the latest
step, by default), the frozen autoencoder (``config.train.autoencoder_checkpoint``, or the
same random init the training run used when that is empty) and the text encoder
(``config.text``), and returns a ``Generator``.

``Generator.generate(portrait, audio, prompt | intensities, ...)`` follows METHOD.md:

1. x_ref = the portrait (S, S, 3) in [-1, 1]; x_mask = x_ref with the face region blanked
   (``config.data.mask``: 'face' or 'lower_face' of the face mask, filled with 0 as in
   training). Spatial condition y = [E(x_mask); E(x_ref)] (1, h, w, 2C); z_src = E(x_ref).
2. Source condition c_src (our choice, the paper is silent): the *explicit* intensity
   vector one-hot neutral and the audio window of **silence** (a still photo has no sound;
   a closed, neutral mouth is what the model saw with silent windows). DDIM inversion of
   z_src under (y, c_src) (eq. 4, ``sampler.ddim_invert``) gives Z_T and the trajectory, once
   per clip (``constraint.init='noise'`` replaces Z_T by N(0, I) noise drawn from the seed);
   the Generator keeps the last ``MAX_CACHED_INVERSIONS`` inversions, keyed by the masked
   and reference portrait bytes and the sampler's steps / spacing / iterations, so the same
   portrait under another prompt or audio is not inverted again.
3. Emotion tokens: from the prompt (text encoder -> EIB, ``EmoTalker.text_emotion``) or
   from explicit intensities (``explicit_emotion``), built from the intensities after the
   sampler's calibration (``config.sampler.intensity_gamma``, 1 = none; ``load_generator``
   takes it from the workdir's calibration.json, written by ``emotalker calibrate``, when it
   was measured on the restored step); the unconditional branch of
   classifier-free guidance uses the learned null set (``null_emotion``). Audio tokens
   come from each frame's log-mel window (25 fps: N = floor(duration * 25) frames), in
   both branches.
4. The frames are sampled in chunks of a fixed size (``batch_frames`` rounded up to a
   multiple of the devices on the mesh's batch axes; the last chunk padded by repeating
   its last frame), every chunk starting from the shared Z_T and constrained toward the
   shared trajectory (eqs. 5, 6, ``sampler.ddim_sample``), then decoded. One compiled
   function serves every chunk of every clip of the same portrait size and sampler
   settings; the chunk's frames are sharded over the devices (NamedSharding on the batch
   axis), the parameters laid out by the config's logical axis rules.

Why not ``sampler.generate_latents_sharded``: it inverts the source inside every call, so
a clip sampled in k chunks would repeat the inversion k times. Here the inversion is one
compiled function and the chunk sampler another (the same sampler pieces,
``ddim_invert`` and ``ddim_sample``).

Randomness: ``seed`` -> key; one split for the init noise (init='noise'), one for the
per-chunk DDIM noise (eta > 0: chunk i uses fold_in(key, i), so with eta > 0 the output
depends on ``batch_frames``). With eta = 0 and init='inversion' the result does not depend
on the seed at all. The same inputs, settings and device count give the same bytes.

Portraits: ``prepare_portrait`` (greyscale -> RGB, alpha over white, Haar face crop or a
centre crop, resize to ``config.data.image_size``, face mask). Audio: ``load_generation_audio``
and ``check_audio`` (>= one frame, <= a maximum duration, silence warns).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

MIN_PORTRAIT_SIDE = 64          # pixels: smaller inputs are refused (unless already model size)
MAX_PORTRAIT_SIDE = 8192        # pixels: larger inputs are refused before decoding
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
    raise ValueError(f"portrait {source} has shape {arr.shape}; expected (H, W), (H, W, 3) "
                     "or (H, W, 4)")
  c = arr.shape[-1]
  if c in (2, 4):   # grey+alpha / RGBA: composite over white
    rgb = arr[..., :c - 1].astype(np.float32)
    alpha = arr[..., c - 1:].astype(np.float32) / 255.0
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
  from PIL import Image, ImageOps, UnidentifiedImageError
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"portrait {path!r} not found; check the path")
  if os.path.isdir(path):
    raise ValueError(f"portrait {path!r} is a directory; pass an image file (PNG, JPEG, ...)")
  try:
    with Image.open(path) as im:
      w, h = im.size
      if max(w, h) > MAX_PORTRAIT_SIDE:     # before decoding (the small side: prepare_portrait)
        _check_size(w, h, repr(path), None)
      im = ImageOps.exif_transpose(im)
      if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = (np.asarray(im, np.float64) / (257.0 if im.mode.startswith("I;16") else 1.0))
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
      elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        arr = np.asarray(im.convert("RGBA"))
      elif im.mode in ("L", "1"):
        arr = np.asarray(im.convert("L"))
      else:
        arr = np.asarray(im.convert("RGB"))
  except UnidentifiedImageError:
    raise ValueError(f"cannot read portrait {path!r}: not an image file Pillow can decode; "
                     "pass a PNG or JPEG photo") from None
  except (OSError, SyntaxError) as e:
    raise ValueError(f"cannot read portrait {path!r}: {e}; the file is damaged or "
                     "truncated, pass a complete PNG or JPEG") from None
  return _to_rgb(arr, repr(path))


def _check_size(w: int, h: int, source: str, size: int | None) -> None:
  if max(w, h) > MAX_PORTRAIT_SIDE:
    raise ValueError(f"portrait {source} is {w}x{h}, larger than {MAX_PORTRAIT_SIDE} px on a "
                     "side; downscale it first")
  if min(w, h) < MIN_PORTRAIT_SIDE and not (size is not None and w == h == size):
    raise ValueError(f"portrait {source} is {w}x{h}, at least {MIN_PORTRAIT_SIDE} px needed "
                     f"on each side (or exactly the model size)")


def centre_face_mask(size: int) -> np.ndarray:
  """(size, size) uint8 face mask for a portrait that is already a centred face crop.

  The ellipse that a Haar face box would give in the crop ``crop_faces`` makes around it:
  face side = size / CROP_SCALE, centred so the crop is the whole image (the same geometry
  as the MEAD/CREMA-D training crops; it also covers the synthetic benchmark's faces).
  """
  from input_pipeline import video_io as V
  side = size / V.CROP_SCALE
  cx, cy = size / 2.0, size / 2.0 - V.CROP_SHIFT_Y * side
  face = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
  return V.face_mask_in_crop(face, np.array([0, 0, size, size], np.float32), size)


def prepare_portrait(image, size: int, detect: bool = True, source: str | None = None,
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
  from input_pipeline import video_io as V
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
      raise ValueError(f"no face found in portrait {source}; use a frontal, unoccluded face "
                       "photo, or pass --crop center if the image is already a centred face "
                       "crop (e.g. a synthetic portrait)")
    crops = V.crop_faces(arr[None], size, face_boxes=boxes[0], source=source)
    return Portrait(crops.frames[0], crops.face_mask[0].astype(np.uint8), boxes[0], "face",
                    (w, h))
  import cv2
  s = min(h, w)
  y0, x0 = (h - s) // 2, (w - s) // 2
  sq = np.ascontiguousarray(arr[y0:y0 + s, x0:x0 + s])
  interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
  out = cv2.resize(sq, (size, size), interpolation=interp)
  return Portrait(out, centre_face_mask(size), None, "center", (w, h))


# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------
def num_frames_for(num_samples: int, sample_rate: int, fps: float) -> int:
  """Video frames covered by ``num_samples`` of audio: floor(duration * fps)."""
  return int(math.floor(int(num_samples) * float(fps) / int(sample_rate) + 1e-9))


def check_audio(audio: np.ndarray, sample_rate: int, fps: float = 25.0,
                max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
                source: str = "the audio") -> int:
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
    raise ValueError(f"audio {source} is {dur * 1000:.0f} ms long; at least "
                     f"{1000.0 / fps:.0f} ms (one video frame at {fps:g} fps) is needed")
  if max_seconds and dur > float(max_seconds):
    raise ValueError(f"audio {source} is {dur:.1f} s long, over the limit of "
                     f"{float(max_seconds):g} s; cut it, or raise the limit with "
                     "--max-audio-seconds")
  return n


def load_generation_audio(path: str | os.PathLike, sample_rate: int, fps: float = 25.0,
                          max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS) -> np.ndarray:
  """``audio.load_audio`` + ``check_audio``: (L,) float32 at ``sample_rate``. The silence
  warning is left to ``Generator.generate`` (once per clip)."""
  from emotalker_jax.audio import load_audio
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    audio = load_audio(path, sample_rate)
  for w in caught:
    if "is silent" not in str(w.message):
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  check_audio(audio, sample_rate, fps, max_seconds, source=repr(os.fspath(path)))
  return audio


# ---------------------------------------------------------------------------------------
# Config and checkpoint
# ---------------------------------------------------------------------------------------
def config_from_json(saved: dict, overrides: Sequence[str] = ()):
  """The config saved with a checkpoint (JSON dict) merged onto the base config
  (``config_utils.merge_onto_base``: a key the saved config predates gets the base's
  value), with ``--config.a.b=value`` overrides applied by ``ml_collections.config_flags``
  (the same parser as ``config_utils.load_config``). JSON lists become tuples again.

  Raises ValueError naming the override when a key does not exist or a value does not parse.
  """
  from absl import flags
  from ml_collections import config_flags

  from emotalker_jax.config_utils import merge_onto_base
  config = merge_onto_base(saved)
  args = ["emotalker"]
  for o in overrides:
    o = o if o.startswith("--") else f"--config.{o}"
    if not o.startswith("--config."):
      raise ValueError(f"override {o!r}: generation reads the config saved with the "
                       "checkpoint; pass only --config.a.b=value overrides")
    args.append(o)
  if len(args) == 1:
    return config
  fv = flags.FlagValues()
  try:   # the overrides are applied while the flag is defined (sys_argv) and parsed
    config_flags.DEFINE_config_dict("config", config, flag_values=fv, lock_config=True,
                                    sys_argv=args)
    fv(args)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"bad config override in {list(overrides)}: {e}; check the key exists "
                     "in the checkpoint's config (e.g. --config.sampler.constraint.strength=0.8)"
                     ) from None
  return fv.config


def find_checkpoint_dir(path: str | os.PathLike) -> str:
  """WORKDIR or WORKDIR/checkpoints -> the orbax CheckpointManager folder (absolute).

  Raises FileNotFoundError naming the folder and how to make one when there is none.
  """
  path = os.path.abspath(os.fspath(path))
  how = ("train one with `emotalker train --config configs/tiny.py --workdir DIR` and pass "
         "--checkpoint DIR")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path} not found; {how}")
  sub = os.path.join(path, "checkpoints")
  folder = sub if os.path.isdir(sub) else path
  steps = [d for d in os.listdir(folder)
           if d.isdigit() and os.path.isdir(os.path.join(folder, d, "state"))]
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {path} (no step folders with a saved state "
                            f"in {folder}); {how}")
  return folder


def _manager(folder: str):
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(
      folder, item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                             "config": ocp.JsonCheckpointHandler(),
                             "data": ocp.JsonCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(create=False))


def _inference_mesh(config, devices=None):
  """The config's mesh on these devices; when it does not fit (a checkpoint trained on a
  different machine), a data-parallel mesh over all of them (parameters replicated)."""
  from emotalker_jax import parallel
  try:
    return parallel.create_mesh(config.mesh, devices)
  except ValueError as e:
    log.info("config.mesh does not fit these devices (%s): using a data-parallel mesh", e)
    return parallel.create_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)


def load_checkpoint_config(checkpoint_dir: str | os.PathLike,
                           config_overrides: Sequence[str] = (), step: int | None = None,
                           *, use_ema: bool = True, judge: str | None = None):
  """(config with overrides, CheckpointManager folder, step) of a training workdir, reading
  only the small 'config' item (cheap: lets a command check its inputs before loading).

  The workdir's calibration.json sets ``sampler.intensity_gamma`` only when it was measured
  on this step with the same params kind (``use_ema``), DDIM steps and guidance (those of
  the config with its overrides) and, when ``judge`` is given, the same judge folder;
  otherwise a warning and the configured gamma (1). A ``--config.sampler.intensity_gamma``
  override always wins.

  Raises FileNotFoundError (no checkpoint) / ValueError (no saved config, bad override).
  """
  import orbax.checkpoint as ocp
  folder = find_checkpoint_dir(checkpoint_dir)
  mngr = _manager(folder)
  try:
    step = mngr.latest_step() if step is None else int(step)
    if step is None or step not in mngr.all_steps():
      raise FileNotFoundError(f"no checkpoint step {step} in {folder}; steps there: "
                              f"{list(mngr.all_steps())}")
    saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  finally:
    mngr.close()
  if not saved:
    raise ValueError(f"checkpoint {folder}/{step} has no saved config; it was not written "
                     "by `emotalker train`")
  config = config_from_json(saved, config_overrides)
  if any("sampler.intensity_gamma" in o for o in config_overrides):
    return config, folder, int(step)
  calibration = read_calibration(folder, int(step), params="ema" if use_ema else "raw",
                                 steps=int(config.sampler.steps),
                                 guidance=float(config.sampler.guidance), judge=judge)
  if calibration is not None:
    sampler = dict(saved.get("sampler", {}),
                   intensity_gamma=float(calibration["intensity_gamma"]))
    config = config_from_json(dict(saved, sampler=sampler), config_overrides)
  return config, folder, int(step)


CALIBRATION_FILE = "calibration.json"   # beside checkpoints/ in the workdir


def calibration_path(checkpoint_dir: str | os.PathLike) -> str:
  """WORKDIR/calibration.json for a workdir or its checkpoints/ folder."""
  folder = find_checkpoint_dir(checkpoint_dir)
  workdir = os.path.dirname(folder) if os.path.basename(folder) == "checkpoints" else folder
  return os.path.join(workdir, CALIBRATION_FILE)


def calibration_mismatches(record: dict, *, step: int | None = None, params: str | None = None,
                           steps: int | None = None, guidance: float | None = None,
                           judge: str | None = None) -> list[str]:
  """What differs between a calibration record and the settings it would be applied to:
  'steps 10 (measured with 20)' strings, one per given setting that does not match (a
  setting the record lacks does not match)."""
  def same_judge(a, b):
    return a is not None and os.path.realpath(str(a)) == os.path.realpath(str(b))
  checks = (("checkpoint step", "checkpoint_step", step, lambda a, b: a is not None and int(a) == int(b)),
            ("params", "params", params, lambda a, b: a == b),
            ("DDIM steps", "steps", steps, lambda a, b: a is not None and int(a) == int(b)),
            ("guidance", "guidance", guidance,
             lambda a, b: a is not None and abs(float(a) - float(b)) < 1e-9),
            ("judge", "judge", judge, same_judge))
  return [f"{name} {want} (measured with {record.get(key)})"
          for name, key, want, ok in checks if want is not None and not ok(record.get(key), want)]


def read_calibration(checkpoint_dir: str | os.PathLike, step: int, *, params: str | None = None,
                     steps: int | None = None, guidance: float | None = None,
                     judge: str | None = None) -> dict | None:
  """The workdir's calibration.json (written by `emotalker calibrate`) when it was measured
  on checkpoint ``step`` and with the given params kind ('ema' | 'raw'), DDIM steps,
  guidance and judge folder (each checked when given); None when there is none. A
  calibration measured under other settings is not applied: a warning names what differs
  and how to measure it again."""
  path = calibration_path(checkpoint_dir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    cal = json.load(f)
  diff = calibration_mismatches(cal, step=step, params=params, steps=steps, guidance=guidance,
                                judge=judge)
  if diff:
    warnings.warn(f"{path} does not apply to these settings: {'; '.join(diff)}; "
                  "intensity_gamma 1 is used (no calibration). Run `emotalker calibrate "
                  f"--checkpoint {os.path.dirname(path)} ...` with these settings again, or "
                  "pass --config.sampler.intensity_gamma=G")
    return None
  return cal


def write_calibration(gen, result: dict, judge_dir: str) -> str:
  """WORKDIR/calibration.json for ``gen``'s checkpoint step (atomic). Returns the path."""
  path = calibration_path(gen.checkpoint_dir)
  sc = gen.config.sampler
  record = {"intensity_gamma": result["intensity_gamma"], "checkpoint_step": gen.step,
            "params": "ema" if gen.use_ema else "raw", "judge": os.path.abspath(judge_dir),
            "steps": int(result.get("steps") or sc.steps),
            "guidance": float(result.get("guidance", sc.guidance)),
            **{k: v for k, v in result.items()
               if k not in ("intensity_gamma", "steps", "guidance")}}
  with atomic_output(path) as tmp:
    with open(tmp, "w") as fh:
      json.dump(record, fh, indent=2)
  return path


def load_generator(checkpoint_dir: str | os.PathLike, config_overrides: Sequence[str] = (),
                   use_ema: bool = True, step: int | None = None, devices=None,
                   text=None, judge: str | None = None) -> "Generator":
  """A ``Generator`` from a training workdir (or its checkpoints/ folder).

  Restores only ``ema_params`` (or ``params`` with use_ema=False) and ``step`` of the
  latest (or given) step, against an abstract target built from the saved config by
  ``jax.eval_shape`` and laid out on the inference mesh by the config's logical axis
  rules. ``config_overrides``: ``--config.a.b=value`` strings applied to the saved config
  (sampler knobs, mesh, ...). ``devices``: the devices to use (default all).
  ``text``: an already loaded TextEncoder to reuse. ``judge``: the judge folder the
  generator will be evaluated with (a calibration.json measured with another is refused).

  Raises FileNotFoundError naming the directory (and how to make a checkpoint) when it is
  missing or holds no checkpoint; ValueError when the weights do not fit the config.
  """
  import jax
  import orbax.checkpoint as ocp
  from flax import linen as nn

  from emotalker_jax import parallel
  from emotalker_jax.diffusion import schedule as sched
  from emotalker_jax.models.autoencoder import build_autoencoder
  from emotalker_jax.models.emotalker import EmoTalker, init_emotalker
  from emotalker_jax.models.text_encoder import load_text_encoder
  from emotalker_jax.training.loop import load_frozen_autoencoder

  config, folder, step = load_checkpoint_config(checkpoint_dir, config_overrides, step,
                                                use_ema=use_ema, judge=judge)
  calibration = None
  if not any("sampler.intensity_gamma" in o for o in config_overrides):
    with warnings.catch_warnings():    # load_checkpoint_config has warned already
      warnings.simplefilter("ignore")
      calibration = read_calibration(folder, step, params="ema" if use_ema else "raw",
                                     steps=int(config.sampler.steps),
                                     guidance=float(config.sampler.guidance), judge=judge)
  if text is None:
    text = load_text_encoder(config.text.path or None, kind=config.text.encoder,
                             max_length=int(config.text.max_length))
  model = EmoTalker(config)
  mesh = _inference_mesh(config, devices)
  rules = parallel.rules_from_config(config)
  boxed = jax.eval_shape(lambda r: init_emotalker(model, r, text.hidden_size),
                         jax.random.key(0))
  shardings = parallel.fit_shardings(nn.meta.unbox(boxed),
                                     parallel.logical_shardings(boxed, mesh, rules))
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  key = "ema_params" if use_ema else "params"
  item = {key: abstract,
          "step": jax.ShapeDtypeStruct((), np.int32, sharding=parallel.replicated(mesh))}
  mngr = _manager(folder)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))["state"]
  except (ValueError, KeyError) as e:
    raise ValueError(f"checkpoint {folder}/{step} does not match its saved config "
                     f"(with the overrides {list(config_overrides)}): {str(e)[:400]}; "
                     "override only sampler / mesh keys") from None
  finally:
    mngr.close()
  vae = build_autoencoder(config)
  _, r_vae = jax.random.split(jax.random.key(int(config.seed)))   # as build_trainer
  vae_params = load_frozen_autoencoder(config, vae, r_vae)
  rep = parallel.replicated(mesh)
  return Generator(config=config, mesh=mesh, rules=rules, model=model,
                   params=restored[key], vae=vae, vae_params=jax.device_put(vae_params, rep),
                   text=text, text_params=jax.device_put(text.params, rep),
                   schedule=jax.device_put(sched.from_config(config.diffusion), rep),
                   step=int(jax.device_get(restored["step"])), checkpoint_dir=folder,
                   use_ema=use_ema, calibration=calibration)


# ---------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------
# Compiled executables, shared by Generators of the same structure (see _structure_key).
_COMPILED: dict = {}
MAX_CACHED_INVERSIONS = 8     # per Generator: (portrait, mask, steps, spacing) -> inversion


def _round_up(x: int, m: int) -> int:
  return -(-int(x) // int(m)) * int(m)


@dataclasses.dataclass
class Generator:
  """A loaded checkpoint ready to generate (see the module docstring). Build it with
  ``load_generator``. Compiled functions are cached per model structure, shape and static
  sampler setting (steps, eta, spacing, inversion_iters, constraint schedule / until /
  init), in this process; guidance, constraint strength and the parameters are arguments
  (sweeping them, or loading another checkpoint of the same config, does not recompile)."""
  config: Any
  mesh: Any
  rules: Any
  model: Any
  params: Any
  vae: Any
  vae_params: Any
  text: Any
  text_params: Any
  schedule: Any
  step: int
  checkpoint_dir: str
  use_ema: bool = True
  # The calibration.json record config.sampler.intensity_gamma came from (None: none): a
  # generate() call with other DDIM steps or guidance samples uncalibrated, with a warning.
  calibration: dict | None = None
  last_compile_s: float = 0.0
  _key: tuple | None = dataclasses.field(default=None, repr=False)
  # The source's latents and inversion (Z_T, trajectory) of the last few portraits: a clip
  # in several calls (or one portrait under many prompts) is inverted once.
  _inversions: dict = dataclasses.field(default_factory=dict, repr=False)

  # ---- properties ----------------------------------------------------------------------
  @property
  def image_size(self) -> int:
    return int(self.config.data.image_size)

  @property
  def fps(self) -> float:
    return float(self.config.data.fps)

  @property
  def sample_rate(self) -> int:
    return int(self.config.data.sample_rate)

  @property
  def batch_devices(self) -> int:
    """Devices the frame batch is split over (mesh axes data x fsdp)."""
    return int(np.prod([self.mesh.shape[a] for a in ("data", "fsdp") if a in self.mesh.shape]))

  def chunk_size(self, batch_frames: int) -> int:
    """Frames per compiled chunk: ``batch_frames`` rounded up to a multiple of the devices."""
    if int(batch_frames) < 1:
      raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    return _round_up(batch_frames, self.batch_devices)

  # ---- compiled pieces -----------------------------------------------------------------
  def _structure_key(self) -> tuple:
    """What the compiled functions bake in besides their arguments: the model, autoencoder
    and text-tower structure (the config), the mesh and the rules. Generators that agree
    on it share compiled executables (``_COMPILED``), e.g. several checkpoints of one run."""
    if self._key is None:
      t = self.text
      cfg = {k: v for k, v in self.config.to_dict().items()
             if k not in ("sampler", "train", "name", "seed")}   # not part of the graphs
      self._key = (repr(sorted(cfg.items())), tuple(d.id for d in self.mesh.devices.flat),
                   tuple(self.mesh.shape.items()), tuple(map(tuple, self.rules)),
                   t.kind, t.path, int(t.max_length))
    return self._key

  def _compile(self, name: str, fn: Callable, args: tuple, static: dict, rules: bool):
    """AOT-compiles ``fn(*args, **static)`` once per (structure, name, static values, arg
    shapes / dtypes / shardings); later calls with the same key reuse the executable."""
    import jax
    from flax import linen as nn
    leaves, tree = jax.tree.flatten(args)
    sig = tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x))),
                 str(getattr(x, "sharding", ""))) for x in leaves)
    key = (self._structure_key(), name, tuple(sorted(static.items())), tree, sig)
    hit = _COMPILED.get(key)
    if hit is None:
      t0 = time.perf_counter()
      jitted = jax.jit(functools.partial(fn, **static))
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules if rules else ()):
        hit = jitted.lower(*args).compile()
      _COMPILED[key] = hit
      self.last_compile_s += time.perf_counter() - t0
    return hit

  def _denoise(self, params, z, t, cond):
    return self.model.apply({"params": params}, z, t, cond["spatial"], cond["context"],
                            method="denoise")

  def _emotion_fn(self, params, text_params, ids, mask, s, use_text, gamma):
    """(tokens (1, N, D), intensities (1, 8) before calibration, null tokens (1, N, D))."""
    import jax.numpy as jnp
    m = self.model
    if use_text:
      out = self.text.module.apply({"params": text_params}, ids, mask)
      hidden = (out[0] if isinstance(out, tuple) else out).astype(jnp.float32)
      tokens, s = m.apply({"params": params}, hidden, mask, gamma, method="text_emotion")
    else:
      tokens = m.apply({"params": params}, s, gamma, method="explicit_emotion")
    null = m.apply({"params": params}, 1, method="null_emotion")
    return tokens, s, null

  def _source_fn(self, params, vae_params, x, mel_src, s_src):
    """x (2, S, S, 3) = [x_mask; x_ref] -> spatial (1, h, w, 2C), z_src (1, h, w, C),
    source context (1, N, D) (explicit neutral intensities, silent audio)."""
    import jax.numpy as jnp
    from emotalker_jax.models.autoencoder import encode_to_latent
    z = encode_to_latent(self.vae, vae_params, x)
    spatial = jnp.concatenate([z[:1], z[1:]], axis=-1)
    emo = self.model.apply({"params": params}, s_src, method="explicit_emotion")
    ctx = self.model.apply({"params": params}, mel_src, emo, method="context")
    return spatial, z[1:], ctx

  def _invert_fn(self, params, schedule, z_src, cond_src, *, steps, spacing, iters):
    from emotalker_jax.diffusion import sampler
    return sampler.ddim_invert(functools.partial(self._denoise, params), schedule, z_src,
                               cond_src, steps=steps, spacing=spacing, fixed_point_iters=iters)

  def _chunk_fn(self, params, vae_params, schedule, z_T, traj, spatial, mel, tokens, null,
                mask, rng, guidance, constraint, *, steps, eta, spacing):
    """One chunk of B frames: context, guided constrained DDIM from the shared Z_T, decode.
    mel (B, W, n_mels) sharded on the batch; the rest replicated. -> (B, S, S, 3) uint8."""
    import jax
    import jax.numpy as jnp
    from emotalker_jax.diffusion import sampler
    from emotalker_jax.models.autoencoder import decode_latent
    from jax.sharding import NamedSharding, PartitionSpec as P
    m, p = self.model, {"params": params}
    B = mel.shape[0]
    axes = tuple(a for a in ("data", "fsdp") if a in self.mesh.shape)
    bsh = NamedSharding(self.mesh, P(axes))
    ctx = m.apply(p, mel, tokens, method="context")
    ctx_null = m.apply(p, mel, null, method="context")
    sp = jnp.broadcast_to(spatial, (B,) + spatial.shape[1:])
    cond = {"spatial": sp, "context": ctx}
    uncond = {"spatial": spatial, "context": ctx_null}
    z_init = jax.lax.with_sharding_constraint(jnp.broadcast_to(z_T, (B,) + z_T.shape[1:]), bsh)
    z0 = sampler.ddim_sample(functools.partial(self._denoise, params), schedule, z_init, cond,
                             steps=steps, eta=eta, rng=rng, spacing=spacing, guidance=guidance,
                             uncond=uncond, constraint=constraint, inv_trajectory=traj,
                             mask=mask)
    x = decode_latent(self.vae, vae_params, z0)
    frames = jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
    return jax.lax.with_sharding_constraint(frames, bsh)

  # ---- public --------------------------------------------------------------------------
  @property
  def intensity_gamma(self) -> float:
    """config.sampler.intensity_gamma."""
    return float(self.config.sampler.intensity_gamma)

  def emotion(self, prompt: str | None = None, intensities=None,
              intensity_gamma: float | None = None):
    """Emotion tokens for a prompt or an explicit (8,) intensity vector.

    The tokens are built from the calibrated intensities (``models.eib.
    calibrate_intensities`` with intensity_gamma; None: ``self.intensity_gamma``).
    Returns (tokens (1, N, D), null tokens (1, N, D), intensities (8,) float32 numpy as
    given or as the EIB read them (before calibration), source 'prompt' | 'intensities').
    Raises ValueError for an empty prompt, both or neither given, intensities outside
    [0, 1] / of the wrong length, or intensity_gamma <= 0.
    """
    import jax
    from emotalker_jax.emotions import NUM_EMOTIONS
    if (prompt is None) == (intensities is None):
      raise ValueError("give exactly one of a prompt (--prompt TEXT) or intensities "
                       "(--emotion happy=0.7,...)")
    rep = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    if prompt is not None:
      if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt {prompt!r} is empty; describe the emotion, e.g. "
                         "--prompt 'a little sad and fearful'")
      tok = self.text.tokenize([prompt])
      if bool(tok["truncated"][0]):
        warnings.warn(f"prompt is longer than {self.text.max_length} tokens; only its start "
                      "is used (config.text.max_length)")
      ids, mask = tok["input_ids"], tok["attention_mask"]
      s = np.zeros((1, NUM_EMOTIONS), np.float32)
      source = "prompt"
    else:
      s = np.asarray(intensities, np.float32).reshape(-1)
      if s.shape[0] != NUM_EMOTIONS or not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError(f"intensities must be {NUM_EMOTIONS} numbers in [0, 1] (MEAD order), "
                         f"got {np.asarray(intensities).tolist()}")
      s = s[None]
      ids = np.zeros((1, 2), np.int32)
      mask = np.ones((1, 2), np.int32)
      source = "intensities"
    gamma = float(self.intensity_gamma if intensity_gamma is None else intensity_gamma)
    if not gamma > 0:
      raise ValueError(f"intensity_gamma must be > 0 (1 = no calibration), got {gamma}")
    args = jax.device_put((self.params, self.text_params, ids, mask, s), rep)
    fn = self._compile("emotion", self._emotion_fn, args,
                       {"use_text": source == "prompt", "gamma": gamma}, rules=False)
    tokens, s_used, null = jax.device_put(fn(*args), rep)
    return tokens, null, np.asarray(jax.device_get(s_used), np.float32)[0], source

  def generate(self, portrait: np.ndarray, audio: np.ndarray, prompt: str | None = None,
               intensities=None, *, steps: int | None = None, guidance: float | None = None,
               eta: float | None = None, constraint=None, seed: int = 0, face_mask=None,
               batch_frames: int = 8, max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
               mask: str | None = None, progress: Callable[[int], None] | None = None,
               intensity_gamma: float | None = None):
    """Talking-face frames for a prepared portrait and a waveform.

    Args:
      portrait: (S, S, 3) uint8 RGB, S = config.data.image_size (``prepare_portrait``).
      audio: (L,) float32 in [-1, 1] at config.data.sample_rate (16 kHz).
      prompt / intensities: exactly one: a text prompt, or (8,) intensities in [0, 1].
      steps, guidance, eta: DDIM steps, CFG scale, DDIM eta (None: config.sampler.*).
      constraint: ``sampler.ConstraintConfig`` (None: from config.sampler.constraint).
      seed: int (see the module docstring for what it changes).
      face_mask: (S, S) {0, 1} face region (None: ``centre_face_mask``).
      batch_frames: frames per compiled chunk (rounded up to a multiple of the devices).
      mask: the region of the portrait to blank, 'face' | 'lower_face' (None:
        config.data.mask, what the model was trained with).
      progress: called with 0 once everything is compiled and sampling starts, then with
        the number of frames finished after each chunk.
      intensity_gamma: the emotion tokens see ``calibrate_intensities(s, gamma)`` (None:
        config.sampler.intensity_gamma, which ``load_generator`` takes from the
        checkpoint's calibration.json when there is one).
    Returns:
      frames (N, S, S, 3) uint8 with N = floor(duration * fps), and an info dict
      (intensities used, emotion source, sampler settings, timings, frames_per_s).
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from emotalker_jax.audio import features_from_config, is_silent
    from emotalker_jax.diffusion import sampler
    from emotalker_jax.emotions import EMOTION_INDEX, NUM_EMOTIONS, intensities_to_dict
    from emotalker_jax.models.eib import calibrate_intensities
    from input_pipeline.pipeline import mask_region

    t_start = time.perf_counter()
    self.last_compile_s = 0.0
    c, sc = self.config, self.config.sampler
    S = self.image_size
    portrait = np.asarray(portrait)
    if portrait.shape != (S, S, 3) or portrait.dtype != np.uint8:
      raise ValueError(f"portrait must be ({S}, {S}, 3) uint8 (config.data.image_size), got "
                       f"{portrait.shape} {portrait.dtype}; prepare it with prepare_portrait")
    audio = np.asarray(audio, np.float32)
    n = check_audio(audio, self.sample_rate, self.fps, max_audio_seconds)
    silent = bool(is_silent(audio))
    if silent:
      warnings.warn("the audio is silent (RMS below -60 dBFS): the frames are generated, but "
                    "the audio condition carries no speech")
    steps = int(sc.steps if steps is None else steps)
    guidance = float(sc.guidance if guidance is None else guidance)
    eta = float(sc.eta if eta is None else eta)
    if eta < 0:
      raise ValueError(f"eta must be >= 0, got {eta}")
    spacing = str(sc.spacing)
    iters = int(sc.inversion_iters)
    if constraint is None:
      constraint = sampler.ConstraintConfig.from_config(sc.constraint)
    constraint = constraint.validate()
    sampler.ddim_timesteps(self.schedule.num_train_timesteps, steps, spacing)  # validates
    bsz = self.chunk_size(batch_frames)
    mesh = self.mesh
    rep = NamedSharding(mesh, P())
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.shape)

    # ---- emotion, source condition, inversion (once per portrait: cached) ----
    gamma = float(self.intensity_gamma if intensity_gamma is None else intensity_gamma)
    if intensity_gamma is None and self.calibration is not None and gamma != 1.0:
      diff = calibration_mismatches(self.calibration, steps=steps, guidance=guidance)
      if diff:
        warnings.warn(f"the calibration (intensity_gamma {gamma:g}) was measured with other "
                      f"settings: {'; '.join(diff)}; this call samples uncalibrated "
                      "(intensity_gamma 1)")
        gamma = 1.0
    tokens, null, s_used, source = self.emotion(prompt, intensities, gamma)
    if face_mask is None:
      face_mask = centre_face_mask(S)
    face = (np.asarray(face_mask, np.float32) > 0.5).astype(np.float32)
    if face.shape != (S, S):
      raise ValueError(f"face mask must be ({S}, {S}), got {face.shape}")
    region = mask_region(face, str(c.data.mask if mask is None else mask))
    x_ref = portrait.astype(np.float32) / 127.5 - 1.0
    x_mask = np.where(region[..., None] > 0, np.float32(0.0), x_ref)
    mel_src = np.asarray(features_from_config(
        np.zeros(int(round(self.sample_rate / self.fps)), np.float32), 1, c))
    s_src = np.zeros((1, NUM_EMOTIONS), np.float32)
    s_src[0, EMOTION_INDEX["neutral"]] = 1.0
    x_src = np.stack([x_mask, x_ref])
    inv_key = (hashlib.sha1(x_src.tobytes()).hexdigest(), steps, spacing, iters,
               id(self.params), id(self.vae_params))
    cached = self._inversions.get(inv_key)
    if cached is None:
      args = jax.device_put((self.params, self.vae_params, x_src, mel_src, s_src), rep)
      spatial, z_src, ctx_src = jax.device_put(
          self._compile("source", self._source_fn, args, {}, False)(*args), rep)
      args = (self.params, self.schedule, z_src, {"spatial": spatial, "context": ctx_src})
      inv = self._compile("invert", self._invert_fn, args,
                          {"steps": steps, "spacing": spacing, "iters": iters}, False)
      z_T, traj = jax.device_put(inv(*args), rep)
      while len(self._inversions) >= MAX_CACHED_INVERSIONS:
        self._inversions.pop(next(iter(self._inversions)))
      self._inversions[inv_key] = (spatial, z_src, z_T, traj)
    else:
      spatial, z_src, z_T, traj = cached
    key = jax.random.key(int(seed) % (2 ** 32))
    k_init, k_sample = jax.random.split(key)
    if constraint.init == "noise":
      z_T = jax.device_put(jax.random.normal(k_init, z_src.shape, jnp.float32), rep)
    h, w = z_src.shape[1:3]
    mask = jax.device_put(np.asarray(sampler.latent_mask_from_face_mask(
        face, (h, w), float(constraint.m_face)))[None], rep)
    mel = np.asarray(features_from_config(audio, n, c))            # (N, W, n_mels)

    # ---- chunks ----
    bsh = NamedSharding(mesh, P(axes, None, None))
    frames = np.zeros((n, S, S, 3), np.uint8)
    g = jnp.float32(guidance)
    static = {"steps": steps, "eta": eta, "spacing": spacing}
    constraint_d = jax.device_put(constraint, rep)
    g = jax.device_put(g, rep)

    def chunk_args(i, start, stop):
      m_chunk = mel[start:stop]
      if stop - start < bsz:
        m_chunk = np.concatenate([m_chunk, np.repeat(m_chunk[-1:], bsz - (stop - start), 0)])
      rng = jax.device_put(jax.random.fold_in(k_sample, i), rep)
      return (self.params, self.vae_params, self.schedule, z_T, traj, spatial,
              jax.device_put(m_chunk, bsh), tokens, null, mask, rng, g, constraint_d)

    chunk_fn = self._compile("chunk", self._chunk_fn, chunk_args(0, 0, min(n, bsz)), static,
                             True)
    t_prep = time.perf_counter()
    if progress is not None:
      progress(0)       # sampling starts now (everything is compiled)
    t0 = time.perf_counter()
    pending = None            # chunk i+1 is dispatched before chunk i is fetched

    def collect(item):
      start, stop, out = item
      frames[start:stop] = np.asarray(jax.device_get(out))[:stop - start]
      if progress is not None:
        progress(stop - start)

    for i, start in enumerate(range(0, n, bsz)):
      stop = min(n, start + bsz)
      out = chunk_fn(*chunk_args(i, start, stop))
      if pending is not None:
        collect(pending)
      pending = (start, stop, out)
    collect(pending)
    t_sample = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    info = {
        "num_frames": n, "fps": self.fps, "duration_s": round(audio.shape[0] / self.sample_rate, 4),
        "emotion_source": source, "prompt": prompt,
        "intensities": intensities_to_dict(s_used), "intensity_gamma": gamma,
        # what the emotion tokens were built from: calibrate_intensities(s, gamma)
        "intensities_calibrated": intensities_to_dict(np.asarray(
            calibrate_intensities(s_used, gamma), np.float32)),
        "seed": int(seed), "steps": steps, "guidance": guidance, "eta": eta,
        "spacing": spacing, "inversion_iters": iters, "inversion_cached": cached is not None,
        "constraint": {"strength": float(constraint.strength), "m_face": float(constraint.m_face),
                       "schedule": constraint.schedule, "until": float(constraint.until),
                       "init": constraint.init},
        "batch_frames": bsz, "devices": self.batch_devices, "audio_silent": silent,
        "checkpoint": self.checkpoint_dir, "checkpoint_step": self.step,
        "params": "ema" if self.use_ema else "raw",
        "timing": {"compile_s": round(self.last_compile_s, 3),
                   "prepare_s": round(t_prep - t_start, 3), "sample_s": round(t_sample, 3),
                   "total_s": round(total, 3),
                   "frames_per_s": round(n / max(t_sample, 1e-9), 3),
                   "frames_per_s_without_compile": round(
                       n / max(total - self.last_compile_s, 1e-9), 3)},
    }
    return frames, info


# ---------------------------------------------------------------------------------------
# Outputs (atomic: a temp file in the same folder, fsync, os.replace)
# ---------------------------------------------------------------------------------------
TMP_PREFIX = ".tmp-"     # temp files live beside their target; a killed run's are removed


def _fsync_path(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
  """``with atomic_output(p) as tmp: write(tmp)``: ``tmp`` is a fresh file in p's folder
  (name ``.tmp-*`` with p's extension); on success it is fsynced and renamed onto ``p``
  (then the folder is fsynced), on error removed. Readers never see a partial ``p``."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  ext = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=ext)
  os.close(fd)
  try:
    yield tmp
    _fsync_path(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_path(folder)


def remove_temp_files(folder: str | os.PathLike) -> list[str]:
  """Deletes ``.tmp-*`` files a killed run left in ``folder``; returns their names."""
  folder = os.fspath(folder)
  gone = []
  if os.path.isdir(folder):
    for name in sorted(os.listdir(folder)):
      p = os.path.join(folder, name)
      if name.startswith(TMP_PREFIX) and os.path.isfile(p):
        os.remove(p)
        gone.append(name)
  return gone


def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray | None,
              sample_rate: int = 16000, fps: float = 25.0, quality: float = 8) -> None:
  """Writes (N, H, W, 3) uint8 frames as H.264 mp4 with the waveform (L,) float32 muxed
  as AAC (bundled ffmpeg, one pass), atomically. H, W must be even."""
  import imageio_ffmpeg
  from scipy.io import wavfile
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(f"frames must be (N, H, W, 3) uint8 with N >= 1, got {frames.shape} "
                     f"{frames.dtype}")
  h, w = frames.shape[1:3]
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  wav = None
  try:
    if audio is not None:   # scratch wav beside the output (a killed run's is cleaned up)
      fd, wav = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=".wav")
      os.close(fd)
      pcm = np.clip(np.rint(np.asarray(audio, np.float32) * 32767.0), -32768, 32767)
      wavfile.write(wav, int(sample_rate), pcm.astype(np.int16))
    with atomic_output(path) as tmp:
      writer = imageio_ffmpeg.write_frames(
          tmp, (w, h), fps=fps, codec="libx264", quality=quality, macro_block_size=1,
          ffmpeg_log_level="error", audio_path=wav, audio_codec="aac" if wav else None,
          output_params=["-movflags", "+faststart"])
      writer.send(None)
      for f in frames:
        writer.send(np.ascontiguousarray(f))
      writer.close()
  finally:
    if wav is not None and os.path.exists(wav):
      os.remove(wav)


def contact_sheet(frames: np.ndarray, portrait: np.ndarray | None = None, cells: int = 16,
                  columns: int = 4, min_cell: int = 128) -> np.ndarray:
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
    sheet[r * s:(r + 1) * s, c * s:(c + 1) * s] = im
  return np.repeat(np.repeat(sheet, f, axis=0), f, axis=1)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes an RGB uint8 image as PNG, atomically."""
  from PIL import Image
  with atomic_output(path) as tmp:
    Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")


def write_npz(path: str | os.PathLike, **arrays) -> None:
  """``np.savez`` of the arrays, atomically."""
  with atomic_output(path) as tmp:
    with open(tmp, "wb") as fh:
      np.savez(fh, **arrays)


def seed_for(row_id: str, seed: int) -> int:
  """A per-row seed derived from the row id and the run's seed (stable across runs and
  machines): the first 4 bytes of sha256('<seed>/<id>') as an int in [0, 2^31)."""
  import hashlib
  d = hashlib.sha256(f"{int(seed)}/{row_id}".encode()).digest()
  return int.from_bytes(d[:4], "big") & 0x7FFFFFFF


__all__ = ["Portrait", "Generator", "load_generator", "prepare_portrait", "read_portrait",
           "centre_face_mask", "check_audio", "load_generation_audio", "num_frames_for",
           "config_from_json", "find_checkpoint_dir", "load_checkpoint_config", "seed_for",
           "atomic_output", "remove_temp_files", "write_mp4", "write_npz", "write_png",
           "contact_sheet", "TMP_PREFIX"]
