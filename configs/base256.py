"""256x256 frames, f=4 latents (64x64x4), a UNet sized for talking heads (~214M UNet params).

DiffTalk's layout: f=4 KL autoencoder, UNet input = [z_t; E(x_mask); E(x_ref)] (12 ch).
"""

import ml_collections

from emotalker_jax import config_base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = config_base.get_config()
  c.name = "base256"
  c.dtype = "bfloat16"
  c.data.image_size = 256
  c.data.synthetic_size = "full"
  c.autoencoder.block_out_channels = (128, 256, 512)
  c.autoencoder.layers_per_block = 2
  c.autoencoder.norm_num_groups = 32
  c.autoencoder.scaling_factor = 0.18215
  c.context_dim = 512
  c.audio.width = 256
  c.audio.num_layers = 2
  c.audio.num_heads = 4
  c.audio.tokens_per_frame = 8
  c.eib.hidden = 512
  c.unet.block_out_channels = (160, 320, 480, 640)
  c.unet.down_block_types = (
    "DownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "CrossAttnDownBlock2D",
  )
  c.unet.up_block_types = (
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "CrossAttnUpBlock2D",
    "UpBlock2D",
  )
  c.unet.layers_per_block = 2
  # diffusers semantics (num_attention_heads None): 7 *heads* per block -> head widths
  # 224/7=32, 448/7=64, 672/7=96, 896/7=128 (64 would mean 64 heads of width 3..14).
  c.unet.attention_head_dim = 5  # heads (diffusers naming): 5 heads of width 32..128
  c.unet.norm_num_groups = 32
  c.unet.remat = True
  c.sampler.steps = 25
  c.train.batch_size = 64
  c.train.steps = 200_000
  c.train.lr = 1e-4
  c.train.warmup_steps = 1000
  c.train.ema_decay = 0.9999
  c.train.log_every = 50
  c.train.ckpt_every = 2000
  return c
