"""Composable classifier-free guidance over the emotions of a mixture (guidance that composes).

The joint guidance of eq. (5) guides the whole condition at once:
  out = out_c + (w - 1) (out_c - out_u),
with c = [audio tokens; emotion tokens of the intensity vector s] and u the learned null
emotion tokens. A faint emotion beside a strong one is drawn at about 40 % of its strength.
The composed mode (Liu et al. 2022, "Compositional Visual Generation with Composable
Diffusion Models", the conjunction operator) guides every active emotion separately:
  out = out_u + w * sum_{i in A} (out_{c_i} - out_u),
where A = the active non-neutral emotions of s (s_i >= ``sampler.compose_min_intensity``,
the ``sampler.compose_max`` strongest) and c_i = the same condition (same audio tokens,
same spatial latents) whose emotion tokens are those of s restricted to emotion i
(s_j = 0 for j != i: ``EmoTalker.explicit_emotion`` of that vector). When the EIB has
pooled-text tokens (``config.eib.num_text_tokens`` > 0) every component keeps the prompt's
text tokens (for explicit intensities: the learned no-text tokens), so only the emotion
tokens differ between the components.

Cost in UNet calls per step: joint = one call on batch 2B; composed = one call on batch
(|A| + 1) B, i.e. (|A| + 1) / 2 times the joint's work (|A| = 2: 1.5x, |A| = 3: 2x).
|A| <= 1 (one emotion, or neutral) falls back to the joint computation exactly (the
generator passes no components), so one-emotion prompts cost nothing extra. |A| is static:
the sampler compiles once per distinct number of components.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emotalker_jax.emotions import EMOTION_INDEX, NUM_EMOTIONS

GUIDANCE_MODES = ("joint", "composed")
NEUTRAL = EMOTION_INDEX["neutral"]


def check_guidance_mode(mode: str, where: str = "sampler.guidance_mode") -> str:
  """Returns ``mode`` if it is one of GUIDANCE_MODES, else raises ValueError naming
  ``where`` (the flag or config key it came from) and the choices."""
  if mode not in GUIDANCE_MODES:
    raise ValueError(f"{where} {mode!r} is not a guidance mode: use one of {GUIDANCE_MODES}")
  return mode


def active_emotions(s, min_intensity: float = 0.05, max_components: int = 3) -> list[int]:
  """The indices (MEAD order) of the composed guidance's components, strongest first.

  Args:
    s: (8,) intensities in [0, 1] (those the emotion tokens are built from).
    min_intensity: an emotion is active when s_i >= min_intensity (neutral never is).
    max_components: at most this many, the strongest (ties: the earlier in MEAD order).
  Returns:
    a list of at most ``max_components`` indices; <= 1 entries means "use joint guidance".
  """
  s = np.asarray(s, np.float64).reshape(-1)
  if s.shape[0] != NUM_EMOTIONS:
    raise ValueError(f"intensities must have {NUM_EMOTIONS} entries (MEAD order), got {s.shape}")
  if int(max_components) < 1:
    raise ValueError(f"sampler.compose_max must be >= 1, got {max_components}")
  if not 0.0 < float(min_intensity) <= 1.0:
    raise ValueError(f"sampler.compose_min_intensity must be in (0, 1], got {min_intensity}")
  cand = [i for i in range(NUM_EMOTIONS) if i != NEUTRAL and s[i] >= float(min_intensity)]
  cand.sort(key=lambda i: -s[i])  # stable: equal intensities keep MEAD order
  return cand[: int(max_components)]


def restricted_intensities(s, indices) -> np.ndarray:
  """(K, 8) float32: row k is s with every entry but ``indices[k]`` set to 0."""
  s = np.asarray(s, np.float32).reshape(-1)
  out = np.zeros((len(indices), s.shape[0]), np.float32)
  for k, i in enumerate(indices):
    out[k, i] = s[i]
  return out


def _stack_components(components, K: int, B: int):
  """Leaves (K or 1, B or 1, ...) -> (K * B, ...), component-major."""

  def flat(x):
    x = jnp.asarray(x)
    x = jnp.broadcast_to(x, (K, B) + x.shape[2:])
    return x.reshape((K * B,) + x.shape[2:])

  return jax.tree.map(flat, components)


def composed_output(denoise_fn, z, t, components: Any, guidance, uncond: Any):
  """Composed CFG output out_u + w sum_i (out_{c_i} - out_u) in ONE batched denoiser call.

  Args:
    denoise_fn: (z_t (N, h, w, C), t (N,) int32, cond) -> eps | v.
    z: (B, h, w, C) latents; t: scalar or (B,) int32 timestep.
    components: the K component conditions, a pytree like the condition whose leaves have
      shape (K or 1, B or 1, ...) (axis 0 the component, axis 1 the batch; size-1 axes
      broadcast, e.g. the spatial latents shared by all components).
    guidance: the scale w (traced scalar).
    uncond: the null condition, same pytree structure, leaves (B or 1, ...).
  Returns:
    (B, h, w, C); the denoiser sees batch (K + 1) B: [c_1 (B); ...; c_K (B); u (B)].
  """
  if uncond is None:
    raise ValueError("composed guidance needs an uncond (null-emotion) condition")
  if guidance is None:
    raise ValueError("composed guidance needs a guidance scale (sampler.guidance)")
  B = z.shape[0]
  K = int(jax.tree.leaves(components)[0].shape[0])
  tb = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (B,))
  comp = _stack_components(components, K, B)

  def cat(a, u):
    u = jnp.asarray(u)
    u = jnp.broadcast_to(u, (B,) + u.shape[1:]).astype(a.dtype)
    return jnp.concatenate([a, u], axis=0)

  try:
    cond = jax.tree.map(cat, comp, uncond)
  except ValueError as e:
    raise ValueError(f"uncond must have the structure of the components: {e}") from None
  out = denoise_fn(jnp.tile(z, (K + 1, 1, 1, 1)), jnp.tile(tb, K + 1), cond).astype(z.dtype)
  out_u = out[K * B :]
  diff = out[: K * B].reshape((K, B) + out.shape[1:]) - out_u[None]
  w = jnp.asarray(guidance, z.dtype)
  return out_u + w * jnp.sum(diff, axis=0)
