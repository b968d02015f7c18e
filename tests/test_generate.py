"""Generation (issue #6, items 3 and 4): `emotalker generate`, the Generator against an
independent single-batch reference, bad inputs (`generate-dataset`: test_generate_dataset.py).

One tiny random-weight checkpoint per module (configs/tiny.py: 32x32 frames; its TrainState
built from the same ``init_state_fn`` as training and written with
``checkpoints.save_checkpoint``; the values are drawn directly instead of by
``build_trainer``, whose jitted init costs minutes on a loaded 2-core machine). One
Generator is compiled once and shared; the CLI is exercised in-process (each command loads
and compiles its own Generator) except the kill/resume test, which needs a real process to
SIGKILL.
"""

import copy
import dataclasses
import json
import os
import subprocess
import types
import warnings

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from scipy.io import wavfile

from emotalker_jax import checkpoints as ck
from emotalker_jax import cli
from emotalker_jax import inference as I
from emotalker_jax.emotions import EMOTIONS

# ffmpeg is started by fork+exec from this (JAX, multithreaded) process: harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
STEPS = 3
SR = 16000
HAPPY = np.eye(8, dtype=np.float32)[EMOTIONS.index("happy")] * 0.7


# ---- fixtures -------------------------------------------------------------------------------


def random_fill(abstract, seed):
  """Values for an abstract param tree: fan-in scaled normals, norm scales 1, small biases."""
  rng = np.random.default_rng(seed)

  def fill(path, x):
    name = str(path[-1])
    if "scale" in name:
      return np.ones(x.shape, x.dtype)
    if "bias" in name or x.ndim < 2:
      return (0.02 * rng.standard_normal(x.shape)).astype(x.dtype)
    return (rng.standard_normal(x.shape) / np.sqrt(np.prod(x.shape[:-1]))).astype(x.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def make_checkpoint(workdir):
  """A training workdir (orbax 'state' / 'data' / 'config' items) of configs/tiny.py with
  random weights and an autoencoder checkpoint (save_params) named in the config."""
  from emotalker_jax.config_utils import load_config
  from emotalker_jax.models.autoencoder import build_autoencoder, init_autoencoder
  from emotalker_jax.models.emotalker import EmoTalker, init_emotalker
  from emotalker_jax.models.text_encoder import read_text_config
  from emotalker_jax.training import state as state_lib

  config = load_config(os.path.join(REPO, "configs", "tiny.py"))
  vae = build_autoencoder(config)
  size = config.data.image_size
  vabs = nn.meta.unbox(
    jax.eval_shape(lambda r: init_autoencoder(vae, r, size), jax.random.key(0))["params"]
  )
  vae_dir = os.path.join(workdir, "vae")
  ck.save_params(vae_dir, random_fill(vabs, 1))
  with config.unlocked():
    config.train.autoencoder_checkpoint = vae_dir
    config.train.async_checkpointing = False
  text_dim = read_text_config(None, config.text.encoder)[1].hidden_size
  model = EmoTalker(config)
  tx = state_lib.make_optimizer(config.train)
  init = state_lib.init_state_fn(lambda r: init_emotalker(model, r, text_dim), tx)
  abstract = nn.meta.unbox(jax.eval_shape(init, jax.random.key(0)))
  params = random_fill(abstract.params, 2)
  state = state_lib.TrainState(
    step=jnp.int32(3),
    params=params,
    ema_params=random_fill(abstract.ema_params, 3),
    opt_state=tx.init(params),
    rng=jax.random.key(5),
    tx=tx,
  )
  mngr = ck.checkpoint_manager(workdir, config)
  ck.save_checkpoint(mngr, types.SimpleNamespace(state=state, config=config), None)
  mngr.wait_until_finished()
  mngr.close()
  return {"workdir": workdir, "params": params, "ema_params": state.ema_params}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  return make_checkpoint(str(tmp_path_factory.mktemp("ckpt")))


@pytest.fixture(scope="module")
def workdir(saved):
  return saved["workdir"]


@pytest.fixture(scope="module")
def gen(workdir):
  return I.load_generator(workdir)


def speech(seconds, seed=0, amp=0.3):
  """A voiced-speech-like waveform: 140 Hz harmonics under a 4 Hz syllable envelope."""
  t = np.arange(int(round(seconds * SR))) / SR
  env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + seed)
  x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
  return (amp * env * x / 2).astype(np.float32)


def portrait32(seed=0):
  """A smooth random 32x32 'portrait' (the tiny model's size: taken as is)."""
  r = np.random.default_rng(seed)
  x = np.cumsum(np.cumsum(r.normal(size=(32, 32, 3)), 0), 1)
  x = (x - x.min()) / (x.max() - x.min())
  return np.round(255 * x).astype(np.uint8)


def write_png(path, arr):
  Image.fromarray(arr).save(path)
  return str(path)


def write_wav(path, x):
  wavfile.write(str(path), SR, np.asarray(x, np.float32))
  return str(path)


def probe(path):
  """(video frame count, has an audio stream) with the bundled ffmpeg."""
  import imageio_ffmpeg

  n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
  err = subprocess.run(
    [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
    capture_output=True,
    text=True,
  ).stderr
  return n, "Audio: aac" in err


# ---- the generator against an independent reference ---------------------------------------


def reference_frames(gen, portrait, face_mask, audio, intensities, steps, guidance, constraint):
  """Every frame as ONE batch through ``sampler.generate_latents`` (which inverts inside),
  conditions assembled here from the model's methods, on the default device, no mesh."""
  from emotalker_jax.audio import features_from_config
  from emotalker_jax.diffusion import sampler
  from emotalker_jax.models.autoencoder import decode_latent, encode_to_latent

  c = gen.config
  n = int(len(audio) * 25 // SR)
  x_ref = portrait.astype(np.float32) / 127.5 - 1
  x_mask = np.where(face_mask[..., None] > 0, 0.0, x_ref).astype(np.float32)
  mel = features_from_config(audio, n, c)
  silence = features_from_config(np.zeros(640, np.float32), 1, c)
  neutral = np.eye(8, dtype=np.float32)[:1]
  params, vae_params = jax.device_get(gen.params), jax.device_get(gen.vae_params)
  schedule = jax.device_get(gen.schedule)
  m = gen.model

  @jax.jit
  def run(params, vae_params, x, mel, silence, s):
    p = {"params": params}
    z = encode_to_latent(gen.vae, vae_params, x)
    spatial = jnp.concatenate([z[:1], z[1:]], -1)
    ctx = m.apply(p, mel, m.apply(p, s, method="explicit_emotion"), method="context")
    ctx_null = m.apply(p, mel, m.apply(p, 1, method="null_emotion"), method="context")
    ctx_src = m.apply(p, silence, m.apply(p, neutral, method="explicit_emotion"), method="context")
    den = lambda zt, t, cond: m.apply(
      p,
      zt,
      t,
      cond["spatial"],
      cond["context"],  # noqa
      method="denoise",
    )
    mask = sampler.latent_mask_from_face_mask(face_mask, z.shape[1:3], constraint.m_face)
    z0 = sampler.generate_latents(
      den,
      schedule,
      z[1:],
      {"spatial": spatial, "context": ctx_src},
      {"spatial": jnp.broadcast_to(spatial, (n,) + spatial.shape[1:]), "context": ctx},
      steps=steps,
      guidance=guidance,
      uncond={"spatial": spatial, "context": ctx_null},
      constraint=constraint,
      mask=mask,
      inversion_iters=int(c.sampler.inversion_iters),
    )
    x = decode_latent(gen.vae, vae_params, z0)
    return jnp.clip(jnp.round((x + 1) * 127.5), 0, 255).astype(jnp.uint8)

  return np.asarray(
    run(params, vae_params, np.stack([x_mask, x_ref]), mel, silence, intensities[None])
  )


def test_generator_matches_single_batch_reference_and_is_deterministic(gen):
  from emotalker_jax.diffusion import sampler

  portrait = portrait32()
  face = I.centre_face_mask(32).astype(np.float32)
  audio = speech(0.4)  # 10 frames: two chunks of 8 on 8 devices
  constraint = sampler.ConstraintConfig.from_config(gen.config.sampler.constraint)
  frames, info = gen.generate(
    portrait,
    audio,
    intensities=HAPPY,
    steps=STEPS,
    seed=0,
    face_mask=face,
    batch_frames=8,
    constraint=constraint,
  )
  assert frames.shape == (10, 32, 32, 3) and frames.dtype == np.uint8
  assert info["devices"] == 8 and info["batch_frames"] == 8
  assert info["emotion_source"] == "intensities"
  np.testing.assert_allclose(list(info["intensities"].values()), HAPPY, atol=1e-4)
  ref = reference_frames(gen, portrait, face, audio, HAPPY, STEPS, 2.0, constraint)
  diff = np.abs(frames.astype(int) - ref.astype(int))
  assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
  assert np.std(frames.astype(float), axis=0).mean() > 1.0  # frames follow their audio
  again, info2 = gen.generate(
    portrait,
    audio,
    intensities=HAPPY,
    steps=STEPS,
    seed=0,
    face_mask=face,
    batch_frames=8,
    constraint=constraint,
  )
  np.testing.assert_array_equal(again, frames)  # deterministic, bit for bit
  # The second call reused the portrait's inversion; inverting afresh gives the same bytes,
  # and another portrait, mask or step count is inverted anew.
  assert info2["inversion_cached"]
  gen._inversions.clear()
  fresh, info3 = gen.generate(
    portrait,
    audio,
    intensities=HAPPY,
    steps=STEPS,
    seed=0,
    face_mask=face,
    batch_frames=8,
    constraint=constraint,
  )
  assert not info3["inversion_cached"]
  np.testing.assert_array_equal(fresh, frames)
  for kw in (
    {"portrait": portrait32(seed=1)},
    {"face_mask": np.roll(face, 2, axis=0)},
    {"steps": STEPS + 1},
  ):
    args = {"portrait": portrait, "face_mask": face, "steps": STEPS, **kw}
    _, info4 = gen.generate(
      args.pop("portrait"),
      audio,
      intensities=HAPPY,
      seed=0,
      batch_frames=8,
      constraint=constraint,
      **args,
    )
    assert not info4["inversion_cached"], kw


def test_prompt_and_explicit_intensities_both_drive_generation(gen):
  portrait, audio = portrait32(), speech(0.2)
  happy, info_h = gen.generate(portrait, audio, intensities=HAPPY, steps=STEPS)
  sad, _ = gen.generate(portrait, audio, intensities=np.eye(8)[6], steps=STEPS)
  prompt, info_p = gen.generate(portrait, audio, prompt="very happy", steps=STEPS)
  assert len(happy) == len(prompt) == 5
  assert info_p["emotion_source"] == "prompt"
  # The prompt's intensities are the EIB's s_hat on the text encoder's tokens.
  hidden, mask = gen.text.encode(["very happy"])
  _, s_hat = gen.model.apply(
    {"params": jax.device_get(gen.params)}, hidden, mask, method="text_emotion"
  )
  np.testing.assert_allclose(list(info_p["intensities"].values()), np.asarray(s_hat)[0], atol=1e-4)
  for a, b in [(happy, sad), (happy, prompt)]:
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5
  with pytest.raises(ValueError, match="exactly one"):
    gen.generate(portrait, audio, prompt="happy", intensities=HAPPY, steps=STEPS)
  with pytest.raises(ValueError, match="empty"):
    gen.generate(portrait, audio, prompt="  ", steps=STEPS)
  with pytest.raises(ValueError, match=r"8 numbers in \[0, 1\]"):
    gen.generate(portrait, audio, intensities=[2.0] * 8, steps=STEPS)


def test_intensity_calibration_builds_the_tokens_from_s_to_the_gamma(gen):
  from emotalker_jax.models.eib import calibrate_intensities

  # "mostly happy, a little surprised" as FED labels it, and its calibration by hand:
  # s_k' = max(s) * (s_k / max(s)) ** gamma.
  s = np.zeros(8, np.float32)
  s[EMOTIONS.index("happy")], s[EMOTIONS.index("surprised")] = 0.8, 0.3
  want = s.copy()
  want[EMOTIONS.index("surprised")] = 0.8 * (0.3 / 0.8) ** 0.5
  c = np.asarray(calibrate_intensities(jnp.asarray(s), 0.5))
  np.testing.assert_allclose(c, want, rtol=1e-6)
  # The strongest, zeros and the order stay; a one-emotion vector (the strength sweep)
  # and the all-zero vector are unchanged; rows are calibrated independently.
  ramp = np.array(
    [[0.0, 0.08, 0.3, 0.5, 0.8, 0.9, 0.0, 0.0], np.eye(8)[3] * 0.4, np.zeros(8)], np.float32
  )
  c = np.asarray(calibrate_intensities(jnp.asarray(ramp), 0.3))
  assert c[0, 5] == pytest.approx(0.9) and c[0, 0] == 0 and np.all(np.diff(c[0, :6]) > 0)
  assert np.all(c[0, 1:5] > ramp[0, 1:5]) and c[0, 5] >= c[0].max()
  np.testing.assert_allclose(c[1:], ramp[1:], rtol=1e-6)
  assert calibrate_intensities(s, 1.0) is s
  with pytest.raises(ValueError, match="intensity_gamma must be > 0"):
    calibrate_intensities(s, 0.0)
  assert gen.intensity_gamma == 1.0  # configs/tiny.py, no calibration.json
  # Explicit intensities: gamma 0.5 on s gives exactly the tokens of the calibrated vector
  # uncalibrated, and the intensities reported are s as given.
  t_cal, _, s_rep, _ = gen.emotion(intensities=s, intensity_gamma=0.5)
  t_ref, _, _, _ = gen.emotion(intensities=want, intensity_gamma=1.0)
  np.testing.assert_allclose(np.asarray(t_cal), np.asarray(t_ref), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(s_rep, s)
  # A prompt: the K emotion tokens come from the calibrated s_hat, the text tokens are the
  # prompt's as before, and the reported s_hat is the EIB's reading.
  prompt = "mostly happy, a little surprised"
  p_cal, _, s_cal, _ = gen.emotion(prompt=prompt, intensity_gamma=0.5)
  p_one, _, s_one, _ = gen.emotion(prompt=prompt, intensity_gamma=1.0)
  np.testing.assert_array_equal(s_cal, s_one)
  e_ref, _, _, _ = gen.emotion(
    intensities=np.asarray(calibrate_intensities(s_one, 0.5)), intensity_gamma=1.0
  )
  K = len(EMOTIONS)
  np.testing.assert_allclose(
    np.asarray(p_cal)[:, :K], np.asarray(e_ref)[:, :K], rtol=1e-5, atol=1e-6
  )
  np.testing.assert_array_equal(np.asarray(p_cal)[:, K:], np.asarray(p_one)[:, K:])
  assert np.abs(np.asarray(p_cal)[:, :K] - np.asarray(p_one)[:, :K]).max() > 1e-3
  # generate: calibrating s equals feeding the calibrated vector, frame for frame.
  portrait, audio = portrait32(), speech(0.2)
  a, info = gen.generate(portrait, audio, intensities=s, steps=STEPS, intensity_gamma=0.5)
  b, _ = gen.generate(portrait, audio, intensities=want, steps=STEPS)
  # Two float paths (pow inside the jitted emotion fn vs the same vector computed here):
  # the tokens agree to ~1e-6, which can flip a pixel's rounding to uint8 by one step, so
  # the frames may differ by at most one quantisation step, and only in a few pixels.
  diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
  assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
  assert info["intensity_gamma"] == 0.5
  np.testing.assert_allclose(list(info["intensities"].values()), s, atol=1e-6)
  with pytest.raises(ValueError, match="intensity_gamma must be > 0"):
    gen.generate(portrait, audio, intensities=s, steps=STEPS, intensity_gamma=-1.0)


def test_calibration_json_applies_only_to_the_settings_it_was_measured_with(tmp_path, workdir, gen):
  import shutil

  wd = str(tmp_path / "wd")
  shutil.copytree(workdir, wd)
  path = ck.calibration_path(wd)
  assert path == os.path.join(wd, "calibration.json")
  cfg = ck.load_checkpoint_config(wd)[0]
  assert cfg.sampler.intensity_gamma == 1.0
  steps, guidance = int(cfg.sampler.steps), float(cfg.sampler.guidance)
  # `emotalker calibrate`'s writer, for a generator of this checkpoint's step 3 (EMA)
  from emotalker_jax.commands.calibrate import _gammas

  fake = types.SimpleNamespace(
    checkpoint_dir=os.path.join(wd, "checkpoints"), step=3, use_ema=True, config=cfg
  )
  table = [{"gamma": 1.0, "intensity_error": 0.5}, {"gamma": 0.6, "intensity_error": 0.3}]
  judge = str(tmp_path / "judge")
  assert ck.write_calibration(fake, {"intensity_gamma": 0.6, "per_gamma": table}, judge) == path
  record = ck.read_calibration(wd, 3)
  assert record["intensity_gamma"] == 0.6 and record["per_gamma"] == table
  assert record["checkpoint_step"] == 3 and record["params"] == "ema"
  assert record["steps"] == steps and record["guidance"] == guidance
  assert record["judge"] == os.path.abspath(judge)
  # The same step, params, steps, guidance and judge: applied.
  assert ck.load_checkpoint_config(wd)[0].sampler.intensity_gamma == 0.6
  assert (
    ck.load_checkpoint_config(os.path.join(wd, "checkpoints"), judge=judge)[
      0
    ].sampler.intensity_gamma
    == 0.6
  )
  over = ck.load_checkpoint_config(wd, ["--config.sampler.intensity_gamma=0.9"])[0]
  assert over.sampler.intensity_gamma == 0.9  # a flag still wins
  # Anything else measured differently: refused with a warning naming it, gamma 1.
  refused = [
    ({"use_ema": False}, "params raw \\(measured with ema\\)"),
    ({"judge": str(tmp_path / "other")}, "judge .*other"),
    (
      {"config_overrides": [f"--config.sampler.steps={steps + 5}"]},
      f"DDIM steps {steps + 5} \\(measured with {steps}\\)",
    ),
    ({"config_overrides": [f"--config.sampler.guidance={guidance + 1}"]}, "guidance"),
  ]
  for kw, match in refused:
    with pytest.warns(UserWarning, match=match):
      assert ck.load_checkpoint_config(wd, **kw)[0].sampler.intensity_gamma == 1.0
  with open(path, "w") as fh:
    json.dump({**record, "checkpoint_step": 5}, fh)
  with pytest.warns(UserWarning, match="checkpoint step 3 \\(measured with 5\\)"):
    assert ck.load_checkpoint_config(wd)[0].sampler.intensity_gamma == 1.0
  with open(path, "w") as fh:  # a file of an older version: no steps / guidance recorded
    json.dump({"intensity_gamma": 0.6, "checkpoint_step": 3, "params": "ema"}, fh)
  with pytest.warns(UserWarning, match="DDIM steps .*measured with None"):
    assert ck.load_checkpoint_config(wd)[0].sampler.intensity_gamma == 1.0
  # A generator whose gamma came from the file samples uncalibrated, with a warning, when a
  # call asks for other DDIM steps; and its info reports the calibrated vector it used.
  g = dataclasses.replace(
    gen, calibration=dict(record, steps=STEPS + 1), config=copy.deepcopy(gen.config)
  )
  g.config.sampler.intensity_gamma = 0.6
  s = np.zeros(8, np.float32)
  s[EMOTIONS.index("happy")], s[EMOTIONS.index("surprised")] = 0.8, 0.3
  portrait, audio = portrait32(), speech(0.2)
  with pytest.warns(UserWarning, match="this call samples uncalibrated"):
    _, info = g.generate(portrait, audio, intensities=s, steps=STEPS)
  assert info["intensity_gamma"] == 1.0
  np.testing.assert_allclose(list(info["intensities_calibrated"].values()), s, atol=1e-6)
  g.calibration = dict(record, steps=STEPS)
  _, info = g.generate(portrait, audio, intensities=s, steps=STEPS)
  assert info["intensity_gamma"] == 0.6
  want = s.copy()
  want[EMOTIONS.index("surprised")] = 0.8 * (0.3 / 0.8) ** 0.6
  # info rounds intensities to 4 decimals for JSON: half a unit of the 4th decimal.
  np.testing.assert_allclose(list(info["intensities_calibrated"].values()), want, atol=5.1e-5)
  np.testing.assert_allclose(list(info["intensities"].values()), s, atol=1e-6)
  assert _gammas("1, 0.5,0.25") == (1.0, 0.5, 0.25)
  for bad in ("1,0", "a,b", ""):
    with pytest.raises(Exception, match="give numbers > 0"):
      _gammas(bad)


def test_silent_audio_warns_and_still_generates(gen):
  with pytest.warns(UserWarning, match="silent"):
    frames, info = gen.generate(
      portrait32(), np.zeros(3200, np.float32), intensities=HAPPY, steps=STEPS
    )
  assert frames.shape == (5, 32, 32, 3) and info["audio_silent"]


# ---- bad inputs -------------------------------------------------------------------------------


def test_portrait_preparation_and_bad_portraits(tmp_path):
  # Real photos (face detection, alignment, paste-back): tests/test_generate_real.py.
  # Greyscale -> three equal channels, with a warning; RGBA -> composited over white.
  g = portrait32().mean(-1).astype(np.uint8)
  with pytest.warns(UserWarning, match="is greyscale"):
    p = I.prepare_portrait(write_png(tmp_path / "grey.png", g), 32, crop="center")
  assert p.greyscale and np.array_equal(p.image[..., 0], p.image[..., 1])
  np.testing.assert_array_equal(p.image[..., 0], g)
  rgba = np.dstack([np.full((80, 80, 3), (10, 60, 110), np.uint8), np.zeros((80, 80), np.uint8)])
  rgba[20:60, 20:60, 3] = 255
  c = I.prepare_portrait(write_png(tmp_path / "rgba.png", rgba), 40, crop="center")
  assert c.crop == "center" and (c.image[0, 0] == 255).all()
  assert (c.image[20, 20] == (10, 60, 110)).all() and not c.greyscale
  assert c.matrix is None and c.landmarks is None and c.photo.shape == (80, 80, 3)
  # A non-square image: the central square.
  wide = np.zeros((100, 300, 3), np.uint8)
  wide[:, 100:200] = (200, 120, 90)
  assert (I.prepare_portrait(wide, 50, crop="center").image == (200, 120, 90)).all()
  # Exactly the model size with --crop center: taken as is (even below 64 px).
  small = portrait32()
  got = I.prepare_portrait(small, 32, crop="center")
  assert np.array_equal(got.image, small) and np.array_equal(got.face_mask, I.centre_face_mask(32))
  with pytest.raises(ValueError, match="is 40x40, at least 64 px needed"):
    I.prepare_portrait(write_png(tmp_path / "tiny.png", np.zeros((40, 40, 3), np.uint8)), 32)
  with pytest.raises(ValueError, match="is 32x32, at least 64 px needed.*--crop center"):
    I.prepare_portrait(small, 32)  # --crop face detects, and needs >= 64 px
  with pytest.raises(ValueError, match="is 8200x8, larger than 8192 px"):
    I.prepare_portrait(write_png(tmp_path / "huge.png", np.zeros((8, 8200, 3), np.uint8)), 32)
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(ValueError, match="cannot read portrait .*text.png.*PNG or JPEG"):
    I.prepare_portrait(str(tmp_path / "text.png"), 32)
  with pytest.raises(FileNotFoundError, match="portrait .*nope.png.* not found"):
    I.prepare_portrait(str(tmp_path / "nope.png"), 32)
  with pytest.raises(ValueError, match="no face found .*--crop center"):
    I.prepare_portrait(write_png(tmp_path / "flat.png", np.full((96, 96, 3), 128, np.uint8)), 32)


def test_bad_audio(tmp_path):
  with pytest.raises(ValueError, match="30 ms long; at least 40 ms"):
    I.load_generation_audio(write_wav(tmp_path / "short.wav", speech(0.03)), SR)
  with pytest.raises(ValueError, match=r"1\.5 s long, over the limit of 1 s.*--max-audio-seconds"):
    I.load_generation_audio(write_wav(tmp_path / "long.wav", speech(1.5)), SR, max_seconds=1)
  with pytest.raises(FileNotFoundError, match="not found"):
    I.load_generation_audio(str(tmp_path / "nope.wav"), SR)
  # Silent audio loads (the warning comes once, from generate); 1 s -> 25 frames.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    x = I.load_generation_audio(write_wav(tmp_path / "silent.wav", np.zeros(SR)), SR)
  assert I.check_audio(x, SR) == 25 and I.num_frames_for(3199, SR, 25) == 4


def test_restores_ema_or_raw_params_exactly(gen, saved):
  def same(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), y) for x, y in zip(la, lb))

  assert gen.step == 3 and same(gen.params, saved["ema_params"])
  raw = I.load_generator(saved["workdir"], use_ema=False, text=gen.text)
  assert same(raw.params, saved["params"]) and not same(raw.params, saved["ema_params"])
  assert all(
    s.mesh == gen.mesh for s in (x.sharding for x in jax.tree.leaves(raw.params))
  )  # laid out on the mesh


def test_missing_checkpoint_and_config_overrides(tmp_path, workdir):
  with pytest.raises(
    FileNotFoundError, match="checkpoint directory .*nope not found.*emotalker train"
  ):
    I.load_generator(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*empty.*emotalker train"):
    I.load_generator(str(tmp_path / "empty"))
  cfg, folder, step = ck.load_checkpoint_config(
    workdir, ["--config.sampler.constraint.strength=0.9", "--config.sampler.steps=7"]
  )
  assert (cfg.sampler.constraint.strength, cfg.sampler.steps, step) == (0.9, 7, 3)
  assert folder.endswith("checkpoints")
  assert cfg.unet.block_out_channels == (32, 64)  # JSON lists are tuples again
  # the checkpoints/ folder itself works too
  assert ck.load_checkpoint_config(folder)[2] == 3
  with pytest.raises(ValueError, match="bad config override.*sampler.nope"):
    ck.load_checkpoint_config(workdir, ["--config.sampler.nope=1"])


# ---- emotalker generate -----------------------------------------------------------------------


def test_cli_generate_writes_mp4_with_audio_and_contact_sheet(tmp_path, workdir, gen, capsys):
  del gen  # compiled functions are shared through the module-level cache
  portrait = write_png(tmp_path / "p.png", portrait32())
  audio = write_wav(tmp_path / "a.wav", speech(0.2))
  outs = []
  for k in range(2):
    out = tmp_path / f"o{k}" / "clip.mp4"
    rc = cli.main(
      [
        "generate",
        "--checkpoint",
        workdir,
        "--portrait",
        portrait,
        "--audio",
        audio,
        "--emotion",
        "happy=0.7",
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--no-progress",
        "--crop",
        "center",
        "--config.sampler.constraint.strength=0.8",
      ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["constraint"]["strength"] == 0.8 and summary["num_frames"] == 5
    assert summary["intensities"]["happy"] == 0.7 and summary["crop"] == "center"
    assert summary["video_size"] == [32, 32] and not summary["paste_back"]
    assert probe(out) == (5, True)
    sheet = np.asarray(Image.open(out.with_suffix(".png")))
    assert sheet.shape[2] == 3 and sheet.shape[0] >= 128
    assert sorted(os.listdir(out.parent)) == ["clip.mp4", "clip.png"]  # no temp files
    outs.append(out.read_bytes())
  assert outs[0] == outs[1]  # same seed, same bytes
  rc = cli.main(
    [
      "generate",
      "--checkpoint",
      workdir,
      "--portrait",
      str(tmp_path / "x.png"),
      "--audio",
      audio,
      "--prompt",
      "happy",
      "--out",
      str(tmp_path / "x.mp4"),
    ]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("emotalker generate: error: portrait") and "not found" in err
  rc = cli.main(
    [
      "generate",
      "--checkpoint",
      str(tmp_path / "none"),
      "--portrait",
      portrait,
      "--audio",
      audio,
      "--prompt",
      "happy",
      "--out",
      str(tmp_path / "x.mp4"),
    ]
  )
  assert rc == 2 and "emotalker train" in capsys.readouterr().err


def test_a_prompt_without_emotion_content_is_drawn_neutral_with_a_warning(gen, monkeypatch):
  """The rule of `emotalker emotion` (models.eib.no_emotion_content) in generation: such a
  prompt gives exactly the frames of the explicit neutral vector. The tiny model's EIB is
  untrained, so the EIB's reading is replaced by a stub that finds no content."""
  from emotalker_jax import fed
  from emotalker_jax.inference import generator as G

  portrait, audio = portrait32(), speech(0.2)
  neutral = np.zeros(8, np.float32)
  neutral[0] = fed.NEUTRAL_DEFAULT
  want, _ = gen.generate(portrait, audio, intensities=neutral, steps=STEPS)
  monkeypatch.setattr(G, "no_emotion_content", lambda s, prompts: np.ones(len(prompts), bool))
  with pytest.warns(UserWarning, match="'reading the weather report' names no emotion"):
    got, info = gen.generate(portrait, audio, prompt="reading the weather report", steps=STEPS)
  np.testing.assert_array_equal(got, want)
  assert info["emotion_source"] == "no_emotion_content"
  assert info["intensities"]["neutral"] == pytest.approx(fed.NEUTRAL_DEFAULT)
