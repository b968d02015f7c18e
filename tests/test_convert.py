"""diffusers import and our params on disk: round trips, SD-into-EmoTalker adaptation,
the `emotalker convert` command, and clear errors for missing / mismatched files."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch

from emotalker_jax import checkpoints as ck
from emotalker_jax.cli import main as cli_main
from emotalker_jax.models.autoencoder import AutoencoderKL
from emotalker_jax.models.unet import UNet
from tests.test_models_parity import (
  VAE_KW,
  diffusers_unet,
  diffusers_vae,
  rel_err,
  torch_unet_out,
  unet_inputs,
)

# configs/tiny.py's UNet layout with SD's 4 input channels (tiny has 12) and its context
# width 64: what `convert --config configs/tiny.py` must adapt.
TINY_LAYOUT = dict(
  sample_size=8,
  in_channels=4,
  out_channels=4,
  block_out_channels=(32, 64),
  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
  layers_per_block=1,
  attention_head_dim=8,
  cross_attention_dim=64,
  norm_num_groups=8,
)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
  """A diffusers pipeline folder with unet/ (tiny layout, 4 input channels) and vae/."""
  root = tmp_path_factory.mktemp("pipe")
  unet = diffusers_unet(root / "unet", seed=3, **TINY_LAYOUT)
  vae = diffusers_vae(root / "vae", seed=4, **VAE_KW)
  return root, unet, vae


def test_unet_convert_save_load_round_trip(pipeline_dir, tmp_path):
  root, ref, _ = pipeline_dir
  cfg, params = ck.load_diffusers_unet(str(root))  # finds root/unet
  ck.save_params(str(tmp_path / "unet"), params, cfg)
  params2, cfg2 = ck.load_params(str(tmp_path / "unet"))
  assert cfg2 == json.loads(json.dumps(cfg))  # JSON form of the same dict
  x, t, c = unet_inputs(TINY_LAYOUT)
  a = np.asarray(UNet(cfg).apply({"params": params}, x, t, c))
  b = np.asarray(UNet(cfg2).apply({"params": params2}, x, t, c))
  np.testing.assert_array_equal(a, b)
  assert rel_err(a, torch_unet_out(ref, x, t, c)) <= 1e-4


def test_cli_convert_with_config_adapts_conv_in(pipeline_dir, tmp_path, capsys, repo_root):
  """SD-style 4-channel UNet -> tiny's 12-channel UNet: conv_in's extra input channels
  are zero, so the converted UNet ignores the condition channels and reproduces the
  diffusers UNet on the noisy latent alone."""
  root, ref, vae_ref = pipeline_dir
  out = tmp_path / "out"
  rc = cli_main(
    [
      "convert",
      "--diffusers",
      str(root),
      "--out",
      str(out),
      "--config",
      str(repo_root / "configs" / "tiny.py"),
      "--config.autoencoder.scaling_factor=0.5",
    ]
  )
  assert rc == 0
  printed = capsys.readouterr().out
  assert "adapted conv_in/kernel: (32, 4, 3, 3) -> (3, 3, 12, 32)" in printed
  report = json.loads((out / "convert_report.json").read_text())
  assert [a.split(":")[0] for a in report["unet"]["adapted"]] == ["conv_in/kernel"]

  params, cfg = ck.load_params(str(out / "unet"))
  assert cfg["in_channels"] == 12
  k = params["conv_in"]["kernel"]
  assert np.all(k[:, :, 4:] == 0)
  np.testing.assert_array_equal(
    k[:, :, :4], ref.conv_in.weight.detach().numpy().transpose(2, 3, 1, 0)
  )
  x, t, c = unet_inputs(TINY_LAYOUT)
  cond = np.random.default_rng(9).standard_normal(x.shape[:3] + (8,)).astype(np.float32)
  ours = UNet(cfg).apply({"params": params}, np.concatenate([x, cond], -1), t, c)
  assert rel_err(ours, torch_unet_out(ref, x, t, c)) <= 1e-4

  # The VAE went through unchanged.
  vparams, vcfg = ck.load_params(str(out / "vae"))
  assert vcfg["scaling_factor"] == 0.5
  z = np.random.default_rng(4).standard_normal((1, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    expected = vae_ref.decode(torch.from_numpy(z.transpose(0, 3, 1, 2))).sample.numpy()
  dec = AutoencoderKL(vcfg).apply({"params": vparams}, z, method="decode")
  assert rel_err(dec, expected.transpose(0, 2, 3, 1)) <= 1e-4


def test_narrower_context_reinitialises_attn2_kv(pipeline_dir, repo_root):
  from emotalker_jax.config_utils import load_config

  root, ref, _ = pipeline_dir
  config = load_config(str(repo_root / "configs" / "tiny.py"), ["--config.context_dim=32"])
  params, adapted = ck.convert_unet_into(str(root), config.unet, seed=0)
  names = sorted(a.path for a in adapted)
  kv = [n for n in names if "attn2" in n]
  # 1 transformer in down block 0, 1 in the mid block, 2 in up block 1 -> 4 x (to_k, to_v)
  assert len(kv) == 8 and all(n.endswith(("to_k/kernel", "to_v/kernel")) for n in kv)
  assert "conv_in/kernel" in names and len(names) == 9
  a = params["mid_block"]["attentions_0"]["transformer_blocks_0"]["attn2"]
  assert a["to_k"]["kernel"].shape == (32, 8, 8)
  # Everything else is carried over unchanged, e.g. attn2's query projection.
  w = ref.mid_block.attentions[0].transformer_blocks[0].attn2.to_q.weight.detach().numpy()
  np.testing.assert_array_equal(a["to_q"]["kernel"], w.T.reshape(64, 8, 8))


def test_legacy_vae_attention_names_and_fp16(tmp_path):
  """Old diffusers VAE files name the mid attention query/key/value/proj_attn; fp16 files
  load as float32."""
  from safetensors.torch import save_file

  ref = diffusers_vae(tmp_path / "new", seed=5, **VAE_KW)
  cfg, params = ck.load_diffusers_vae(str(tmp_path / "new"))
  legacy = tmp_path / "legacy"
  legacy.mkdir()
  (legacy / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
  rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  sd = {}
  for k, v in ref.state_dict().items():
    for new, old in rename.items():
      k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
    sd[k] = v.half().contiguous()
  save_file(sd, str(legacy / ck.WEIGHTS_NAME))
  _, params16 = ck.load_diffusers_vae(str(legacy))
  flat, flat16 = ck.flatten_params(params), ck.flatten_params(params16)
  assert flat.keys() == flat16.keys()
  for key in flat:
    assert flat16[key].dtype == np.float32
    np.testing.assert_array_equal(flat16[key], flat[key].astype(np.float16).astype(np.float32))


# ---- errors ----------------------------------------------------------------------------


def test_missing_weight_file_is_named(pipeline_dir, tmp_path):
  root, _, _ = pipeline_dir
  (tmp_path / "unet").mkdir()
  (tmp_path / "unet" / "config.json").write_text((root / "unet" / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
    ck.load_diffusers_unet(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="params.safetensors"):
    ck.load_params(str(tmp_path / "unet"))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    ck.load_diffusers_vae(str(tmp_path / "nowhere"))


def test_mismatched_config_is_named(pipeline_dir, tmp_path):
  root, _, _ = pipeline_dir
  d = tmp_path / "unet"
  d.mkdir()
  cfg = json.loads((root / "unet" / "config.json").read_text())
  cfg["layers_per_block"] = 2  # not what the weights hold
  (d / "config.json").write_text(json.dumps(cfg))
  os.symlink(root / "unet" / ck.WEIGHTS_NAME, d / ck.WEIGHTS_NAME)
  with pytest.raises(ValueError, match=r"diffusion_pytorch_model.safetensors does not match"):
    ck.load_diffusers_unet(str(d))
  cfg["layers_per_block"] = 1
  cfg["class_embed_type"] = "timestep"  # a feature we lack
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"class_embed_type='timestep' is not supported"):
    ck.load_diffusers_unet(str(d))


def test_cli_convert_layout_mismatch_is_one_line(pipeline_dir, tmp_path, capsys, repo_root):
  root, _, _ = pipeline_dir
  rc = cli_main(
    [
      "convert",
      "--diffusers",
      str(root),
      "--out",
      str(tmp_path / "o"),
      "--config",
      str(repo_root / "configs" / "sd15_init.py"),
    ]
  )
  assert rc == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert "does not match the config's UNet layout" in err
  assert "block_out_channels: checkpoint (32, 64) vs config (320, 640, 1280, 1280)" in err


def test_loaded_params_checked_against_model(pipeline_dir, tmp_path, repo_root):
  from emotalker_jax.config_utils import load_config
  from emotalker_jax.models.unet import build_unet, init_unet

  root, _, _ = pipeline_dir
  cfg, params = ck.load_diffusers_unet(str(root))
  model = build_unet(load_config(str(repo_root / "configs" / "tiny.py")))
  abstract = jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))["params"]
  with pytest.raises(ValueError, match=r"conv_in/kernel \(3, 3, 4, 32\) vs \(3, 3, 12, 32\)"):
    ck.check_params_match(params, abstract, "ckpt")
