"""The base config: every key the code reads, with the values of configs/tiny.py (32x32
frames, f=4 latents (8x8x4), small channels; runs in seconds on CPU).

Every config file in configs/ starts from ``get_config()`` here and changes values only
(``--config.a.b=value`` flags can set any key listed here). It lives in the package, not in
configs/, because the config saved with a checkpoint is read back merged onto it
(``config_utils.merge_onto_base``): a checkpoint written before a key existed gets the
base's value for it. Model layouts use diffusers' key names, so a diffusers folder converts
without a mapping table of our own.
"""

import ml_collections

from emotalker_jax.emotions import NUM_EMOTIONS


def get_config() -> ml_collections.ConfigDict:
  """The base config: every key the code reads, with configs/tiny.py's values."""
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.seed = 0
  c.dtype = "float32"  # compute dtype (bfloat16 on accelerators)
  c.param_dtype = "float32"  # parameters and optimizer state stay float32

  # ---- data ---------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.image_size = 32  # frames are image_size x image_size RGB in [-1, 1]
  c.data.fps = 25
  c.data.sample_rate = 16000  # Hz
  c.data.mask = "face"  # 'face' | 'lower_face' (DiffTalk's)
  c.data.dataset = "synthetic_talk"
  c.data.data_dir = "data/tfds"
  c.data.synthetic_size = "tiny"  # tiny | small | demo | full
  c.data.synthetic_seed = 0  # synthetic_talk seed (identities, clip plans)
  c.data.worker_count = 0  # grain worker processes (0: in the main process)
  c.data.worker_buffer_size = 2  # batches each grain worker prefetches
  c.data.ref_min_gap = 60  # frames between target and same-clip reference

  # ---- autoencoder (diffusers AutoencoderKL keys) --------------------------------------
  c.autoencoder = ml_collections.ConfigDict()
  c.autoencoder.in_channels = 3
  c.autoencoder.out_channels = 3
  c.autoencoder.latent_channels = 4
  c.autoencoder.block_out_channels = (32, 32, 64)  # f = 2 ** (len - 1) = 4
  c.autoencoder.layers_per_block = 1
  c.autoencoder.norm_num_groups = 8
  # z0 = (E(x) - shift_factor) * scaling_factor. `emotalker train --stage autoencoder`
  # measures both for unit-variance latents and saves them in its config.json.
  c.autoencoder.scaling_factor = 1.0
  c.autoencoder.shift_factor = 0.0
  c.autoencoder.mid_block_add_attention = True

  # ---- conditioning -------------------------------------------------------------------
  c.context_dim = 64  # width of cross-attention tokens
  c.audio = ml_collections.ConfigDict()
  c.audio.n_mels = 80
  c.audio.window_s = 0.2  # audio window per video frame (s)
  c.audio.width = 64
  c.audio.num_layers = 1
  c.audio.num_heads = 2
  c.audio.tokens_per_frame = 4
  c.text = ml_collections.ConfigDict()
  c.text.encoder = "minilm"  # 'minilm' | 'clip'
  c.text.path = ""  # '' -> the packaged all-MiniLM-L6-v2
  c.text.max_length = 48
  c.eib = ml_collections.ConfigDict()
  c.eib.num_emotions = NUM_EMOTIONS
  c.eib.hidden = 128  # head width (the 'tokens' head runs it on every token)
  c.eib.num_text_tokens = 4  # learned projection of h appended after the 8 emotion tokens
  c.eib.attn_heads = 4  # heads of the text-token attention pooling
  # 'tokens': TokenIntensityHead, learned queries attend over the token states (held-out
  # FED test top1 0.55 vs 0.52 for 'mean', unseen frames 0.88 vs 0.82; docs/FED.md);
  # 'mean' | 'mean_max': an MLP on pooled h (IntensityHead)
  c.eib.pool = "tokens"
  c.eib.num_queries = 8  # learned queries of the 'tokens' head
  c.eib.num_anchors = 0  # per-emotion anchor phrases (train vocabulary); 0 = off
  c.eib.token_dropout = 0.0  # 'tokens' head: chance a token is hidden while training
  c.eib.dropout = 0.0
  c.eib.ce_weight = 1.0  # L_EIB = ||s_hat - s||^2 + ce_weight * CE (eq. 3)
  # `emotalker eib-train` (head on frozen text features, FED corpus generated in memory)
  c.eib.fed_size = 60000
  c.eib.fed_seed = 0
  # 600 steps: the 15-minute CPU budget with one tuned layer (frozen tower: 2000 steps).
  c.eib.steps = 600
  c.eib.batch_size = 128
  c.eib.lr = 1e-3
  c.eib.weight_decay = 1e-4
  c.eib.warmup_steps = 50
  # Fine-tune the top K text-tower layers with the head (0: frozen tower; MiniLM has 6).
  # eib-train caches the states entering layer N - K once and writes the tuned tower to
  # EIB_DIR/text_encoder (train the generator with --config.text.path=EIB_DIR/text_encoder).
  # K = 1, tower_lr 3e-4, 600 steps: FED 1 validation top1 0.533 vs 0.499 frozen (2000
  # steps); FED 2 0.522 vs 0.539, human dev top1 0.85 vs 0.84 (a wash; docs/FED.md).
  c.eib.finetune_layers = 1
  c.eib.tower_lr = 3e-4  # lr of the top tower layer (the head uses eib.lr)
  c.eib.layer_decay = 0.8  # each layer further down: lr times this

  # ---- denoiser (diffusers UNet2DConditionModel keys) ---------------------------------
  c.unet = ml_collections.ConfigDict()
  c.unet.in_channels = 3 * c.autoencoder.latent_channels  # [z_t; E(x_mask); E(x_ref)]
  c.unet.out_channels = c.autoencoder.latent_channels
  c.unet.block_out_channels = (32, 64)
  c.unet.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
  c.unet.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
  c.unet.layers_per_block = 1
  c.unet.attention_head_dim = 8  # = number of heads per block (diffusers' naming quirk)
  c.unet.num_attention_heads = ml_collections.FieldReference(None, field_type=int)
  c.unet.cross_attention_dim = c.get_ref("context_dim")
  c.unet.transformer_layers_per_block = 1
  c.unet.norm_num_groups = 8
  c.unet.use_linear_projection = False
  c.unet.dropout = 0.0
  c.unet.remat = False
  # 'mean': temb += Dense(mean of the context tokens); 'emotion_tokens': temb += Dense(the
  # K emotion tokens, concatenated), an intensity path into every ResNet block (models/unet.py)
  c.unet.context_embedding = "none"

  # ---- diffusion + sampler ------------------------------------------------------------
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_train_timesteps = 1000
  c.diffusion.schedule = "linear"  # 'linear' | 'scaled_linear' | 'cosine'
  c.diffusion.beta_start = 0.0015
  c.diffusion.beta_end = 0.0195
  c.diffusion.prediction_type = "epsilon"  # 'epsilon' | 'v_prediction'
  c.sampler = ml_collections.ConfigDict()
  c.sampler.steps = 10
  c.sampler.eta = 0.0
  c.sampler.spacing = "uniform"  # 'uniform' | 'trailing' | 'leading'
  c.sampler.guidance = 2.0
  # 'joint': one CFG term for the whole condition (eq. 5); 'composed': one term per active
  # emotion, out_u + w sum_i (out_{c_i} - out_u) (diffusion/compose.py), costing one UNet
  # call on batch (|A| + 1) B per step instead of 2B; |A| <= 1 samples as 'joint'.
  c.sampler.guidance_mode = "joint"
  c.sampler.compose_min_intensity = 0.05  # composed: an emotion with s_i >= this is a component
  c.sampler.compose_max = 3  # composed: at most this many components, the strongest
  c.sampler.inversion_iters = 2  # fixed-point refinements per DDIM-inversion step (0 = plain eq. 4)
  # Emotion tokens see s_k' = max(s) (s_k / max(s)) ** intensity_gamma: the fainter parts of
  # a mixture lifted toward the strongest (1 = as trained; models/eib.calibrate_intensities).
  # `emotalker calibrate` measures it on training identities into WORKDIR/calibration.json,
  # which generation then uses.
  c.sampler.intensity_gamma = 1.0
  c.sampler.constraint = ml_collections.ConfigDict()
  c.sampler.constraint.strength = 0.5
  c.sampler.constraint.schedule = "linear"  # 'constant' | 'linear' | 'cosine' decay
  c.sampler.constraint.until = 0.6  # fraction of steps the constraint acts on
  c.sampler.constraint.m_face = 0.0  # mask value inside the face region
  c.sampler.constraint.init = "inversion"  # 'inversion' | 'noise'
  # with init 'inversion': the start is sqrt(1 - rho) Z_T + sqrt(rho) eps (0 = Z_T itself)
  c.sampler.constraint.init_noise = 0.0

  # ---- training -----------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 8  # global batch
  c.train.steps = 300
  c.train.lr = 1e-3
  c.train.warmup_steps = 20
  c.train.weight_decay = 0.01
  c.train.grad_clip = 1.0
  c.train.ema_decay = 0.999
  c.train.p_uncond = 0.1
  c.train.lambda_eib = 0.1
  c.train.log_every = 10
  c.train.ckpt_every = 100
  c.train.keep_checkpoints = 3
  c.train.async_checkpointing = True
  c.train.p_explicit = 0.2  # rows whose emotion tokens come from the label vector s
  # Extra loss weight on the mouth box (latent pixels): weight 1 + w * overlap; 0 = plain
  # eq. (2). The pipeline's `mouth_region` comes from the lip landmarks (lower face without).
  c.train.mouth_loss_weight = 0.0
  # The same for the box of the brows and eyes (`eyes_region`), where faint emotions show.
  c.train.eyes_loss_weight = 0.0
  # > 0: each clip label gets this many FED prompts (training/prompt_pool.py), whose frozen
  # text states are computed once instead of in every step; 0: a fresh FED prompt per
  # example through the text tower inside the step.
  c.train.prompt_pool_size = 0
  # True: each reference frame's latent is computed once and passed in
  # (training/frozen_cache.py) instead of encoding x_ref in every step.
  c.train.cache_reference_latents = False
  c.train.autoencoder_checkpoint = ""  # dir with params.safetensors ('' -> random init + warning)
  c.train.eib_checkpoint = ""  # `emotalker eib-train` folder to initialise the EIB ('' -> fresh)

  # ---- stage 1: the autoencoder (`emotalker train --stage autoencoder`) ------------------
  c.autoencoder_train = ml_collections.ConfigDict()
  c.autoencoder_train.steps = 1500
  c.autoencoder_train.lr = 2e-3
  c.autoencoder_train.warmup_steps = 50
  c.autoencoder_train.weight_decay = 0.0
  c.autoencoder_train.grad_clip = 1.0
  c.autoencoder_train.ema_decay = 0.99
  c.autoencoder_train.kl_weight = 1e-6

  # ---- parallelism (maxtext-style logical axis rules live here, not in modules) --------
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # Multi-slice: sizes across slices over the data-centre network (the ICI sizes above are
  # then per slice); 1 = one slice.
  c.mesh.dcn_data = 1
  c.mesh.dcn_fsdp = 1
  c.mesh.dcn_tensor = 1
  c.logical_axis_rules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_out", "fsdp"),
    ("conv_in", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("height", None),
    ("width", None),
    ("length", None),
    ("norm", None),
    ("vocab", None),  # token-embedding rows (text encoders)
  )
  return c
