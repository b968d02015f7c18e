"""Procedural talking-face renderer with ground truth (numpy, vectorised over frames).

A face is drawn from three inputs:
  * identity: a vector u in [0, 1]^P (``IDENTITY_PARAM_NAMES``), sampled per identity id
    from a seed (``sample_identity``); ``identity_geometry`` maps it to physical values;
  * expression: the 8-emotion intensity vector s (MEAD order) -> action-unit-like controls
    c = s @ EXPRESSION_MAP (a documented linear, FACS-like map, ``CONTROL_NAMES``);
  * per-frame motion: speech mouth opening (0..1), viseme width/rounding, head pose
    (translation, roll, yaw-like feature shift), blinks and gaze.

Geometry lives in *face units*: x to the right, y down, origin at the face centre. Image
units span [-1, 1] across an S x S image; at rest a face unit is ``FACE_ZOOM`` image units
(1.12 x S/2 pixels) and the face centre sits at ``FACE_CENTRE``. Head pose (translation,
roll) maps face units to image units. Every shape is drawn with an analytic signed distance
(in pixels) and a 1-pixel linear coverage ramp, so edges are anti-aliased without
supersampling and the same geometry renders at any resolution (32, 64, 128, 256).

Outputs per frame: the RGB frame (uint8), 68 landmarks in the iBUG/dlib layout (pixels;
pixel centres at integer coordinates, as OpenCV and dlib), and the face mask (uint8 {0,1}:
the region that shows expression — brows and forehead lines, eyes, nose, cheeks, mouth,
jaw; it depends on identity and pose only, never on expression or speech, so it cannot
leak them). ``lower_face_mask`` derives DiffTalk's lower-half mask from it.

docs/SYNTHETIC.md documents every parameter and the expression map.
"""
from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS

# ------------------------------------------------------------------------------------------
# Identity parameters: u in [0, 1]; physical ranges below (face units unless noted).
# ------------------------------------------------------------------------------------------
IDENTITY_PARAM_NAMES: tuple[str, ...] = (
    "face_width",      # half-width a of the face ellipse: 0.46 .. 0.58
    "face_height",     # half-height of the face: 0.60 .. 0.70
    "jaw_taper",       # narrowing of the lower face towards the chin: 0.02 .. 0.32
    "skin_tone",       # light .. dark skin (palette line)
    "skin_warmth",     # cool/pink .. warm/yellow skin hue shift
    "hair_lightness",  # black .. blond
    "hair_warmth",     # ash .. auburn/red
    "hair_length",     # short (above the ears) .. long (to the shoulders)
    "hair_volume",     # hair extent beyond the head: 0.03 .. 0.17
    "hairline",        # forehead hairline height at the parting: -0.60 .. -0.48
    "hair_part",       # parting offset: -0.12 .. 0.12
    "eye_spacing",     # half-distance between eye centres: 0.17 .. 0.23
    "eye_size",        # eye scale: 0.85 .. 1.2
    "iris_hue",        # brown .. hazel .. green .. blue (palette)
    "brow_thickness",  # 0.032 .. 0.052
    "brow_height",     # brow-to-eye distance: 0.11 .. 0.13
    "nose_length",     # eye line to nose tip: 0.18 .. 0.25
    "nose_width",      # nostril half-spacing: 0.045 .. 0.075
    "mouth_width",     # mouth half-width: 0.125 .. 0.175
    "lip_thickness",   # lip scale: 0.75 .. 1.25
    "lip_redness",     # lip colour: skin-like .. red
    "bg_hue",          # background hue (0..1)
    "bg_lightness",    # background value: 0.35 .. 0.95
    "bg_gradient",     # top-to-bottom background gradient strength: 0 .. 0.5
    "shirt_hue",       # shirt hue (0..1); value/saturation fixed
    "voice_pitch",     # speaker f0: 95 .. 230 Hz (audio only)
)
NUM_IDENTITY_PARAMS = len(IDENTITY_PARAM_NAMES)
_P = {n: i for i, n in enumerate(IDENTITY_PARAM_NAMES)}

FACE_CENTRE = (0.0, 0.06)  # image units; the face ellipse centre at rest pose
FACE_ZOOM = 1.12           # image units per face unit

# ------------------------------------------------------------------------------------------
# Action-unit-like controls and the linear expression map (FACS prototypes, EMFACS-style).
# ------------------------------------------------------------------------------------------
CONTROL_NAMES: tuple[str, ...] = (
    "inner_brow_raise",    # AU1
    "outer_brow_raise",    # AU2
    "brow_lower",          # AU4: brows down and together (furrow), glabellar lines
    "upper_lid_raise",     # AU5: eyes wide, sclera above the iris
    "lid_tighten",         # AU7: lids narrowed, lower lid up
    "lid_droop",           # AU41/43-like: upper lid lowered (sadness)
    "cheek_raise",         # AU6: cheeks up, lower lid pushed up, crow's feet
    "nose_wrinkle",        # AU9: bridge wrinkles, nostrils raised
    "upper_lip_raise",     # AU10: upper lip up (teeth show), deep nasolabial folds
    "lip_corner_pull",     # AU12: smile, corners up and out
    "smirk",               # AU14 unilateral: the image-right corner only (contempt)
    "lip_corner_depress",  # AU15: corners down
    "chin_raise",          # AU17: lower lip pushed up, chin wrinkle
    "lip_stretch",         # AU20: corners pulled sideways, lips thinned
    "lip_press",           # AU23/24: lips pressed thin, mouth narrower
    "lips_part",           # AU25: lips apart, jaw closed: teeth show (fear, broad smile)
    "jaw_drop",            # AU26/27: mouth open and rounded (adds to the speech opening)
)
NUM_CONTROLS = len(CONTROL_NAMES)
_C = {n: i for i, n in enumerate(CONTROL_NAMES)}

# Rows: emotions (MEAD order) at intensity 1. Columns: CONTROL_NAMES. c = s @ EXPRESSION_MAP.
_MAP_ROWS: dict[str, dict[str, float]] = {
    "neutral": {},
    "angry": {"brow_lower": 1.0, "upper_lid_raise": 0.4, "lid_tighten": 0.7,
              "lip_press": 1.0, "chin_raise": 0.5},
    "contempt": {"smirk": 1.0, "lid_tighten": 0.25},
    "disgusted": {"nose_wrinkle": 1.0, "upper_lip_raise": 1.0, "brow_lower": 0.5,
                  "lid_tighten": 0.3, "lip_corner_depress": 0.4, "chin_raise": 0.3},
    "fear": {"inner_brow_raise": 1.0, "outer_brow_raise": 0.5, "brow_lower": 0.6,
             "upper_lid_raise": 1.0, "lip_stretch": 1.0, "lips_part": 1.0},
    "happy": {"cheek_raise": 1.0, "lip_corner_pull": 1.0, "lips_part": 0.4},
    "sad": {"inner_brow_raise": 0.9, "brow_lower": 0.4, "lid_droop": 1.0,
            "lip_corner_depress": 1.0, "chin_raise": 0.6},
    "surprised": {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0, "upper_lid_raise": 1.0,
                  "jaw_drop": 1.0},
}
EXPRESSION_MAP = np.zeros((NUM_EMOTIONS, NUM_CONTROLS), np.float32)
for _e, _row in _MAP_ROWS.items():
  for _c, _v in _row.items():
    EXPRESSION_MAP[EMOTIONS.index(_e), _C[_c]] = _v
EXPRESSION_MAP.setflags(write=False)

NUM_LANDMARKS = 68  # iBUG 300-W / dlib layout (see docs/SYNTHETIC.md)
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


_SKIN_LIGHT = np.array([0.97, 0.82, 0.71], np.float32)
_SKIN_DARK = np.array([0.36, 0.23, 0.16], np.float32)
_HAIR_DARK = np.array([0.07, 0.055, 0.05], np.float32)
_HAIR_LIGHT = np.array([0.86, 0.74, 0.50], np.float32)
_HAIR_RED = np.array([0.60, 0.24, 0.09], np.float32)
_IRIS = np.array([[0.33, 0.20, 0.10], [0.45, 0.38, 0.15], [0.25, 0.45, 0.25],
                  [0.25, 0.45, 0.70], [0.45, 0.55, 0.65]], np.float32)


def identity_geometry(u) -> IdentityGeometry:
  """Maps the identity vector u (NUM_IDENTITY_PARAMS,) in [0, 1] to physical values."""
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
  lip = _lerp(lip_base, np.array([0.72, 0.22, 0.25], np.float32) * (0.6 + 0.4 * skin.mean()),
              0.7 * g["lip_redness"]).astype(np.float32)
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
      skin=skin, hair=hair, brow=brow, lip=lip, iris=iris,
      bg_top=bg_top, bg_bottom=bg_bottom, shirt=_hsv(g["shirt_hue"], 0.55, 0.6),
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
  def still(num_frames: int) -> "Motion":
    z = np.zeros(num_frames, np.float32)
    return Motion(z, z, z, np.zeros((num_frames, 4), np.float32), z,
                  np.zeros((num_frames, 2), np.float32))


def control_response(controls) -> np.ndarray:
  """The renderer's fixed per-control response r(c) = sign(c) |c|^CONTROL_GAMMA.

  Controls are linear in s; appearance follows r(c), a concave curve (like FACS's A-E
  intensity scale) so that a 1/3-intensity expression is ~46% of the full displacement and
  still visible at 64x64, while staying strictly monotone in intensity.
  """
  c = np.asarray(controls, np.float32)
  return (np.sign(c) * np.abs(c) ** CONTROL_GAMMA).astype(np.float32)


def _face_geometry(ig: IdentityGeometry, controls: np.ndarray, m: Motion) -> dict:
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
  g["brow_yi"] = by0 - 0.10 * c["inner_brow_raise"] + 0.07 * c["brow_lower"] \
      - 0.02 * c["outer_brow_raise"]
  g["brow_yo"] = by0 - 0.09 * c["outer_brow_raise"] + 0.025 * c["brow_lower"] \
      - 0.015 * c["inner_brow_raise"]
  g["brow_arch"] = 0.022 + 0.03 * c["outer_brow_raise"] - 0.015 * c["brow_lower"] \
      - 0.01 * c["inner_brow_raise"]
  g["forehead_alpha"] = np.clip(0.45 * (c["inner_brow_raise"] + c["outer_brow_raise"]), 0, 0.9)
  # With AU4 the forehead lines gather in the centre (AU1+4: fear, sadness).
  g["forehead_half_len"] = np.clip(0.21 - 0.1 * c["brow_lower"], 0.08, 0.21)
  g["glabella_alpha"] = np.clip(0.85 * c["brow_lower"], 0, 0.9)
  # Eyes.
  es = ig.eye_size
  g["eye_w"] = 0.085 * es * one
  hu = 0.040 * es + 0.05 * c["upper_lid_raise"] - 0.016 * c["lid_tighten"] \
      - 0.03 * c["lid_droop"] - 0.006 * c["cheek_raise"]
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
  g["nose_tip_y"] = ig.eye_y + ig.nose_len - 0.02 * c["nose_wrinkle"] \
      - 0.008 * c["upper_lip_raise"]
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
  dx_common = 0.05 * c["lip_corner_pull"] + 0.055 * c["lip_stretch"] \
      - 0.025 * c["lip_press"] - 0.01 * c["lip_corner_depress"]
  dy_common = -0.085 * c["lip_corner_pull"] + 0.075 * c["lip_corner_depress"] \
      + 0.02 * c["lip_stretch"] - 0.015 * c["upper_lip_raise"] + 0.15 * open_total
  g["corner_x"] = np.stack([half_w + dx_common, half_w + dx_common + 0.045 * c["smirk"]], -1)
  g["corner_y"] = np.stack([my + dy_common, my + dy_common - 0.10 * c["smirk"]], -1)
  ls = ig.lip_scale
  yui = my - 0.055 * c["upper_lip_raise"] - 0.1 * open_total - 0.012 * c["lips_part"]
  th_u = np.maximum(0.030 * ls - 0.02 * c["lip_press"] - 0.01 * c["lip_stretch"]
                    - 0.004 * c["lip_corner_pull"], 0.008)
  yli = np.maximum(my + 0.9 * open_total - 0.02 * c["chin_raise"] + 0.055 * c["lips_part"],
                   yui)
  th_l = np.maximum(0.040 * ls - 0.022 * c["lip_press"] - 0.01 * c["lip_stretch"]
                    + 0.012 * c["chin_raise"], 0.010)
  g["lip_ui"] = yui
  g["lip_ut"] = yui - th_u
  g["lip_li"] = yli
  g["lip_th_l"] = th_l
  g["teeth_top"] = my - 0.012 - 0.01 * open_total
  g["lower_teeth"] = my + 0.9 * open_total - 0.028
  g["mouth_round"] = np.clip(m.viseme_round * np.clip(3 * m.mouth_open, 0, 1)
                             + 0.7 * np.clip(c["jaw_drop"], 0, 1), 0, 1)
  g["fold_alpha"] = np.clip(0.25 * c["cheek_raise"] + 0.4 * c["lip_corner_pull"]
                            + 0.7 * c["upper_lip_raise"] + 0.3 * c["nose_wrinkle"]
                            + 0.12, 0, 0.9)
  g["dimple_alpha"] = np.clip(1.2 * c["smirk"], 0, 0.95)
  g["fold_alpha_right"] = np.clip(g["fold_alpha"] + 0.5 * c["smirk"], 0, 0.9)
  g["chin_alpha"] = np.clip(0.8 * c["chin_raise"], 0, 0.8)
  g["mouth_y"] = my * one
  return g


# ------------------------------------------------------------------------------------------
# Rasterisation helpers. Distances in face units; `ppu` = pixels per face unit.
# ------------------------------------------------------------------------------------------
def _cov(d_units, ppu):
  """Coverage of a pixel whose centre lies at signed distance d (units; < 0 inside)."""
  return np.clip(0.5 - d_units * ppu, 0.0, 1.0)


def _ellipse_sd(x, y, cx, cy, a, b):
  """Approximate signed distance to an axis-aligned ellipse (first-order, exact on it)."""
  dx = (x - cx) / a
  dy = (y - cy) / b
  r = np.sqrt(dx * dx + dy * dy) + 1e-6
  grad = np.sqrt((dx / a) ** 2 + (dy / b) ** 2) / r + 1e-6
  return (r - 1.0) / grad


def _segment_sd(x, y, x0, y0, x1, y1, half):
  """Signed distance to a capsule (segment (x0,y0)-(x1,y1) with radius `half`)."""
  vx, vy = x1 - x0, y1 - y0
  wx, wy = x - x0, y - y0
  t = np.clip((wx * vx + wy * vy) / (vx * vx + vy * vy + 1e-12), 0.0, 1.0)
  ex, ey = wx - t * vx, wy - t * vy
  return np.sqrt(ex * ex + ey * ey) - half


def _t(a):
  """(T,) -> (T, 1, 1) for broadcasting against (T, H, W) grids."""
  return np.asarray(a, np.float32)[:, None, None]


class _Canvas:
  """RGB float canvas, channels first (3, T, S, S), plus each pixel centre in face units."""

  def __init__(self, size: int, pose: np.ndarray):
    self.S = size
    T = pose.shape[0]
    self.ppu = size / 2.0 * FACE_ZOOM
    self.tx = pose[:, 0] + FACE_CENTRE[0]
    self.ty = pose[:, 1] + FACE_CENTRE[1]
    self.cos = np.cos(pose[:, 2]).astype(np.float32)
    self.sin = np.sin(pose[:, 2]).astype(np.float32)
    u = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0)
    ux = u[None, None, :] - _t(self.tx)
    uy = u[None, :, None] - _t(self.ty)
    c, s = _t(self.cos), _t(self.sin)
    # Inverse rotation and zoom (image -> face).
    self.X = ((c * ux + s * uy) / FACE_ZOOM).astype(np.float32)
    self.Y = ((-s * ux + c * uy) / FACE_ZOOM).astype(np.float32)
    self.img = np.zeros((3, T, size, size), np.float32)  # channels first: fast painting

  def to_pixels(self, x, y):
    """Face units (T, N) -> pixel coordinates (T, N) each (pixel centres at integers)."""
    c, s = self.cos[:, None] * FACE_ZOOM, self.sin[:, None] * FACE_ZOOM
    ux = c * x - s * y + self.tx[:, None]
    uy = s * x + c * y + self.ty[:, None]
    return (ux + 1.0) * (self.S / 2.0) - 0.5, (uy + 1.0) * (self.S / 2.0) - 0.5

  def window(self, x0, y0, x1, y1):
    """Pixel slices covering the face-unit box [x0,x1]x[y0,y1] (scalars or (T,)) in all frames."""
    x0, y0, x1, y1 = (np.min(x0), np.min(y0), np.max(x1), np.max(y1))
    bx = np.array([[x0, x1, x0, x1]], np.float32).repeat(len(self.cos), 0)
    by = np.array([[y0, y0, y1, y1]], np.float32).repeat(len(self.cos), 0)
    px, py = self.to_pixels(bx, by)
    ix0 = int(np.clip(np.floor(px.min()) - 2, 0, self.S))
    ix1 = int(np.clip(np.ceil(px.max()) + 3, 0, self.S))
    iy0 = int(np.clip(np.floor(py.min()) - 2, 0, self.S))
    iy1 = int(np.clip(np.ceil(py.max()) + 3, 0, self.S))
    sl = (slice(None), slice(iy0, iy1), slice(ix0, ix1))
    return sl, self.X[sl], self.Y[sl]

  def paint(self, sl, alpha, color):
    """Alpha-composites `color` ((3,) or (T,h,w,3)) with coverage alpha (T,h,w) over window sl.

    Skipped when alpha is zero everywhere (e.g. an action unit that is off).
    """
    if alpha.size == 0 or not alpha.any():
      return
    color = np.asarray(color, np.float32)
    for ch in range(3):
      region = self.img[ch][sl]
      tmp = np.subtract(color[..., ch], region, dtype=np.float32)
      tmp *= alpha
      region += tmp


def _mouth_contour(x, g, center_y, p):
  """y of a lip contour at x (face units): the corner-to-corner line plus a bulge.

  center_y: (T,) contour height at the mouth centre; p: (T,) bulge exponent (1 parabola,
  0.5 ellipse). Returns (y (T,h,w), t (T,h,w) position from left corner 0 to right corner 1).
  """
  xl = _t(g["mouth_x"] - g["corner_x"][:, 0])
  xr = _t(g["mouth_x"] + g["corner_x"][:, 1])
  yl = _t(g["corner_y"][:, 0])
  yr = _t(g["corner_y"][:, 1])
  t = (x - xl) / (xr - xl)
  base = yl + (yr - yl) * t
  b = 4.0 * t * (1.0 - t)
  shp = np.where(b > 0, np.abs(b) ** _t(p), b)
  return base + (_t(center_y) - 0.5 * (yl + yr)) * shp, t


def _mouth_contour_points(g, center_y, p, ts):
  """Landmark points on a lip contour at parameters ts (n,): returns x, y (T, n)."""
  xl = g["mouth_x"] - g["corner_x"][:, 0]
  xr = g["mouth_x"] + g["corner_x"][:, 1]
  yl, yr = g["corner_y"][:, 0], g["corner_y"][:, 1]
  ts = np.asarray(ts, np.float32)[None, :]
  x = xl[:, None] + (xr - xl)[:, None] * ts
  b = 4.0 * ts * (1.0 - ts)
  shp = b ** p[:, None]
  y = yl[:, None] + (yr - yl)[:, None] * ts \
      + (center_y - 0.5 * (yl + yr))[:, None] * shp
  return x, y


# ------------------------------------------------------------------------------------------
# The renderer
# ------------------------------------------------------------------------------------------
def render(identity, controls, motion: Motion, image_size: int = 64) -> dict:
  """Renders T frames of one identity.

  Args:
    identity: (NUM_IDENTITY_PARAMS,) identity vector in [0, 1] (``sample_identity``).
    controls: (T, NUM_CONTROLS) or (NUM_CONTROLS,) AU-like controls
      (``expression_controls(s)``); a single vector is used for every frame.
    motion: per-frame ``Motion`` with T frames.
    image_size: S; frames are S x S.
  Returns:
    dict with 'frames' (T, S, S, 3) uint8 RGB, 'landmarks' (T, 68, 2) float32 pixel (x, y),
    'face_mask' (T, S, S) uint8 in {0, 1}.
  """
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")
  ig = identity if isinstance(identity, IdentityGeometry) else identity_geometry(identity)
  T = motion.mouth_open.shape[0]
  controls = np.asarray(controls, np.float32)
  if controls.ndim == 1:
    controls = np.broadcast_to(controls, (T, controls.shape[0]))
  if controls.shape != (T, NUM_CONTROLS):
    raise ValueError(f"controls must be ({T}, {NUM_CONTROLS}), got {controls.shape}")
  g = _face_geometry(ig, controls, motion)
  cv = _Canvas(image_size, np.asarray(motion.pose, np.float32))
  ppu = cv.ppu
  lw = max(0.016, 1.0 / ppu)  # full width of drawn lines (face units): at least 1 pixel
  a, bt = ig.face_a, ig.face_b
  skin = ig.skin

  # Background: vertical gradient in image coordinates (does not move with the head).
  ramp = np.linspace(0.0, 1.0, image_size, dtype=np.float32)[None, None, :, None]
  cv.img[:] = ig.bg_top[:, None, None, None] + \
      (ig.bg_bottom - ig.bg_top)[:, None, None, None] * ramp

  # Hair behind the head.
  vol = ig.hair_volume
  sl, X, Y = cv.window(-a - vol - 0.1, -bt - vol - 0.2, a + vol + 0.1, 1.2)
  hb = _cov(_ellipse_sd(X, Y, 0.0, -0.22, a + vol, 0.5 + vol), ppu)
  if ig.hair_length > 0.3:
    bottom = 0.05 + 0.8 * (ig.hair_length - 0.3) / 0.7
    hw = a + 0.6 * vol + 0.02
    d_box = np.maximum(np.abs(X) - hw, np.maximum(-0.2 - Y, Y - bottom))
    d_round = _ellipse_sd(X, Y, 0.0, bottom - 0.1, hw, 0.2)
    hb = np.maximum(hb, _cov(np.maximum(d_box, np.minimum(d_round, Y - bottom + 0.1)), ppu))
  cv.paint(sl, hb, ig.hair * 0.85)

  # Neck and shirt.
  sl, X, Y = cv.window(-1.5, 0.2, 1.5, 2.0)
  neck = _cov(np.maximum(np.abs(X) - 0.42 * a, 0.25 - Y), ppu)
  cv.paint(sl, neck, skin * 0.82)
  shirt = _cov(_ellipse_sd(X, Y, 0.0, 1.45, 1.0, 0.62), ppu)
  cv.paint(sl, shirt, ig.shirt)
  collar = _cov(_ellipse_sd(X, Y, 0.0, 0.86, 0.42 * a + 0.04, 0.09), ppu) * shirt
  cv.paint(sl, collar, skin * 0.82)

  # Ears.
  sl, X, Y = cv.window(-a - 0.1, -0.2, a + 0.1, 0.15)
  ears = _cov(_ellipse_sd(np.abs(X), Y, a - 0.01, -0.03, 0.055, 0.10), ppu)
  cv.paint(sl, ears, skin * 0.9)

  # Face: an ellipse whose lower half tapers to the chin and stretches with the jaw.
  blow = g["face_b_low"]
  sl, X, Y = cv.window(-a, -bt, a, blow)
  yb = np.where(Y > 0, Y / _t(blow), Y / bt)
  taper = 1.0 - ig.jaw_taper * np.clip(yb, 0, 1) ** 2
  bb = np.where(Y > 0, _t(blow), bt)
  face_sd = _ellipse_sd(X / taper, Y, 0.0, 0.0, a, bb)
  face = _cov(face_sd, ppu)
  r2 = (X / a) ** 2 + (Y / bb) ** 2
  shade = skin * (1.0 - 0.16 * np.clip(r2, 0, 1)[..., None] ** 2)
  cv.paint(sl, face, shade)

  # Cheeks (highlight + fold below it, rises with cheek_raise).
  cy = _t(g["cheek_y"])
  sl, X, Y = cv.window(-a, -0.2, a, 0.4)
  ca = _t(g["cheek_alpha"])
  cx = ig.eye_x + 0.04
  ch = _cov(_ellipse_sd(np.abs(X - _t(g["mouth_x"]) * 0.5), Y, cx, cy, 0.085, 0.06), ppu)
  cheek_col = np.clip(skin * np.array([1.08, 0.92, 0.92]) + 0.05, 0, 1)
  cv.paint(sl, ch * ca, cheek_col)
  fold = _cov(np.abs(_ellipse_sd(np.abs(X - _t(g["mouth_x"]) * 0.5), Y, cx, cy, 0.085,
                                 0.06)) - 0.5 * lw, ppu) * (Y > cy + 0.02) \
      * _t(np.clip(g["cheek_alpha"] - 0.1, 0, 1))
  cv.paint(sl, fold, skin * 0.62)

  # Forehead lines (AU1+2), above the brows; shorter (central) when the brows are drawn in.
  dark = np.clip(skin * 0.45 - 0.02, 0, 1)
  fa = _t(g["forehead_alpha"])
  byi_mean = 0.5 * (g["brow_yi"] + g["brow_yo"])
  sl, X, Y = cv.window(-0.3, -bt, 0.3, 0.0)
  for k, off in enumerate((0.075, 0.13)):
    yc = _t(byi_mean - off) + 0.5 * X ** 2
    d = np.maximum(np.abs(Y - yc) - 0.5 * lw, np.abs(X) - (_t(g["forehead_half_len"]) - 0.04 * k))
    cv.paint(sl, _cov(d, ppu) * fa, dark)

  # Glabellar lines (AU4): short vertical lines between the brows.
  sl, X, Y = cv.window(-0.1, -0.4, 0.1, 0.0)
  by_in = _t(g["brow_yi"])
  d = np.maximum(np.abs(np.abs(X - _t(g["eye_cx_shift"])) - 0.022) - 0.5 * lw,
                 np.abs(Y - (by_in + 0.005)) - 0.035)
  cv.paint(sl, _cov(d, ppu) * _t(g["glabella_alpha"]), dark)

  # Nose: bridge shading, tip, nostrils; AU9 wrinkle lines across the bridge.
  nx = _t(g["nose_x"])
  tip = _t(g["nose_tip_y"])
  nw = _t(g["nostril_w"])
  sl, X, Y = cv.window(-0.2, ig.eye_y - 0.05, 0.2, g["nose_tip_y"] + 0.08)
  bridge = _cov(_segment_sd(X, Y, nx + 0.035, _t(np.full(T, ig.eye_y + 0.02)), nx + 0.045,
                            tip - 0.03, 0.5 * lw), ppu)
  cv.paint(sl, bridge * 0.45, skin * 0.7)
  tip_c = _cov(_ellipse_sd(X, Y, nx, tip - 0.005, 0.8 * nw, 0.035), ppu)
  cv.paint(sl, tip_c * 0.35, skin * 0.8)
  nost = _cov(_ellipse_sd(np.abs(X - nx), Y, 0.55 * nw, tip + 0.012, 0.022, 0.011), ppu)
  cv.paint(sl, nost * 0.85, skin * 0.35)
  wing = _cov(np.abs(_ellipse_sd(np.abs(X - nx), Y, nw, tip, 0.03, 0.03)) - 0.4 * lw, ppu) \
      * (Y > tip - 0.02)
  cv.paint(sl, wing * 0.6, skin * 0.6)
  wa = _t(g["nose_wrinkle_alpha"])
  for off in (0.03, 0.065):
    d = np.maximum(np.abs(Y - (ig.eye_y + off) - 0.3 * (X - nx) ** 2) - 0.5 * lw,
                   np.abs(X - nx) - 0.055)
    cv.paint(sl, _cov(d, ppu) * wa, dark)

  # Eyes: sclera between the lids, iris, pupil, upper lash line; crow's feet (AU6).
  ex = ig.eye_x
  ew, hu, hl = _t(g["eye_w"]), _t(g["eye_hu"]), _t(g["eye_hl"])
  eshift = _t(g["eye_cx_shift"])
  sl, X, Y = cv.window(-ex - 0.16, ig.eye_y - 0.12, ex + 0.16, ig.eye_y + 0.08)
  Xm = np.abs(X - eshift)
  side = np.where(X - eshift > 0, 1.0, -1.0).astype(np.float32)
  q = 1.0 - ((Xm - ex) / ew) ** 2
  y_up = ig.eye_y - hu * q
  y_lo = ig.eye_y + hl * q
  eye_d = np.maximum(y_up - Y, Y - y_lo)
  eye = _cov(eye_d, ppu)
  cv.paint(sl, eye, np.array([0.95, 0.95, 0.92], np.float32))
  icx = ex + side * _t(g["gaze_x"])
  icy = ig.eye_y + _t(g["gaze_y"])
  ir = _t(g["iris_r"])
  iris = _cov(np.sqrt((Xm - icx) ** 2 + (Y - icy) ** 2) - ir, ppu) * eye
  cv.paint(sl, iris, ig.iris)
  pupil = _cov(np.sqrt((Xm - icx) ** 2 + (Y - icy) ** 2) - 0.45 * ir, ppu) * eye
  cv.paint(sl, pupil, np.array([0.05, 0.04, 0.04], np.float32))
  lash = _cov(np.maximum(np.abs(Y - y_up + 0.3 * lw) - 0.6 * lw, np.abs(Xm - ex) - ew - 0.01),
              ppu)
  cv.paint(sl, lash, np.array([0.08, 0.06, 0.06], np.float32))
  low = _cov(np.maximum(np.abs(Y - y_lo - 0.3 * lw) - 0.3 * lw, np.abs(Xm - ex) - ew), ppu)
  cv.paint(sl, low * 0.5, skin * 0.55)
  cf = _t(g["crowsfeet_alpha"])
  for dy in (-0.025, 0.0, 0.025):
    d = _segment_sd(Xm, Y, ex + ew + 0.02, _t(np.full(T, ig.eye_y)) + dy * 0.4,
                    ex + ew + 0.06, _t(np.full(T, ig.eye_y)) + dy * 1.6, 0.45 * lw)
    cv.paint(sl, _cov(d, ppu) * cf, dark)

  # Brows: thick bands along a quadratic centre line from the inner to the outer end.
  bxi, bxo = _t(g["brow_xi"]), _t(g["brow_xo"])
  byi, byo, arch = _t(g["brow_yi"]), _t(g["brow_yo"]), _t(g["brow_arch"])
  sl, X, Y = cv.window(-ex - 0.2, ig.eye_y - 0.36, ex + 0.2, ig.eye_y - 0.02)
  Xm = np.abs(X - eshift)
  tb = (Xm - bxi) / (bxo - bxi)
  yc = byi + (byo - byi) * tb - arch * 4.0 * tb * (1.0 - tb)
  # Slope-corrected vertical distance to the centre line; thickness tapers to the outer end.
  slope = (byo - byi) / (bxo - bxi) + arch * 4.0 * (2 * tb - 1) / (bxo - bxi)
  half = 0.5 * ig.brow_thick * (1.05 - 0.45 * np.clip(tb, 0, 1))
  d_line = np.abs(Y - yc) / np.sqrt(1 + slope ** 2) - half
  d_ends = np.maximum(-tb, tb - 1.0) * (bxo - bxi)
  cv.paint(sl, _cov(np.maximum(d_line, d_ends), ppu), ig.brow)

  # Nasolabial folds and the smirk dimple.
  mx = _t(g["mouth_x"])
  sl, X, Y = cv.window(-0.45, ig.eye_y + 0.05, 0.45, g["mouth_y"] + 0.25)
  for s_idx, sgn in ((0, -1.0), (1, 1.0)):
    fa = _t(g["fold_alpha_right" if s_idx else "fold_alpha"])
    x0 = nx + sgn * (nw + 0.03)
    y0 = tip - 0.005
    x2 = mx + sgn * (_t(g["corner_x"][:, s_idx]) + 0.04)
    y2 = _t(g["corner_y"][:, s_idx]) + 0.035
    x1 = 0.5 * (x0 + x2) + sgn * 0.02
    y1 = 0.5 * (y0 + y2)
    d = np.minimum(_segment_sd(X, Y, x0, y0, x1, y1, 0.45 * lw),
                   _segment_sd(X, Y, x1, y1, x2, y2, 0.45 * lw))
    cv.paint(sl, _cov(d, ppu) * fa, skin * 0.6)
  xr = mx + _t(g["corner_x"][:, 1])
  yr = _t(g["corner_y"][:, 1])
  d = _segment_sd(X, Y, xr + 0.025, yr - 0.03, xr + 0.035, yr + 0.02, 0.5 * lw)
  cv.paint(sl, _cov(d, ppu) * _t(g["dimple_alpha"]), dark)

  # Mouth: lips (outer contours), interior (inner contours, >= 1 px gap), teeth; chin line.
  p = 1.0 - 0.5 * g["mouth_round"]
  gap = max(0.012, 1.0 / ppu)
  yli_eff = np.maximum(g["lip_li"], g["lip_ui"] + gap)
  ylb = yli_eff + g["lip_th_l"]
  sl, X, Y = cv.window(g["mouth_x"] - g["corner_x"][:, 0] - 0.02,
                       np.minimum(g["lip_ut"], g["corner_y"].min(1)) - 0.03,
                       g["mouth_x"] + g["corner_x"][:, 1] + 0.02,
                       np.maximum(ylb, g["corner_y"].max(1)) + 0.1)
  y_top, tpar = _mouth_contour(X, g, g["lip_ut"], 0.85 * p)
  y_bot, _ = _mouth_contour(X, g, ylb, 0.85 * p)
  lips = _cov(np.maximum(y_top - Y, Y - y_bot), ppu)
  cv.paint(sl, lips, ig.lip)
  y_in_top, _ = _mouth_contour(X, g, g["lip_ui"], p)
  y_in_bot, _ = _mouth_contour(X, g, yli_eff, p)
  inner = _cov(np.maximum(y_in_top - Y, Y - y_in_bot), ppu)
  # The interior band is never thinner than `gap` (one pixel); below that opening it fades
  # in with opacity opening/gap, so small openings stay visible in proportion at 32x32.
  inner_alpha = _t(np.clip((g["lip_li"] - g["lip_ui"]) / gap, 0, 1))
  cv.paint(sl, inner * inner_alpha, np.array([0.22, 0.06, 0.07], np.float32))
  edge_t = np.minimum(tpar, 1 - tpar)
  # Teeth show only where the mouth is open beyond the closed-lip line.
  shown = _t(np.clip((g["lip_li"] - g["lip_ui"] - gap) / 0.02, 0, 1))
  inner_open = inner * shown
  teeth_up = _cov(np.maximum(Y - (_t(g["teeth_top"]) + 0.035), 0.08 - edge_t), ppu) * inner_open
  cv.paint(sl, teeth_up, np.array([0.93, 0.92, 0.86], np.float32))
  teeth_lo = _cov(np.maximum(_t(g["lower_teeth"]) - Y, 0.15 - edge_t), ppu) * inner_open
  cv.paint(sl, teeth_lo * 0.8, np.array([0.88, 0.86, 0.80], np.float32))
  chin_y = _t(ylb) + 0.06
  d = np.maximum(np.abs(Y - chin_y + 0.8 * (X - mx) ** 2) - 0.5 * lw, np.abs(X - mx) - 0.05)
  cv.paint(sl, _cov(d, ppu) * _t(g["chin_alpha"]), dark)

  # Hair in front: the hair cap above the hairline (over the forehead).
  sl, X, Y = cv.window(-a - vol - 0.1, -bt - vol - 0.2, a + vol + 0.1, 0.1)
  cap = _cov(_ellipse_sd(X, Y, 0.0, -0.22, a + vol, 0.5 + vol), ppu)
  hl_y = ig.hairline + 0.5 * (X - ig.hair_part) ** 2 - 0.05 * np.sign(X - ig.hair_part) \
      * ig.hair_part
  cap = cap * _cov(Y - hl_y, ppu)
  cv.paint(sl, cap, ig.hair)
  part = _cov(_segment_sd(X, Y, ig.hair_part, -bt - vol, ig.hair_part, ig.hairline - 0.03,
                          0.4 * lw), ppu) * cap
  cv.paint(sl, part * 0.5, ig.hair * 0.6)

  frames = np.clip(np.rint(cv.img.transpose(1, 2, 3, 0) * 255.0), 0, 255).astype(np.uint8)
  mask = _face_mask(cv, ig)
  lms = _landmarks(cv, ig, g, p)
  return {"frames": frames, "landmarks": lms, "face_mask": mask}


def _face_mask(cv: _Canvas, ig: IdentityGeometry) -> np.ndarray:
  """(T, S, S) uint8 {0,1}: face ellipse at full jaw extension, from above the brows down.

  Independent of expression and speech (covers their full range), follows the head pose.
  """
  bmax = ig.face_b + 0.45 * (0.13 + 0.15) + 0.04
  top = ig.eye_y - ig.brow_gap - 0.30  # above the highest forehead line (full AU1+2)
  yb = np.where(cv.Y > 0, cv.Y / bmax, cv.Y / ig.face_b)
  taper = 1.0 - ig.jaw_taper * np.clip(yb, 0, 1) ** 2
  d = np.maximum(_ellipse_sd(cv.X / taper, cv.Y, 0.0, 0.0, ig.face_a + 0.02,
                             np.where(cv.Y > 0, bmax, ig.face_b)), top - cv.Y)
  return (d < 0).astype(np.uint8)


def lower_face_mask(face_mask_arr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """DiffTalk's lower-face mask: the face mask below the line through the nose tip.

  The line passes through landmark 30 (nose tip) parallel to the eye line (36 -> 45), so it
  follows the head roll. face_mask_arr: (T, S, S) or (S, S) uint8; landmarks: (T, 68, 2) or
  (68, 2) pixels. Returns uint8 {0,1} of the mask's shape.
  """
  m = np.asarray(face_mask_arr)
  lm = np.asarray(landmarks, np.float32)
  single = m.ndim == 2
  if single:
    m, lm = m[None], lm[None]
  S_h, S_w = m.shape[1:3]
  ex = lm[:, 45] - lm[:, 36]
  ex = ex / (np.linalg.norm(ex, axis=-1, keepdims=True) + 1e-6)
  nrm = np.stack([-ex[:, 1], ex[:, 0]], -1)  # points down the face
  yy, xx = np.meshgrid(np.arange(S_h, dtype=np.float32), np.arange(S_w, dtype=np.float32),
                       indexing="ij")
  side = (xx[None] - lm[:, 30, 0, None, None]) * nrm[:, 0, None, None] \
      + (yy[None] - lm[:, 30, 1, None, None]) * nrm[:, 1, None, None]
  out = (m.astype(bool) & (side >= 0)).astype(np.uint8)
  return out[0] if single else out


def _landmarks(cv: _Canvas, ig: IdentityGeometry, g: dict, p: np.ndarray) -> np.ndarray:
  """68 iBUG landmarks (T, 68, 2) float32 in pixels."""
  T = p.shape[0]
  pts_x = np.zeros((T, NUM_LANDMARKS), np.float32)
  pts_y = np.zeros((T, NUM_LANDMARKS), np.float32)
  # 0-16 jaw contour, image left -> chin -> image right.
  psi0 = -0.12
  psi = psi0 + (np.pi - 2 * psi0) * np.arange(17, dtype=np.float32) / 16
  blow = g["face_b_low"][:, None]
  sy = np.sin(psi)[None, :]
  y = np.where(sy > 0, sy * blow, sy * ig.face_b)
  yb = np.where(sy > 0, sy, 0.0)
  taper = 1.0 - ig.jaw_taper * yb ** 2
  pts_x[:, 0:17] = -np.cos(psi)[None, :] * ig.face_a * taper
  pts_y[:, 0:17] = y
  # 17-21 image-left brow (outer -> inner), 22-26 image-right brow (inner -> outer).
  tb = np.linspace(0.0, 1.0, 5, dtype=np.float32)[None, :]
  bx = g["brow_xi"][:, None] + (g["brow_xo"] - g["brow_xi"])[:, None] * tb
  byc = g["brow_yi"][:, None] + (g["brow_yo"] - g["brow_yi"])[:, None] * tb \
      - g["brow_arch"][:, None] * 4 * tb * (1 - tb)
  sh = g["eye_cx_shift"][:, None]
  pts_x[:, 17:22] = sh - bx[:, ::-1]
  pts_y[:, 17:22] = byc[:, ::-1]
  pts_x[:, 22:27] = sh + bx
  pts_y[:, 22:27] = byc
  # 27-30 nose bridge (top -> tip), 31-35 nostril base (left -> right).
  nx = g["nose_x"][:, None]
  pts_x[:, 27:31] = nx
  pts_y[:, 27:31] = ig.eye_y + (g["nose_tip_y"][:, None] - ig.eye_y) * \
      np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32)[None, :]
  nw = g["nostril_w"][:, None]
  pts_x[:, 31:36] = nx + nw * np.array([-1.0, -0.5, 0.0, 0.5, 1.0], np.float32)[None, :]
  pts_y[:, 31:36] = g["nose_tip_y"][:, None] + np.array([0.012, 0.022, 0.026, 0.022, 0.012],
                                                       np.float32)[None, :]
  # 36-41 image-left eye, 42-47 image-right eye (iBUG order).
  ex, ew = ig.eye_x, g["eye_w"][:, None]
  hu, hl = g["eye_hu"][:, None], g["eye_hl"][:, None]
  k = 1.0 - (1.0 / 3.0) ** 2

  def eye_pts(sign, order):
    # order: x offsets in units of ew for [corner, upper, upper, corner, lower, lower]
    offs = np.array(order, np.float32)[None, :]
    xs = sh + sign * (ex + offs * ew)
    ys = np.concatenate([np.zeros((T, 1)), -hu * k, -hu * k, np.zeros((T, 1)),
                         hl * k, hl * k], 1) + ig.eye_y
    return xs, ys

  pts_x[:, 36:42], pts_y[:, 36:42] = eye_pts(-1.0, [1, 1 / 3, -1 / 3, -1, -1 / 3, 1 / 3])
  pts_x[:, 42:48], pts_y[:, 42:48] = eye_pts(1.0, [-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3])
  # 48-59 outer lip, 60-67 inner lip.
  gap_y = g["lip_li"]
  ylb = np.maximum(g["lip_li"], g["lip_ui"] + max(0.012, 1.0 / cv.ppu)) + g["lip_th_l"]
  t_up = [0.0, 0.17, 0.34, 0.5, 0.66, 0.83, 1.0]
  x, y = _mouth_contour_points(g, g["lip_ut"], 0.85 * p, t_up)
  pts_x[:, 48:55], pts_y[:, 48:55] = x, y
  x, y = _mouth_contour_points(g, ylb, 0.85 * p, [0.83, 0.66, 0.5, 0.34, 0.17])
  pts_x[:, 55:60], pts_y[:, 55:60] = x, y
  x, y = _mouth_contour_points(g, g["lip_ui"], p, [0.0, 0.25, 0.5, 0.75, 1.0])
  pts_x[:, 60:65], pts_y[:, 60:65] = x, y
  x, y = _mouth_contour_points(g, gap_y, p, [0.75, 0.5, 0.25])
  pts_x[:, 65:68], pts_y[:, 65:68] = x, y
  px, py = cv.to_pixels(pts_x, pts_y)
  return np.stack([px, py], -1).astype(np.float32)
