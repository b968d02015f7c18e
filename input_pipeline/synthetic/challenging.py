"""Challenging identities: portraits outside the benchmark's training distribution.

The training and test identities of ``synthetic_talk`` are all drawn from the same
26-parameter distribution (``face_model.sample_identity``). A user's portraits are not:
they have colours, face shapes, accessories and lighting the generator never saw. The
``challenging`` evaluation splits model that with six factors, none of which occurs in any
training frame:

==============  ==============================================================================
factor          what is drawn
==============  ==============================================================================
skin            skin colour beyond both ends of the training line (paler than the lightest,
                darker than the darkest), with a green-grey or ruddy cast
hair            hair (and beard) in hues never used: blue, green, magenta, violet, white
face_shape      face half-width and half-height 8-14 % beyond the training ranges
glasses         spectacle rims and a bridge around both eyes (dark or coloured), tinted lenses
beard           a full beard over the jaw and chin, below the nose (lips drawn on top)
lighting        a side light (brightness ramp of +-30-45 % across the image) and a colour cast
==============  ==============================================================================

Each challenging identity gets 3 of the 6 factors (drawn per identity) on top of an
ordinary identity vector. Emotion, speech, motion, landmarks and the face mask are
rendered exactly as for the other splits, so every ground truth (labels, landmarks, mask,
the benchmark's own rendering of any emotion) exists as before.

The identity vector of a challenging identity is the ordinary u (26,) followed by
``NUM_CHALLENGE_PARAMS`` entries (``CHALLENGE_PARAM_NAMES``): ``geometry``
maps such a (26 + 14,) vector (and an ordinary one), and ``clips.render_clip`` goes
through it, so every re-rendering of a source works unchanged.

Splits (identity ids far above any benchmark size's, so clip ids never collide):
``challenging_dev`` ids 10000-10007 choose settings; ``challenging`` ids 10008-10015 are
reported.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

from input_pipeline.synthetic import face_model as fm

CHALLENGE_FACTORS = ("skin", "hair", "face_shape", "glasses", "beard", "lighting")
FACTORS_PER_IDENTITY = 3
CHALLENGE_PARAM_NAMES = (
  "skin_on",  # 1: skin colour outside the training line
  "skin_t",  # position on the light..dark line: < 0 paler, > 1 darker
  "skin_cast",  # 0: green-grey cast, 1: ruddy cast
  "hair_on",
  "hair_hue",  # HSV hue of the hair; the hues never used in training
  "shape_on",
  "shape_width",  # face half-width scale
  "shape_height",  # face half-height scale
  "glasses_on",
  "glasses_hue",  # < 0: black rims, else the rims' HSV hue
  "beard_on",
  "beard_density",  # beard opacity
  "light_on",
  "light_dir",  # brightness gain across the image, signed (+: brighter on the right)
)
NUM_CHALLENGE_PARAMS = len(CHALLENGE_PARAM_NAMES)
_Q = {n: i for i, n in enumerate(CHALLENGE_PARAM_NAMES)}
# Each factor's on/off entry among CHALLENGE_PARAM_NAMES.
FACTOR_SWITCHES = {
  "skin": "skin_on",
  "hair": "hair_on",
  "face_shape": "shape_on",
  "glasses": "glasses_on",
  "beard": "beard_on",
  "lighting": "light_on",
}

SPLITS = {"challenging_dev": range(10000, 10008), "challenging": range(10008, 10016)}
# Hair hues never produced by face_model's black..blond..auburn hair (HSV hue, value).
_HAIR_HUES = ((0.61, 0.75), (0.36, 0.6), (0.88, 0.8), (0.75, 0.6), (0.0, 0.0))  # last: white


@dataclasses.dataclass(frozen=True)
class ChallengeExtras:
  """What the renderer draws beyond an ordinary identity (colours RGB in [0, 1])."""

  glasses: np.ndarray | None  # (3,) rim colour, None: no glasses
  beard: np.ndarray | None  # (3,) beard colour, None: no beard
  beard_density: float
  light_gain: float  # 0: no side light
  light_cast: np.ndarray  # (3,) per-channel multiplier of the colour cast


def sample_challenging(identity_id: int, seed: int = 0) -> tuple[np.ndarray, tuple[str, ...]]:
  """(u (26 + NUM_CHALLENGE_PARAMS,) float32, the identity's factors) of one challenging
  identity; deterministic in (identity_id, seed)."""
  base = fm.sample_identity(identity_id, seed)
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC4A, int(identity_id)]))
  factors = tuple(
    sorted(rng.choice(len(CHALLENGE_FACTORS), FACTORS_PER_IDENTITY, replace=False).tolist())
  )
  q = np.zeros(NUM_CHALLENGE_PARAMS, np.float32)
  side = lambda: 1.0 if rng.random() < 0.5 else -1.0  # noqa: E731
  for f in factors:
    name = CHALLENGE_FACTORS[f]
    if name == "skin":
      q[_Q["skin_on"]] = 1
      q[_Q["skin_t"]] = -0.3 if side() < 0 else 1.12
      q[_Q["skin_cast"]] = float(rng.random() < 0.5)
    elif name == "hair":
      q[_Q["hair_on"]] = 1
      q[_Q["hair_hue"]] = float(rng.integers(len(_HAIR_HUES)))
    elif name == "face_shape":
      q[_Q["shape_on"]] = 1
      q[_Q["shape_width"]] = 1.0 + side() * rng.uniform(0.08, 0.14)
      q[_Q["shape_height"]] = 1.0 + side() * rng.uniform(0.08, 0.14)
    elif name == "glasses":
      q[_Q["glasses_on"]] = 1
      q[_Q["glasses_hue"]] = -1.0 if rng.random() < 0.5 else rng.random()
    elif name == "beard":
      q[_Q["beard_on"]] = 1
      q[_Q["beard_density"]] = rng.uniform(0.6, 0.85)
    else:
      q[_Q["light_on"]] = 1
      q[_Q["light_dir"]] = side() * rng.uniform(0.3, 0.45)
  return np.concatenate([base, q]).astype(np.float32), tuple(CHALLENGE_FACTORS[f] for f in factors)


def without_factors(u, factors) -> np.ndarray:
  """A copy of the challenging identity vector u (26 + NUM_CHALLENGE_PARAMS,) with the
  named factors switched off (the rest of the face unchanged)."""
  q = np.array(u, np.float32, copy=True)
  for f in factors:
    q[fm.NUM_IDENTITY_PARAMS + _Q[FACTOR_SWITCHES[f]]] = 0.0
  return q


def split_identities(split: str) -> list[int]:
  """The identity ids of a challenging split ('challenging_dev' | 'challenging')."""
  if split not in SPLITS:
    raise ValueError(f"unknown challenging split {split!r}: use one of {sorted(SPLITS)}")
  return list(SPLITS[split])


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(float(h) % 1.0, float(s), float(v)), np.float32)


def geometry(u) -> fm.IdentityGeometry:
  """``IdentityGeometry`` of any identity vector: an ordinary (26,) one
  (``face_model.identity_geometry``) or a challenging (26 + NUM_CHALLENGE_PARAMS,) one."""
  u = np.asarray(u, np.float32).reshape(-1)
  if u.shape[0] == fm.NUM_IDENTITY_PARAMS + NUM_CHALLENGE_PARAMS:
    return challenging_geometry(u)
  return fm.identity_geometry(u)


def challenging_geometry(u) -> fm.IdentityGeometry:
  """``face_model.IdentityGeometry`` of a (26 + NUM_CHALLENGE_PARAMS,) vector: the ordinary
  geometry of u[:26] with the challenge factors of u[26:] applied."""
  u = np.asarray(u, np.float32).reshape(-1)
  n = fm.NUM_IDENTITY_PARAMS
  if u.shape[0] != n + NUM_CHALLENGE_PARAMS:
    raise ValueError(
      f"a challenging identity vector has {n + NUM_CHALLENGE_PARAMS} entries, got {u.shape}"
    )
  ig = fm.identity_geometry(u[:n])
  q = {k: float(u[n + i]) for k, i in _Q.items()}
  repl: dict = {}
  skin = ig.skin
  if q["skin_on"]:
    # Linear in the light..dark line (not u^1.4 as in training) so it extends past both ends.
    skin = fm._SKIN_LIGHT + (fm._SKIN_DARK - fm._SKIN_LIGHT) * q["skin_t"]
    cast = np.array([-0.04, 0.03, 0.0] if q["skin_cast"] < 0.5 else [0.06, -0.03, -0.03])
    skin = np.clip(skin + cast, 0.03, 1.0).astype(np.float32)
    repl["skin"] = skin
    repl["lip"] = (skin * np.array([0.85, 0.62, 0.62])).astype(np.float32)
  hair = ig.hair
  if q["hair_on"]:
    h, v = _HAIR_HUES[int(q["hair_hue"])]
    hair = _hsv(h, 0.7, v) if v > 0 else np.array([0.93, 0.93, 0.95], np.float32)
    repl["hair"] = hair
  if "skin" in repl or "hair" in repl:
    # The training rule (brows clearly darker than the skin) keeps the expression cue.
    repl["brow"] = (0.55 * skin * 0.35 + 0.45 * np.minimum(hair, skin * 0.6)).astype(np.float32)
  if q["shape_on"]:
    repl["face_a"] = ig.face_a * q["shape_width"]
    repl["face_b"] = ig.face_b * q["shape_height"]
  glasses = None
  if q["glasses_on"]:
    hue = q["glasses_hue"]
    glasses = np.array([0.06, 0.05, 0.05], np.float32) if hue < 0 else _hsv(hue, 0.8, 0.55)
  cast = np.ones(3, np.float32)
  if q["light_on"]:
    cast = np.array([1.08, 1.0, 0.86] if q["light_dir"] > 0 else [0.88, 0.97, 1.1], np.float32)
  repl["extras"] = ChallengeExtras(
    glasses=glasses,
    beard=(hair * 0.8).astype(np.float32) if q["beard_on"] else None,
    beard_density=q["beard_density"],
    light_gain=q["light_dir"] if q["light_on"] else 0.0,
    light_cast=cast,
  )
  return dataclasses.replace(ig, **repl)


# ---- drawing (called by renderer.render when IdentityGeometry.extras is set) -------------


def paint_beard(cv, ig, g, sl, Y, face) -> None:
  """A beard over the face region below the nose (``face``: the face's coverage (T, h, w)
  over window ``sl``, ``Y`` its face-unit rows); the mouth is painted over it later."""
  ex = ig.extras
  if ex is None or ex.beard is None:
    return
  top = g["nose_tip_y"][:, None, None] + 0.04
  ramp = np.clip((Y - top) / 0.05, 0.0, 1.0)
  cv.paint(sl, face * ramp * np.float32(ex.beard_density), ex.beard)


def paint_glasses(cv, ig, g, lw: float, cov, t) -> None:
  """Spectacles: a rounded rim around each eye (85 % opaque), a bridge and short temples,
  lenses tinted by the rim colour at 12 %. ``cov`` / ``t``: the renderer's coverage and
  (T,) -> (T, 1, 1) helpers."""
  ex = ig.extras
  if ex is None or ex.glasses is None:
    return
  sl, X, Y = cv.window(-ig.face_a, ig.eye_y - 0.14, ig.face_a, ig.eye_y + 0.11)
  cx = np.abs(X - t(g["eye_cx_shift"]))
  ax, ay = 0.125, 0.09
  # Superellipse-like rim: the p-norm distance of the eye-centred box (p = 4).
  r = ((np.abs(cx - ig.eye_x) / ax) ** 4 + (np.abs(Y - ig.eye_y + 0.005) / ay) ** 4) ** 0.25
  rim_w = max(lw, 0.022)
  rim = cov((np.abs(r - 1.0) * min(ax, ay)) - 0.5 * rim_w, cv.ppu)
  lens = cov((r - 1.0) * min(ax, ay), cv.ppu)
  bridge = cov(
    np.maximum(np.abs(Y - ig.eye_y + 0.03) - 0.5 * rim_w, cx - (ig.eye_x - ax) - 0.01), cv.ppu
  )
  temple = cov(
    np.maximum(
      np.abs(Y - ig.eye_y + 0.03) - 0.5 * rim_w,
      np.maximum(ig.eye_x + ax - 0.01 - cx, cx - ig.face_a + 0.01),
    ),
    cv.ppu,
  )
  cv.paint(sl, lens * 0.12, ex.glasses)
  cv.paint(sl, 0.85 * np.maximum(rim, np.maximum(bridge, temple)), ex.glasses)


def apply_lighting(cv, ig) -> None:
  """A side light over the whole image: brightness x (1 + gain * x) with x in [-1, 1]
  across the image, and the light's colour cast."""
  ex = ig.extras
  if ex is None or (ex.light_gain == 0.0 and np.all(ex.light_cast == 1.0)):
    return
  S = cv.S
  x = (np.arange(S, dtype=np.float32) + 0.5) * (2.0 / S) - 1.0
  gain = 1.0 + np.float32(ex.light_gain) * x  # (S,) over image columns
  cv.img *= gain[None, None, None, :] * np.asarray(ex.light_cast, np.float32)[:, None, None, None]
  np.clip(cv.img, 0.0, 1.0, out=cv.img)
