"""Stable Diffusion 1.5 layout (UNet 320/640/1280/1280, f=8 VAE, CLIP ViT-L/14 text width 768)
so SD weights import with `emotalker convert`. 256x256 frames -> 32x32x4 latents.

configs/base256.py (256x256 frames, bfloat16, its audio / EIB widths and training schedule)
with SD-1.5's autoencoder, text encoder, UNet and noise schedule.
"""

import os

import ml_collections

from emotalker_jax.config_utils import load_config_module


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  base256 = load_config_module(os.path.join(os.path.dirname(__file__), "base256.py"))
  c = base256.get_config(arg)
  c.name = "sd15_init"
  c.autoencoder.block_out_channels = (128, 256, 512, 512)
  c.autoencoder.layers_per_block = 2
  c.autoencoder.scaling_factor = 0.18215
  c.context_dim = 768
  c.text.encoder = "clip"
  c.text.max_length = 77
  c.unet.block_out_channels = (320, 640, 1280, 1280)
  c.unet.down_block_types = (
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "DownBlock2D",
  )
  c.unet.up_block_types = (
    "UpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
  )
  c.unet.layers_per_block = 2
  c.unet.attention_head_dim = 8  # SD-1.5's config: 8 *heads* (diffusers' naming quirk)
  c.unet.norm_num_groups = 32
  c.diffusion.schedule = "scaled_linear"
  c.diffusion.beta_start = 0.00085
  c.diffusion.beta_end = 0.012
  return c
