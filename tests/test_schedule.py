"""Noise schedules, eq. (1), eps / x0 / v conversions and the training loss."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emotalker_jax.config_utils import load_config_module
from emotalker_jax.diffusion import schedule as S


def test_linear_schedule_endpoints_and_monotone_alphas_cumprod():
  s = S.make_schedule("linear", T=1000, beta_start=0.0015, beta_end=0.0195)
  betas = np.asarray(s.betas)
  assert betas.shape == (1000,) and betas.dtype == np.float32
  np.testing.assert_allclose(betas[0], 0.0015, rtol=1e-6)
  np.testing.assert_allclose(betas[-1], 0.0195, rtol=1e-6)
  np.testing.assert_allclose(np.diff(betas), (0.0195 - 0.0015) / 999, rtol=1e-3)  # linear
  ab = np.asarray(s.alphas_cumprod)
  np.testing.assert_allclose(ab, np.cumprod(1.0 - np.linspace(0.0015, 0.0195, 1000)), rtol=1e-5)
  assert np.all(np.diff(ab) < 0) and 0.0 < ab[-1] < ab[0] < 1.0
  assert s.num_train_timesteps == 1000


def test_scaled_linear_schedule_is_linear_in_sqrt_beta():
  s = S.make_schedule("scaled_linear", T=1000, beta_start=0.00085, beta_end=0.012)
  rb = np.sqrt(np.asarray(s.betas, np.float64))
  np.testing.assert_allclose([rb[0] ** 2, rb[-1] ** 2], [0.00085, 0.012], rtol=1e-5)
  np.testing.assert_allclose(np.diff(rb), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999, rtol=1e-3)
  assert np.all(np.diff(np.asarray(s.alphas_cumprod)) < 0)


def test_cosine_schedule_matches_nichol_dhariwal_closed_form():
  T = 1000
  s = S.make_schedule("cosine", T=T)
  ab = np.asarray(s.alphas_cumprod, np.float64)
  f = lambda u: np.cos((u / T + 0.008) / 1.008 * np.pi / 2) ** 2
  closed = f(np.arange(1, T + 1)) / f(0.0)
  unclipped = np.asarray(s.betas) < 0.999 - 1e-6  # the clip only bites at the very end
  assert unclipped[:990].all()
  np.testing.assert_allclose(ab[unclipped], closed[unclipped], rtol=2e-5, atol=1e-7)
  assert np.all(np.diff(ab) < 0) and np.all(np.asarray(s.betas) <= 0.999 + 1e-7)


def test_from_config_matches_make_schedule_and_rejects_bad_keys():
  tiny = load_config_module(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  cfg = tiny.get_config()
  s = S.from_config(cfg.diffusion)
  ref = S.make_schedule(
    cfg.diffusion.schedule,
    cfg.diffusion.num_train_timesteps,
    cfg.diffusion.beta_start,
    cfg.diffusion.beta_end,
  )
  np.testing.assert_array_equal(np.asarray(s.alphas_cumprod), np.asarray(ref.alphas_cumprod))
  assert s.prediction_type == cfg.diffusion.prediction_type
  with pytest.raises(ValueError, match="diffusion.schedule"):
    S.make_schedule("quadratic")
  with pytest.raises(ValueError, match="prediction_type"):
    S.make_schedule("linear", prediction_type="x0")
  with pytest.raises(ValueError, match="beta_start"):
    S.make_schedule("linear", beta_start=0.1, beta_end=0.01)


def _data(seed=0, B=6):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  z0 = jax.random.normal(k1, (B, 4, 4, 3)) * 0.7 + 0.3
  noise = jax.random.normal(k2, (B, 4, 4, 3))
  t = jax.random.randint(k3, (B,), 0, 1000)
  return z0, noise, t


def test_q_sample_is_equation_1():
  s = S.make_schedule("linear")
  z0, noise, t = _data()
  ab = np.cumprod(1.0 - np.linspace(0.0015, 0.0195, 1000))[np.asarray(t)][:, None, None, None]
  ref = np.sqrt(ab) * np.asarray(z0) + np.sqrt(1 - ab) * np.asarray(noise)
  np.testing.assert_allclose(np.asarray(S.q_sample(s, z0, t, noise)), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_eps_v_x0_conversions_round_trip(kind):
  s = S.make_schedule(kind)
  z0, noise, t = _data(1, B=16)
  t = t.at[:4].set(jnp.array([0, 1, 500, 999]))
  z_t = S.q_sample(s, z0, t, noise)
  v = S.get_velocity(s, z0, noise, t)
  # v <-> eps and v -> x0 are well conditioned at every t.
  np.testing.assert_allclose(S.v_to_eps(s, z_t, t, v), noise, atol=2e-6)
  np.testing.assert_allclose(S.v_to_x0(s, z_t, t, v), z0, atol=2e-6)
  # eps -> x0 (and so eps -> v) divides by sqrt(ᾱ): exact to float tolerance where ᾱ is
  # not tiny (at ᾱ -> 0 eps carries no information about x0).
  ok = np.asarray(S.alpha_bar(s, t)) > 0.05
  v2 = S.eps_to_v(s, z_t, t, S.v_to_eps(s, z_t, t, v))
  np.testing.assert_allclose(np.asarray(v2)[ok], np.asarray(v)[ok], atol=2e-5)
  x0 = S.predict_x0_from_eps(s, z_t, t, noise)
  np.testing.assert_allclose(np.asarray(x0)[ok], np.asarray(z0)[ok], atol=2e-5)
  eps = S.predict_eps_from_x0(s, z_t, t, z0)
  ok = np.asarray(S.alpha_bar(s, t)) < 0.95
  np.testing.assert_allclose(np.asarray(eps)[ok], np.asarray(noise)[ok], atol=2e-5)
  # The model-output converter follows the schedule's prediction type.
  sv = S.make_schedule(kind, prediction_type="v_prediction")
  e2, x2 = S.model_output_to_eps_x0(sv, z_t, t, v)
  np.testing.assert_allclose(e2, noise, atol=2e-6)
  np.testing.assert_allclose(x2, z0, atol=2e-6)


def test_training_target_and_loss_for_eps_and_v():
  z0, noise, t = _data(2)
  for pt in ("epsilon", "v_prediction"):
    s = S.make_schedule("linear", prediction_type=pt)
    target = S.training_target(s, z0, noise, t)
    want = noise if pt == "epsilon" else S.get_velocity(s, z0, noise, t)
    np.testing.assert_array_equal(np.asarray(target), np.asarray(want))
    assert float(S.diffusion_loss(target, target)) == 0.0
  pred = noise + 0.1 * z0
  np.testing.assert_allclose(
    float(S.diffusion_loss(pred, noise)), float(np.mean((0.1 * np.asarray(z0)) ** 2)), rtol=1e-5
  )
  # Per-example weights: zero weight removes an example from the mean.
  w = jnp.array([1, 1, 0, 0, 0, 0], jnp.float32)
  np.testing.assert_allclose(
    float(S.diffusion_loss(pred, noise, w)),
    float(np.mean((0.1 * np.asarray(z0[:2])) ** 2)),
    rtol=1e-5,
  )
  # Element weights: each example's MSE is the weighted mean of its squared errors (numpy
  # reference, weights per spatial position broadcast over channels); uniform ones change
  # nothing.
  err = (0.1 * np.asarray(z0)) ** 2
  ew = np.random.default_rng(0).uniform(0.5, 3.0, err.shape[:-1] + (1,)).astype(np.float32)
  ewb = np.broadcast_to(ew, err.shape).reshape(len(err), -1)
  want = np.mean((ewb * err.reshape(len(err), -1)).sum(1) / ewb.sum(1))
  np.testing.assert_allclose(
    float(S.diffusion_loss(pred, noise, element_weights=ew)), want, rtol=1e-5
  )
  np.testing.assert_allclose(
    float(S.diffusion_loss(pred, noise, element_weights=3 * np.ones_like(ew))),
    float(S.diffusion_loss(pred, noise)),
    rtol=1e-6,
  )
