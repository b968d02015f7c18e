"""`emotalker demo --mode quick|full` (`make demo`): ``configs/demo.py:quick`` and
``configs/demo.py:full`` (plain ``configs/demo.py`` is full). Each holds the model, the data
size and every stage's step counts of its mode; `emotalker demo` runs its stages with it.

quick (~10 min, reduced quality): configs/tiny.py's model on synthetic_talk/tiny (12 train
identities).

full (the real demo, sized for the 45-minute budget less a 10 % margin on a 2-core machine):
synthetic_talk/demo (32x32, 128 train identities) with an f=2 autoencoder (16x16x4 latents).
Where the time goes (one unshared run at cf83d19, 45:11 in all with 4500 diffusion steps):
synthesis 89 s, EIB 193 s (86 s of it encoding FED with the frozen tower), judge 133 s,
autoencoder 317 s, diffusion 1581 s (2.9-3.0 steps/s), figures 35 s, evaluation 357 s (156 s
of it the intensity sweep). The diffusion step (`emotalker bench train-step --config
configs/demo.py:full --train-batch 8 --remat off`: 286 ms, 14.5 GFLOP) spends ~77 ms encoding
its 24 frames with the frozen autoencoder (4.1 GFLOP) and ~50 ms in the frozen text tower:
those are in the step because every example's reference frame and FED prompt are drawn
afresh. 3800 diffusion steps instead of 4500 cost too much (one run at 3800: single-prompt
emotion 0.711 [0.625, 0.797] against 0.938 [0.875, 0.984], mixed top-2 0.281 against 0.562,
lip sync 0.33 against 0.57), so the time comes from the autoencoder (900 steps) and the
sweep (1 frame per cell). Measured with this config (one unshared `make demo` at a11a949):
39:51 wall; synthesis 98 s, EIB 167 s, judge 116 s, autoencoder 269 s, diffusion 1436 s,
figures 37 s, evaluation 261 s. That leaves ~40 s below the 40.5 minutes (45 less 10 %),
and this machine kind's speed varies by a quarter from run to run: the next cut must come
from a faster step, not from fewer steps. Hence train.prompt_pool_size (64 FED prompts per
clip label) and train.cache_reference_latents: the text tower and E(x_ref) leave the step
(`emotalker bench train-step --config configs/demo.py:full --train-batch 8 --remat off
--compare-frozen-inputs`: 325 -> 276 ms, ratio 1.18, FLOPs 1.94x). One unshared `make demo`
at 32f0b97 (the pool only, its misses padded to 8 rows, on a slower day: EIB and judge
stages 11 % above a11a949's) took 40:22 of stages, 40:28 wall, its diffusion stage as
long as a11a949's (1436 s): with 64 prompts for each of ~211 labels about a third of the
draws were new prompts, so nearly every step still ran the tower on 8 padded rows. Misses
are now padded to a power of two only, and the reference latents are cached too. With
both (one unshared `make demo` at 3f041d4, 4500 steps, on a fast day: synthesis 66 s
against 101 s at 32f0b97) the demo took 29:07 wall and its diffusion stage 958 s (4.9
steps/s at the end; prompt pool 9185 states computed, 26815 reused; reference latents 4098
computed, 31902 reused), so the steps it bought are spent on training: 5500 diffusion
steps. One unshared `make demo` with 5500 (ebf76d1 + this setting) took 33:52 wall: synthesis
80 s, EIB 187 s, judge 113 s, autoencoder 232 s, diffusion 1179 s, figures 32 s, evaluation
203 s; against 4500 steps (3f041d4) single-prompt emotion 0.984 [0.953, 1.000] vs 0.875
[0.812, 0.938], paraphrases 0.641 vs 0.500, mixed top-2 0.562 vs 0.430 (inside the noise),
lip sync 0.546 vs 0.116.

Why f=2: the judge reads the emotion of f=4 reconstructions (8x8x4 latents) of held-out
ground-truth frames with top-1 0.67 / mixed top-2 0.50, against 0.98 / 0.96 for f=2
(brows, lid and lip-corner cues are 1-2 px at 32x32 and f=4 blurs them), so an f=4
generator could never reach the demo's emotion targets whatever it learned.

Why mouth_loss_weight: at 32x32 the speech mouth opens at most ~1.5 px (1-2 latent pixels
of 256); trained on plain eq. (2) the denoiser's loss did not change at all when the audio
was shuffled or silenced (the audio tokens were unused, lip sync -0.08).

Why 2 attention heads and 32 text tokens: the demo must train on 2 CPU cores, and its step
is bound by the 16x16 self-attention. 8 heads of 4 channels (tiny's) cost 304 ms per batch
of 8; 2 heads of 16 channels 210 ms, and 192 ms with 24 instead of 48 text positions
(32 here: FED's prompts are at most 19 tokens; a longer user prompt is truncated with a
warning).
"""

import ml_collections

from emotalker_jax import config_base

MODES = ("quick", "full")
# --calibrate's candidates (`emotalker calibrate`'s default grid less 0.8 and 0.5, to save
# time).
CALIB_GAMMAS = (1.0, 0.6, 0.4, 0.3, 0.2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = arg or "full"
  if mode not in MODES:
    raise ValueError(f"configs/demo.py:{mode}: the mode must be one of {', '.join(MODES)}")
  c = config_base.get_config()
  c.name = f"demo_{mode}"
  # Step counts: the EIB head (`emotalker eib-train`, on a FED corpus of eib.fed_size), the
  # autoencoder, the diffusion model; DDIM steps at generation and in the evaluation.
  c.sampler.steps = 10
  # `emotalker demo`'s own settings: frames per held-out identity in the evaluation, and
  # --calibrate's training identities, frames per identity and intensity_gamma candidates.
  c.demo = ml_collections.ConfigDict()
  c.demo.calib_gammas = CALIB_GAMMAS
  # The demo's EIB keeps the frozen tower: a tuned layer costs ~0.6 s a step on 2 cores,
  # which the demo's EIB stage (head steps below) cannot afford.
  c.eib.finetune_layers = 0
  # 64 FED prompts per clip label whose frozen text states are computed once
  # (training/prompt_pool.py), instead of the text tower inside every diffusion step.
  c.train.prompt_pool_size = 64
  c.train.cache_reference_latents = True
  if mode == "quick":
    c.data.synthetic_size = "tiny"
    c.eib.steps = 600
    c.eib.fed_size = 8000
    c.autoencoder_train.steps = 300
    c.train.steps = 400
    c.demo.eval_frames = 2
    c.demo.eval_sweep_frames = 1
    c.demo.calib_identities = 2
    c.demo.calib_frames = 2
  else:
    c.data.synthetic_size = "demo"
    c.autoencoder.block_out_channels = (32, 64)  # f = 2 ** (len - 1) = 2
    c.train.mouth_loss_weight = 10.0
    c.unet.attention_head_dim = 2  # heads per block (diffusers' naming)
    c.text.max_length = 32
    c.eib.steps = 1500
    c.eib.fed_size = 24000
    c.autoencoder_train.steps = 900
    c.train.steps = 5500
    c.demo.eval_frames = 4
    c.demo.eval_sweep_frames = 1  # the sweep is 35 cells per identity: 1 frame each
    c.demo.calib_identities = 3
    c.demo.calib_frames = 2
  return c
