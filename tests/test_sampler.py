"""DDIM sampling, DDIM inversion, classifier-free guidance and the identity constraint.

METHOD.md eqs. (4), (5), (6); checked against closed forms, an independent Python-loop
reference, exact invariants, and single- vs multi-device runs.
"""

import functools
import os

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from emotalker_jax.config_utils import load_config_module
from emotalker_jax.diffusion import sampler as D
from emotalker_jax.diffusion import schedule as S

H = W = 4  # latent size of the toy problems
C = 3
L, DCTX = 5, 6  # context tokens


# ---- a small nonlinear denoiser that uses every condition leaf --------------------------------

_rng = np.random.default_rng(0)
_A = jnp.asarray(_rng.normal(size=(C, C)) * 0.5, jnp.float32)
_Wc = jnp.asarray(_rng.normal(size=(DCTX, C)) * 0.5, jnp.float32)
_freqs = jnp.asarray([1.0, 0.1, 0.01], jnp.float32)
_AB = jnp.asarray(np.cumprod(1.0 - np.linspace(0.0015, 0.0195, 1000)), jnp.float32)


def toy_apply(params, z, t, cond):
  """(params, z (B,h,w,C), t (B,), cond {'spatial': (B,h,w,C), 'ctx': (B,L,D)}) -> (B,h,w,C).

  The optimal eps of Gaussian data whose mean depends on the condition, plus a nonlinear
  term that fades with the noise level (so latents stay O(1) like a trained denoiser's).
  """
  a = _AB[t][:, None, None, None]
  mu = 0.5 * cond["spatial"] + jnp.tanh(cond["ctx"].mean(axis=1) @ _Wc)[:, None, None]
  eps = (z - jnp.sqrt(a) * mu) * jnp.sqrt(1 - a) / (0.25 * a + 1 - a)
  temb = jnp.sin(t.astype(jnp.float32)[:, None] * _freqs)[:, None, None]
  return eps + jnp.sqrt(a) * (0.3 * jnp.tanh(z @ (_A * params["scale"]) + temb) + params["bias"])


TOY_PARAMS = {"scale": jnp.float32(1.0), "bias": jnp.float32(0.05)}
toy_denoise = functools.partial(toy_apply, TOY_PARAMS)


def _cond(key, B):
  k1, k2 = jax.random.split(key)
  return {
    "spatial": jax.random.normal(k1, (B, H, W, C)),
    "ctx": jax.random.normal(k2, (B, L, DCTX)),
  }


@pytest.fixture(scope="module")
def problem():
  """Source latent + conditions shared by several tests (B = 4 frames)."""
  ks = jax.random.split(jax.random.key(42), 6)
  z_src = jax.random.normal(ks[0], (1, H, W, C))
  face = np.zeros((4 * H, 4 * W), np.float32)
  face[3:12, 5:14] = 1.0  # a face box not aligned to the 4x4 latent cells
  return dict(
    z_src=z_src, cond_src=_cond(ks[1], 1), cond=_cond(ks[2], 4), uncond=_cond(ks[3], 1), face=face
  )


# ---- timesteps and the mask -------------------------------------------------------------------


def test_ddim_timesteps_spacings():
  np.testing.assert_array_equal(
    D.ddim_timesteps(1000, 10, "uniform"), [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
  )
  np.testing.assert_array_equal(D.ddim_timesteps(1000, 10, "leading"), np.arange(10) * 100)
  np.testing.assert_array_equal(D.ddim_timesteps(1000, 10, "trailing"), np.arange(1, 11) * 100 - 1)
  np.testing.assert_array_equal(D.ddim_timesteps(1000, 1000, "uniform"), np.arange(1000))
  assert D.ddim_timesteps(1000, 1, "uniform").tolist() == [999]
  with pytest.raises(ValueError, match="steps"):
    D.ddim_timesteps(1000, 1001)
  with pytest.raises(ValueError, match="spacing"):
    D.ddim_timesteps(1000, 10, "quadratic")


def test_latent_mask_is_area_downsampled_face_mask():
  face = np.zeros((2, 8, 8), np.float32)
  face[0, :4, :4] = 1.0  # exactly latent cell (0, 0) at f = 4
  face[1, 0:2, 4:8] = 1.0  # half of latent cell (0, 1)
  m = np.asarray(D.latent_mask_from_face_mask(face, (2, 2), m_face=0.2))
  np.testing.assert_allclose(m[0], [[0.2, 1.0], [1.0, 1.0]], atol=1e-7)
  np.testing.assert_allclose(m[1], [[1.0, 0.6], [1.0, 1.0]], atol=1e-7)  # 1 - 0.8 * 0.5
  m2 = D.latent_mask_from_face_mask(face[0] > 0, (2, 2), m_face=0.0)  # (H, W), bool
  np.testing.assert_allclose(m2, [[0.0, 1.0], [1.0, 1.0]])
  with pytest.raises(ValueError, match="multiple of the latent size"):
    D.latent_mask_from_face_mask(np.zeros((9, 9)), (2, 2))


def test_constraint_config_from_config_schedules_and_validation():
  tiny = load_config_module(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
  c = D.ConstraintConfig.from_config(tiny.get_config().sampler.constraint)
  assert (c.strength, c.schedule, c.until, c.m_face, c.init) == (
    0.5,
    "linear",
    0.6,
    0.0,
    "inversion",
  )
  base = dict(strength=1.0, until=0.5)
  np.testing.assert_allclose(
    D.ConstraintConfig(schedule="constant", **base).step_shape(8), [1, 1, 1, 1, 0, 0, 0, 0]
  )
  np.testing.assert_allclose(
    D.ConstraintConfig(schedule="linear", **base).step_shape(8), [1, 0.75, 0.5, 0.25, 0, 0, 0, 0]
  )
  np.testing.assert_allclose(
    D.ConstraintConfig(schedule="cosine", **base).step_shape(8),
    [1, (1 + np.cos(np.pi / 4)) / 2, 0.5, (1 + np.cos(3 * np.pi / 4)) / 2, 0, 0, 0, 0],
    atol=1e-7,
  )
  np.testing.assert_allclose(
    D.ConstraintConfig(strength=0.4, schedule="constant", until=1.0).step_weights(3),
    [0.4, 0.4, 0.4],
  )
  for bad, key in (
    (dict(schedule="exp"), "schedule"),
    (dict(init="zeros"), "init"),
    (dict(until=1.5), "until"),
    (dict(strength=2.0), "strength"),
    (dict(init_noise=1.5), "init_noise"),
  ):
    with pytest.raises(ValueError, match=key):
      D.ConstraintConfig(**bad).validate()


# ---- closed form: Gaussian data has an analytic optimal eps predictor --------------------------

MU = jnp.asarray([1.0, -1.0, 2.0, 1.5], jnp.float32)
SIGMA = 1.0


def _gaussian_eps(schedule):
  """eps*(z_t, t) = (z_t - sqrt(ᾱ) mu) sqrt(1-ᾱ) / (ᾱ sigma² + 1 - ᾱ) for z0 ~ N(mu, sigma² I)."""

  def eps(z, t, cond):
    del cond
    a = schedule.alphas_cumprod[t][:, None, None, None]
    return (z - jnp.sqrt(a) * MU) * jnp.sqrt(1 - a) / (a * SIGMA**2 + 1 - a)

  return eps


def test_ddim_with_optimal_gaussian_denoiser_reproduces_mean_and_std():
  # DDIM is a first-order ODE solver: at 50 steps the std is ~5% low on this problem, so the
  # moment check uses every timestep (1000 steps: the scan makes that cheap to compile).
  s = S.make_schedule("linear")
  n = 4096
  z_T = jax.random.normal(jax.random.key(0), (n, 4, 4, 4))
  cond = {"dummy": jnp.zeros((n, 1))}
  x = jax.jit(lambda z: D.ddim_sample(_gaussian_eps(s), s, z, cond, steps=1000))(z_T)
  mean, std = np.asarray(x.mean((0, 1, 2))), np.asarray(x.std((0, 1, 2)))
  np.testing.assert_allclose(mean, MU, rtol=0.02)
  np.testing.assert_allclose(std, SIGMA, rtol=0.02)


def test_ddim_inversion_then_sampling_reconstructs_z0_closed_form():
  s = S.make_schedule("linear")
  z0 = MU + SIGMA * jax.random.normal(jax.random.key(1), (16, 4, 4, 4))
  cond = {"dummy": jnp.zeros((16, 1))}
  eps = _gaussian_eps(s)

  @functools.partial(jax.jit, static_argnums=1)
  def roundtrip(z0, iters):
    z_T, traj = D.ddim_invert(eps, s, z0, cond, steps=50, fixed_point_iters=iters)
    return D.ddim_sample(eps, s, z_T, cond, steps=50), traj

  rel = lambda a: float(jnp.linalg.norm(a - z0) / jnp.linalg.norm(z0))
  rec, traj = roundtrip(z0, 3)
  assert rel(rec) <= 1e-3
  np.testing.assert_array_equal(np.asarray(traj[-1]), np.asarray(z0))
  # Plain eq. (4) (no fixed-point refinement) is first order: a few percent at 50 steps,
  # and each refinement shrinks the round-trip error by about 10x.
  plain = rel(roundtrip(z0, 0)[0])
  assert 1e-3 < plain < 0.1
  assert rel(roundtrip(z0, 1)[0]) < plain / 5


# ---- the scan sampler against an independent plain-Python reference ----------------------------


def _reference(
  denoise, sched, z_src, cond_src, cond, uncond, *, steps, w, lam, until, decay, mask, eta, rng
):
  """Eqs. (4)-(6) written out step by step with a Python loop (uniform spacing), in numpy
  float32 (the precision the sampler runs at)."""
  F = np.float32
  ab = np.cumprod(1.0 - np.linspace(0.0015, 0.0195, 1000)).astype(F)
  ts = [int(round(x)) for x in np.linspace(0, 999, steps)]
  pred = sched.prediction_type

  def to_eps(out, z, a):
    return out if pred == "epsilon" else np.sqrt(a) * out + np.sqrt(1 - a) * z

  def model(z, t, c):
    return np.asarray(
      denoise(jnp.asarray(z, jnp.float32), jnp.full((z.shape[0],), t, jnp.int32), c), F
    )

  # (4) inversion, levels ts[0] < ts[1] < ...
  z = np.asarray(z_src, F)
  inv = {}
  a_cur = F(1.0)
  for t in ts:
    a_nxt = ab[t]
    e = to_eps(model(z, t, cond_src), z, a_nxt)
    z = np.sqrt(a_nxt) * (z - np.sqrt(1 - a_cur) * e) / np.sqrt(a_cur) + np.sqrt(1 - a_nxt) * e
    inv[t] = z
    a_cur = a_nxt
  inv[-1] = np.asarray(z_src, F)
  # (5), (6) sampling
  B = jax.tree.leaves(cond)[0].shape[0]
  zh = np.broadcast_to(inv[ts[-1]], (B,) + inv[ts[-1]].shape[1:])
  n_c = int(round(until * steps))
  keys = jax.random.split(rng, steps) if eta > 0 else None
  unc_b = jax.tree.map(lambda u: jnp.broadcast_to(u, (B,) + u.shape[1:]), uncond)
  out_traj = []
  for k, t in enumerate(reversed(ts)):
    t_prev = ts[len(ts) - 2 - k] if k < steps - 1 else -1
    a, a_prev = ab[t], (ab[t_prev] if t_prev >= 0 else F(1.0))
    o_c, o_u = model(zh, t, cond), model(zh, t, unc_b)
    o = o_u + w * (o_c - o_u)  # eq. (5)
    if pred == "epsilon":
      e = o
      x0 = (zh - np.sqrt(1 - a) * e) / np.sqrt(a)
    else:
      e = np.sqrt(a) * o + np.sqrt(1 - a) * zh
      x0 = np.sqrt(a) * zh - np.sqrt(1 - a) * o
    sig = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    zh = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sig**2) * e
    if eta > 0:
      zh = zh + sig * np.asarray(jax.random.normal(keys[k], zh.shape), F)
    if k < n_c:  # eq. (6)
      lam_k = F(
        lam
        * {"constant": 1.0, "linear": 1 - k / n_c, "cosine": 0.5 * (1 + np.cos(np.pi * k / n_c))}[
          decay
        ]
      )
      zh = zh + lam_k * mask[..., None] * (inv[t_prev] - zh)
    out_traj.append(zh)
  assert all(x.dtype == F for x in out_traj)
  return np.stack(out_traj)


@pytest.mark.parametrize(
  "pred,decay,eta", [("epsilon", "linear", 0.0), ("v_prediction", "cosine", 0.7)]
)
def test_scan_sampler_matches_python_loop_reference(problem, pred, decay, eta):
  steps, w, lam, until = 8, 2.5, 0.8, 0.75
  sched = S.make_schedule("linear", prediction_type=pred)
  mask = np.asarray(D.latent_mask_from_face_mask(problem["face"], (H, W), m_face=0.3))
  cons = D.ConstraintConfig(strength=lam, schedule=decay, until=until, m_face=0.3)
  rng = jax.random.key(7)
  z_T, traj = jax.jit(lambda z, c: D.ddim_invert(toy_denoise, sched, z, c, steps=steps))(
    problem["z_src"], problem["cond_src"]
  )
  # The sampler's noise keys are split(rng, steps)[k] (the reference mirrors that choice).
  _, zs = jax.jit(
    lambda z, tr, c, u, m, g, cc, key: D.ddim_sample(
      toy_denoise,
      sched,
      z,
      c,
      steps=steps,
      eta=eta,
      rng=key,
      guidance=g,
      uncond=u,
      constraint=cc,
      inv_trajectory=tr,
      mask=m,
      return_trajectory=True,
    )
  )(
    jnp.broadcast_to(z_T, (4, H, W, C)),
    traj,
    problem["cond"],
    problem["uncond"],
    mask,
    w,
    cons,
    rng,
  )
  ref = _reference(
    toy_denoise,
    sched,
    problem["z_src"],
    problem["cond_src"],
    problem["cond"],
    problem["uncond"],
    steps=steps,
    w=w,
    lam=lam,
    until=until,
    decay=decay,
    mask=mask,
    eta=eta,
    rng=rng,
  )
  assert zs.shape == ref.shape == (steps, 4, H, W, C)
  # Float32 both ways; only the order of float ops differs: |diff| <= 1e-6 * max(|ref|, 1).
  np.testing.assert_allclose(np.asarray(zs), ref, rtol=1e-6, atol=1e-6)
  assert not np.allclose(ref[-1], np.asarray(problem["z_src"]), atol=1e-3)  # it did something


# ---- exact invariants of (5) and (6) --------------------------------------------------------


def _gen(problem, cons, guidance=2.0, key=0, steps=6, **kw):
  return D.generate_latents_sharded(
    toy_apply,
    TOY_PARAMS,
    S.make_schedule("linear"),
    problem["z_src"],
    problem["cond_src"],
    problem["cond"],
    steps=steps,
    guidance=guidance,
    uncond=problem["uncond"],
    constraint=cons,
    rng=jax.random.key(key),
    **kw,
  )


def test_constraint_strength_one_everywhere_returns_inversion_trajectory_exactly(problem):
  s = S.make_schedule("linear")
  cons = D.ConstraintConfig(strength=1.0, schedule="constant", until=1.0)
  out, zs = _gen(problem, cons, mask=None, return_trajectory=True)
  _, traj = D.ddim_invert(toy_denoise, s, problem["z_src"], problem["cond_src"], steps=6)
  # The inversion inside the sampler is another compiled program than ddim_invert here:
  # equal up to float32 round-off of a few DDIM steps on O(1) latents.
  np.testing.assert_allclose(
    np.asarray(zs), np.broadcast_to(np.asarray(traj), zs.shape), rtol=0, atol=1e-5
  )
  np.testing.assert_array_equal(np.asarray(out), np.broadcast_to(problem["z_src"], out.shape))


def test_constraint_strength_zero_equals_plain_guided_ddim_from_z_T(problem):
  s = S.make_schedule("linear")
  mask = D.latent_mask_from_face_mask(problem["face"], (H, W), 0.0)
  out = _gen(problem, D.ConstraintConfig(strength=0.0, schedule="constant", until=1.0), mask=mask)
  z_T, _ = D.ddim_invert(toy_denoise, s, problem["z_src"], problem["cond_src"], steps=6)
  plain = D.ddim_sample(
    toy_denoise,
    s,
    jnp.broadcast_to(z_T, (4, H, W, C)),
    problem["cond"],
    steps=6,
    guidance=2.0,
    uncond=problem["uncond"],
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(plain), rtol=0, atol=1e-6)
  also = _gen(problem, None)  # no constraint at all
  np.testing.assert_allclose(np.asarray(also), np.asarray(plain), rtol=0, atol=1e-6)
  # ... and a non-zero strength really changes the result, less inside the face (m_face=0).
  pulled = np.asarray(
    _gen(problem, D.ConstraintConfig(strength=0.9, schedule="constant", until=1.0), mask=mask)
  )
  assert np.abs(pulled - np.asarray(plain)).max() > 1e-2


def test_guidance_scale_one_equals_conditional_prediction(problem):
  s = S.make_schedule("linear")
  z_T = jax.random.normal(jax.random.key(3), (4, H, W, C))
  f = jax.jit(
    lambda g, u: D.ddim_sample(toy_denoise, s, z_T, problem["cond"], steps=5, guidance=g, uncond=u)
  )
  cond_only = D.ddim_sample(toy_denoise, s, z_T, problem["cond"], steps=5, guidance=None)
  w1 = np.asarray(f(1.0, problem["uncond"]))
  np.testing.assert_allclose(w1, np.asarray(cond_only), rtol=0, atol=1e-6)
  # At w = 1 the uncond branch has no influence at all (bit for bit).
  other = jax.tree.map(lambda u: u + 3.0, problem["uncond"])
  np.testing.assert_array_equal(w1, np.asarray(f(1.0, other)))
  # w = 0 is the unconditional prediction, w != 1 really mixes in the uncond branch.
  unc_b = jax.tree.map(lambda u: jnp.broadcast_to(u, (4,) + u.shape[1:]), problem["uncond"])
  uncond_only = D.ddim_sample(toy_denoise, s, z_T, unc_b, steps=5)
  np.testing.assert_allclose(
    np.asarray(f(0.0, problem["uncond"])), np.asarray(uncond_only), atol=1e-6
  )
  assert np.abs(np.asarray(f(3.0, problem["uncond"])) - np.asarray(cond_only)).max() > 1e-2


def test_init_noise_differs_from_inversion_and_is_deterministic(problem):
  mask = D.latent_mask_from_face_mask(problem["face"], (H, W), 0.0)
  kw = dict(strength=0.5, schedule="linear", until=0.5)
  inv = np.asarray(_gen(problem, D.ConstraintConfig(init="inversion", **kw), mask=mask))
  n1 = np.asarray(_gen(problem, D.ConstraintConfig(init="noise", **kw), mask=mask, key=1))
  n1b = np.asarray(_gen(problem, D.ConstraintConfig(init="noise", **kw), mask=mask, key=1))
  n2 = np.asarray(_gen(problem, D.ConstraintConfig(init="noise", **kw), mask=mask, key=2))
  np.testing.assert_array_equal(n1, n1b)
  assert np.abs(n1 - inv).max() > 1e-2 and np.abs(n1 - n2).max() > 1e-2
  # With eta = 0 and init='inversion' the key does not matter.
  np.testing.assert_array_equal(
    inv, np.asarray(_gen(problem, D.ConstraintConfig(init="inversion", **kw), mask=mask, key=9))
  )


def test_start_latent_blends_z_T_with_noise_by_variance_fraction():
  """sqrt(1 - rho) Z_T + sqrt(rho) eps: rho = 0 is Z_T bit for bit (no key needed), rho = 1
  the init='noise' start of the same key, and in between the start keeps unit variance
  and correlates with Z_T by sqrt(1 - rho) (checked on 2**16 samples: the standard error
  of a correlation or variance estimate there is about 0.004)."""
  z_T = jax.random.normal(jax.random.key(5), (1, 64, 64, 16))
  key = jax.random.key(7)
  np.testing.assert_array_equal(
    np.asarray(D.start_latent(z_T, D.ConstraintConfig(init_noise=0.0), None)), np.asarray(z_T)
  )
  np.testing.assert_array_equal(
    np.asarray(D.start_latent(z_T, D.ConstraintConfig(init_noise=1.0), key)),
    np.asarray(D.start_latent(z_T, D.ConstraintConfig(init="noise"), key)),
  )
  zt = np.asarray(z_T).ravel()
  for rho in (0.25, 0.5, 0.75):
    z = np.asarray(D.start_latent(z_T, D.ConstraintConfig(init_noise=rho), key)).ravel()
    assert abs(z.var() - 1.0) < 0.03, (rho, z.var())
    assert abs(np.corrcoef(z, zt)[0, 1] - np.sqrt(1 - rho)) < 0.02, rho
  with pytest.raises(ValueError, match="init_noise=0.5.*needs an rng key"):
    D.start_latent(z_T, D.ConstraintConfig(init_noise=0.5), None)
  # A checkpoint config written before the knob existed reads it as 0.
  old = ml_collections.ConfigDict(
    dict(strength=0.5, schedule="linear", until=0.6, m_face=0.0, init="inversion")
  )
  assert D.ConstraintConfig.from_config(old).init_noise == 0.0


def test_frames_share_z_T_so_identical_conditions_give_identical_frames(problem):
  cond = jax.tree.map(lambda x: jnp.concatenate([x[:1], x[:1], x[1:3]]), problem["cond"])
  p = dict(problem, cond=cond)
  out = np.asarray(_gen(p, D.ConstraintConfig(strength=0.3, until=0.5)))
  # Rows of one batch may take different vectorised code paths: round-off only.
  np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-6)
  assert np.abs(out[0] - out[2]).max() > 1e-3


# ---- sharding and compile caching ---------------------------------------------------------


def test_sharded_generation_on_8_devices_equals_single_device(problem):
  devices = jax.devices()[:8]
  assert len(devices) == 8
  mesh = Mesh(np.asarray(devices), ("data",))
  ks = jax.random.split(jax.random.key(5), 2)
  face = np.broadcast_to(problem["face"], (8,) + problem["face"].shape)
  # 8 frames with per-frame masks and eta > 0; 4 frames (padded to 8 inside, padding
  # dropped) with one (h, w) mask for all frames.
  for B, eta in ((8, 0.6), (4, 0.0)):
    p = dict(problem, cond=_cond(ks[0], B), uncond=_cond(ks[1], B))
    mask = D.latent_mask_from_face_mask(face[:B] if B == 8 else face[0], (H, W), 0.2)
    cons = D.ConstraintConfig(strength=0.7, schedule="cosine", until=0.6)
    kw = dict(mask=mask, eta=eta, inversion_iters=1)
    single = _gen(p, cons, **kw)
    sharded = _gen(p, cons, mesh=mesh, **kw)
    assert sharded.shape == (B, H, W, C)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=0, atol=1e-5)
    if B == 8:
      assert sharded.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 4)
      assert len({d for sh in sharded.addressable_shards for d in [sh.device]}) == 8


def test_compiled_generator_is_cached_across_knob_values(problem):
  cons = D.ConstraintConfig(strength=0.5, schedule="linear", until=0.6)
  _gen(problem, cons, guidance=2.0, steps=7)
  n = D.generate_latents_jit._cache_size()
  # New guidance scale, strength, key and params values: same compiled function.
  _gen(problem, cons.replace(strength=0.2), guidance=3.5, key=4, steps=7)
  D.generate_latents_sharded(
    toy_apply,
    {"scale": jnp.float32(0.5), "bias": jnp.float32(0.0)},
    S.make_schedule("linear"),
    problem["z_src"],
    problem["cond_src"],
    problem["cond"],
    steps=7,
    guidance=1.5,
    uncond=problem["uncond"],
    constraint=cons,
    rng=jax.random.key(0),
  )
  assert D.generate_latents_jit._cache_size() == n
  _gen(problem, cons, guidance=2.0, steps=9)  # a new step count is a new (static) shape
  assert D.generate_latents_jit._cache_size() == n + 1
