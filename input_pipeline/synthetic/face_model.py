"""The synthetic face model (numpy): identity, expression and per-frame geometry.

A face is defined by three inputs:
  * identity: a vector u in [0, 1]^P (``IDENTITY_PARAM_NAMES``), sampled per identity id
    from a seed (``sample_identity``); ``identity_geometry`` maps it to physical values;
  * expression: the 8-emotion intensity vector s (MEAD order) -> action-unit-like controls
    c = s @ EXPRESSION_MAP (a documented linear, FACS-like map, ``CONTROL_NAMES``);
  * per-frame motion (``Motion``): speech mouth opening (0..1), viseme width/rounding, head
    pose (translation, roll, yaw-like feature shift), blinks and gaze.

``face_geometry`` turns them into feature positions per frame in *face units* (x to the
right, y down, origin at the face centre), which ``renderer.render`` draws.

docs/SYNTHETIC.md documents every parameter and the expression map.
"""

from __future__ import annotations

import colorsys
import dataclasses
from typing import Any

import numpy as np

from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS

# ------------------------------------------------------------------------------------------
# Identity parameters: u in [0, 1]; physical ranges below (face units unless noted).
# ------------------------------------------------------------------------------------------
IDENTITY_PARAM_NAMES: tuple[str, ...] = (
  "face_width",  # half-width a of the face ellipse: 0.46 .. 0.58
  "face_height",  # half-height of the face: 0.60 .. 0.70
  "jaw_taper",  # narrowing of the lower face towards the chin: 0.02 .. 0.32
  "skin_tone",  # light .. dark skin (palette line)
  "skin_warmth",  # cool/pink .. warm/yellow skin hue shift
  "hair_lightness",  # black .. blond
  "hair_warmth",  # ash .. auburn/red
  "hair_length",  # short (above the ears) .. long (to the shoulders)
  "hair_volume",  # hair extent beyond the head: 0.03 .. 0.17
  "hairline",  # forehead hairline height at the parting: -0.60 .. -0.48
  "hair_part",  # parting offset: -0.12 .. 0.12
  "eye_spacing",  # half-distance between eye centres: 0.17 .. 0.23
  "eye_size",  # eye scale: 0.85 .. 1.2
  "iris_hue",  # brown .. hazel .. green .. blue (palette)
  "brow_thickness",  # 0.032 .. 0.052
  "brow_height",  # brow-to-eye distance: 0.11 .. 0.13
  "nose_length",  # eye line to nose tip: 0.18 .. 0.25
  "nose_width",  # nostril half-spacing: 0.045 .. 0.075
  "mouth_width",  # mouth half-width: 0.125 .. 0.175
  "lip_thickness",  # lip scale: 0.75 .. 1.25
  "lip_redness",  # lip colour: skin-like .. red
  "bg_hue",  # background hue (0..1)
  "bg_lightness",  # background value: 0.35 .. 0.95
  "bg_gradient",  # top-to-bottom background gradient strength: 0 .. 0.5
  "shirt_hue",  # shirt hue (0..1); value/saturation fixed
  "voice_pitch",  # speaker f0: 95 .. 230 Hz (audio only)
)
NUM_IDENTITY_PARAMS = len(IDENTITY_PARAM_NAMES)
_P = {n: i for i, n in enumerate(IDENTITY_PARAM_NAMES)}


# ------------------------------------------------------------------------------------------
# Action-unit-like controls and the linear expression map (FACS prototypes, EMFACS-style).
# ------------------------------------------------------------------------------------------
CONTROL_NAMES: tuple[str, ...] = (
  "inner_brow_raise",  # AU1
  "outer_brow_raise",  # AU2
  "brow_lower",  # AU4: brows down and together (furrow), glabellar lines
  "upper_lid_raise",  # AU5: eyes wide, sclera above the iris
  "lid_tighten",  # AU7: lids narrowed, lower lid up
  "lid_droop",  # AU41/43-like: upper lid lowered (sadness)
  "cheek_raise",  # AU6: cheeks up, lower lid pushed up, crow's feet
  "nose_wrinkle",  # AU9: bridge wrinkles, nostrils raised
  "upper_lip_raise",  # AU10: upper lip up (teeth show), deep nasolabial folds
  "lip_corner_pull",  # AU12: smile, corners up and out
  "smirk",  # AU14 unilateral: the image-right corner only (contempt)
  "lip_corner_depress",  # AU15: corners down
  "chin_raise",  # AU17: lower lip pushed up, chin wrinkle
  "lip_stretch",  # AU20: corners pulled sideways, lips thinned
  "lip_press",  # AU23/24: lips pressed thin, mouth narrower
  "lips_part",  # AU25: lips apart, jaw closed: teeth show (fear, broad smile)
  "jaw_drop",  # AU26/27: mouth open and rounded (adds to the speech opening)
)
NUM_CONTROLS = len(CONTROL_NAMES)
_C = {n: i for i, n in enumerate(CONTROL_NAMES)}

# Rows: emotions (MEAD order) at intensity 1. Columns: CONTROL_NAMES. c = s @ EXPRESSION_MAP.
_MAP_ROWS: dict[str, dict[str, float]] = {
  "neutral": {},
  "angry": {
    "brow_lower": 1.0,
    "upper_lid_raise": 0.4,
    "lid_tighten": 0.7,
    "lip_press": 1.0,
    "chin_raise": 0.5,
  },
  "contempt": {"smirk": 1.0, "lid_tighten": 0.25},
  "disgusted": {
    "nose_wrinkle": 1.0,
    "upper_lip_raise": 1.0,
    "brow_lower": 0.5,
    "lid_tighten": 0.3,
    "lip_corner_depress": 0.4,
    "chin_raise": 0.3,
  },
  "fear": {
    "inner_brow_raise": 1.0,
    "outer_brow_raise": 0.5,
    "brow_lower": 0.6,
    "upper_lid_raise": 1.0,
    "lip_stretch": 1.0,
    "lips_part": 1.0,
  },
  "happy": {"cheek_raise": 1.0, "lip_corner_pull": 1.0, "lips_part": 0.4},
  "sad": {
    "inner_brow_raise": 0.9,
    "brow_lower": 0.4,
    "lid_droop": 1.0,
    "lip_corner_depress": 1.0,
    "chin_raise": 0.6,
  },
  "surprised": {
    "inner_brow_raise": 1.0,
    "outer_brow_raise": 1.0,
    "upper_lid_raise": 1.0,
    "jaw_drop": 1.0,
  },
}
EXPRESSION_MAP = np.zeros((NUM_EMOTIONS, NUM_CONTROLS), np.float32)
for _e, _row in _MAP_ROWS.items():
  for _c, _v in _row.items():
    EXPRESSION_MAP[EMOTIONS.index(_e), _C[_c]] = _v
EXPRESSION_MAP.setflags(write=False)

CONTROL_GAMMA = 0.6  # appearance response exponent, see control_response


def expression_controls(s) -> np.ndarray:
  """Emotion intensities s (..., 8) in MEAD order -> AU-like controls (..., NUM_CONTROLS).

  Linear: controls(s1 + s2) == controls(s1) + controls(s2); controls(k s) == k controls(s).
  """
  s = np.asarray(s, np.float32)
  if s.shape[-1] != NUM_EMOTIONS:
    raise ValueError(f"emotion intensities must have last dim {NUM_EMOTIONS}, got {s.shape}")
  return s @ EXPRESSION_MAP


# ------------------------------------------------------------------------------------------
# Identity sampling
# ------------------------------------------------------------------------------------------
def sample_identity(identity_id: int, seed: int = 0) -> np.ndarray:
  """Identity parameter vector u (NUM_IDENTITY_PARAMS,) float32 in [0, 1].

  Deterministic in (identity_id, seed); independent across identity ids.
  """
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D, int(identity_id)]))
  return rng.random(NUM_IDENTITY_PARAMS).astype(np.float32)


def _lerp(lo, hi, u):
  return lo + (hi - lo) * u


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v)), np.float32)


@dataclasses.dataclass(frozen=True)
class IdentityGeometry:
  """Physical identity values (face units; colours RGB in [0, 1], float32 (3,))."""

  face_a: float
  face_b: float
  jaw_taper: float
  eye_x: float
  eye_y: float
  eye_size: float
  brow_thick: float
  brow_gap: float
  nose_len: float
  nose_w: float
  mouth_w: float
  lip_scale: float
  hairline: float
  hair_part: float
  hair_length: float
  hair_volume: float
  skin: np.ndarray
  hair: np.ndarray
  brow: np.ndarray
  lip: np.ndarray
  iris: np.ndarray
  bg_top: np.ndarray
  bg_bottom: np.ndarray
  shirt: np.ndarray
  voice_f0: float
  # Accessories and lighting of a challenging identity (``challenging.ChallengeExtras``);
  # None for every identity of the train and test splits.
  extras: Any = None


_SKIN_LIGHT = np.array([0.97, 0.82, 0.71], np.float32)
_SKIN_DARK = np.array([0.36, 0.23, 0.16], np.float32)
_HAIR_DARK = np.array([0.07, 0.055, 0.05], np.float32)
_HAIR_LIGHT = np.array([0.86, 0.74, 0.50], np.float32)
_HAIR_RED = np.array([0.60, 0.24, 0.09], np.float32)
_IRIS = np.array(
  [
    [0.33, 0.20, 0.10],
    [0.45, 0.38, 0.15],
    [0.25, 0.45, 0.25],
    [0.25, 0.45, 0.70],
    [0.45, 0.55, 0.65],
  ],
  np.float32,
)


def identity_geometry(u) -> IdentityGeometry:
  """Maps the identity vector u (NUM_IDENTITY_PARAMS,) in [0, 1] to physical values (a
  challenging identity's longer vector: ``challenging.geometry``)."""
  u = np.asarray(u, np.float32).reshape(-1)
  if u.shape[0] != NUM_IDENTITY_PARAMS:
    raise ValueError(f"identity vector must have {NUM_IDENTITY_PARAMS} entries, got {u.shape}")
  g = {n: float(u[i]) for n, i in _P.items()}
  skin = _lerp(_SKIN_LIGHT, _SKIN_DARK, g["skin_tone"] ** 1.4)
  skin = skin + np.array([0.03, 0.0, -0.04], np.float32) * (2 * g["skin_warmth"] - 1)
  skin = np.clip(skin, 0, 1).astype(np.float32)
  hair = _lerp(_HAIR_DARK, _HAIR_LIGHT, g["hair_lightness"] ** 1.3)
  hair = _lerp(hair, _HAIR_RED * (0.4 + 0.8 * g["hair_lightness"]), 0.6 * g["hair_warmth"] ** 2)
  hair = np.clip(hair, 0, 1).astype(np.float32)
  # Brows are always clearly darker than skin (the expression cue must stay visible).
  brow = (0.55 * skin * 0.35 + 0.45 * np.minimum(hair, skin * 0.6)).astype(np.float32)
  lip_base = skin * np.array([0.85, 0.62, 0.62], np.float32)
  lip = _lerp(
    lip_base,
    np.array([0.72, 0.22, 0.25], np.float32) * (0.6 + 0.4 * skin.mean()),
    0.7 * g["lip_redness"],
  ).astype(np.float32)
  ih = g["iris_hue"] * (len(_IRIS) - 1)
  i0 = min(int(ih), len(_IRIS) - 2)
  iris = _lerp(_IRIS[i0], _IRIS[i0 + 1], ih - i0).astype(np.float32)
  bgv = _lerp(0.35, 0.95, g["bg_lightness"])
  bg_top = _hsv(g["bg_hue"], 0.45, bgv)
  bg_bottom = (bg_top * (1.0 - 0.5 * g["bg_gradient"])).astype(np.float32)
  return IdentityGeometry(
    face_a=_lerp(0.46, 0.58, g["face_width"]),
    face_b=_lerp(0.60, 0.70, g["face_height"]),
    jaw_taper=_lerp(0.02, 0.32, g["jaw_taper"]),
    eye_x=_lerp(0.17, 0.23, g["eye_spacing"]),
    eye_y=-0.08,
    eye_size=_lerp(0.85, 1.2, g["eye_size"]),
    brow_thick=_lerp(0.032, 0.052, g["brow_thickness"]),
    brow_gap=_lerp(0.11, 0.13, g["brow_height"]),
    nose_len=_lerp(0.18, 0.25, g["nose_length"]),
    nose_w=_lerp(0.045, 0.075, g["nose_width"]),
    mouth_w=_lerp(0.125, 0.175, g["mouth_width"]),
    lip_scale=_lerp(0.75, 1.25, g["lip_thickness"]),
    hairline=_lerp(-0.60, -0.48, g["hairline"]),
    hair_part=_lerp(-0.12, 0.12, g["hair_part"]),
    hair_length=g["hair_length"],
    hair_volume=_lerp(0.03, 0.17, g["hair_volume"]),
    skin=skin,
    hair=hair,
    brow=brow,
    lip=lip,
    iris=iris,
    bg_top=bg_top,
    bg_bottom=bg_bottom,
    shirt=_hsv(g["shirt_hue"], 0.55, 0.6),
    voice_f0=_lerp(95.0, 230.0, g["voice_pitch"]),
  )


# ------------------------------------------------------------------------------------------
# Per-frame geometry (face units). Everything is a (T,) array; sides: 0 = image left, 1 = right.
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Motion:
  """Per-frame non-expression inputs, each (T,) float32 unless noted.

  mouth_open: speech opening in [0, 1].  viseme_width in [-1, 1], viseme_round in [0, 1].
  pose: (T, 4) = (tx, ty in image units, roll in radians, yaw feature shift in face units).
  blink: 0 open .. 1 closed.  gaze: (T, 2) iris offset in [-1, 1].
  """

  mouth_open: np.ndarray
  viseme_width: np.ndarray
  viseme_round: np.ndarray
  pose: np.ndarray
  blink: np.ndarray
  gaze: np.ndarray

  @staticmethod
  def still(num_frames: int) -> Motion:
    z = np.zeros(num_frames, np.float32)
    return Motion(
      z, z, z, np.zeros((num_frames, 4), np.float32), z, np.zeros((num_frames, 2), np.float32)
    )


def control_response(controls) -> np.ndarray:
  """The renderer's fixed per-control response r(c) = sign(c) |c|^CONTROL_GAMMA.

  Controls are linear in s; appearance follows r(c), a concave curve (like FACS's A-E
  intensity scale) so that a 1/3-intensity expression is ~46% of the full displacement and
  still visible at 64x64, while staying strictly monotone in intensity.
  """
  c = np.asarray(controls, np.float32)
  return (np.sign(c) * np.abs(c) ** CONTROL_GAMMA).astype(np.float32)


def face_geometry(ig: IdentityGeometry, controls: np.ndarray, m: Motion) -> dict:
  """Feature positions per frame (face units, y down). controls: (T, NUM_CONTROLS)."""
  resp = control_response(controls)
  c = {n: resp[:, i] for n, i in _C.items()}
  yaw = m.pose[:, 3]
  g = {}
  T = controls.shape[0]
  one = np.ones(T, np.float32)
  # Jaw: the lower face stretches with the opening (speech + jaw drop).
  open_total = 0.13 * m.mouth_open + 0.15 * c["jaw_drop"]
  g["open_total"] = open_total
  g["face_b_low"] = ig.face_b + 0.45 * open_total
  # Brows (per side, in mirrored coordinates X = |x|; inner end towards the midline).
  by0 = ig.eye_y - ig.brow_gap
  g["brow_xi"] = ig.eye_x - 0.10 - 0.035 * c["brow_lower"]
  g["brow_xo"] = (ig.eye_x + 0.125) * one
  g["brow_yi"] = (
    by0 - 0.10 * c["inner_brow_raise"] + 0.07 * c["brow_lower"] - 0.02 * c["outer_brow_raise"]
  )
  g["brow_yo"] = (
    by0 - 0.09 * c["outer_brow_raise"] + 0.025 * c["brow_lower"] - 0.015 * c["inner_brow_raise"]
  )
  g["brow_arch"] = (
    0.022 + 0.03 * c["outer_brow_raise"] - 0.015 * c["brow_lower"] - 0.01 * c["inner_brow_raise"]
  )
  g["forehead_alpha"] = np.clip(0.45 * (c["inner_brow_raise"] + c["outer_brow_raise"]), 0, 0.9)
  # With AU4 the forehead lines gather in the centre (AU1+4: fear, sadness).
  g["forehead_half_len"] = np.clip(0.21 - 0.1 * c["brow_lower"], 0.08, 0.21)
  g["glabella_alpha"] = np.clip(0.85 * c["brow_lower"], 0, 0.9)
  # Eyes.
  es = ig.eye_size
  g["eye_w"] = 0.085 * es * one
  hu = (
    0.040 * es
    + 0.05 * c["upper_lid_raise"]
    - 0.016 * c["lid_tighten"]
    - 0.03 * c["lid_droop"]
    - 0.006 * c["cheek_raise"]
  )
  hl = 0.030 * es - 0.014 * c["lid_tighten"] - 0.016 * c["cheek_raise"]
  hl = np.maximum(hl, 0.004)
  hu = np.maximum(hu, -hl + 0.004)
  g["eye_hl"] = hl
  g["eye_hu"] = hu - np.clip(m.blink, 0, 1) * (hu + hl - 0.002)
  g["iris_r"] = 0.036 * es * one
  g["gaze_x"] = 0.025 * m.gaze[:, 0]
  g["gaze_y"] = 0.012 * m.gaze[:, 1]
  g["eye_cx_shift"] = 0.5 * yaw
  g["crowsfeet_alpha"] = np.clip(0.9 * c["cheek_raise"] + 0.3 * c["lid_tighten"], 0, 0.9)
  # Nose.
  g["nose_x"] = 1.0 * yaw
  g["nose_tip_y"] = ig.eye_y + ig.nose_len - 0.02 * c["nose_wrinkle"] - 0.008 * c["upper_lip_raise"]
  g["nostril_w"] = ig.nose_w + 0.012 * c["nose_wrinkle"] + 0.004 * c["upper_lip_raise"]
  g["nose_wrinkle_alpha"] = np.clip(0.95 * c["nose_wrinkle"], 0, 0.95)
  # Cheeks.
  g["cheek_y"] = ig.eye_y + 0.17 - 0.05 * c["cheek_raise"]
  g["cheek_alpha"] = np.clip(0.10 + 0.5 * c["cheek_raise"], 0, 0.8)
  # Mouth (rest line at a fixed distance below the *neutral* nose tip).
  my = ig.eye_y + ig.nose_len + 0.12
  g["mouth_x"] = 0.6 * yaw
  vis = np.clip(m.viseme_width, -1, 1) * np.clip(2.0 * m.mouth_open, 0, 1)
  half_w = ig.mouth_w * (1.0 + 0.08 * vis) - 0.015 * m.mouth_open
  dx_common = (
    0.05 * c["lip_corner_pull"]
    + 0.055 * c["lip_stretch"]
    - 0.025 * c["lip_press"]
    - 0.01 * c["lip_corner_depress"]
  )
  dy_common = (
    -0.085 * c["lip_corner_pull"]
    + 0.075 * c["lip_corner_depress"]
    + 0.02 * c["lip_stretch"]
    - 0.015 * c["upper_lip_raise"]
    + 0.15 * open_total
  )
  g["corner_x"] = np.stack([half_w + dx_common, half_w + dx_common + 0.045 * c["smirk"]], -1)
  g["corner_y"] = np.stack([my + dy_common, my + dy_common - 0.10 * c["smirk"]], -1)
  ls = ig.lip_scale
  yui = my - 0.055 * c["upper_lip_raise"] - 0.1 * open_total - 0.012 * c["lips_part"]
  th_u = np.maximum(
    0.030 * ls - 0.02 * c["lip_press"] - 0.01 * c["lip_stretch"] - 0.004 * c["lip_corner_pull"],
    0.008,
  )
  yli = np.maximum(my + 0.9 * open_total - 0.02 * c["chin_raise"] + 0.055 * c["lips_part"], yui)
  th_l = np.maximum(
    0.040 * ls - 0.022 * c["lip_press"] - 0.01 * c["lip_stretch"] + 0.012 * c["chin_raise"], 0.010
  )
  g["lip_ui"] = yui
  g["lip_ut"] = yui - th_u
  g["lip_li"] = yli
  g["lip_th_l"] = th_l
  g["teeth_top"] = my - 0.012 - 0.01 * open_total
  g["lower_teeth"] = my + 0.9 * open_total - 0.028
  g["mouth_round"] = np.clip(
    m.viseme_round * np.clip(3 * m.mouth_open, 0, 1) + 0.7 * np.clip(c["jaw_drop"], 0, 1), 0, 1
  )
  g["fold_alpha"] = np.clip(
    0.25 * c["cheek_raise"]
    + 0.4 * c["lip_corner_pull"]
    + 0.7 * c["upper_lip_raise"]
    + 0.3 * c["nose_wrinkle"]
    + 0.12,
    0,
    0.9,
  )
  g["dimple_alpha"] = np.clip(1.2 * c["smirk"], 0, 0.95)
  g["fold_alpha_right"] = np.clip(g["fold_alpha"] + 0.5 * c["smirk"], 0, 0.9)
  g["chin_alpha"] = np.clip(0.8 * c["chin_raise"], 0, 0.8)
  g["mouth_y"] = my * one
  return g
