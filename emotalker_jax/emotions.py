"""The 8 emotions (MEAD's order) and parsing of explicit intensity vectors."""

from __future__ import annotations

import numpy as np

EMOTIONS: tuple[str, ...] = (
  "neutral",
  "angry",
  "contempt",
  "disgusted",
  "fear",
  "happy",
  "sad",
  "surprised",
)
NUM_EMOTIONS = len(EMOTIONS)
EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}


def parse_emotion_spec(spec: str) -> np.ndarray:
  """Parses ``"happy=0.7,surprised=0.3"`` into a float32 vector of shape (8,), in [0, 1].

  A bare name (``"happy"``) means intensity 1. Raises ValueError naming the bad part.
  """
  if not spec or not spec.strip():
    raise ValueError("--emotion is empty: give e.g. --emotion happy=0.7,surprised=0.3")
  vec = np.zeros(NUM_EMOTIONS, np.float32)
  for part in spec.split(","):
    part = part.strip()
    if not part:
      continue
    name, _, value = part.partition("=")
    name = name.strip().lower()
    if name not in EMOTION_INDEX:
      raise ValueError(
        f"--emotion: unknown emotion {name!r} in {spec!r}; choose from {', '.join(EMOTIONS)}"
      )
    try:
      x = float(value) if value.strip() else 1.0
    except ValueError:
      raise ValueError(f"--emotion: intensity {value!r} for {name!r} is not a number") from None
    if not 0.0 <= x <= 1.0 or not np.isfinite(x):
      raise ValueError(
        f"--emotion: intensity {x} for {name!r} is outside [0, 1]; use e.g. {name}=0.5"
      )
    vec[EMOTION_INDEX[name]] = x
  return vec


def intensities_to_dict(vec) -> dict[str, float]:
  """(8,) array -> {"neutral": f, ...} in MEAD order (the `emotalker emotion` JSON)."""
  vec = np.asarray(vec, np.float64).reshape(-1)
  if vec.shape[0] != NUM_EMOTIONS:
    raise ValueError(f"expected {NUM_EMOTIONS} intensities, got shape {vec.shape}")
  return {name: round(float(v), 4) for name, v in zip(EMOTIONS, vec)}
