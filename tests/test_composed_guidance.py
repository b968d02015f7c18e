"""Composed classifier-free guidance (diffusion/compose.py): the step against a numpy reference
with a linear denoiser, DDIM with components against a numpy loop, the generator's component
token sets against ``explicit_emotion``, its one-emotion fallback, a two-emotion clip against
an unbatched reference, and bad guidance modes.

The tiny random-weight checkpoint is test_generate.py's (configs/tiny.py, 32x32 frames).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emotalker_jax import cli
from emotalker_jax import inference as I
from emotalker_jax.diffusion import compose
from emotalker_jax.diffusion import sampler as D
from emotalker_jax.diffusion import schedule as S
from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.models.eib import calibrate_intensities
from input_pipeline.pipeline import mask_region
from tests.test_generate import make_checkpoint, portrait32, speech

H = W = 4
C, L, DCTX = 3, 5, 6
STEPS = 3
E = {name: i for i, name in enumerate(EMOTIONS)}

_rng = np.random.default_rng(7)
_Wc = _rng.normal(size=(DCTX, C)).astype(np.float32)
_Ws = _rng.normal(size=(C, C)).astype(np.float32)
A_LIN = 0.7


def linear_denoise(z, t, cond):
  """out = a z + f(context) + g(spatial): f = mean over tokens @ Wc, g = spatial @ Ws."""
  f = cond["ctx"].mean(axis=1) @ jnp.asarray(_Wc)
  return A_LIN * z + f[:, None, None, :] + cond["spatial"] @ jnp.asarray(_Ws)


def linear_np(z, spatial, ctx):
  return A_LIN * z + (ctx.mean(axis=1) @ _Wc)[:, None, None, :] + spatial @ _Ws


@pytest.fixture(scope="module")
def toy():
  r = np.random.default_rng(3)
  B, K = 2, 3
  return {
    "z": r.normal(size=(B, H, W, C)).astype(np.float32),
    "spatial": r.normal(size=(1, H, W, C)).astype(np.float32),  # shared by every branch
    "ctx_k": r.normal(size=(K, B, L, DCTX)).astype(np.float32),
    "ctx_u": r.normal(size=(1, L, DCTX)).astype(np.float32),
  }


def test_composed_step_equals_numpy_reference(toy):
  z, sp, ck, cu = toy["z"], toy["spatial"], toy["ctx_k"], toy["ctx_u"]
  K, B = ck.shape[:2]
  w = 2.5
  got = compose.composed_output(
    linear_denoise,
    jnp.asarray(z),
    jnp.int32(10),
    {"spatial": sp[None], "ctx": ck},
    w,
    {"spatial": sp, "ctx": cu},
  )
  sp_b = np.broadcast_to(sp, (B, H, W, C))
  out_u = linear_np(z, sp_b, np.broadcast_to(cu, (B, L, DCTX)))
  want = out_u + w * sum(linear_np(z, sp_b, ck[i]) - out_u for i in range(K))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # One component: the conjunction is the joint eq. (5) with c = c_1.
  one = compose.composed_output(
    linear_denoise,
    jnp.asarray(z),
    10,
    {"spatial": sp[None], "ctx": ck[:1]},
    w,
    {"spatial": sp, "ctx": cu},
  )
  want1 = out_u + w * (linear_np(z, sp_b, ck[0]) - out_u)
  np.testing.assert_allclose(np.asarray(one), want1, rtol=1e-5, atol=1e-5)


def test_ddim_with_components_equals_numpy_loop(toy):
  z, sp, ck, cu = toy["z"], toy["spatial"], toy["ctx_k"], toy["ctx_u"]
  K, B = ck.shape[:2]
  sched = S.make_schedule("linear", 1000, 0.0015, 0.0195, "epsilon")
  w, steps = 1.7, 4
  got = D.ddim_sample(
    linear_denoise,
    sched,
    jnp.asarray(z),
    {"spatial": np.broadcast_to(sp, (B, H, W, C)), "ctx": ck[0]},
    steps=steps,
    guidance=w,
    uncond={"spatial": sp, "ctx": cu},
    components={"spatial": sp[None], "ctx": ck},
  )
  ab = np.asarray(sched.alphas_cumprod, np.float64)
  ts = D.ddim_timesteps(1000, steps)[::-1]
  sp_b = np.broadcast_to(sp, (B, H, W, C)).astype(np.float64)
  x = z.astype(np.float64)
  for k, t in enumerate(ts):
    out_u = linear_np(x, sp_b, np.broadcast_to(cu, (B, L, DCTX)))
    eps = out_u + w * sum(linear_np(x, sp_b, ck[i]) - out_u for i in range(K))
    a, a_prev = ab[t], (ab[ts[k + 1]] if k + 1 < steps else 1.0)
    x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
    x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
  np.testing.assert_allclose(np.asarray(got), x, rtol=1e-4, atol=1e-4)


def test_active_emotions_follow_threshold_and_max():
  s = np.zeros(8, np.float32)
  s[[E["angry"], E["happy"], E["surprised"], E["sad"], E["disgusted"]]] = [0.6, 0.3, 0.2, 0.1, 0.03]
  assert compose.active_emotions(s) == [E["angry"], E["happy"], E["surprised"]]
  assert compose.active_emotions(s, 0.05, 4) == [E["angry"], E["happy"], E["surprised"], E["sad"]]
  assert compose.active_emotions(s, 0.02, 8) == [1, 5, 7, 6, 3]
  assert compose.active_emotions(s, 0.25, 3) == [E["angry"], E["happy"]]
  assert compose.active_emotions(s, 0.05, 2) == [E["angry"], E["happy"]]
  neutral_and_one = np.eye(8, dtype=np.float32)[0] * 0.9
  neutral_and_one[E["happy"]] = 0.3
  assert compose.active_emotions(neutral_and_one) == [E["happy"]]  # neutral never composes
  tie = np.zeros(8, np.float32)
  tie[[E["sad"], E["fear"]]] = 0.4
  assert compose.active_emotions(tie) == [E["fear"], E["sad"]]  # ties in MEAD order
  r = compose.restricted_intensities(s, [1, 5])
  np.testing.assert_allclose(r.sum(1), [0.6, 0.3], rtol=1e-6)
  np.testing.assert_array_equal(r[0] > 0, np.eye(8)[1] > 0)
  for bad in ({"min_intensity": 0.0}, {"max_components": 0}):
    with pytest.raises(ValueError, match="compose_"):
      compose.active_emotions(s, **bad)


# ---- through the Generator (tiny model) ---------------------------------------------------


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
  return I.load_generator(make_checkpoint(str(tmp_path_factory.mktemp("ckpt")))["workdir"])


@pytest.mark.slow  # a tiny Generator's compiles: kept out of the default tier's budget
def test_component_tokens_are_explicit_emotion_of_restricted_vectors(gen):
  s = np.zeros(8, np.float32)
  s[[E["happy"], E["sad"], E["angry"], E["fear"]]] = [0.8, 0.25, 0.1, 0.04]
  for gamma in (1.0, 0.5):
    tokens, _, s_used, _ = gen.emotion(intensities=s, intensity_gamma=gamma)
    comps, idx = gen.emotion_components(tokens, s_used, gamma)
    assert idx == [E["happy"], E["sad"], E["angry"]]  # gamma 1: fear 0.04 < 0.05; 0.5: fear 4th
    s_cal = np.asarray(calibrate_intensities(s, gamma))
    assert comps.shape == (3,) + tokens.shape[1:]
    for k, i in enumerate(idx):
      r = np.zeros(8, np.float32)
      r[i] = s_cal[i]
      ref, _, _, _ = gen.emotion(intensities=r, intensity_gamma=1.0)
      np.testing.assert_allclose(np.asarray(comps[k]), np.asarray(ref[0]), atol=1e-6)
  comps2, idx2 = gen.emotion_components(tokens, s_used, 1.0, max_components=2)
  assert idx2 == [E["happy"], E["sad"]] and comps2.shape[0] == 2
  none, idx1 = gen.emotion_components(tokens, s_used, 1.0, min_intensity=0.3)
  assert none is None and idx1 == [E["happy"]]  # one component: joint guidance
  # A prompt: every component keeps the prompt's pooled-text tokens.
  p_tok, _, p_s, _ = gen.emotion(prompt="happy and a little sad")
  p_comps, p_idx = gen.emotion_components(p_tok, p_s, 1.0, min_intensity=1e-6)
  assert len(p_idx) == 3
  n = 8
  for k, i in enumerate(p_idx):
    r = np.zeros(8, np.float32)
    r[i] = p_s[i]
    ref, _, _, _ = gen.emotion(intensities=r)
    np.testing.assert_allclose(np.asarray(p_comps[k, :n]), np.asarray(ref[0, :n]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(p_comps[k, n:]), np.asarray(p_tok[0, n:]))
  assert p_tok.shape[1] > n  # the tiny model has pooled-text tokens


@pytest.mark.slow  # a tiny Generator's compiles: kept out of the default tier's budget
def test_composed_with_one_emotion_equals_joint(gen):
  portrait, audio = portrait32(), speech(0.2)
  happy = np.eye(8, dtype=np.float32)[E["happy"]] * 0.7
  joint, info_j = gen.generate(portrait, audio, intensities=happy, steps=STEPS)
  comp, info_c = gen.generate(
    portrait, audio, intensities=happy, steps=STEPS, guidance_mode="composed"
  )
  assert info_j["guidance_mode"] == "joint" and info_c["guidance_mode"] == "composed"
  assert info_c["compose_emotions"] == ["happy"]
  np.testing.assert_allclose(comp.astype(int), joint.astype(int), atol=0)


def reference_composed(gen, portrait, audio, s, guidance):
  """A two-emotion clip sampled with an UNBATCHED composed denoiser (one model call per
  branch, tokens from the model's methods), through ``sampler.invert_source`` and
  ``sample_frames`` with guidance None, on the default device."""
  from emotalker_jax.audio import features_from_config
  from emotalker_jax.models.autoencoder import decode_latent, encode_to_latent

  c = gen.config
  n = int(len(audio) * 25 // 16000)
  face = I.centre_face_mask(32).astype(np.float32)
  region = mask_region(face, str(c.data.mask))
  x_ref = portrait.astype(np.float32) / 127.5 - 1
  x_mask = np.where(region[..., None] > 0, 0.0, x_ref).astype(np.float32)
  mel = features_from_config(audio, n, c)
  silence = features_from_config(np.zeros(640, np.float32), 1, c)
  params, vae_params = jax.device_get(gen.params), jax.device_get(gen.vae_params)
  schedule, m = jax.device_get(gen.schedule), gen.model
  constraint = D.ConstraintConfig.from_config(c.sampler.constraint)
  rows = compose.restricted_intensities(s, compose.active_emotions(s))

  @jax.jit
  def run(params, vae_params, x, mel, silence, rows):
    p = {"params": params}
    z = encode_to_latent(gen.vae, vae_params, x)
    spatial = jnp.concatenate([z[:1], z[1:]], -1)
    sp_b = jnp.broadcast_to(spatial, (n,) + spatial.shape[1:])
    ctx_i = [
      m.apply(p, mel, m.apply(p, r[None], method="explicit_emotion"), method="context")
      for r in rows
    ]
    ctx_u = m.apply(p, mel, m.apply(p, 1, method="null_emotion"), method="context")
    neutral = jnp.eye(8)[:1]
    ctx_src = m.apply(p, silence, m.apply(p, neutral, method="explicit_emotion"), method="context")

    def den(zt, t, cond):
      return m.apply(p, zt, t, cond["spatial"], cond["context"], method="denoise")

    def composed(zt, t, cond):
      out_u = den(zt, t, {"spatial": sp_b, "context": ctx_u})
      return out_u + guidance * sum(
        den(zt, t, {"spatial": sp_b, "context": ci}) - out_u for ci in ctx_i
      )

    z_T, traj = D.invert_source(
      den,
      schedule,
      z[1:],
      {"spatial": spatial, "context": ctx_src},
      steps=STEPS,
      inversion_iters=int(c.sampler.inversion_iters),
    )
    mask = D.latent_mask_from_face_mask(face, z.shape[1:3], constraint.m_face)
    z0 = D.sample_frames(
      composed,
      schedule,
      z_T,
      traj,
      {"spatial": sp_b},
      steps=STEPS,
      constraint=constraint,
      mask=mask,
    )
    x = decode_latent(gen.vae, vae_params, z0)
    return jnp.clip(jnp.round((x + 1) * 127.5), 0, 255).astype(jnp.uint8)

  return np.asarray(run(params, vae_params, np.stack([x_mask, x_ref]), mel, silence, rows))


@pytest.mark.slow  # ~35 s on 2 loaded cores: a K = 2 chunk and the reference compile
def test_composed_two_emotions_matches_unbatched_reference(gen):
  portrait, audio = portrait32(), speech(0.2)
  s = np.zeros(8, np.float32)
  s[[E["happy"], E["sad"]]] = [0.8, 0.3]
  comp, info = gen.generate(portrait, audio, intensities=s, steps=STEPS, guidance_mode="composed")
  assert info["compose_emotions"] == ["happy", "sad"]
  ref = reference_composed(gen, portrait, audio, s, float(gen.config.sampler.guidance))
  diff = np.abs(comp.astype(int) - ref.astype(int))
  assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
  joint, _ = gen.generate(portrait, audio, intensities=s, steps=STEPS)
  assert np.abs(joint.astype(int) - comp.astype(int)).mean() > 0.5  # the modes differ


def test_bad_guidance_mode_is_a_clear_error(gen, capsys):
  with pytest.raises(ValueError, match=r"guidance_mode 'both'.*joint.*composed"):
    gen.generate(portrait32(), speech(0.2), intensities=np.eye(8)[5], guidance_mode="both")
  with pytest.raises(ValueError, match=r"--guidance-mode 'sum'.*\('joint', 'composed'\)"):
    compose.check_guidance_mode("sum", "--guidance-mode")
  argv = ["generate", "--checkpoint", "nowhere", "--portrait", "p.png", "--audio", "a.wav"]
  argv += ["--emotion", "happy=0.7", "--out", "o.mp4", "--guidance-mode", "sum"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "--guidance-mode 'sum'" in err and "'joint', 'composed'" in err
