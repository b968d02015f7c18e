"""AudioEncoder, LandmarkEncoder and the cross-attention context assembly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
import numpy as np
import pytest

from emotalker_jax import audio as A
from emotalker_jax.config_utils import load_config
from emotalker_jax.models import conditioner as C

SR = 16000


@pytest.fixture(scope="module")
def cfg(repo_root):
  return load_config(str(repo_root / "configs" / "tiny.py"))


@pytest.fixture(scope="module")
def windows():
  """Log-mel windows of 3 s of two different signals: (2, 75, 21, 80)."""
  t = np.arange(3 * SR) / SR
  speechy = 0.4 * np.sin(2 * np.pi * (200 * t + 400 * t * t)) * (0.5 + 0.5 * np.sin(7 * t))
  buzz = 0.3 * np.sign(np.sin(2 * np.pi * 110 * t)) * (t % 0.5 < 0.25)
  x = np.stack([speechy, buzz]).astype(np.float32)
  return np.asarray(A.audio_features(x, 75))


@pytest.fixture(scope="module")
def encoder(cfg, windows):
  enc = C.AudioEncoder.from_config(cfg)
  init = jax.jit(enc.init)
  variables = init(jax.random.key(0), windows[0, :2])
  apply = jax.jit(enc.apply)
  return enc, variables, apply, init


def test_audio_tokens_shape_follow_config_and_leading_dims(cfg, encoder, windows):
  enc, variables, apply, init = encoder
  tok = apply(variables, windows[0])  # (N, W, 80) frames
  assert tok.shape == (75, cfg.audio.tokens_per_frame, cfg.context_dim)
  tok_clip = apply(variables, windows)  # (B, N, W, 80)
  assert tok_clip.shape == (2, 75, cfg.audio.tokens_per_frame, cfg.context_dim)
  # leading dims are just a batch: same tokens either way
  np.testing.assert_allclose(tok_clip[0], tok, atol=1e-5)


def test_audio_tokens_depend_on_audio_and_are_deterministic(cfg, encoder, windows):
  enc, variables, apply, init = encoder
  a, b = apply(variables, windows[0]), apply(variables, windows[1])
  rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
  assert rel > 0.1, rel
  # different frames of the same clip differ too (the encoder sees its own window)
  assert float(jnp.abs(a[10] - a[40]).max()) > 1e-2
  np.testing.assert_array_equal(np.asarray(apply(variables, windows[0])), np.asarray(a))
  # same seed -> same params -> same tokens; another seed -> other tokens
  v2 = init(jax.random.key(0), windows[0, :2])
  np.testing.assert_array_equal(np.asarray(apply(v2, windows[0])), np.asarray(a))
  v3 = init(jax.random.key(1), windows[0, :2])
  assert float(jnp.abs(apply(v3, windows[0]) - a).max()) > 1e-2


def test_frames_are_encoded_independently(encoder, windows):
  """Frame i's tokens depend only on window i: batching / slicing changes nothing."""
  _, variables, apply, _ = encoder
  full = apply(variables, windows[0])
  part = apply(variables, windows[0, 30:38])
  np.testing.assert_allclose(part, full[30:38], atol=1e-5)
  changed = windows[0].copy()
  changed[5] = windows[1, 5]
  out = apply(variables, changed)
  np.testing.assert_allclose(np.delete(out, 5, 0), np.delete(full, 5, 0), atol=1e-5)
  assert float(jnp.abs(out[5] - full[5]).max()) > 1e-2


def test_gradients_reach_every_param(encoder, windows):
  _, variables, _, _ = encoder
  enc = encoder[0]
  params = variables["params"]
  target = jax.random.normal(jax.random.key(3), (8, 4, 64))
  x = windows[0, 20:28]

  @jax.jit
  def loss(p):
    return jnp.mean((enc.apply({"params": p}, x) - target) ** 2)

  grads = nn.unbox(jax.grad(loss)(params))
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert len(flat) > 20
  for path, g in flat:
    assert np.isfinite(np.asarray(g)).all(), path
    assert float(jnp.abs(g).max()) > 0.0, f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_every_param_has_logical_names_from_the_config_rules(cfg, encoder):
  _, variables, _, _ = encoder
  rule_names = {name for name, _ in cfg.logical_axis_rules}
  boxed = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert boxed and all(isinstance(b, nn.Partitioned) for b in boxed)
  for b in boxed:
    assert len(b.names) == b.value.ndim
    assert set(b.names) - {None} <= rule_names, b.names
    assert any(n is not None for n in b.names)


def test_params_shard_on_an_fsdp_tensor_mesh(cfg, encoder, windows):
  """The logical names map to a valid sharding on a (data 2, fsdp 2, tensor 2) mesh."""
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  rules = tuple(cfg.logical_axis_rules)
  enc = C.AudioEncoder.from_config(cfg)
  x = jnp.asarray(windows[0, :8])
  abstract = jax.eval_shape(enc.init, jax.random.key(0), x)
  specs = nn.get_partition_spec(abstract)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    variables = jax.jit(enc.init, out_shardings=shardings)(jax.random.key(0), x)
    x_sh = jax.device_put(x, NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"))))
    out = jax.jit(enc.apply)(variables, x_sh)
  k = variables["params"]["block0"]["fc1"]["kernel"].value
  assert k.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  _, fixture_vars, apply, _ = encoder  # same seed: same values, unsharded
  np.testing.assert_array_equal(
    np.asarray(variables["params"]["conv0"]["kernel"].value),
    np.asarray(fixture_vars["params"]["conv0"]["kernel"].value),
  )
  ref = apply(fixture_vars, np.asarray(x))
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params(cfg, encoder, windows):
  _, variables, apply, _ = encoder
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(variables)))
  enc16 = C.AudioEncoder.from_config(cfg).clone(dtype=jnp.bfloat16)
  x = windows[0, :8]
  out = jax.jit(enc16.apply)(variables, x)
  ref = apply(variables, x)
  assert out.dtype == jnp.bfloat16
  rel = float(jnp.linalg.norm(out.astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
  assert rel < 0.05, rel


# ---------------------------------------------------------------------------------------
# Context assembly and landmarks
# ---------------------------------------------------------------------------------------
def test_assemble_context_order_and_broadcast():
  ka, ke, kl = jax.random.split(jax.random.key(0), 3)
  audio = jax.random.normal(ka, (3, 4, 16))
  emo = jax.random.normal(ke, (3, 12, 16))
  lm = jax.random.normal(kl, (3, 2, 16))
  ctx = C.assemble_context(audio, emo)
  assert ctx.shape == (3, 16, 16)
  np.testing.assert_array_equal(ctx[:, :4], audio)
  np.testing.assert_array_equal(ctx[:, 4:], emo)
  ctx = C.assemble_context(audio, emo, lm)
  np.testing.assert_array_equal(ctx[:, :4], audio)
  np.testing.assert_array_equal(ctx[:, 4:16], emo)
  np.testing.assert_array_equal(ctx[:, 16:], lm)
  # one prompt for the whole clip: batch-1 emotion tokens broadcast to every frame
  ctx = C.assemble_context(audio, emo[:1])
  for i in range(3):
    np.testing.assert_array_equal(ctx[i, 4:], emo[0])
  with pytest.raises(ValueError, match="width 8.*context_dim"):
    C.assemble_context(audio, emo[..., :8])
  with pytest.raises(ValueError, match="batch 2"):
    C.assemble_context(audio, emo[:2])


def test_conditioner_context_without_landmarks(cfg, encoder, windows):
  _, variables, apply, _ = encoder
  x = windows[0]  # (75, 21, 80): one clip
  emo = jax.random.normal(jax.random.key(1), (1, 12, cfg.context_dim))
  cond = C.Conditioner.from_config(cfg)
  abstract = jax.eval_shape(cond.init, jax.random.key(0), x, emo)
  assert set(abstract["params"]) == {"audio"}  # no landmark encoder
  v = {"params": {"audio": variables["params"]}}
  ctx = jax.jit(cond.apply)(v, x, emo)
  assert ctx.shape == (75, cfg.audio.tokens_per_frame + 12, cfg.context_dim)
  assert C.num_context_tokens(cfg, 12) == ctx.shape[1]
  # audio tokens first, exactly as the audio encoder makes them; then the prompt's tokens
  np.testing.assert_allclose(ctx[:, :4], apply({"params": v["params"]["audio"]}, x), atol=1e-6)
  np.testing.assert_array_equal(ctx[:, 4:], jnp.broadcast_to(emo, (75, 12, cfg.context_dim)))


def test_landmark_encoder_layouts_and_locality():
  enc = C.LandmarkEncoder(num_tokens=4, context_dim=64)
  lm = jax.random.uniform(jax.random.key(2), (3, 68, 2))
  v = jax.jit(enc.init)(jax.random.key(0), lm)
  apply = jax.jit(enc.apply)
  tok = apply(v, lm)
  assert tok.shape == (3, 4, 64)
  np.testing.assert_allclose(apply(v, lm.reshape(3, 136)), tok, atol=1e-6)  # (B, 68*2)
  moved = apply(v, lm.at[0, 48:].add(0.05))  # open frame 0's mouth
  assert float(jnp.abs(moved[0] - tok[0]).max()) > 1e-3
  np.testing.assert_allclose(moved[1:], tok[1:], atol=1e-6)
  with pytest.raises(ValueError, match=r"\(B, P, 2\)"):
    jax.eval_shape(enc.apply, v, lm[..., :1])
