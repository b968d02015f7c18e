"""The identity constraint's settings swept on held-out identities: identity kept against
emotion lost, for choosing the default (``emotalker eval --constraint-sweep``).

The constraint has two halves: the start (Z_T from inverting the source, blended with
fresh noise by ``init_noise`` rho: sqrt(1 - rho) Z_T + sqrt(rho) eps) and the pull of
eq. (6) toward the inverted trajectory (strength lambda, m_face). For every (rho, lambda,
m_face) the single-emotion conditions of ``evaluate`` are generated for every source
(8 prompts x ``frames`` frames each) and judged: emotion accuracy and identity similarity
to the portrait, each with a 95 % bootstrap interval over (identity, prompt) units, and
both *paired* against the run with no constraint at all (noise start, strength 0: the
first row) on the same units (``identity_gain``, ``emotion_change`` with their
intervals). Strength 0 is one row per rho whatever m_face is.

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


def _row(c, r: dict, base: dict | None, n_boot: int, seed: int):
  acc = np.asarray(r["units"]["emotion_accuracy"], np.float64)
  sim = np.asarray(r["units"]["identity_similarity"], np.float64)
  row = {
    "init_noise": c.start_noise,
    "strength": float(c.strength),
    "m_face": float(c.m_face),
    "emotion_accuracy": float(acc.mean()),
    "emotion_accuracy_ci": metrics.bootstrap_ci(acc, n_boot=n_boot, seed=seed),
    "identity_similarity": float(sim.mean()),
    "identity_similarity_ci": metrics.bootstrap_ci(sim, n_boot=n_boot, seed=seed),
    "frames": r["frames"],
    # per (identity, prompt) unit, for pairing two rows (``choose`` against the default)
    "units": {"emotion_accuracy": acc.tolist(), "identity_similarity": sim.tolist()},
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
  init_noises: Sequence[float] | None = None,
  log: Callable[[str], None] = print,
  n_boot: int = 2000,
) -> list[dict]:
  """Rows (no constraint at all first, then init_noises x strengths x m_faces in that
  order, one row per rho for strength 0) of {init_noise, strength, m_face,
  emotion_accuracy(_ci), identity_similarity(_ci), frames, identity_gain(_ci),
  emotion_change(_ci)}: see the module docstring. init_noises None: the checkpoint's rho
  only. The other constraint knobs (schedule, until) are the checkpoint's."""
  st.validate()
  base_c = dataclasses.replace(ev._constraint(gen), init="inversion")
  rhos = [float(base_c.init_noise)] if init_noises is None else [float(x) for x in init_noises]
  grid = []
  for rho in rhos:
    for s in strengths:
      for m in [float(base_c.m_face)] if float(s) == 0 else m_faces:
        c = dataclasses.replace(base_c, init_noise=rho, strength=float(s), m_face=float(m))
        grid.append(c.validate())
  none = dataclasses.replace(base_c, init="noise", init_noise=0.0, strength=0.0)
  t = time.perf_counter()
  r0 = ev._single(ev._Runner(gen, judge, sources, st), constraint=none)
  rows = [_row(none, r0, None, n_boot, st.seed)]
  log(
    f"[sweep] 1/{len(grid) + 1} no constraint (noise start, strength 0): emotion "
    f"{r0['emotion_accuracy']:.3f}, identity {r0['identity_similarity']:.3f} "
    f"({time.perf_counter() - t:.0f} s)"
  )
  for k, c in enumerate(grid):
    t = time.perf_counter()
    r = ev._single(ev._Runner(gen, judge, sources, st), constraint=c)
    rows.append(_row(c, r, r0, n_boot, st.seed))
    log(
      f"[sweep] {k + 2}/{len(grid) + 1} init_noise {c.init_noise:g}, strength {c.strength:g}, "
      f"m_face {c.m_face:g}: emotion {r['emotion_accuracy']:.3f}, identity "
      f"{r['identity_similarity']:.3f} (gain {rows[-1]['identity_gain']:+.4f}) "
      f"({time.perf_counter() - t:.0f} s)"
    )
  return rows


CHOICE_RULE = (
  "the largest paired identity gain whose interval lies above 0, with emotion accuracy at "
  "most 0.05 below no constraint at all (noise start, strength 0), on the development "
  "split; the current default instead when it meets the same budget and the best "
  "setting's identity gain over it (paired) is inside the noise; none: keep the default"
)

SETTING_KEYS = ("init_noise", "strength", "m_face")


def _same_setting(row: dict, setting: dict) -> bool:
  if float(row["strength"]) == 0 and float(setting["strength"]) == 0:
    keys = ("init_noise",)  # m_face does not act at strength 0
  else:
    keys = SETTING_KEYS
  return all(abs(float(row.get(k, 0.0)) - float(setting[k])) < 1e-9 for k in keys)


def choose(
  rows: Sequence[dict],
  max_emotion_drop: float = 0.05,
  default: dict | None = None,
  n_boot: int = 2000,
  seed: int = 0,
) -> dict | None:
  """The constrained row with the largest identity gain among those whose gain interval
  lies above 0 and whose emotion accuracy is at most ``max_emotion_drop`` below the
  first row's (no constraint at all); None when no setting gains outside the noise.

  ``default``: {init_noise, strength, m_face} of the current default. When its row is
  eligible too, it is kept unless the best row's identity beats it outside the noise
  (paired on the rows' units, 95 % bootstrap interval above 0): a setting that is better
  only by noise does not replace a default."""
  off = rows[0]
  ok = [
    r
    for r in rows[1:]
    if r["emotion_accuracy"] >= off["emotion_accuracy"] - max_emotion_drop - 1e-12
    and r["identity_gain_ci"][0] > 0
  ]
  if not ok:
    return None
  best = max(ok, key=lambda r: r["identity_gain"])
  current = next((r for r in ok if default is not None and _same_setting(r, default)), None)
  if current is None or current is best:
    return best
  diff = np.asarray(best["units"]["identity_similarity"], np.float64) - np.asarray(
    current["units"]["identity_similarity"], np.float64
  )
  return best if metrics.bootstrap_ci(diff, n_boot=n_boot, seed=seed)[0] > 0 else current


def markdown(rows: Sequence[dict], title: str) -> str:
  """A table of the sweep's rows (intervals in brackets)."""

  def ci(v):
    return f"[{v[0]:.3f}, {v[1]:.3f}]"

  out = [
    f"## {title}",
    "",
    "Gain and change are paired against the first row, no constraint at all (noise start, "
    "strength 0); init_noise is the start's noise fraction (0: Z_T itself).",
    "",
    "| init_noise | strength | m_face | emotion accuracy | identity | identity gain (paired) "
    "| emotion change |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    gain = f"{r['identity_gain']:+.4f} {ci(r['identity_gain_ci'])}" if "identity_gain" in r else "-"
    emo = (
      f"{r['emotion_change']:+.3f} {ci(r['emotion_change_ci'])}" if "emotion_change" in r else "-"
    )
    m = "-" if r["strength"] == 0 else f"{r['m_face']:g}"
    out.append(
      f"| {r.get('init_noise', 0.0):g} | {r['strength']:g} | {m} "
      f"| {r['emotion_accuracy']:.3f} {ci(r['emotion_accuracy_ci'])} "
      f"| {r['identity_similarity']:.4f} {ci(r['identity_similarity_ci'])} | {gain} | {emo} |"
    )
  return "\n".join(out) + "\n"
