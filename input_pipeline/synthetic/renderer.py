"""Procedural talking-face renderer with ground truth (numpy, vectorised over frames).

``render`` draws the face of ``face_model`` (identity, expression controls, per-frame
``Motion``) from its per-frame geometry in face units (``face_model.face_geometry``). Image
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

import numpy as np

from input_pipeline.synthetic import challenging
from input_pipeline.synthetic.face_model import (
  NUM_CONTROLS,
  IdentityGeometry,
  Motion,
  face_geometry,
)

FACE_CENTRE = (0.0, 0.06)  # image units; the face ellipse centre at rest pose
FACE_ZOOM = 1.12  # image units per face unit
NUM_LANDMARKS = 68  # iBUG 300-W / dlib layout (see docs/SYNTHETIC.md)


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
    u = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
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
  y = yl[:, None] + (yr - yl)[:, None] * ts + (center_y - 0.5 * (yl + yr))[:, None] * shp
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
  ig = identity if isinstance(identity, IdentityGeometry) else challenging.geometry(identity)
  T = motion.mouth_open.shape[0]
  controls = np.asarray(controls, np.float32)
  if controls.ndim == 1:
    controls = np.broadcast_to(controls, (T, controls.shape[0]))
  if controls.shape != (T, NUM_CONTROLS):
    raise ValueError(f"controls must be ({T}, {NUM_CONTROLS}), got {controls.shape}")
  g = face_geometry(ig, controls, motion)
  cv = _Canvas(image_size, np.asarray(motion.pose, np.float32))
  ppu = cv.ppu
  lw = max(0.016, 1.0 / ppu)  # full width of drawn lines (face units): at least 1 pixel
  a, bt = ig.face_a, ig.face_b
  skin = ig.skin

  # Background: vertical gradient in image coordinates (does not move with the head).
  ramp = np.linspace(0.0, 1.0, image_size, dtype=np.float32)[None, None, :, None]
  cv.img[:] = (
    ig.bg_top[:, None, None, None] + (ig.bg_bottom - ig.bg_top)[:, None, None, None] * ramp
  )

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
  challenging.paint_beard(cv, ig, g, sl, Y, face)

  # Cheeks (highlight + fold below it, rises with cheek_raise).
  cy = _t(g["cheek_y"])
  sl, X, Y = cv.window(-a, -0.2, a, 0.4)
  ca = _t(g["cheek_alpha"])
  cx = ig.eye_x + 0.04
  ch = _cov(_ellipse_sd(np.abs(X - _t(g["mouth_x"]) * 0.5), Y, cx, cy, 0.085, 0.06), ppu)
  cheek_col = np.clip(skin * np.array([1.08, 0.92, 0.92]) + 0.05, 0, 1)
  cv.paint(sl, ch * ca, cheek_col)
  fold = (
    _cov(
      np.abs(_ellipse_sd(np.abs(X - _t(g["mouth_x"]) * 0.5), Y, cx, cy, 0.085, 0.06)) - 0.5 * lw,
      ppu,
    )
    * (Y > cy + 0.02)
    * _t(np.clip(g["cheek_alpha"] - 0.1, 0, 1))
  )
  cv.paint(sl, fold, skin * 0.62)

  # Forehead lines (AU1+2), above the brows; shorter (central) when the brows are drawn in.
  dark = np.clip(skin * 0.45 - 0.02, 0, 1)
  fa = _t(g["forehead_alpha"])
  byi_mean = 0.5 * (g["brow_yi"] + g["brow_yo"])
  sl, X, Y = cv.window(-0.3, -bt, 0.3, 0.0)
  for k, off in enumerate((0.075, 0.13)):
    yc = _t(byi_mean - off) + 0.5 * X**2
    d = np.maximum(np.abs(Y - yc) - 0.5 * lw, np.abs(X) - (_t(g["forehead_half_len"]) - 0.04 * k))
    cv.paint(sl, _cov(d, ppu) * fa, dark)

  # Glabellar lines (AU4): short vertical lines between the brows.
  sl, X, Y = cv.window(-0.1, -0.4, 0.1, 0.0)
  by_in = _t(g["brow_yi"])
  d = np.maximum(
    np.abs(np.abs(X - _t(g["eye_cx_shift"])) - 0.022) - 0.5 * lw,
    np.abs(Y - (by_in + 0.005)) - 0.035,
  )
  cv.paint(sl, _cov(d, ppu) * _t(g["glabella_alpha"]), dark)

  # Nose: bridge shading, tip, nostrils; AU9 wrinkle lines across the bridge.
  nx = _t(g["nose_x"])
  tip = _t(g["nose_tip_y"])
  nw = _t(g["nostril_w"])
  sl, X, Y = cv.window(-0.2, ig.eye_y - 0.05, 0.2, g["nose_tip_y"] + 0.08)
  bridge = _cov(
    _segment_sd(
      X, Y, nx + 0.035, _t(np.full(T, ig.eye_y + 0.02)), nx + 0.045, tip - 0.03, 0.5 * lw
    ),
    ppu,
  )
  cv.paint(sl, bridge * 0.45, skin * 0.7)
  tip_c = _cov(_ellipse_sd(X, Y, nx, tip - 0.005, 0.8 * nw, 0.035), ppu)
  cv.paint(sl, tip_c * 0.35, skin * 0.8)
  nost = _cov(_ellipse_sd(np.abs(X - nx), Y, 0.55 * nw, tip + 0.012, 0.022, 0.011), ppu)
  cv.paint(sl, nost * 0.85, skin * 0.35)
  wing = _cov(np.abs(_ellipse_sd(np.abs(X - nx), Y, nw, tip, 0.03, 0.03)) - 0.4 * lw, ppu) * (
    Y > tip - 0.02
  )
  cv.paint(sl, wing * 0.6, skin * 0.6)
  wa = _t(g["nose_wrinkle_alpha"])
  for off in (0.03, 0.065):
    d = np.maximum(
      np.abs(Y - (ig.eye_y + off) - 0.3 * (X - nx) ** 2) - 0.5 * lw, np.abs(X - nx) - 0.055
    )
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
  lash = _cov(np.maximum(np.abs(Y - y_up + 0.3 * lw) - 0.6 * lw, np.abs(Xm - ex) - ew - 0.01), ppu)
  cv.paint(sl, lash, np.array([0.08, 0.06, 0.06], np.float32))
  low = _cov(np.maximum(np.abs(Y - y_lo - 0.3 * lw) - 0.3 * lw, np.abs(Xm - ex) - ew), ppu)
  cv.paint(sl, low * 0.5, skin * 0.55)
  cf = _t(g["crowsfeet_alpha"])
  for dy in (-0.025, 0.0, 0.025):
    d = _segment_sd(
      Xm,
      Y,
      ex + ew + 0.02,
      _t(np.full(T, ig.eye_y)) + dy * 0.4,
      ex + ew + 0.06,
      _t(np.full(T, ig.eye_y)) + dy * 1.6,
      0.45 * lw,
    )
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
  d_line = np.abs(Y - yc) / np.sqrt(1 + slope**2) - half
  d_ends = np.maximum(-tb, tb - 1.0) * (bxo - bxi)
  cv.paint(sl, _cov(np.maximum(d_line, d_ends), ppu), ig.brow)
  challenging.paint_glasses(cv, ig, g, lw, _cov, _t)

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
    d = np.minimum(
      _segment_sd(X, Y, x0, y0, x1, y1, 0.45 * lw), _segment_sd(X, Y, x1, y1, x2, y2, 0.45 * lw)
    )
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
  sl, X, Y = cv.window(
    g["mouth_x"] - g["corner_x"][:, 0] - 0.02,
    np.minimum(g["lip_ut"], g["corner_y"].min(1)) - 0.03,
    g["mouth_x"] + g["corner_x"][:, 1] + 0.02,
    np.maximum(ylb, g["corner_y"].max(1)) + 0.1,
  )
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
  hl_y = (
    ig.hairline + 0.5 * (X - ig.hair_part) ** 2 - 0.05 * np.sign(X - ig.hair_part) * ig.hair_part
  )
  cap = cap * _cov(Y - hl_y, ppu)
  cv.paint(sl, cap, ig.hair)
  part = (
    _cov(
      _segment_sd(X, Y, ig.hair_part, -bt - vol, ig.hair_part, ig.hairline - 0.03, 0.4 * lw), ppu
    )
    * cap
  )
  cv.paint(sl, part * 0.5, ig.hair * 0.6)
  challenging.apply_lighting(cv, ig)

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
  d = np.maximum(
    _ellipse_sd(
      cv.X / taper, cv.Y, 0.0, 0.0, ig.face_a + 0.02, np.where(cv.Y > 0, bmax, ig.face_b)
    ),
    top - cv.Y,
  )
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
  yy, xx = np.meshgrid(
    np.arange(S_h, dtype=np.float32), np.arange(S_w, dtype=np.float32), indexing="ij"
  )
  side = (xx[None] - lm[:, 30, 0, None, None]) * nrm[:, 0, None, None] + (
    yy[None] - lm[:, 30, 1, None, None]
  ) * nrm[:, 1, None, None]
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
  taper = 1.0 - ig.jaw_taper * yb**2
  pts_x[:, 0:17] = -np.cos(psi)[None, :] * ig.face_a * taper
  pts_y[:, 0:17] = y
  # 17-21 image-left brow (outer -> inner), 22-26 image-right brow (inner -> outer).
  tb = np.linspace(0.0, 1.0, 5, dtype=np.float32)[None, :]
  bx = g["brow_xi"][:, None] + (g["brow_xo"] - g["brow_xi"])[:, None] * tb
  byc = (
    g["brow_yi"][:, None]
    + (g["brow_yo"] - g["brow_yi"])[:, None] * tb
    - g["brow_arch"][:, None] * 4 * tb * (1 - tb)
  )
  sh = g["eye_cx_shift"][:, None]
  pts_x[:, 17:22] = sh - bx[:, ::-1]
  pts_y[:, 17:22] = byc[:, ::-1]
  pts_x[:, 22:27] = sh + bx
  pts_y[:, 22:27] = byc
  # 27-30 nose bridge (top -> tip), 31-35 nostril base (left -> right).
  nx = g["nose_x"][:, None]
  pts_x[:, 27:31] = nx
  pts_y[:, 27:31] = (
    ig.eye_y
    + (g["nose_tip_y"][:, None] - ig.eye_y)
    * np.array([0.0, 1 / 3, 2 / 3, 1.0], np.float32)[None, :]
  )
  nw = g["nostril_w"][:, None]
  pts_x[:, 31:36] = nx + nw * np.array([-1.0, -0.5, 0.0, 0.5, 1.0], np.float32)[None, :]
  pts_y[:, 31:36] = (
    g["nose_tip_y"][:, None] + np.array([0.012, 0.022, 0.026, 0.022, 0.012], np.float32)[None, :]
  )
  # 36-41 image-left eye, 42-47 image-right eye (iBUG order).
  ex, ew = ig.eye_x, g["eye_w"][:, None]
  hu, hl = g["eye_hu"][:, None], g["eye_hl"][:, None]
  k = 1.0 - (1.0 / 3.0) ** 2

  def eye_pts(sign, order):
    # order: x offsets in units of ew for [corner, upper, upper, corner, lower, lower]
    offs = np.array(order, np.float32)[None, :]
    xs = sh + sign * (ex + offs * ew)
    ys = (
      np.concatenate([np.zeros((T, 1)), -hu * k, -hu * k, np.zeros((T, 1)), hl * k, hl * k], 1)
      + ig.eye_y
    )
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
