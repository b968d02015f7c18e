"""MEAD and CREMA-D labels -> the 8-emotion intensity vector (METHOD.md, "Notation").

The vector is float32 of shape (8,) in MEAD's order (``emotalker_jax.emotions.EMOTIONS``):
neutral, angry, contempt, disgusted, fear, happy, sad, surprised. A clip of one acted
emotion gets a one-hot vector scaled by its intensity:

* MEAD ``level_1 / level_2 / level_3`` -> 1/3, 2/3, 1.
* CREMA-D ``LO / MD / HI / XX`` -> 1/3, 2/3, 1, 2/3 (``XX`` = "unspecified").
  Emotion codes ANG DIS FEA HAP NEU SAD -> angry, disgusted, fear, happy, neutral, sad.

Neutral is not graded: MEAD records it at ``level_1`` only and CREMA-D at ``XX`` only,
so both map neutral to intensity ``NEUTRAL_INTENSITY`` (1.0) rather than 1/3 or 2/3. A
neutral clip is one whose vector is zero except for the neutral entry.

Identities and clip ids are stable integers derived from the file names (not from the
order in which files are found), so a user with a subset of the actors gets the same
ids as a user with all of them:

* MEAD actor ``M003`` -> 3, ``W009`` -> 1009 (men 0-999, women 1000-1999).
* CREMA-D actor ``1001`` -> 1001 (the dataset's own number).
"""

from __future__ import annotations

import re

import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, EMOTIONS, NUM_EMOTIONS

NEUTRAL_INTENSITY = 1.0

# ---- MEAD -----------------------------------------------------------------------------
MEAD_EMOTIONS: tuple[str, ...] = EMOTIONS  # MEAD's folder names are our names
MEAD_LEVELS = {1: 1.0 / 3.0, 2: 2.0 / 3.0, 3: 1.0}
MEAD_TEST_ACTORS: tuple[str, ...] = ("M003", "M030", "W009", "W015")
_MEAD_ACTOR_RE = re.compile(r"^([MW])(\d{3})$")

# ---- CREMA-D --------------------------------------------------------------------------
CREMA_EMOTIONS = {
  "ANG": "angry",
  "DIS": "disgusted",
  "FEA": "fear",
  "HAP": "happy",
  "NEU": "neutral",
  "SAD": "sad",
}
CREMA_LEVELS = {"LO": 1.0 / 3.0, "MD": 2.0 / 3.0, "HI": 1.0, "XX": 2.0 / 3.0}
CREMA_SENTENCES: tuple[str, ...] = (
  "IEO",
  "TIE",
  "IOM",
  "IWW",
  "TAI",
  "MTI",
  "IWL",
  "ITH",
  "DFA",
  "ITS",
  "TSI",
  "WSI",
)
# CREMA-D has 91 actors, 1001..1091. Its papers use random identity splits and publish
# no list, so ours is fixed and documented: the last 10 actor numbers are the test set.
CREMA_ACTORS = tuple(range(1001, 1092))
CREMA_TEST_ACTORS: tuple[int, ...] = tuple(range(1082, 1092))
_CREMA_STEM_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def intensity_vector(emotion: str, intensity: float) -> np.ndarray:
  """One-hot (8,) float32 vector with ``intensity`` at ``emotion`` (neutral: always 1.0)."""
  if emotion not in EMOTION_INDEX:
    raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
  if not 0.0 <= intensity <= 1.0:
    raise ValueError(f"intensity {intensity} for {emotion!r} is outside [0, 1]")
  vec = np.zeros(NUM_EMOTIONS, np.float32)
  vec[EMOTION_INDEX[emotion]] = NEUTRAL_INTENSITY if emotion == "neutral" else intensity
  return vec


def is_neutral(vec) -> bool:
  """True when an intensity vector (8,) has no emotion other than neutral."""
  vec = np.asarray(vec, np.float32).reshape(-1)
  return bool(vec[EMOTION_INDEX["neutral"]] > 0 and not np.any(vec[1:] > 0))


# ---- MEAD -----------------------------------------------------------------------------
def mead_emotion_vector(emotion: str, level: int | str) -> np.ndarray:
  """MEAD folder names (``"happy"``, ``"level_2"`` or 2) -> (8,) float32 intensity vector."""
  if isinstance(level, str):
    m = re.fullmatch(r"level_(\d+)", level)
    if not m:
      raise ValueError(f"MEAD level folder {level!r} is not level_1, level_2 or level_3")
    level = int(m.group(1))
  if level not in MEAD_LEVELS:
    raise ValueError(f"MEAD level {level} is not 1, 2 or 3")
  emotion = emotion.lower()
  if emotion not in MEAD_EMOTIONS:
    raise ValueError(f"MEAD emotion folder {emotion!r} is not one of {', '.join(MEAD_EMOTIONS)}")
  return intensity_vector(emotion, MEAD_LEVELS[level])


def mead_identity(actor: str) -> int:
  """MEAD actor name -> stable int id: ``M003`` -> 3, ``W009`` -> 1009."""
  m = _MEAD_ACTOR_RE.match(actor)
  if not m:
    raise ValueError(f"MEAD actor folder {actor!r} is not like M003 or W009")
  return (0 if m.group(1) == "M" else 1000) + int(m.group(2))


def is_mead_actor(name: str) -> bool:
  return bool(_MEAD_ACTOR_RE.match(name))


def mead_clip_id(actor: str, emotion: str, level: int, clip: int) -> int:
  """Stable int id of a MEAD clip: identity * 10^5 + emotion * 10^4 + level * 10^3 + clip."""
  if not 0 <= clip < 1000:
    raise ValueError(f"MEAD clip number {clip} is outside 000-999")
  return (
    mead_identity(actor) * 100_000
    + EMOTION_INDEX[emotion.lower()] * 10_000
    + int(level) * 1_000
    + int(clip)
  )


def mead_split(actor: str) -> str:
  """'test' for MEAD's held-out actors (M003, M030, W009, W015), else 'train'."""
  return "test" if actor in MEAD_TEST_ACTORS else "train"


# ---- CREMA-D --------------------------------------------------------------------------
def parse_crema_stem(stem: str) -> dict:
  """``"1001_DFA_ANG_XX"`` -> {actor: 1001, sentence: 'DFA', code: 'ANG', emotion: 'angry',
  level: 'XX', intensity: 2/3}. Raises ValueError on names outside CREMA-D's scheme."""
  m = _CREMA_STEM_RE.match(stem)
  if not m:
    raise ValueError(
      f"CREMA-D file name {stem!r} is not <actor>_<sentence>_<EMO>_<LVL> (e.g. 1001_DFA_ANG_XX)"
    )
  actor, sentence, code, level = int(m.group(1)), m.group(2), m.group(3), m.group(4)
  if code not in CREMA_EMOTIONS:
    raise ValueError(
      f"CREMA-D emotion code {code!r} in {stem!r} is not one of {', '.join(CREMA_EMOTIONS)}"
    )
  if level not in CREMA_LEVELS:
    raise ValueError(f"CREMA-D level {level!r} in {stem!r} is not one of {', '.join(CREMA_LEVELS)}")
  return {
    "actor": actor,
    "sentence": sentence,
    "code": code,
    "emotion": CREMA_EMOTIONS[code],
    "level": level,
    "intensity": CREMA_LEVELS[level],
  }


def crema_emotion_vector(code: str, level: str) -> np.ndarray:
  """CREMA-D codes (``"HAP"``, ``"HI"``) -> (8,) float32 intensity vector."""
  if code not in CREMA_EMOTIONS:
    raise ValueError(f"CREMA-D emotion code {code!r} is not one of {', '.join(CREMA_EMOTIONS)}")
  if level not in CREMA_LEVELS:
    raise ValueError(f"CREMA-D level {level!r} is not one of {', '.join(CREMA_LEVELS)}")
  return intensity_vector(CREMA_EMOTIONS[code], CREMA_LEVELS[level])


def crema_clip_id(stem: str) -> int:
  """Stable int id of a CREMA-D clip: actor * 10^4 + sentence * 100 + emotion * 10 + level."""
  p = parse_crema_stem(stem)
  sent = CREMA_SENTENCES.index(p["sentence"]) if p["sentence"] in CREMA_SENTENCES else 99
  return (
    p["actor"] * 10_000
    + sent * 100
    + list(CREMA_EMOTIONS).index(p["code"]) * 10
    + list(CREMA_LEVELS).index(p["level"])
  )


def crema_split(actor: int) -> str:
  """'test' for actors 1082-1091 (``CREMA_TEST_ACTORS``), else 'train'."""
  return "test" if int(actor) in CREMA_TEST_ACTORS else "train"
