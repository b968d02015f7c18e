"""Noise schedules and the algebra of the forward process (METHOD.md eq. 1 and 2).

Timesteps are integer indices t in {0, ..., T-1} (diffusers' convention); ``alphas_cumprod[t]``
is ᾱ for timestep t, i.e. the paper's ᾱ_{t+1}. Latents are NHWC arrays; per-example scalars
are broadcast over all trailing axes.

Prediction types (what the denoiser outputs):
  * ``'epsilon'``:      eps,                    z_t = sqrt(ᾱ) z0 + sqrt(1-ᾱ) eps     (eq. 1)
  * ``'v_prediction'``: v = sqrt(ᾱ) eps - sqrt(1-ᾱ) z0 (Salimans & Ho 2022).

Beta schedules (``make_schedule(kind=...)``):
  * ``'linear'``:        betas = linspace(beta_start, beta_end, T)
                          (DDPM; default 0.0015 -> 0.0195).
  * ``'scaled_linear'``: betas = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2 (Stable
    Diffusion). Note: the latent-diffusion code base (and so DiffTalk's released code) calls this
    sqrt-space schedule "linear"; to reproduce DiffTalk exactly use ``'scaled_linear'`` with
    0.0015 -> 0.0195.
  * ``'cosine'``:        ᾱ(t) = f(t+1) / f(0), f(u) = cos(((u / T) + s) / (1 + s) * pi / 2) ** 2,
    s = 0.008 (Nichol & Dhariwal 2021), betas clipped at 0.999.

All functions are pure and jit-friendly; the schedule is a small frozen pytree.
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax.numpy as jnp
import numpy as np

PREDICTION_TYPES = ("epsilon", "v_prediction")
SCHEDULE_KINDS = ("linear", "scaled_linear", "cosine")
COSINE_S = 0.008
MAX_BETA = 0.999


@flax.struct.dataclass
class Schedule:
  """A diffusion noise schedule.

  Attributes:
    betas: (T,) float32 per-step noise variances beta_t.
    alphas_cumprod: (T,) float32 ᾱ_t = prod_{s<=t} (1 - beta_s), strictly decreasing in t.
    prediction_type: 'epsilon' | 'v_prediction' (static: part of the pytree structure).
  """

  betas: jnp.ndarray
  alphas_cumprod: jnp.ndarray
  prediction_type: str = flax.struct.field(pytree_node=False, default="epsilon")

  @property
  def num_train_timesteps(self) -> int:
    """T (static: the arrays' length)."""
    return int(self.betas.shape[0])


def _betas(kind: str, T: int, beta_start: float, beta_end: float) -> np.ndarray:
  if kind == "linear":
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)
  if kind == "scaled_linear":
    return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
  if kind == "cosine":
    ab = cosine_alpha_bar(np.arange(T + 1, dtype=np.float64), T)
    return np.minimum(1.0 - ab[1:] / ab[:-1], MAX_BETA)
  raise ValueError(
    f"unknown beta schedule {kind!r}; use one of {SCHEDULE_KINDS} (config key diffusion.schedule)"
  )


def cosine_alpha_bar(u: np.ndarray, T: int, s: float = COSINE_S) -> np.ndarray:
  """Nichol & Dhariwal's closed form f(u) / f(0) at (possibly fractional) step u in [0, T]."""
  f = lambda x: np.cos((x / T + s) / (1.0 + s) * math.pi / 2.0) ** 2
  return f(np.asarray(u, np.float64)) / f(0.0)


def make_schedule(
  kind: str = "linear",
  T: int = 1000,
  beta_start: float = 0.0015,
  beta_end: float = 0.0195,
  prediction_type: str = "epsilon",
) -> Schedule:
  """Builds a Schedule (computed in float64 with numpy, stored as float32).

  Args:
    kind: 'linear' | 'scaled_linear' | 'cosine' (see module docstring).
    T: number of training timesteps.
    beta_start, beta_end: first and last beta (ignored by 'cosine').
    prediction_type: 'epsilon' | 'v_prediction'.
  """
  if int(T) < 2:
    raise ValueError(f"num_train_timesteps must be >= 2, got {T}")
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(
      f"unknown prediction_type {prediction_type!r}; use one of "
      f"{PREDICTION_TYPES} (config key diffusion.prediction_type)"
    )
  if kind != "cosine" and not (0.0 < beta_start <= beta_end < 1.0):
    raise ValueError(
      f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end} "
      "(config keys diffusion.beta_start / diffusion.beta_end)"
    )
  betas = _betas(kind, int(T), float(beta_start), float(beta_end))
  alphas_cumprod = np.cumprod(1.0 - betas)
  return Schedule(
    betas=jnp.asarray(betas, jnp.float32),
    alphas_cumprod=jnp.asarray(alphas_cumprod, jnp.float32),
    prediction_type=prediction_type,
  )


def from_config(cfg: Any) -> Schedule:
  """Schedule from ``config.diffusion`` (keys: num_train_timesteps, schedule, beta_start,
  beta_end, prediction_type)."""
  return make_schedule(
    kind=cfg.schedule,
    T=cfg.num_train_timesteps,
    beta_start=cfg.beta_start,
    beta_end=cfg.beta_end,
    prediction_type=cfg.prediction_type,
  )


# ---- per-example coefficients -----------------------------------------------------------


def _bcast(x: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  """Reshapes per-example values (B,) (or a scalar) to broadcast against ``like`` (B, ...)."""
  x = jnp.asarray(x, jnp.float32)
  return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def alpha_bar(schedule: Schedule, t: jnp.ndarray) -> jnp.ndarray:
  """ᾱ at integer timesteps t (any shape) -> float32, same shape."""
  return schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]


# ---- eq. (1) and the conversions, in terms of ᾱ (shape broadcastable to the latents) ----


def q_sample_ab(ab: jnp.ndarray, z0: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
  """Eq. (1) with ᾱ given: sqrt(ᾱ) z0 + sqrt(1 - ᾱ) noise."""
  ab = _bcast(ab, z0)
  return jnp.sqrt(ab) * z0 + jnp.sqrt(1.0 - ab) * noise


def x0_from_eps_ab(ab, z_t, eps):
  """x0 = (z_t - sqrt(1-ᾱ) eps) / sqrt(ᾱ)."""
  ab = _bcast(ab, z_t)
  return (z_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)


def eps_from_x0_ab(ab, z_t, x0):
  """eps = (z_t - sqrt(ᾱ) x0) / sqrt(1-ᾱ)."""
  ab = _bcast(ab, z_t)
  return (z_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)


def v_from_eps_x0_ab(ab, eps, x0):
  """v = sqrt(ᾱ) eps - sqrt(1-ᾱ) x0."""
  ab = _bcast(ab, eps)
  return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0


def eps_from_v_ab(ab, z_t, v):
  """eps = sqrt(ᾱ) v + sqrt(1-ᾱ) z_t."""
  ab = _bcast(ab, z_t)
  return jnp.sqrt(ab) * v + jnp.sqrt(1.0 - ab) * z_t


def x0_from_v_ab(ab, z_t, v):
  """x0 = sqrt(ᾱ) z_t - sqrt(1-ᾱ) v."""
  ab = _bcast(ab, z_t)
  return jnp.sqrt(ab) * z_t - jnp.sqrt(1.0 - ab) * v


def eps_x0_from_output_ab(prediction_type: str, ab, z_t, out):
  """(eps, x0) from a denoiser output of the given prediction type at noise level ᾱ.

  Each is computed in its numerically direct form (no division by sqrt(ᾱ) for v outputs).
  """
  if prediction_type == "epsilon":
    return out, x0_from_eps_ab(ab, z_t, out)
  if prediction_type == "v_prediction":
    return eps_from_v_ab(ab, z_t, out), x0_from_v_ab(ab, z_t, out)
  raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")


# ---- the same with integer timesteps t (B,) ---------------------------------------------


def q_sample(schedule: Schedule, z0: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray):
  """Eq. (1): z_t = sqrt(ᾱ_t) z0 + sqrt(1-ᾱ_t) noise. z0, noise (B, h, w, C); t (B,) int."""
  return q_sample_ab(alpha_bar(schedule, t), z0, noise)


def predict_x0_from_eps(schedule: Schedule, z_t, t, eps):
  return x0_from_eps_ab(alpha_bar(schedule, t), z_t, eps)


def predict_eps_from_x0(schedule: Schedule, z_t, t, x0):
  return eps_from_x0_ab(alpha_bar(schedule, t), z_t, x0)


def get_velocity(schedule: Schedule, z0, noise, t):
  """The v target for (z0, noise) at timesteps t: sqrt(ᾱ) noise - sqrt(1-ᾱ) z0."""
  return v_from_eps_x0_ab(alpha_bar(schedule, t), noise, z0)


def v_to_eps(schedule: Schedule, z_t, t, v):
  return eps_from_v_ab(alpha_bar(schedule, t), z_t, v)


def v_to_x0(schedule: Schedule, z_t, t, v):
  return x0_from_v_ab(alpha_bar(schedule, t), z_t, v)


def eps_to_v(schedule: Schedule, z_t, t, eps):
  """v from eps at z_t (x0 recovered through eq. 1)."""
  ab = alpha_bar(schedule, t)
  return v_from_eps_x0_ab(ab, eps, x0_from_eps_ab(ab, z_t, eps))


def model_output_to_eps_x0(schedule: Schedule, z_t, t, out):
  """(eps, x0) from a denoiser output per ``schedule.prediction_type``."""
  return eps_x0_from_output_ab(schedule.prediction_type, alpha_bar(schedule, t), z_t, out)


# ---- training (eq. 2) ---------------------------------------------------------------------


def training_target(schedule: Schedule, z0, noise, t):
  """What the denoiser should output at z_t = q_sample(z0, t, noise): noise or v."""
  if schedule.prediction_type == "epsilon":
    return noise
  if schedule.prediction_type == "v_prediction":
    return get_velocity(schedule, z0, noise, t)
  raise ValueError(f"unknown prediction_type {schedule.prediction_type!r}")


def diffusion_loss(
  pred: jnp.ndarray,
  target: jnp.ndarray,
  weights: jnp.ndarray | None = None,
  element_weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
  """Eq. (2): mean squared error, computed in float32.

  Args:
    pred, target: (B, ...) denoiser output and training_target(...).
    weights: optional (B,) per-example weights (e.g. a mask of valid rows); the loss is the
      weighted mean of per-example MSEs (sum(w * mse) / max(sum(w), eps)).
    element_weights: optional weights broadcastable to pred (e.g. (B, h, w, 1) per latent
      pixel: ``train.mouth_loss_weight``); each example's MSE becomes the weighted mean of
      its squared errors.
  Returns:
    A float32 scalar.
  """
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if element_weights is None:
    per_example = err.reshape(err.shape[0], -1).mean(axis=1)
  else:
    ew = jnp.broadcast_to(jnp.asarray(element_weights, jnp.float32), err.shape)
    ew = ew.reshape(err.shape[0], -1)
    per_example = jnp.sum(ew * err.reshape(err.shape[0], -1), axis=1) / jnp.maximum(
      jnp.sum(ew, axis=1), 1e-8
    )
  if weights is None:
    return per_example.mean()
  w = jnp.asarray(weights, jnp.float32)
  return jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), 1e-8)
