"""Parity of our Flax UNet / autoencoder with diffusers' PyTorch models (float32, CPU).

Small diffusers models with random weights that use every block type we implement
(CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D,
UpBlock2D, several heads; DownEncoderBlock2D/UpDecoderBlock2D + mid attention for the VAE)
are saved with ``save_pretrained`` (safetensors), imported with
``emotalker_jax.checkpoints`` (numpy only) and run on the same inputs:
max |ours - ref| / max |ref| <= 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalker_jax import checkpoints as ck
from emotalker_jax.models.autoencoder import AutoencoderKL, decode_latent, encode_to_latent
from emotalker_jax.models.layers import timestep_embedding
from emotalker_jax.models.unet import UNet

TOL = 1e-4

# Every block type, 2 and 4 heads, conv projections (SD-1.x style).
UNET_KW = dict(
  sample_size=16,
  in_channels=4,
  out_channels=4,
  block_out_channels=(32, 64),
  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  layers_per_block=1,
  attention_head_dim=4,
  cross_attention_dim=24,
  norm_num_groups=8,
)
# SD-2 style: linear projections, per-block heads, 2 transformer layers, the other order.
UNET_SD2_KW = dict(
  sample_size=16,
  in_channels=4,
  out_channels=4,
  block_out_channels=(32, 64),
  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
  layers_per_block=1,
  attention_head_dim=(2, 4),
  cross_attention_dim=16,
  norm_num_groups=8,
  use_linear_projection=True,
  transformer_layers_per_block=2,
)
VAE_KW = dict(
  in_channels=3,
  out_channels=3,
  latent_channels=4,
  block_out_channels=(32, 32, 64),
  down_block_types=("DownEncoderBlock2D",) * 3,
  up_block_types=("UpDecoderBlock2D",) * 3,
  layers_per_block=1,
  norm_num_groups=8,
  scaling_factor=0.5,
)


def diffusers_unet(folder, seed=0, **kw):
  """A random-weight diffusers UNet2DConditionModel saved (safetensors) under ``folder``."""
  from diffusers import UNet2DConditionModel

  torch.manual_seed(seed)
  model = UNet2DConditionModel(**kw).eval()
  model.save_pretrained(str(folder))
  return model


def diffusers_vae(folder, seed=0, **kw):
  from diffusers import AutoencoderKL as TorchAE

  torch.manual_seed(seed)
  model = TorchAE(**kw).eval()
  model.save_pretrained(str(folder))
  return model


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def rel_err(ours, ref):
  return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def unet_inputs(kw, seed=0, batch=2, ctx_len=5):
  rng = np.random.default_rng(seed)
  s = kw["sample_size"]
  x = rng.standard_normal((batch, s, s, kw["in_channels"])).astype(np.float32)
  t = np.array([10, 731][:batch], np.int64)
  c = rng.standard_normal((batch, ctx_len, kw["cross_attention_dim"])).astype(np.float32)
  return x, t, c


def torch_unet_out(model, x, t, c):
  with torch.no_grad():
    return nhwc(model(nchw(x), torch.from_numpy(t), torch.from_numpy(c)).sample)


@pytest.fixture(scope="module")
def unet_pair(tmp_path_factory):
  folder = tmp_path_factory.mktemp("unet")
  ref = diffusers_unet(folder, **UNET_KW)
  cfg, params = ck.load_diffusers_unet(str(folder))
  return ref, cfg, params


@pytest.fixture(scope="module")
def vae_pair(tmp_path_factory):
  folder = tmp_path_factory.mktemp("vae")
  ref = diffusers_vae(folder, **VAE_KW)
  cfg, params = ck.load_diffusers_vae(str(folder))
  return ref, cfg, params


@pytest.mark.parametrize("dim,flip,shift", [(32, True, 0), (33, False, 1)])
def test_timestep_embedding_parity(dim, flip, shift):
  from diffusers.models.embeddings import get_timestep_embedding

  t = np.array([0, 1, 17, 500, 999])
  ref = get_timestep_embedding(
    torch.from_numpy(t), dim, flip_sin_to_cos=flip, downscale_freq_shift=shift
  ).numpy()
  ours = np.asarray(timestep_embedding(t, dim, flip, shift))
  assert ours.shape == ref.shape
  # float32 sin(t * f) at t ~ 1000: one ulp of exp() differs between XLA and torch.
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_unet_config_parity(unet_pair):
  _, cfg, _ = unet_pair
  spec = UNet(cfg).spec
  # diffusers' quirk: attention_head_dim=4 means 4 heads per block.
  assert spec.heads == (4, 4)
  assert spec.block_out_channels == (32, 64)
  assert spec.cross_attention_dim == 24


def test_unet_forward_parity(unet_pair):
  ref, cfg, params = unet_pair
  x, t, c = unet_inputs(UNET_KW)
  expected = torch_unet_out(ref, x, t, c)
  ours = np.asarray(UNet(cfg).apply({"params": params}, x, t, c))
  err = rel_err(ours, expected)
  print(f"UNet parity: max|ours-ref|/max|ref| = {err:.2e}")
  assert err <= TOL


def test_unet_parity_scalar_float_timestep(unet_pair):
  """A scalar float timestep broadcasts over the batch, as in diffusers."""
  ref, cfg, params = unet_pair
  x, _, c = unet_inputs(UNET_KW)
  with torch.no_grad():
    expected = nhwc(ref(nchw(x), torch.tensor(250.5), torch.from_numpy(c)).sample)
  ours = UNet(cfg).apply({"params": params}, x, np.float32(250.5), c)
  assert rel_err(ours, expected) <= TOL


def test_unet_linear_projection_parity(tmp_path):
  ref = diffusers_unet(tmp_path, seed=1, **UNET_SD2_KW)
  cfg, params = ck.load_diffusers_unet(str(tmp_path))
  assert cfg["use_linear_projection"] is True
  assert params["up_blocks_0"]["attentions_0"]["proj_in"]["kernel"].ndim == 2
  x, t, c = unet_inputs(UNET_SD2_KW, seed=1)
  err = rel_err(UNet(cfg).apply({"params": params}, x, t, c), torch_unet_out(ref, x, t, c))
  print(f"UNet (linear projection) parity: {err:.2e}")
  assert err <= TOL


def test_vae_encode_parity(vae_pair):
  ref, cfg, params = vae_pair
  x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    dist = ref.encode(nchw(x)).latent_dist
  model = AutoencoderKL(cfg)
  mean, logvar = model.apply({"params": params}, x, method="encode")
  assert mean.shape == (2, 8, 8, 4)
  err = rel_err(mean, nhwc(dist.mean))
  print(f"VAE encode (mean) parity: {err:.2e}")
  assert err <= TOL
  assert rel_err(logvar, nhwc(dist.logvar)) <= TOL
  # Scaled latent helper: (mean - shift) * scaling_factor.
  z = encode_to_latent(model, params, x)
  np.testing.assert_allclose(np.asarray(z), np.asarray(mean) * 0.5, rtol=1e-6, atol=1e-7)


def test_vae_decode_parity(vae_pair):
  ref, cfg, params = vae_pair
  z = np.random.default_rng(3).standard_normal((2, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    expected = nhwc(ref.decode(nchw(z)).sample)
  model = AutoencoderKL(cfg)
  ours = model.apply({"params": params}, z, method="decode")
  err = rel_err(ours, expected)
  print(f"VAE decode parity: {err:.2e}")
  assert err <= TOL
  # decode_latent undoes the scaling: D(z / scaling_factor).
  np.testing.assert_allclose(
    np.asarray(decode_latent(model, params, z * 0.5)), np.asarray(ours), rtol=1e-5, atol=1e-5
  )


def test_param_count_parity(unet_pair, vae_pair):
  """model_stats' eval_shape counts equal diffusers' parameter counts."""
  import ml_collections

  from emotalker_jax.bench import model_stats

  (uref, ucfg, _), (vref, vcfg, _) = unet_pair, vae_pair
  config = ml_collections.ConfigDict(
    {"dtype": "float32", "param_dtype": "float32", "unet": ucfg, "autoencoder": vcfg}
  )
  assert model_stats.unet_param_count(config) == sum(p.numel() for p in uref.parameters())
  assert model_stats.autoencoder_param_count(config) == sum(p.numel() for p in vref.parameters())
