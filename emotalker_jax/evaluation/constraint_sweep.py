"""The identity constraint's settings swept on held-out identities: identity kept against
emotion lost, for choosing the default (``emotalker eval --constraint-sweep``).

For every (strength lambda, m_face) the single-emotion conditions of ``evaluate`` are
generated for every source (8 prompts x ``frames`` frames each) and judged: emotion
accuracy and identity similarity to the portrait, each with a 95 % bootstrap interval
over (identity, prompt) units, and both *paired* against the unconstrained run on the
same units (``identity_gain``, ``emotion_change`` with their intervals). Strength 0 is the
constraint off, so it is one row whatever m_face is.

m_face is the constraint mask's value inside the face (eq. 6; ``sampler.latent_mask_from
_face_mask``): 0 constrains only outside the face (what the masked and reference frames
already carry), 1 pulls the whole face toward the inverted source trajectory.

``choose`` picks, on a development split, the setting with the largest identity gain
outside the noise whose emotion accuracy stays within ``max_emotion_drop`` of the
unconstrained run's (None: no setting gains outside the noise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import time

import numpy as np

from emotalker_jax.evaluation import evaluate as ev
from emotalker_jax.evaluation import metrics


def _row(strength: float, m_face: float, r: dict, base: dict | None, n_boot: int, seed: int):
  acc = np.asarray(r["units"]["emotion_accuracy"], np.float64)
  sim = np.asarray(r["units"]["identity_similarity"], np.float64)
  row = {
    "strength": float(strength),
    "m_face": float(m_face),
    "emotion_accuracy": float(acc.mean()),
    "emotion_accuracy_ci": metrics.bootstrap_ci(acc, n_boot=n_boot, seed=seed),
    "identity_similarity": float(sim.mean()),
    "identity_similarity_ci": metrics.bootstrap_ci(sim, n_boot=n_boot, seed=seed),
    "frames": r["frames"],
  }
  if base is not None:
    acc0 = np.asarray(base["units"]["emotion_accuracy"], np.float64)
    sim0 = np.asarray(base["units"]["identity_similarity"], np.float64)
    row["identity_gain"] = float((sim - sim0).mean())
    row["identity_gain_ci"] = metrics.bootstrap_ci(sim - sim0, n_boot=n_boot, seed=seed)
    row["emotion_change"] = float((acc - acc0).mean())
    row["emotion_change_ci"] = metrics.bootstrap_ci(acc - acc0, n_boot=n_boot, seed=seed)
  return row


def sweep(
  gen,
  judge,
  sources: Sequence[ev.Source],
  st: ev.EvalSettings,
  strengths: Sequence[float],
  m_faces: Sequence[float],
  log: Callable[[str], None] = print,
  n_boot: int = 2000,
) -> list[dict]:
  """Rows (the constraint off first, then strengths x m_faces in that order) of
  {strength, m_face, emotion_accuracy(_ci), identity_similarity(_ci), frames,
  identity_gain(_ci), emotion_change(_ci)}: see the module docstring. The other constraint
  knobs (schedule, until, init) are the checkpoint's."""
  st.validate()
  base_c = ev._constraint(gen)
  grid = [(float(s), float(m)) for s in strengths if float(s) > 0 for m in m_faces]
  for s, m in grid:
    dataclasses.replace(base_c, strength=s, m_face=m).validate()
  off = dataclasses.replace(base_c, strength=0.0)
  t = time.perf_counter()
  r0 = ev._single(ev._Runner(gen, judge, sources, st), constraint=off)
  rows = [_row(0.0, float(base_c.m_face), r0, None, n_boot, st.seed)]
  log(
    f"[sweep] 1/{len(grid) + 1} constraint off: emotion {r0['emotion_accuracy']:.3f}, "
    f"identity {r0['identity_similarity']:.3f} ({time.perf_counter() - t:.0f} s)"
  )
  for k, (s, m) in enumerate(grid):
    t = time.perf_counter()
    c = dataclasses.replace(base_c, strength=s, m_face=m)
    r = ev._single(ev._Runner(gen, judge, sources, st), constraint=c)
    rows.append(_row(s, m, r, r0, n_boot, st.seed))
    log(
      f"[sweep] {k + 2}/{len(grid) + 1} strength {s:g}, m_face {m:g}: emotion "
      f"{r['emotion_accuracy']:.3f}, identity {r['identity_similarity']:.3f} "
      f"(gain {rows[-1]['identity_gain']:+.4f}) ({time.perf_counter() - t:.0f} s)"
    )
  return rows


CHOICE_RULE = (
  "the largest paired identity gain whose interval lies above 0, with emotion accuracy at "
  "most 0.05 below the constraint off, on the development split; none: keep the default"
)


def choose(rows: Sequence[dict], max_emotion_drop: float = 0.05) -> dict | None:
  """The constrained row with the largest identity gain among those whose gain interval
  lies above 0 and whose emotion accuracy is at most ``max_emotion_drop`` below the
  unconstrained row's (the first row); None when no setting gains outside the noise."""
  off = rows[0]
  ok = [
    r
    for r in rows[1:]
    if r["emotion_accuracy"] >= off["emotion_accuracy"] - max_emotion_drop - 1e-12
    and r["identity_gain_ci"][0] > 0
  ]
  return max(ok, key=lambda r: r["identity_gain"]) if ok else None


def markdown(rows: Sequence[dict], title: str) -> str:
  """A table of the sweep's rows (intervals in brackets)."""

  def ci(v):
    return f"[{v[0]:.3f}, {v[1]:.3f}]"

  out = [
    f"## {title}",
    "",
    "| strength | m_face | emotion accuracy | identity | identity gain (paired) | emotion change |",
    "|---|---|---|---|---|---|",
  ]
  for r in rows:
    gain = f"{r['identity_gain']:+.4f} {ci(r['identity_gain_ci'])}" if "identity_gain" in r else "-"
    emo = (
      f"{r['emotion_change']:+.3f} {ci(r['emotion_change_ci'])}" if "emotion_change" in r else "-"
    )
    m = "-" if r["strength"] == 0 else f"{r['m_face']:g}"
    out.append(
      f"| {r['strength']:g} | {m} | {r['emotion_accuracy']:.3f} {ci(r['emotion_accuracy_ci'])} "
      f"| {r['identity_similarity']:.4f} {ci(r['identity_similarity_ci'])} | {gain} | {emo} |"
    )
  return "\n".join(out) + "\n"
