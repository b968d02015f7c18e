"""UNet / autoencoder invariants: gradients reach every parameter, every kernel carries
logical axis names that the config's rules can map, remat is output-preserving, and bad
inputs fail with a message naming the input and the expected value."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emotalker_jax.config_utils import load_config
from emotalker_jax.models.autoencoder import build_autoencoder, init_autoencoder
from emotalker_jax.models.unet import UNet, UNetSpec, build_unet, init_unet


@pytest.fixture(scope="module")
def tiny(repo_root):
  return load_config(str(repo_root / "configs" / "tiny.py"))


def random_params(abstract, seed=0):
  """Random float32 params for an abstract (eval_shape) tree, without compiling an init
  (XLA's CPU compile of the init costs more than the whole test): kernels N(0, 1/fan_in)
  like the library's lecun_normal, norm scales 1 + 0.1 N, biases 0.1 N (nothing zero)."""
  r = np.random.default_rng(seed)

  def fill(path, a):
    name = path[-1].key
    if name == "kernel":
      fan_in = (
        int(np.prod(a.shape[:-1]))
        if len(a.shape) != 3 or "to_out" not in jax.tree_util.keystr(path)
        else int(np.prod(a.shape[:2]))
      )
      return (r.standard_normal(a.shape) / np.sqrt(fan_in)).astype(np.float32)
    if name == "scale":
      return (1 + 0.1 * r.standard_normal(a.shape)).astype(np.float32)
    return (0.1 * r.standard_normal(a.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(abstract))


@pytest.fixture(scope="module")
def tiny_unet(tiny):
  """(model, {'params': ...}, jitted forward) for configs/tiny.py."""
  model = build_unet(tiny)
  abstract = jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))
  variables = {"params": random_params(abstract["params"])}
  return model, variables, jax.jit(model.apply)


def _batch(spec: UNetSpec, size=8, batch=2, ctx=6, seed=1):
  r = np.random.default_rng(seed)
  return (
    r.standard_normal((batch, size, size, spec.in_channels)).astype(np.float32),
    np.linspace(3, 900, batch).astype(np.int32),
    r.standard_normal((batch, ctx, spec.cross_attention_dim)).astype(np.float32),
  )


def test_tiny_unet_gradients_reach_every_parameter(tiny_unet):
  model, variables, _ = tiny_unet
  params = variables["params"]
  x, t, c = _batch(model.spec)
  target = np.random.default_rng(2).standard_normal((2, 8, 8, model.spec.out_channels))

  def loss(p):
    out = model.apply({"params": p}, x, t, c)
    return jnp.mean((out - target) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert len(flat) == len(jax.tree.leaves(params)) > 50
  bad = [
    jax.tree_util.keystr(k)
    for k, g in flat
    if not (np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0))
  ]
  assert not bad, f"zero or non-finite gradients: {bad}"


def _walk_boxed(tree, path=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _walk_boxed(v, path + (k,))
    else:
      yield "/".join(path + (k,)), v


@pytest.mark.parametrize("which", ["unet", "autoencoder"])
def test_every_parameter_has_logical_axis_names(tiny, which):
  if which == "unet":
    model = build_unet(tiny)
    boxed = jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))["params"]
  else:
    model = build_autoencoder(tiny)
    boxed = jax.eval_shape(lambda: init_autoencoder(model, jax.random.key(0)))["params"]
  leaves = list(_walk_boxed(boxed))
  assert leaves
  kernels = 0
  for path, leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), f"{path} has no logical axis names"
    assert len(leaf.names) == leaf.value.ndim, f"{path}: {leaf.names} vs {leaf.value.shape}"
    if path.endswith("kernel") or path.endswith("embedding"):
      kernels += 1
      assert any(n is not None for n in leaf.names), f"{path}: all axes unnamed"
  assert kernels > 20
  # The config's rules map the names onto the mesh: a conv kernel's output channels and
  # an attention kernel's heads follow fsdp / tensor.
  specs = nn.get_partition_spec(boxed)
  rules = tuple((a, tuple(m) if isinstance(m, list) else m) for a, m in tiny.logical_axis_rules)
  with nn.logical_axis_rules(rules):
    mesh_specs = jax.tree.map(
      lambda s: nn.logical_to_mesh_axes(tuple(s)),
      specs,
      is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec),
    )
  conv_in = (
    mesh_specs["conv_in"]["kernel"]
    if which == "unet"
    else mesh_specs["encoder"]["conv_in"]["kernel"]
  )
  assert tuple(conv_in) == (None, None, None, "fsdp")
  if which == "unet":
    to_q = mesh_specs["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]["attn1"]["to_q"]
    assert tuple(to_q["kernel"]) == ("fsdp", "tensor", None)


def test_remat_gives_the_same_output(tiny, tiny_unet):
  model, variables, fwd = tiny_unet
  spec = model.spec
  import dataclasses

  remat_model = UNet(dataclasses.replace(spec, remat=True), dtype=model.dtype)
  x, t, c = _batch(spec)
  a = fwd(variables, x, t, c)
  b = jax.jit(remat_model.apply)(variables, x, t, c)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_dropout_only_in_training(tiny, tiny_unet):
  model, variables, fwd = tiny_unet
  import dataclasses

  drop = UNet(dataclasses.replace(model.spec, dropout=0.5))
  x, t, c = _batch(model.spec)
  eval_out = np.asarray(fwd(variables, x, t, c))
  train = jax.jit(lambda v, k: drop.apply(v, x, t, c, train=True, rngs={"dropout": k}))
  tr1, tr1b, tr2 = (np.asarray(train(variables, jax.random.key(k))) for k in (5, 5, 6))
  np.testing.assert_array_equal(tr1, tr1b)  # same key, same output
  assert np.abs(tr1 - tr2).max() > 1e-3  # another key, other units dropped
  assert np.abs(tr1 - eval_out).max() > 1e-3  # eval (train=False) has no dropout


def test_mean_context_embedding_is_a_per_example_time_bias(tiny, tiny_unet):
  """unet.context_embedding='mean' adds Dense(mean_L(context)) to the time embedding:
  for one example that is the same as adding it to time_embedding.linear_2's bias of the
  plain UNet (the reference); with a zero Dense the two models agree outright."""
  import dataclasses

  model, variables, fwd = tiny_unet
  mean_model = UNet(dataclasses.replace(model.spec, context_embedding="mean"))
  abstract = jax.eval_shape(lambda: init_unet(mean_model, jax.random.key(0)))["params"]
  assert set(abstract) == set(variables["params"]) | {"context_embedding"}
  d, temb_dim = nn.meta.unbox(abstract["context_embedding"]["kernel"]).shape
  assert (d, temb_dim) == (model.spec.cross_attention_dim, 4 * model.spec.block_out_channels[0])
  r = np.random.default_rng(7)
  kernel = (r.standard_normal((d, temb_dim)) / np.sqrt(d)).astype(np.float32)
  bias = (0.1 * r.standard_normal(temb_dim)).astype(np.float32)
  x, t, c = _batch(model.spec, batch=1)
  mean_fwd = jax.jit(mean_model.apply)

  def with_dense(k, b):
    return {"params": {**variables["params"], "context_embedding": {"kernel": k, "bias": b}}}

  zero = mean_fwd(with_dense(np.zeros_like(kernel), np.zeros_like(bias)), x, t, c)
  # Two compiled programs (XLA may fuse them differently): float32 round-off only.
  np.testing.assert_allclose(
    np.asarray(zero), np.asarray(fwd(variables, x, t, c)), rtol=1e-5, atol=1e-6
  )

  out = np.asarray(mean_fwd(with_dense(kernel, bias), x, t, c))
  shift = c[0].mean(0) @ kernel + bias  # (4 C0,)
  te = variables["params"]["time_embedding"]
  folded = {
    "params": {
      **variables["params"],
      "time_embedding": {
        **te,
        "linear_2": {**te["linear_2"], "bias": te["linear_2"]["bias"] + shift},
      },
    }
  }
  ref = np.asarray(fwd(folded, x, t, c))
  assert np.abs(out - np.asarray(zero)).max() > 1e-2  # the context moved the output
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  cfg = tiny.unet.to_dict()
  cfg["context_embedding"] = "max"
  with pytest.raises(
    ValueError, match=r"context_embedding='max'.*\('none', 'mean', 'emotion_tokens'\)"
  ):
    UNetSpec.from_config(cfg)


def test_emotion_token_embedding_reads_only_the_emotion_tokens(tiny, tiny_unet):
  """unet.context_embedding='emotion_tokens' adds Dense(concat of the K emotion tokens) to
  the time embedding: for one example the same as adding it to time_embedding.linear_2's
  bias of the plain UNet (the reference), and build_unet places the slice after the
  audio tokens."""
  import dataclasses

  from emotalker_jax.models.unet import build_unet

  model, variables, fwd = tiny_unet
  cfg = tiny.copy_and_resolve_references()
  cfg.unet.context_embedding = "emotion_tokens"
  built = build_unet(cfg)
  assert built.spec.context_slice == (cfg.audio.tokens_per_frame, cfg.eib.num_emotions)
  first, count = 1, 2  # a slice that fits _batch's short context
  emo_model = UNet(
    dataclasses.replace(model.spec, context_embedding="emotion_tokens", context_slice=(1, 2))
  )
  x, t, c = _batch(model.spec, batch=1)
  assert c.shape[1] >= first + count + 1
  d = model.spec.cross_attention_dim
  temb_dim = 4 * model.spec.block_out_channels[0]
  abstract = jax.eval_shape(lambda: init_unet(emo_model, jax.random.key(0), context_len=c.shape[1]))
  kshape = nn.meta.unbox(abstract["params"]["context_embedding"]["kernel"]).shape
  assert kshape == (count * d, temb_dim)
  r = np.random.default_rng(8)
  kernel = (r.standard_normal(kshape) / np.sqrt(count * d)).astype(np.float32)
  bias = (0.1 * r.standard_normal(temb_dim)).astype(np.float32)
  params = {
    "params": {**variables["params"], "context_embedding": {"kernel": kernel, "bias": bias}}
  }
  out = np.asarray(jax.jit(emo_model.apply)(params, x, t, c))
  shift = np.asarray(c[0, first : first + count]).reshape(-1) @ kernel + bias
  te = variables["params"]["time_embedding"]
  folded = {
    "params": {
      **variables["params"],
      "time_embedding": {
        **te,
        "linear_2": {**te["linear_2"], "bias": te["linear_2"]["bias"] + shift},
      },
    }
  }
  # Two compiled programs (XLA may fuse them differently): float32 round-off only.
  np.testing.assert_allclose(out, np.asarray(fwd(folded, x, t, c)), rtol=1e-5, atol=1e-5)
  assert np.abs(out - np.asarray(fwd(variables, x, t, c))).max() > 1e-2
  with pytest.raises(ValueError, match="needs context_slice"):
    UNet(dataclasses.replace(model.spec, context_embedding="emotion_tokens")).apply(params, x, t, c)


# ---- bad input --------------------------------------------------------------------------


def test_wrong_channel_count_names_in_channels(tiny_unet):
  model, variables, _ = tiny_unet
  x, t, c = _batch(model.spec)
  with pytest.raises(ValueError, match=r"4 channels but config.unet.in_channels=12"):
    jax.eval_shape(lambda: model.apply(variables, x[..., :4], t, c))


def test_spatial_size_not_multiple_of_8(tiny):
  # An SD-like 4-level layout downsamples 3 times: latents must be multiples of 8.
  cfg = tiny.unet.to_dict()
  cfg.update(
    block_out_channels=(32, 32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
  )
  model = UNet(cfg)
  spec = model.spec
  abstract = jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))
  x, t, c = _batch(spec, size=12)
  with pytest.raises(ValueError, match=r"\(12, 12\) is not a multiple of 8"):
    jax.eval_shape(lambda v: model.apply(v, x, t, c), abstract)
  # 16x16 is fine.
  x16, _, _ = _batch(spec, size=16)
  out = jax.eval_shape(lambda v: model.apply(v, x16, t, c), abstract)
  assert out.shape == (2, 16, 16, spec.out_channels)


def test_context_width_mismatch(tiny_unet):
  model, variables, _ = tiny_unet
  x, t, c = _batch(model.spec)
  with pytest.raises(ValueError, match=r"\(B, L, 64\).*cross_attention_dim"):
    jax.eval_shape(lambda: model.apply(variables, x, t, c[..., :32]))


def test_autoencoder_bad_input(tiny):
  model = build_autoencoder(tiny)
  abstract = jax.eval_shape(lambda: init_autoencoder(model, jax.random.key(0)))
  with pytest.raises(ValueError, match=r"not a multiple of 4"):
    jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 30, 30, 3)), method="encode"), abstract)
  with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
    jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 32, 32, 4)), method="encode"), abstract)
  # f = 4: 32x32 frames -> 8x8x4 latents, decode gives the frame size back.
  mean, _ = jax.eval_shape(
    lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), method="encode"), abstract
  )
  assert mean.shape == (2, 8, 8, 4)


def test_bad_unet_config_is_named(tiny):
  cfg = tiny.unet.to_dict()
  cfg["down_block_types"] = ("SimpleCrossAttnDownBlock2D", "DownBlock2D")
  with pytest.raises(ValueError, match="SimpleCrossAttnDownBlock2D"):
    UNetSpec.from_config(cfg)
  cfg = tiny.unet.to_dict()
  cfg["norm_num_groups"] = 7
  with pytest.raises(ValueError, match="norm_num_groups=7"):
    UNetSpec.from_config(cfg)


def test_init_and_apply_trace_under_a_mesh(tiny, tiny_unet):
  """With a mesh and the config's logical rules active, init and apply trace (every
  logical constraint fits its array: no flat-init-then-reshape kernels) and the params
  get the expected shardings. Tracing only (eval_shape), no compile."""
  from emotalker_jax import parallel

  model, variables, _ = tiny_unet
  mesh = parallel.create_mesh({"data": 4, "fsdp": 2, "tensor": 1}, jax.devices()[:8])
  rules = parallel.rules_from_config(tiny)
  x, t, c = _batch(model.spec, batch=8)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))
    out = jax.eval_shape(lambda v: model.apply(v, x, t, c), variables)
    vae = build_autoencoder(tiny)
    jax.eval_shape(lambda: init_autoencoder(vae, jax.random.key(0)))
  assert out.shape == (8, 8, 8, model.spec.out_channels)
  shard = parallel.logical_shardings(boxed, mesh, rules)["params"]
  q = shard["mid_block"]["attentions_0"]["transformer_blocks_0"]["attn2"]["to_q"]["kernel"]
  assert tuple(q.spec) == ("fsdp", "tensor", None)
