"""Clips of the synthetic benchmark: identity + emotion state + speech -> per-frame arrays.

Each identity gets the same clip plan (``clip_plan``):
  * ``num_neutral`` neutral clips (s = e_neutral); clip 0 is the identity's neutral
    reference (``is_neutral_reference``), the source of reference frames x_ref;
  * every non-neutral emotion at MEAD's three levels (s = level/3 on that emotion);
  * ``num_mixtures`` two-emotion mixtures: distinct pairs of non-neutral emotions drawn
    per identity, each intensity from MIXTURE_LEVELS.
Every clip has its own speech track and head motion; everything is deterministic in
(seed, identity_id, clip_index).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS
from input_pipeline.synthetic import audio as audio_lib
from input_pipeline.synthetic import challenging, face_model, renderer

LEVELS = (1.0 / 3.0, 2.0 / 3.0, 1.0)  # MEAD levels 1/2/3
MIXTURE_LEVELS = (0.5, 2.0 / 3.0, 1.0)
_PAIRS = tuple(itertools.combinations(range(1, NUM_EMOTIONS), 2))  # 21 pairs, no neutral
CLIP_ID_STRIDE = 1000  # clip_id = identity_id * CLIP_ID_STRIDE + clip_index

# Head motion amplitudes (peak): translation in image units (1 unit = S/2 px), roll in rad,
# yaw-like feature shift in face units.
POSE_AMPLITUDE = np.array([0.06, 0.04, 0.06, 0.03], np.float32)
BLINK_RATE_HZ = 0.35
BLINK_PROFILE = np.array([0.5, 1.0, 1.0, 0.6, 0.2], np.float32)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """One clip of one identity. emotion: (8,) float32 intensities in MEAD order."""

  identity_id: int
  clip_index: int
  emotion: np.ndarray
  is_neutral_reference: bool

  @property
  def clip_id(self) -> int:
    return self.identity_id * CLIP_ID_STRIDE + self.clip_index


def clip_plan(
  identity_id: int,
  seed: int = 0,
  num_neutral: int = 3,
  num_mixtures: int = 7,
  mixture_levels: tuple[float, ...] = MIXTURE_LEVELS,
) -> list[ClipSpec]:
  """The clips of one identity: neutral clips, 7 emotions x 3 levels, then mixtures whose
  two intensities are drawn from ``mixture_levels``."""
  if num_neutral < 1:
    raise ValueError(f"num_neutral must be >= 1 (clip 0 is the reference), got {num_neutral}")
  if not 0 <= num_mixtures <= len(_PAIRS):
    raise ValueError(f"num_mixtures must be in [0, {len(_PAIRS)}], got {num_mixtures}")
  if not mixture_levels or not all(0 < float(x) <= 1 for x in mixture_levels):
    raise ValueError(f"mixture_levels must be intensities in (0, 1], got {mixture_levels}")
  specs = []

  def add(vec, ref=False):
    specs.append(ClipSpec(identity_id, len(specs), vec.astype(np.float32), ref))

  for k in range(num_neutral):
    v = np.zeros(NUM_EMOTIONS, np.float32)
    v[0] = 1.0
    add(v, ref=(k == 0))
  for e in range(1, NUM_EMOTIONS):
    for lvl in LEVELS:
      v = np.zeros(NUM_EMOTIONS, np.float32)
      v[e] = lvl
      add(v)
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x313, int(identity_id)]))
  order = rng.permutation(len(_PAIRS))[:num_mixtures]
  for j in order:
    e1, e2 = _PAIRS[j]
    v = np.zeros(NUM_EMOTIONS, np.float32)
    v[e1], v[e2] = rng.choice(mixture_levels, size=2)
    add(v)
  return specs


def _smooth_walk(rng: np.random.Generator, num_frames: int, dims: int) -> np.ndarray:
  """Smooth random motion in [-1, 1]: sum of 3 random low-frequency sinusoids per dim."""
  t = np.arange(num_frames, dtype=np.float32) / audio_lib.FPS
  freqs = rng.uniform(0.1, 0.8, size=(3, dims)).astype(np.float32)  # Hz
  phases = rng.uniform(0, 2 * np.pi, size=(3, dims)).astype(np.float32)
  w = rng.uniform(0.5, 1.0, size=(3, dims)).astype(np.float32)
  x = (w[None] * np.sin(2 * np.pi * freqs[None] * t[:, None, None] + phases[None])).sum(1)
  return (x / w.sum(0)[None]).astype(np.float32)


def make_motion(
  rng: np.random.Generator, num_frames: int, speech: audio_lib.SpeechTrack
) -> tuple[face_model.Motion, np.ndarray]:
  """Per-frame motion for a clip. Returns (Motion, mouth_open (T,) float32 in [0, 1])."""
  rms = audio_lib.frame_rms(speech.audio)
  mouth_open = audio_lib.mouth_opening(rms)
  vw, vr = audio_lib.viseme_tracks(speech, num_frames)
  pose = _smooth_walk(rng, num_frames, 4) * POSE_AMPLITUDE[None]
  blink = np.zeros(num_frames + len(BLINK_PROFILE), np.float32)
  t = float(rng.exponential(1.0 / BLINK_RATE_HZ)) * audio_lib.FPS
  while t < num_frames:
    i = int(t)
    blink[i : i + len(BLINK_PROFILE)] = np.maximum(blink[i : i + len(BLINK_PROFILE)], BLINK_PROFILE)
    t += (1.0 + float(rng.exponential(1.0 / BLINK_RATE_HZ))) * audio_lib.FPS
  gaze = 0.6 * _smooth_walk(rng, num_frames, 2)
  motion = face_model.Motion(
    mouth_open=mouth_open,
    viseme_width=vw,
    viseme_round=vr,
    pose=pose,
    blink=blink[:num_frames],
    gaze=gaze,
  )
  return motion, mouth_open


def render_clip(
  spec: ClipSpec, identity_params: np.ndarray, image_size: int, num_frames: int, seed: int = 0
) -> dict:
  """Renders one clip.

  Returns a dict of numpy arrays (the TFDS record):
    frames (T, S, S, 3) uint8; face_mask (T, S, S) uint8 {0,1}; landmarks (T, 68, 2)
    float32 pixels; mouth_open (T,) float32 in [0, 1]; audio (T * 640,) float32 16 kHz;
    emotion (8,) float32; identity int; identity_params (P,) float32; clip_id int;
    is_neutral_reference bool.
  """
  ss = np.random.SeedSequence([int(seed), 0xC11, spec.identity_id, spec.clip_index])
  rng_audio, rng_motion = (np.random.default_rng(s) for s in ss.spawn(2))
  ig = challenging.geometry(identity_params)  # ordinary or challenging identity vectors
  speech = audio_lib.synth_speech(num_frames, rng_audio, f0=ig.voice_f0)
  motion, mouth_open = make_motion(rng_motion, num_frames, speech)
  controls = face_model.expression_controls(spec.emotion)
  out = renderer.render(ig, controls, motion, image_size)
  return {
    "frames": out["frames"],
    "face_mask": out["face_mask"],
    "landmarks": out["landmarks"],
    "mouth_open": mouth_open.astype(np.float32),
    "audio": speech.audio.astype(np.float32),
    "emotion": spec.emotion.astype(np.float32),
    "identity": int(spec.identity_id),
    "identity_params": np.asarray(identity_params, np.float32),
    "clip_id": int(spec.clip_id),
    "is_neutral_reference": bool(spec.is_neutral_reference),
  }


def emotion_name(vec) -> str:
  """Readable label of an intensity vector, e.g. 'happy=0.67+sad=0.50'."""
  vec = np.asarray(vec)
  nz = [(EMOTIONS[i], float(vec[i])) for i in np.flatnonzero(vec > 0)]
  return "+".join(f"{n}={v:.2f}" for n, v in nz) or "none"
