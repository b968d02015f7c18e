"""DDIM sampling, DDIM inversion, classifier-free guidance and the identity constraint.

METHOD.md equations (4), (5), (6). Everything is traceable under ``jax.jit``; each step
loop is one ``jax.lax.scan`` (no Python loop over steps, no host sync), so compile time
hardly depends on the number of steps.

The denoiser is any function ``denoise_fn(z_t, t, cond) -> out``:
  z_t  (B, h, w, C) latents (NHWC), t (B,) int32 timesteps in [0, T), cond an arbitrary
  pytree whose leaves all have batch B on axis 0 (e.g. spatial conditions + context tokens);
  ``out`` (B, h, w, C) is eps or v per ``schedule.prediction_type``.
The sampler is thus independent of the UNet (see ``concat_condition_denoiser``).

Timestep conventions. Sampling visits ``ddim_timesteps(T, steps, spacing)`` in descending
order τ_{S-1} > ... > τ_0; step k maps the latent at level τ_{S-1-k} to level τ_{S-2-k}, and
the last step to the clean level (ᾱ = 1), so it returns the x0 prediction. Inversion
(eq. 4) walks the same levels upwards from z0; its step i maps the latent at level τ_{i-1}
(z0 for i = 0) to level τ_i, evaluating the denoiser at the current latent and the target
timestep τ_i (the usual first-order DDIM inversion: the sampling step at τ_i then sees the
same timestep). The returned trajectory is aligned with the sampling steps:
``trajectory[k]`` is z^inv at the level that sampling step k outputs (``trajectory[-1]`` is
z0), i.e. the z_{t-1}^inv of eq. (6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from emotalker_jax.diffusion import compose
from emotalker_jax.diffusion import schedule as sched_lib
from emotalker_jax.diffusion.schedule import Schedule

DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray, Any], jnp.ndarray]

SPACINGS = ("uniform", "leading", "trailing")
CONSTRAINT_SCHEDULES = ("constant", "linear", "cosine")
CONSTRAINT_INITS = ("inversion", "noise")


# ---- timesteps ----------------------------------------------------------------------------


def ddim_timesteps(T: int, steps: int, spacing: str = "uniform") -> np.ndarray:
  """The DDIM timestep subset, ascending, as a static numpy int32 array of length ``steps``.

  spacing:
    'uniform':  round(linspace(0, T-1, steps)), both ends included (diffusers' 'linspace');
    'leading':  arange(steps) * (T // steps) (DDIM paper / diffusers 'leading');
    'trailing': round(arange(T, 0, -T/steps)) - 1, i.e. ends at T-1 (Lin et al. 2024).
  """
  T, steps = int(T), int(steps)
  if not 1 <= steps <= T:
    raise ValueError(
      f"sampler steps must be in [1, {T}] (num_train_timesteps), got {steps}; "
      "set --config.sampler.steps / --steps"
    )
  if spacing == "uniform":
    ts = np.round(np.linspace(0, T - 1, steps)) if steps > 1 else np.array([T - 1])
  elif spacing == "leading":
    ts = np.arange(steps) * (T // steps)
  elif spacing == "trailing":
    ts = np.round(np.arange(T, 0, -T / steps))[::-1] - 1
  else:
    raise ValueError(
      f"unknown timestep spacing {spacing!r}; use one of {SPACINGS} (config key sampler.spacing)"
    )
  ts = np.asarray(ts, np.int64)
  if len(np.unique(ts)) != steps or ts.min() < 0 or ts.max() > T - 1:
    raise ValueError(
      f"spacing {spacing!r} with {steps} steps of T={T} gives repeated or "
      "out-of-range timesteps; use fewer steps or another spacing"
    )
  return ts.astype(np.int32)


def _levels(schedule: Schedule, steps: int, spacing: str):
  """(ts_desc (S,) np.int32, ᾱ at ts_desc (S,), ᾱ at the next-lower level (S,), last = 1)."""
  ts = ddim_timesteps(schedule.num_train_timesteps, steps, spacing)[::-1].copy()
  a_t = schedule.alphas_cumprod[ts]
  a_prev = jnp.concatenate([schedule.alphas_cumprod[ts[1:]], jnp.ones((1,), jnp.float32)])
  return ts, a_t, a_prev


# ---- the identity constraint (eq. 6) --------------------------------------------------------


@flax.struct.dataclass
class ConstraintConfig:
  """Knobs of the identity constraint, eq. (6).

  strength (lambda, traced: sweeping it does not recompile), m_face (mask value inside the
  face; used by ``latent_mask_from_face_mask``), schedule ('constant' | 'linear' | 'cosine'
  decay of lambda_t over the constrained steps), until (fraction of the sampling steps the
  constraint acts on, from the first), init ('inversion': start from Z_T | 'noise': from
  fresh noise), init_noise (rho; with init='inversion' the fraction of the start's
  variance that is fresh noise: sqrt(1 - rho) Z_T + sqrt(rho) eps, so 0 is Z_T itself and 1
  the same start as init='noise'; see ``start_latent``). schedule/until/init/init_noise
  are static (part of the pytree structure: whether a start needs an rng key is known
  when tracing).
  """

  strength: float = 0.5
  m_face: float = 0.0
  schedule: str = flax.struct.field(pytree_node=False, default="linear")
  until: float = flax.struct.field(pytree_node=False, default=0.6)
  init: str = flax.struct.field(pytree_node=False, default="inversion")
  init_noise: float = flax.struct.field(pytree_node=False, default=0.0)

  @property
  def start_noise(self) -> float:
    """The start's noise fraction rho in effect: 1 for init='noise', else init_noise."""
    return 1.0 if self.init == "noise" else float(self.init_noise)

  @classmethod
  def from_config(cls, cfg: Any) -> ConstraintConfig:
    """From ``config.sampler.constraint`` (keys strength, schedule, until, m_face, init,
    init_noise; a checkpoint written before init_noise existed reads it as 0)."""
    c = cls(
      strength=float(cfg.strength),
      m_face=float(cfg.m_face),
      schedule=str(cfg.schedule),
      until=float(cfg.until),
      init=str(cfg.init),
      init_noise=float(cfg.get("init_noise", 0.0)),
    )
    return c.validate()

  def validate(self) -> ConstraintConfig:
    """Raises ValueError naming the bad knob (only checks concrete Python values)."""
    if self.schedule not in CONSTRAINT_SCHEDULES:
      raise ValueError(
        f"constraint schedule {self.schedule!r}: use one of "
        f"{CONSTRAINT_SCHEDULES} (sampler.constraint.schedule)"
      )
    if self.init not in CONSTRAINT_INITS:
      raise ValueError(
        f"constraint init {self.init!r}: use one of {CONSTRAINT_INITS} (sampler.constraint.init)"
      )
    if not 0.0 <= float(self.until) <= 1.0:
      raise ValueError(
        f"constraint until={self.until}: must be a fraction in [0, 1] (sampler.constraint.until)"
      )
    for name in ("strength", "m_face", "init_noise"):
      v = getattr(self, name)
      if isinstance(v, (int, float)) and not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"constraint {name}={v}: must be in [0, 1] (sampler.constraint.{name})")
    return self

  def step_shape(self, steps: int) -> np.ndarray:
    """Static (steps,) float32 decay profile lambda_t / lambda over the sampling steps.

    n = round(until * steps) steps are constrained; for k < n: constant 1, linear 1 - k/n,
    cosine (1 + cos(pi k / n)) / 2; 0 afterwards.
    """
    n = int(round(float(self.until) * steps))
    k = np.arange(steps, dtype=np.float64)
    if self.schedule == "constant":
      prof = np.ones(steps)
    elif self.schedule == "linear":
      prof = 1.0 - k / max(n, 1)
    elif self.schedule == "cosine":
      prof = 0.5 * (1.0 + np.cos(np.pi * k / max(n, 1)))
    else:
      raise ValueError(f"constraint schedule {self.schedule!r}: use one of {CONSTRAINT_SCHEDULES}")
    return np.where(k < n, prof, 0.0).astype(np.float32)

  def step_weights(self, steps: int) -> jnp.ndarray:
    """(steps,) lambda_t = strength * step_shape(steps) (traced in strength)."""
    return jnp.asarray(self.strength, jnp.float32) * jnp.asarray(self.step_shape(steps))


def latent_mask_from_face_mask(face_mask, latent_hw: Sequence[int], m_face: float = 0.0):
  """The latent-resolution mask M of eq. (6) from a pixel face mask, by area downsampling.

  Args:
    face_mask: (H, W) or (B, H, W), 1 inside the face region, 0 outside (bool or float in
      [0, 1]); H, W multiples of the latent size (H = f h for the autoencoder factor f).
    latent_hw: (h, w).
    m_face: M's value inside the face.
  Returns:
    float32 (h, w) or (B, h, w): 1 - (1 - m_face) * (face fraction of each latent cell), so
    1 outside the face, m_face inside, the area-weighted blend on the border.
  """
  fm = jnp.asarray(face_mask, jnp.float32)
  if fm.ndim not in (2, 3):
    raise ValueError(f"face mask must be (H, W) or (B, H, W), got shape {fm.shape}")
  h, w = int(latent_hw[0]), int(latent_hw[1])
  H, W = fm.shape[-2:]
  if H % h or W % w:
    raise ValueError(
      f"face mask size {H}x{W} is not a multiple of the latent size {h}x{w}; "
      "resize the mask to the frame size the autoencoder encodes"
    )
  fy, fx = H // h, W // w
  frac = fm.reshape(fm.shape[:-2] + (h, fy, w, fx)).mean(axis=(-3, -1))
  return 1.0 - (1.0 - jnp.float32(m_face)) * frac


# ---- pieces shared by the samplers ---------------------------------------------------------


def _batch_size(tree) -> int:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError("the condition pytree has no arrays; pass at least one (B, ...) array")
  return int(leaves[0].shape[0])


def _concat_cond(cond, uncond):
  """Leafwise concat of cond (batch B) and uncond (batch B or 1, then broadcast) -> 2B."""

  def cat(a, b):
    a, b = jnp.asarray(a), jnp.asarray(b)
    if b.shape[0] != a.shape[0]:
      b = jnp.broadcast_to(b, (a.shape[0],) + b.shape[1:])
    return jnp.concatenate([a, b.astype(a.dtype)], axis=0)

  try:
    return jax.tree.map(cat, cond, uncond)
  except ValueError as e:
    raise ValueError(f"uncond must have the same pytree structure as cond: {e}") from None


def _guided_output(denoise_fn: DenoiseFn, z, t, cond, guidance, uncond):
  """Model output with classifier-free guidance, eq. (5), in ONE batched denoiser call.

  Written as out_c + (w - 1) (out_c - out_u) (= out_u + w (out_c - out_u)), so w = 1 gives
  out_c bit for bit. guidance None: a plain conditional call.
  """
  B = z.shape[0]
  tb = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (B,))
  if guidance is None:
    return denoise_fn(z, tb, cond).astype(z.dtype)
  if uncond is None:
    raise ValueError("classifier-free guidance needs an uncond (null-emotion) condition")
  out = denoise_fn(
    jnp.concatenate([z, z], 0), jnp.concatenate([tb, tb], 0), _concat_cond(cond, uncond)
  ).astype(z.dtype)
  out_c, out_u = out[:B], out[B:]
  w = jnp.asarray(guidance, z.dtype)
  return out_c + (w - 1.0) * (out_c - out_u)


def _ddim_update(eps, x0, a_prev, sigma, noise):
  """ẑ_{t-1} = sqrt(ᾱ_prev) x0 + sqrt(1 - ᾱ_prev - σ²) eps + σ noise."""
  dir_coef = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0))
  z = jnp.sqrt(a_prev) * x0 + dir_coef * eps
  return z if noise is None else z + sigma * noise


def _ddim_sigma(eta: float, a_t, a_prev):
  return eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))


# ---- eq. (4): DDIM inversion ------------------------------------------------------------


def ddim_invert(
  denoise_fn: DenoiseFn,
  schedule: Schedule,
  z0: jnp.ndarray,
  cond: Any,
  *,
  steps: int,
  spacing: str = "uniform",
  fixed_point_iters: int = 0,
):
  """DDIM inversion of eq. (4): z0 -> Z_T along the sampling levels (one lax.scan).

  Step i takes z at level τ_{i-1} (ᾱ_c; z0 and ᾱ = 1 for i = 0) to level τ_i (ᾱ_n):
    eps = eps_theta(z, τ_i, cond),  x0 = (z - sqrt(1-ᾱ_c) eps) / sqrt(ᾱ_c)     (f of eq. 4)
    z'  = sqrt(ᾱ_n) x0 + sqrt(1-ᾱ_n) eps.
  Plain eq. (4) evaluates eps at z (fixed_point_iters = 0), a first-order approximation:
  the sampling step at τ_i evaluates eps at z' instead, so inversion + sampling does not
  return z0 exactly (about 5% relative error at 50 steps on a narrow Gaussian). With
  fixed_point_iters = K > 0 each step re-evaluates eps at the current z' K times
  (z' <- sqrt(ᾱ_n) x0(eps(z')) + sqrt(1-ᾱ_n) eps(z'), as in fixed-point / "exact"
  inversion), which converges to the exact inverse of the DDIM sampling step; it costs K
  extra denoiser calls per step on the (usually batch-1) source latent.

  Args:
    z0: (B, h, w, C) clean latents (the source portrait's, B usually 1).
    cond: its condition pytree (batch B), e.g. the neutral source condition c_src.
    steps, spacing: as for ``ddim_sample`` (static).
    fixed_point_iters: K above (static int >= 0).
  Returns:
    (z_T (B, h, w, C), trajectory (steps, B, h, w, C)) with trajectory[k] the inverted latent
    at the level sampling step k outputs (trajectory[-1] = z0; see the module docstring).
  """
  iters = int(fixed_point_iters)
  if iters < 0:
    raise ValueError(f"fixed_point_iters must be >= 0, got {iters} (sampler.inversion_iters)")
  ts_desc, a_desc, _ = _levels(schedule, steps, spacing)
  ts = ts_desc[::-1].copy()
  a_next = a_desc[::-1]
  a_cur = jnp.concatenate([jnp.ones((1,), jnp.float32), a_next[:-1]])
  z0 = jnp.asarray(z0, jnp.float32)

  def step(z, xs):
    t, ac, an = xs

    def up(y):
      # The model's eps estimate at input y, told timestep t (level ᾱ = an).
      out = _guided_output(denoise_fn, y, t, cond, None, None)
      eps, _ = sched_lib.eps_x0_from_output_ab(schedule.prediction_type, an, y, out)
      x0 = (z - jnp.sqrt(1.0 - ac) * eps) / jnp.sqrt(ac)  # f(z_t) of eq. (4)
      return jnp.sqrt(an) * x0 + jnp.sqrt(1.0 - an) * eps

    if iters == 0:
      z_next = up(z)
    else:  # the first pass (y = z) is plain eq. (4); one traced denoiser call either way
      z_next = jax.lax.fori_loop(0, iters + 1, lambda _, y: up(y), z)
    return z_next, z_next

  z_T, ups = jax.lax.scan(step, z0, (jnp.asarray(ts), a_cur, a_next))
  # ups[i] is the latent at level τ_i; sampling step k outputs level τ_{S-2-k}, then z0.
  trajectory = jnp.concatenate([ups[:-1][::-1], z0[None]], axis=0)
  return z_T, trajectory


# ---- eqs. (5) and (6): guided, constrained DDIM sampling ------------------------------------


def ddim_sample(
  denoise_fn: DenoiseFn,
  schedule: Schedule,
  z_T: jnp.ndarray,
  cond: Any,
  *,
  steps: int,
  eta: float = 0.0,
  rng: jax.Array | None = None,
  spacing: str = "uniform",
  guidance=None,
  uncond: Any = None,
  constraint: ConstraintConfig | None = None,
  inv_trajectory=None,
  mask=None,
  return_trajectory: bool = False,
  components: Any = None,
):
  """Guided (eq. 5), constrained (eq. 6) DDIM from z_T down to the clean level (one lax.scan).

  Args:
    denoise_fn: (z_t (B,h,w,C), t (B,) int32, cond) -> eps or v (schedule.prediction_type).
    z_T: (B, h, w, C) start latents (Z_T broadcast over the frames, or noise).
    cond: condition pytree, batch B.
    steps, spacing: number of DDIM steps and timestep spacing (static; see ddim_timesteps).
    eta: DDIM stochasticity (static Python float; 0 = deterministic). eta > 0 needs rng.
    guidance: CFG scale w (traced scalar) or None for no guidance; needs ``uncond`` (same
      pytree structure as cond, batch B or 1). One denoiser call per step on batch 2B.
    constraint: ConstraintConfig or None. Needs ``inv_trajectory`` (steps, B or 1, h, w, C)
      from ``ddim_invert``. After step k, for the first round(until*steps) steps:
      ẑ <- (1 - lambda_k M) ẑ + lambda_k M z^inv_k (eq. 6 written as a blend, so
      lambda_k M = 1 returns z^inv_k exactly and 0 leaves ẑ unchanged).
    mask: M, (h, w) or (B or 1, h, w) in [0, 1] (``latent_mask_from_face_mask``); None = 1.
    return_trajectory: also return the latent after every step, (steps, B, h, w, C).
    components: None (joint guidance, eq. 5) or the K component conditions of composed
      guidance (leaves (K or 1, B or 1, ...); ``compose.composed_output``): each step is
      then out_u + w sum_i (out_{c_i} - out_u), one denoiser call on batch (K + 1) B, and
      ``cond`` only gives the batch size.
  Returns:
    (B, h, w, C) latents at the clean level (and the trajectory if asked).
  """
  ts, a_t, a_prev = _levels(schedule, steps, spacing)
  z_T = jnp.asarray(z_T, jnp.float32)
  eta = float(eta)
  if eta > 0.0 and rng is None:
    raise ValueError("DDIM with eta > 0 needs an rng key")
  use_constraint = constraint is not None
  if use_constraint:
    if inv_trajectory is None:
      raise ValueError("the identity constraint needs inv_trajectory (from ddim_invert)")
    if inv_trajectory.shape[0] != steps:
      raise ValueError(
        f"inv_trajectory has {inv_trajectory.shape[0]} steps, sampler {steps}; "
        "invert with the same steps and spacing"
      )
    lam = constraint.step_weights(steps)
    m = jnp.ones((1, 1, 1, 1), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    if m.ndim == 2:
      m = m[None]
    m = m[..., None] if m.ndim == 3 else m  # (B or 1, h, w, 1)
    traj = jnp.asarray(inv_trajectory, jnp.float32)
  else:
    lam = jnp.zeros((steps,), jnp.float32)
    traj = jnp.zeros((steps, 1, 1, 1, 1), jnp.float32)  # unused placeholder
    m = None
  keys = jax.random.split(rng, steps) if eta > 0.0 else jnp.zeros((steps,), jnp.uint32)

  def step(z, xs):
    t, at, ap, lk, zinv, key = xs
    if components is None:
      out = _guided_output(denoise_fn, z, t, cond, guidance, uncond)
    else:
      out = compose.composed_output(denoise_fn, z, t, components, guidance, uncond)
    eps, x0 = sched_lib.eps_x0_from_output_ab(schedule.prediction_type, at, z, out)
    if eta > 0.0:
      sigma = _ddim_sigma(eta, at, ap)
      z_new = _ddim_update(eps, x0, ap, sigma, jax.random.normal(key, z.shape, z.dtype))
    else:
      z_new = _ddim_update(eps, x0, ap, 0.0, None)
    if use_constraint:
      wm = lk * m
      z_new = z_new * (1.0 - wm) + zinv * wm
    z_new = jnp.broadcast_to(z_new, z.shape)
    return z_new, (z_new if return_trajectory else None)

  z0, zs = jax.lax.scan(step, z_T, (jnp.asarray(ts), a_t, a_prev, lam, traj, keys))
  return (z0, zs) if return_trajectory else z0


# ---- the whole inference: invert the source, then generate every frame ----------------------
# The one sampling path: ``invert_source`` -> ``start_latent`` -> ``sample_frames``.
# ``generate_latents`` chains them in one traced function (tests, benchmarks,
# ``generate_latents_sharded``); ``inference.Generator`` compiles the inversion once per
# portrait and ``sample_frames`` once per chunk shape, and calls the same three.


def invert_source(
  denoise_fn: DenoiseFn,
  schedule: Schedule,
  z_src: jnp.ndarray,
  cond_src: Any,
  *,
  steps: int,
  spacing: str = "uniform",
  inversion_iters: int = 0,
):
  """DDIM inversion (eq. 4) of the one source latent under its condition.

  Args:
    z_src: (1, h, w, C) or (h, w, C) latent of the source portrait.
    cond_src: condition pytree of the source (batch 1), e.g. its neutral condition.
    steps, spacing: as the sampling that follows (static).
    inversion_iters: fixed-point refinements per inversion step (``ddim_invert``;
      config key sampler.inversion_iters; 0 = plain eq. 4).
  Returns:
    (Z_T (1, h, w, C), trajectory (steps, 1, h, w, C)), see ``ddim_invert``.
  """
  z_src = jnp.asarray(z_src, jnp.float32)
  if z_src.ndim == 3:
    z_src = z_src[None]
  if z_src.shape[0] != 1:
    raise ValueError(f"z_src must hold one source latent, got batch {z_src.shape[0]}")
  return ddim_invert(
    denoise_fn,
    schedule,
    z_src,
    cond_src,
    steps=steps,
    spacing=spacing,
    fixed_point_iters=inversion_iters,
  )


def start_latent(
  z_T: jnp.ndarray, constraint: ConstraintConfig | None, rng: jax.Array | None
) -> jnp.ndarray:
  """Where sampling starts (``constraint.init``), shared by all frames of a clip.

  'inversion' (or no constraint) -> sqrt(1 - rho) Z_T + sqrt(rho) eps with rho =
  ``constraint.init_noise`` and eps ~ N(0, I) of Z_T's shape (1, h, w, C) drawn from
  ``rng``: rho = 0 is the inverted Z_T itself, rho = 1 pure noise. The weights keep the
  variance of two unit-variance independent parts, so any rho is a start at level T.
  'noise' -> eps (rho = 1). The ẑ_t half of the constraint (``strength``) is separate: it
  still pulls toward the inverted trajectory.
  """
  if constraint is None:
    return z_T
  rho = constraint.start_noise
  if rho == 0.0:
    return z_T
  if rng is None:
    raise ValueError(
      f"a start with fresh noise (constraint init={constraint.init!r}, init_noise={rho}) "
      "needs an rng key (--seed)"
    )
  eps = jax.random.normal(rng, z_T.shape, jnp.float32)
  return math.sqrt(1.0 - rho) * jnp.asarray(z_T, jnp.float32) + math.sqrt(rho) * eps


def sample_frames(
  denoise_fn: DenoiseFn,
  schedule: Schedule,
  z_start: jnp.ndarray,
  inv_trajectory,
  cond: Any,
  *,
  steps: int,
  eta: float = 0.0,
  rng: jax.Array | None = None,
  spacing: str = "uniform",
  guidance=None,
  uncond: Any = None,
  constraint: ConstraintConfig | None = None,
  mask=None,
  batch_sharding: NamedSharding | None = None,
  return_trajectory: bool = False,
  components: Any = None,
):
  """Guided constrained DDIM (eqs. 5, 6) for a batch of B frames that all start from the
  shared ``z_start`` (1, h, w, C) (``start_latent``) and are constrained toward the shared
  inverted trajectory (steps, 1, h, w, C) (``invert_source``; unused when constraint is
  None).

  Args:
    cond: per-frame condition pytree, batch B; uncond: null condition, batch B or 1.
    mask: M (h, w) or (B, h, w), see ``latent_mask_from_face_mask``.
    rng: key of the DDIM noise (eta > 0).
    batch_sharding: optional NamedSharding for (B, ...) arrays: the frame batch is
      constrained to it (the frames split over the devices).
    components: None (joint guidance) or the composed guidance's component conditions
      (``ddim_sample``, ``compose.composed_output``).
    Others: as ``ddim_sample``.
  Returns:
    (B, h, w, C) latents of the frames (and the sampling trajectory if asked).
  """
  B = _batch_size(cond)
  z_init = jnp.broadcast_to(z_start, (B,) + z_start.shape[1:])
  if batch_sharding is not None:
    z_init = jax.lax.with_sharding_constraint(z_init, batch_sharding)
  return ddim_sample(
    denoise_fn,
    schedule,
    z_init,
    cond,
    steps=steps,
    eta=eta,
    rng=rng,
    spacing=spacing,
    guidance=guidance,
    uncond=uncond,
    constraint=constraint,
    inv_trajectory=inv_trajectory if constraint is not None else None,
    mask=mask,
    return_trajectory=return_trajectory,
    components=components,
  )


def generate_latents(
  denoise_fn: DenoiseFn,
  schedule: Schedule,
  z_src: jnp.ndarray,
  cond_src: Any,
  cond: Any,
  *,
  steps: int,
  eta: float = 0.0,
  rng: jax.Array | None = None,
  spacing: str = "uniform",
  guidance=None,
  uncond: Any = None,
  constraint: ConstraintConfig | None = None,
  mask=None,
  inversion_iters: int = 0,
  batch_sharding: NamedSharding | None = None,
  return_trajectory: bool = False,
):
  """Invert the source latent under its condition (eq. 4), then run guided constrained DDIM
  (eqs. 5, 6) for a batch of frames that all share Z_T and the inverted trajectory:
  ``invert_source`` -> ``start_latent`` -> ``sample_frames`` in one traced function.

  Args:
    z_src: (1, h, w, C) or (h, w, C) latent of the source portrait.
    cond_src: condition pytree of the source (batch 1), e.g. its neutral condition.
    cond: per-frame condition pytree, batch B (the frames of a clip).
    uncond: null condition for CFG, batch B or 1.
    constraint: ConstraintConfig or None (None: plain guided DDIM from Z_T, no inversion
      trajectory used); its init picks the start (``start_latent``).
    mask: M (h, w) or (B, h, w), see ``latent_mask_from_face_mask``.
    rng: key, split into (init noise for init='noise', DDIM noise for eta > 0).
    inversion_iters: fixed-point refinements per inversion step (``ddim_invert``).
    batch_sharding: optional NamedSharding for (B, ...) arrays: the frame batch is
      constrained to it inside (used by ``generate_latents_sharded``).
  Returns:
    (B, h, w, C) latents of the generated frames (and the sampling trajectory if asked).
  """
  z_T, traj = invert_source(
    denoise_fn,
    schedule,
    z_src,
    cond_src,
    steps=steps,
    spacing=spacing,
    inversion_iters=inversion_iters,
  )
  rng_init = rng_sample = None
  if rng is not None:
    rng_init, rng_sample = jax.random.split(rng)
  return sample_frames(
    denoise_fn,
    schedule,
    start_latent(z_T, constraint, rng_init),
    traj,
    cond,
    steps=steps,
    eta=eta,
    rng=rng_sample,
    spacing=spacing,
    guidance=guidance,
    uncond=uncond,
    constraint=constraint,
    mask=mask,
    batch_sharding=batch_sharding,
    return_trajectory=return_trajectory,
  )


def concat_condition_denoiser(apply_fn: Callable) -> Callable:
  """Adapts a UNet ``apply_fn(params, sample, timesteps, context)`` (sample = latent
  concatenated on channels with the spatial conditions) to
  ``denoise(params, z_t, t, cond)`` with cond = {'spatial': (B,h,w,Cs), 'context': (B,L,D)}.
  """

  def denoise(params, z_t, t, cond):
    x = jnp.concatenate([z_t, cond["spatial"].astype(z_t.dtype)], axis=-1)
    return apply_fn(params, x, t, cond["context"])

  return denoise


@functools.partial(
  jax.jit,
  static_argnames=(
    "denoise_apply",
    "steps",
    "eta",
    "spacing",
    "inversion_iters",
    "batch_sharding",
    "return_trajectory",
  ),
)
def generate_latents_jit(
  params,
  schedule,
  z_src,
  cond_src,
  cond,
  uncond,
  mask,
  rng,
  guidance,
  constraint,
  *,
  denoise_apply,
  steps,
  eta,
  spacing,
  inversion_iters,
  batch_sharding,
  return_trajectory,
):
  fn = functools.partial(denoise_apply, params)
  out = generate_latents(
    fn,
    schedule,
    z_src,
    cond_src,
    cond,
    steps=steps,
    eta=eta,
    rng=rng,
    spacing=spacing,
    guidance=guidance,
    uncond=uncond,
    constraint=constraint,
    mask=mask,
    inversion_iters=inversion_iters,
    batch_sharding=batch_sharding,
    return_trajectory=return_trajectory,
  )
  if batch_sharding is not None:
    z = jax.lax.with_sharding_constraint(out[0] if return_trajectory else out, batch_sharding)
    out = (z, out[1]) if return_trajectory else z
  return out


def _default_batch_axes(mesh: Mesh) -> tuple[str, ...]:
  axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  return axes or (mesh.axis_names[0],)


def _pad_batch(tree, B: int, B_pad: int):
  """Pads leaves with batch B to B_pad by repeating the last row (others untouched)."""
  if B_pad == B:
    return tree

  def pad(x):
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[0] != B:
      return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], B_pad - B, axis=0)], axis=0)

  return jax.tree.map(pad, tree)


def generate_latents_sharded(
  denoise_apply: Callable,
  params: Any,
  schedule: Schedule,
  z_src,
  cond_src,
  cond,
  *,
  steps: int,
  eta: float = 0.0,
  rng: jax.Array | None = None,
  spacing: str = "uniform",
  guidance=None,
  uncond: Any = None,
  constraint: ConstraintConfig | None = None,
  mask=None,
  inversion_iters: int = 0,
  mesh: Mesh | None = None,
  batch_axes: Sequence[str] | None = None,
  return_trajectory: bool = False,
):
  """``generate_latents`` compiled once per (shapes, static knobs) and run with the frame
  batch sharded over ``mesh`` (NamedSharding on the batch axis: every device gets B/n frames;
  the source inversion is replicated).

  Args:
    denoise_apply: ``(params, z_t, t, cond) -> out`` (a module-level function or
      ``concat_condition_denoiser(model.apply)``), a static argument of the cached jit:
      build it ONCE and reuse the same object, or every call compiles anew. params are an
      argument, not a constant, so one compiled function serves every checkpoint of the
      same shapes.
    params: the denoiser's parameters (placed replicated on the mesh unless already on it).
    mesh: a jax.sharding.Mesh (None: default device, no sharding).
    batch_axes: mesh axes the batch is split over (default: 'data' and 'fsdp' when present).
    Others: as ``generate_latents``. B need not divide the device count: the batch is padded
      (by repeating the last frame) and the padding dropped from the result.
  Returns:
    (B, h, w, C) latents, sharded over the mesh's batch axes.
  """
  B = _batch_size(cond)
  if constraint is not None:
    constraint.validate()
  if mesh is None:
    return generate_latents_jit(
      params,
      schedule,
      z_src,
      cond_src,
      cond,
      uncond,
      mask,
      rng,
      guidance,
      constraint,
      denoise_apply=denoise_apply,
      steps=steps,
      eta=float(eta),
      spacing=spacing,
      inversion_iters=int(inversion_iters),
      batch_sharding=None,
      return_trajectory=return_trajectory,
    )
  axes = tuple(batch_axes) if batch_axes is not None else _default_batch_axes(mesh)
  n = math.prod(mesh.shape[a] for a in axes)
  if mask is not None:
    mask = jnp.asarray(mask, jnp.float32)
    mask = mask[None] if mask.ndim == 2 else mask  # (1 or B, h, w): axis 0 is the batch
  B_pad = -(-B // n) * n
  cond, uncond, mask_p = (_pad_batch(x, B, B_pad) for x in (cond, uncond, mask))
  bsh = NamedSharding(mesh, P(axes))
  rep = NamedSharding(mesh, P())

  def put_batch(x):
    x = jnp.asarray(x)
    if x.ndim >= 1 and x.shape[0] == B_pad:
      return jax.device_put(x, NamedSharding(mesh, P(axes, *([None] * (x.ndim - 1)))))
    return jax.device_put(x, rep)

  cond = jax.tree.map(put_batch, cond)
  uncond = None if uncond is None else jax.tree.map(put_batch, uncond)
  mask_p = None if mask_p is None else put_batch(mask_p)

  def put_rep(x):
    if (
      isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
    ):
      return x  # already laid out on this mesh (e.g. tensor-parallel params)
    return jax.device_put(x, rep)

  params, schedule, z_src, cond_src, rng = jax.tree.map(
    put_rep, (params, schedule, z_src, cond_src, rng)
  )
  out = generate_latents_jit(
    params,
    schedule,
    z_src,
    cond_src,
    cond,
    uncond,
    mask_p,
    rng,
    guidance,
    constraint,
    denoise_apply=denoise_apply,
    steps=steps,
    eta=float(eta),
    spacing=spacing,
    inversion_iters=int(inversion_iters),
    batch_sharding=bsh,
    return_trajectory=return_trajectory,
  )
  if B_pad == B:
    return out
  if return_trajectory:
    return out[0][:B], out[1][:, :B]
  return out[:B]
