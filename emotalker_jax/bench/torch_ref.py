"""The PyTorch reference of the sampler benchmark: the same model in diffusers and the same
guided sampler as a torch loop.

diffusers ``UNet2DConditionModel`` + ``AutoencoderKL`` are built from a diffusers config
equivalent to ours (random torch weights, seeded) and converted into our params with
``checkpoints.convert_state_dict``; sampling uses diffusers' ``DDIMScheduler`` (the inversion
is a hand-written torch loop with the same equations, since ``DDIMInverseScheduler`` has no
fixed-point refinement). torch and diffusers are optional dependencies (the 'test' extra):
this module imports without them and its functions then raise ImportError.

Arrays handed in and out are numpy NHWC float32; torch tensors inside are NCHW.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np

from emotalker_jax import checkpoints as ck
from emotalker_jax.bench.model_stats import latent_size
from emotalker_jax.diffusion import schedule as sched_lib
from emotalker_jax.diffusion.sampler import ddim_timesteps
from emotalker_jax.models.autoencoder import AutoencoderSpec, build_autoencoder, init_autoencoder
from emotalker_jax.models.unet import UNetSpec, build_unet, init_unet

try:  # optional: the 'test' extra (parity tests and this benchmark)
  import diffusers
  import torch
except ImportError:  # pragma: no cover - the tier without torch skips the sampler bench
  diffusers = torch = None


def require_torch() -> None:
  if torch is None or diffusers is None:
    raise ImportError("the PyTorch reference needs torch and diffusers: pip install -e '.[test]'")


def torch_device() -> str:
  """'cuda' when JAX runs on a GPU and this torch build has CUDA, else 'cpu'."""
  require_torch()
  if jax.devices()[0].platform == "gpu" and torch.cuda.is_available():
    return "cuda"
  return "cpu"


def make_torch_matmul(n: int, dtype: str = "float32", seed: int = 0):
  """(fn() -> one torch n x n matmul, synchronised; flops 2 n^3) on the device the sampler's
  PyTorch side uses, or None when torch is not installed. Context for the roofline: the
  rate a vendor BLAS (MKL / oneDNN / cuBLAS) reaches on this machine."""
  if torch is None:
    return None
  device = torch_device()
  g = torch.Generator().manual_seed(int(seed))
  tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
  a = torch.randn(n, n, generator=g).to(device=device, dtype=tdt)
  b = torch.randn(n, n, generator=g).to(device=device, dtype=tdt)

  def fn():
    with torch.inference_mode():
      torch.mm(a, b)
    if device == "cuda":
      torch.cuda.synchronize()

  fn()
  return fn, 2.0 * n**3


# -----------------------------------------------------------------------------------------
# The models
# -----------------------------------------------------------------------------------------


def diffusers_unet_kwargs(config) -> dict:
  """Keyword arguments of a diffusers ``UNet2DConditionModel`` equivalent to config.unet."""
  s = UNetSpec.from_config(config.unet)
  if s.context_embedding != "none":
    raise ValueError(
      f"config.unet.context_embedding={s.context_embedding!r} has no diffusers "
      "equivalent; compare against diffusers with context_embedding='none'"
    )

  def one(v):
    return v[0] if len(set(v)) == 1 else tuple(v)

  return dict(
    sample_size=latent_size(config),
    in_channels=s.in_channels,
    out_channels=s.out_channels,
    block_out_channels=tuple(s.block_out_channels),
    down_block_types=tuple(s.down_block_types),
    up_block_types=tuple(s.up_block_types),
    layers_per_block=one(s.layers_per_block),
    attention_head_dim=one(s.heads),
    cross_attention_dim=s.cross_attention_dim,
    transformer_layers_per_block=one(s.transformer_layers_per_block),
    norm_num_groups=s.norm_num_groups,
    use_linear_projection=s.use_linear_projection,
    flip_sin_to_cos=s.flip_sin_to_cos,
    freq_shift=int(s.freq_shift),
    norm_eps=s.norm_eps,
  )


def diffusers_vae_kwargs(config) -> dict:
  """Keyword arguments of a diffusers ``AutoencoderKL`` equivalent to config.autoencoder."""
  s = AutoencoderSpec.from_config(config.autoencoder)
  n = len(s.block_out_channels)
  kw = dict(
    in_channels=s.in_channels,
    out_channels=s.out_channels,
    latent_channels=s.latent_channels,
    block_out_channels=tuple(s.block_out_channels),
    down_block_types=("DownEncoderBlock2D",) * n,
    up_block_types=("UpDecoderBlock2D",) * n,
    layers_per_block=s.layers_per_block,
    norm_num_groups=s.norm_num_groups,
    scaling_factor=s.scaling_factor,
    mid_block_add_attention=s.mid_block_add_attention,
    use_quant_conv=s.use_quant_conv,
    use_post_quant_conv=s.use_post_quant_conv,
  )
  if s.shift_factor:
    kw["shift_factor"] = s.shift_factor
  return kw


def build_torch_models(config, seed: int = 0):
  """(diffusers UNet2DConditionModel, diffusers AutoencoderKL) in eval mode with seeded random
  weights, checked to have the same layout as our config (ValueError otherwise)."""
  require_torch()
  torch.manual_seed(int(seed))
  unet = diffusers.UNet2DConditionModel(**diffusers_unet_kwargs(config)).eval()
  torch.manual_seed(int(seed) + 1)
  vae = diffusers.AutoencoderKL(**diffusers_vae_kwargs(config)).eval()
  ours = UNetSpec.from_config(config.unet)
  theirs = UNetSpec.from_config(ck.unet_config_from_diffusers(dict(unet.config)))
  if dataclasses.replace(theirs, remat=ours.remat, dropout=ours.dropout) != ours:
    raise ValueError(
      f"the diffusers UNet built from config.unet has another layout: {theirs} vs ours {ours}"
    )
  ours_v = AutoencoderSpec.from_config(config.autoencoder)
  theirs_v = AutoencoderSpec.from_config(ck.vae_config_from_diffusers(dict(vae.config)))
  if theirs_v != ours_v:
    raise ValueError(
      f"the diffusers AutoencoderKL built from config.autoencoder has another "
      f"layout: {theirs_v} vs ours {ours_v}"
    )
  return unet, vae


def torch_params_to_ours(config, unet, vae) -> tuple[dict, dict]:
  """The torch models' weights converted into our (UNet params, autoencoder params) trees
  with ``checkpoints.convert_state_dict`` (float32 numpy leaves)."""

  def state(m):
    return {k: v.detach().cpu().float().numpy() for k, v in m.state_dict().items()}

  unet_model, vae_model = build_unet(config), build_autoencoder(config)
  target_u = jax.eval_shape(lambda: init_unet(unet_model, jax.random.key(0)))["params"]
  target_v = jax.eval_shape(lambda: init_autoencoder(vae_model, jax.random.key(0)))["params"]
  pu, _ = ck.convert_state_dict(state(unet), target_u, source="diffusers UNet2DConditionModel")
  pv, _ = ck.convert_state_dict(state(vae), target_v, source="diffusers AutoencoderKL")
  return pu, pv


# -----------------------------------------------------------------------------------------
# The scheduler
# -----------------------------------------------------------------------------------------


def bench_spacing(config, steps: int) -> tuple[str, str | None]:
  """The timestep spacing both samplers use: the config's when diffusers' DDIMScheduler
  steps between the same levels, else 'trailing' (then 'leading'); (spacing, note or None).

  DDIMScheduler's step goes from t to t - T // steps, so it matches our sampler (which
  steps to the next visited level) only when the levels are evenly spaced by T // steps.
  """
  T = int(config.diffusion.num_train_timesteps)
  want = str(config.sampler.spacing)
  for cand in (want, "trailing", "leading"):
    try:
      if _diffusers_compatible(T, steps, cand):
        note = (
          None
          if cand == want
          else (
            f"config spacing {want!r} visits levels that diffusers' DDIMScheduler does not step "
            f"between at {steps} steps; both samplers use {cand!r} instead (same cost)"
          )
        )
        return cand, note
    except ValueError:
      continue
  raise ValueError(
    f"no timestep spacing works with diffusers' DDIMScheduler for T={T}, "
    f"steps={steps}; pick a step count that divides {T}"
  )


def _diffusers_compatible(T: int, steps: int, spacing: str) -> bool:
  ts = ddim_timesteps(T, steps, spacing)[::-1]
  ratio = T // steps
  prev = list(ts[1:]) + [None]
  return all(
    (p is None and t - ratio < 0) or (p is not None and t - ratio == p) for t, p in zip(ts, prev)
  )


def make_ddim_scheduler(config, steps: int, spacing: str):
  """diffusers DDIMScheduler with our betas, prediction type, no clipping, ᾱ_final = 1."""
  require_torch()
  schedule = sched_lib.from_config(config.diffusion)
  names = {"uniform": "linspace", "leading": "leading", "trailing": "trailing"}
  s = diffusers.DDIMScheduler(
    num_train_timesteps=schedule.num_train_timesteps,
    trained_betas=np.asarray(schedule.betas, np.float32),
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    prediction_type=schedule.prediction_type,
    timestep_spacing=names[spacing],
  )
  s.set_timesteps(int(steps))
  return s


# -----------------------------------------------------------------------------------------
# The sampler
# -----------------------------------------------------------------------------------------


def make_torch_sampler(
  unet_fn,
  decode_fn,
  scheduler,
  prob,
  *,
  device: str,
  scaling_factor: float,
  shift_factor: float = 0.0,
  autocast_dtype=None,
):
  """fn() -> images (B, H, W, 3) numpy: the same sampler in PyTorch.

  prob is a ``bench.sampler.SamplerProblem``. unet_fn(sample NCHW, t (N,) int64, context
  (N,L,D)) -> eps/v NCHW; decode_fn(z NCHW) -> image NCHW. The inversion follows
  ``sampler.ddim_invert`` (eq. 4 with fixed-point refinements) on the scheduler's ᾱ;
  sampling is ``scheduler.step`` (eta = 0) on the CFG output out_c + (w - 1)(out_c - out_u)
  of one batched UNet call, then the eq. 6 blend.
  """
  require_torch()

  def t_(x):
    x = np.asarray(x)
    if x.ndim == 4:
      x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.array(x, np.float32, copy=True, order="C")).to(device)

  B = prob.batch
  z_src, sp_src, ctx_src = t_(prob.z_src), t_(prob.spatial_src), t_(prob.ctx_src)
  sp, ctx = t_(prob.spatial), t_(prob.ctx)
  sp2 = torch.cat([sp, sp], 0)
  ctx2 = torch.cat([ctx, t_(prob.ctx_null).expand(B, -1, -1)], 0)
  mask = t_(prob.mask)[None, None]  # (1,1,h,w)
  lam = [float(x) for x in prob.lam]
  acp = scheduler.alphas_cumprod.to(torch.float32)
  ts_desc = [int(t) for t in scheduler.timesteps]
  ts_up = ts_desc[::-1]
  pred_type = scheduler.config.prediction_type
  w = float(prob.guidance)

  def to_eps(out, z, a):
    if pred_type == "epsilon":
      return out
    return a.sqrt() * out + (1 - a).sqrt() * z  # v -> eps

  def unet(z, t, spatial, context):
    tt = torch.full((z.shape[0],), t, dtype=torch.int64, device=device)
    return unet_fn(torch.cat([z, spatial], 1), tt, context).float()

  def fn():
    ctx_mgr = (
      torch.autocast(device_type=device, dtype=autocast_dtype)
      if autocast_dtype is not None
      else contextlib.nullcontext()
    )
    with torch.inference_mode(), ctx_mgr:
      # eq. (4): DDIM inversion with fixed-point refinement, z0 -> Z_T.
      z = z_src.float()
      ups = []
      a_c = torch.tensor(1.0)
      for t in ts_up:
        a_n = acp[t]
        y = z
        for _ in range(prob.inversion_iters + 1):
          eps = to_eps(unet(y, t, sp_src, ctx_src), y, a_n)
          x0 = (z - (1 - a_c).sqrt() * eps) / a_c.sqrt()
          y = a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps
        z, a_c = y, a_n
        ups.append(z)
      traj = ups[:-1][::-1] + [z_src.float()]
      # eqs. (5), (6): guided DDIM from Z_T (shared by the B frames) + the constraint.
      x = z.expand(B, -1, -1, -1).contiguous()
      for k, t in enumerate(ts_desc):
        out = unet(torch.cat([x, x], 0), t, sp2, ctx2)
        out_c, out_u = out[:B], out[B:]
        guided = out_c + (w - 1.0) * (out_c - out_u)
        x = scheduler.step(guided, t, x, eta=0.0, return_dict=False)[0].float()
        if lam[k] > 0.0:
          wm = lam[k] * mask
          x = x * (1.0 - wm) + traj[k] * wm
      img = decode_fn(x / scaling_factor + shift_factor).float()
    if device == "cuda":
      torch.cuda.synchronize()
    return img.cpu().numpy().transpose(0, 2, 3, 1)

  return fn
