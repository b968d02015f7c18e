"""Weights on disk: diffusers import and our safetensors params (pure numpy/safetensors,
no torch at run time; the orbax training checkpoints are in ``checkpoints.workdir``).

* ``load_diffusers_unet(folder)`` / ``load_diffusers_vae(folder)``: a diffusers model
  folder (``config.json`` + ``diffusion_pytorch_model.safetensors``, or a sharded
  ``...safetensors.index.json``) -> (our config section as a plain dict, params tree).
  Names map mechanically: ``down_blocks.0.resnets.1.conv1.weight`` ->
  ``down_blocks_0/resnets_1/conv1/kernel``; torch conv (O, I, kh, kw) -> flax
  (kh, kw, I, O); torch linear (O, I) -> (I, O), reshaped to our kernel's shape
  (attention kernels are (D, heads, head_dim) and (heads, head_dim, D)).
* ``convert_unet_into(folder, unet_config)``: the same, into *our* UNet layout when the
  input/output channels or the cross-attention width differ (SD weights into the
  EmoTalker UNet with 3x latent input channels): the extra ``conv_in`` input channels are
  zero-initialised (as SD in-painting models do), what cannot be carried over
  (``attn2`` to_k/to_v for a different context width, ``conv_out`` for a different
  output width) is re-initialised; the list of adapted tensors is returned.
* ``save_params(dir, params, config)`` / ``load_params(dir)``: ``dir/params.safetensors``
  (keys are '/'-joined paths of the params tree) + ``dir/config.json`` (our config
  section, plain JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import json
import os
import struct
from typing import Any
import zlib

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from emotalker_jax.models.autoencoder import AutoencoderKL, AutoencoderSpec, init_autoencoder
from emotalker_jax.models.unet import DOWN_TYPES, UP_TYPES, UNet, UNetSpec, init_unet

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
PARAMS_NAME = "params.safetensors"
CONFIG_NAME = "config.json"
SEP = "/"

# ----------------------------------------------------------------------------------------
# safetensors reading (numpy, lazy, handles bf16/f16 without torch)
# ----------------------------------------------------------------------------------------

_ST_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


def _st_dtype(name: str):
  if name == "BF16":
    return ml_dtypes.bfloat16
  if name not in _ST_DTYPES:
    raise ValueError(f"safetensors dtype {name} is not supported")
  return _ST_DTYPES[name]


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file as numpy arrays (memory-mapped; floats as stored)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weight file {path} not found")
  with open(path, "rb") as fh:
    try:
      (n,) = struct.unpack("<Q", fh.read(8))
      header = json.loads(fh.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
      raise ValueError(f"{path} is not a safetensors file ({e})") from None
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for key, info in header.items():
    if key == "__metadata__":
      continue
    start, end = info["data_offsets"]
    dt = np.dtype(_st_dtype(info["dtype"]))
    out[key] = np.frombuffer(data[start:end], dtype=dt).reshape(info["shape"])
  return out


def _read_model_weights(folder: str) -> dict[str, np.ndarray]:
  single = os.path.join(folder, WEIGHTS_NAME)
  index = os.path.join(folder, WEIGHTS_INDEX_NAME)
  if os.path.isfile(single):
    return read_safetensors(single)
  if os.path.isfile(index):
    with open(index) as fh:
      shards = sorted(set(json.load(fh)["weight_map"].values()))
    out = {}
    for s in shards:
      out.update(read_safetensors(os.path.join(folder, s)))
    return out
  raise FileNotFoundError(
    f"weight file {single} not found (nor a sharded {WEIGHTS_INDEX_NAME}); a diffusers "
    "folder needs config.json and diffusion_pytorch_model.safetensors (convert .bin "
    "checkpoints to safetensors first)"
  )


def read_json(path: str) -> dict:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path} not found")
  with open(path) as fh:
    try:
      return json.load(fh)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON: {e}") from None


# ----------------------------------------------------------------------------------------
# Trees
# ----------------------------------------------------------------------------------------


def _unbox(tree):
  return nn.meta.unbox(tree)


def flatten_params(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {'a/b/kernel': leaf}."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{SEP}{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten_params(v, key))
    else:
      out[key] = v
  return out


def unflatten_params(flat: Mapping[str, Any]) -> dict:
  """{'a/b/kernel': leaf} -> nested dict."""
  out: dict = {}
  for key, v in flat.items():
    node = out
    parts = key.split(SEP)
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return out


# ----------------------------------------------------------------------------------------
# diffusers config -> our config section
# ----------------------------------------------------------------------------------------

# diffusers UNet2DConditionModel options we do not implement: key -> accepted values.
_UNET_FIXED = {
  "mid_block_type": ("UNetMidBlock2DCrossAttn",),
  "act_fn": ("silu",),
  "center_input_sample": (False,),
  "class_embed_type": (None,),
  "addition_embed_type": (None,),
  "encoder_hid_dim": (None,),
  "encoder_hid_dim_type": (None,),
  "time_embedding_type": ("positional",),
  "time_embedding_dim": (None,),
  "time_embedding_act_fn": (None,),
  "timestep_post_act": (None,),
  "time_cond_proj_dim": (None,),
  "only_cross_attention": (False,),
  "dual_cross_attention": (False,),
  "resnet_time_scale_shift": ("default",),
  "resnet_skip_time_act": (False,),
  "resnet_out_scale_factor": (1.0, 1),
  "conv_in_kernel": (3,),
  "conv_out_kernel": (3,),
  "attention_type": ("default",),
  "class_embeddings_concat": (False,),
  "downsample_padding": (1,),
  "mid_block_scale_factor": (1, 1.0),
  "num_class_embeds": (None,),
  "cross_attention_norm": (None,),
  "reverse_transformer_layers_per_block": (None,),
}
UNET_KEYS = (
  "in_channels",
  "out_channels",
  "block_out_channels",
  "down_block_types",
  "up_block_types",
  "layers_per_block",
  "attention_head_dim",
  "num_attention_heads",
  "cross_attention_dim",
  "transformer_layers_per_block",
  "norm_num_groups",
  "use_linear_projection",
  "dropout",
  "flip_sin_to_cos",
  "freq_shift",
  "norm_eps",
)
_UNET_DEFAULTS = {
  "in_channels": 4,
  "out_channels": 4,
  "layers_per_block": 2,
  "attention_head_dim": 8,
  "num_attention_heads": None,
  "cross_attention_dim": 1280,
  "transformer_layers_per_block": 1,
  "norm_num_groups": 32,
  "use_linear_projection": False,
  "dropout": 0.0,
  "flip_sin_to_cos": True,
  "freq_shift": 0,
  "norm_eps": 1e-5,
  "block_out_channels": (320, 640, 1280, 1280),
  "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
  "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}

_VAE_FIXED = {
  "act_fn": ("silu",),
  "force_upcast": (True, False),
  "latents_mean": (None,),
  "latents_std": (None,),
}
VAE_KEYS = (
  "in_channels",
  "out_channels",
  "latent_channels",
  "block_out_channels",
  "layers_per_block",
  "norm_num_groups",
  "scaling_factor",
  "shift_factor",
  "mid_block_add_attention",
  "use_quant_conv",
  "use_post_quant_conv",
)
_VAE_DEFAULTS = {
  "in_channels": 3,
  "out_channels": 3,
  "latent_channels": 4,
  "block_out_channels": (64,),
  "layers_per_block": 1,
  "norm_num_groups": 32,
  "scaling_factor": 0.18215,
  "shift_factor": None,
  "mid_block_add_attention": True,
  "use_quant_conv": True,
  "use_post_quant_conv": True,
}


def _tuples(v):
  return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def unet_config_from_diffusers(d: Mapping, source: str = "config.json") -> dict:
  """A diffusers UNet2DConditionModel config dict -> our ``config.unet`` keys (a dict).

  Raises ValueError naming ``source`` and the key for options we do not implement.
  """
  for key, ok in _UNET_FIXED.items():
    vals = d.get(key)
    vals = list(vals) if isinstance(vals, (list, tuple)) else [vals]  # per-block lists
    if key in d and any(v not in ok for v in vals):
      raise ValueError(f"{source}: {key}={d[key]!r} is not supported by our UNet (supported: {ok})")
  for key in ("down_block_types", "up_block_types"):
    if key in d:
      allowed = DOWN_TYPES if key.startswith("down") else UP_TYPES
      bad = [t for t in d[key] if t not in allowed]
      if bad:
        raise ValueError(f"{source}: {key} contains {bad}; supported block types are {allowed}")
  out = {k: _tuples(d.get(k, _UNET_DEFAULTS[k])) for k in UNET_KEYS}
  out["remat"] = False
  return out


def vae_config_from_diffusers(d: Mapping, source: str = "config.json") -> dict:
  """A diffusers AutoencoderKL config dict -> our ``config.autoencoder`` keys (a dict)."""
  for key, ok in _VAE_FIXED.items():
    if key in d and d[key] not in ok:
      raise ValueError(f"{source}: {key}={d[key]!r} is not supported by our autoencoder")
  for key, want in (
    ("down_block_types", "DownEncoderBlock2D"),
    ("up_block_types", "UpDecoderBlock2D"),
  ):
    bad = [t for t in d.get(key, ()) if t != want]
    if bad:
      raise ValueError(f"{source}: {key} contains {bad}; only {want} is supported")
  out = {k: _tuples(d.get(k, _VAE_DEFAULTS[k])) for k in VAE_KEYS}
  if out["shift_factor"] is None:
    out["shift_factor"] = 0.0
  return out


# ----------------------------------------------------------------------------------------
# state dict -> params
# ----------------------------------------------------------------------------------------

_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out_0"}


def torch_key_to_path(key: str) -> tuple[str, ...]:
  """'down_blocks.0.attentions.1.to_out.0.weight' -> ('down_blocks_0', 'attentions_1',
  'to_out_0', 'weight'); legacy VAE attention names (query/key/value/proj_attn) are
  renamed to to_q/to_k/to_v/to_out_0."""
  out: list[str] = []
  for p in key.split("."):
    if p.isdigit() and out:
      out[-1] = f"{out[-1]}_{p}"
    else:
      out.append(p)
  if len(out) >= 2 and out[-2] in _LEGACY_ATTN and out[-3].startswith("attentions_"):
    out[-2] = _LEGACY_ATTN[out[-2]]
  return tuple(out)


def _to_flax(arr: np.ndarray, leaf: str, target_shape: tuple[int, ...]) -> np.ndarray | None:
  """Converts one torch tensor to our layout and shape; None when it cannot fit.

  kernel: conv (O, I, kh, kw) -> (kh, kw, I, O); linear (O, I) -> (I, O), then split
  into (I, heads, head_dim) or (heads, head_dim, O) for attention kernels; a 1x1 conv
  and a linear layer convert into each other. scale/bias: 1-D, reshaped to the target
  (attention biases are (heads, head_dim)).
  """
  a = np.asarray(arr)
  t = tuple(target_shape)
  if leaf == "kernel":
    if a.ndim == 4:
      if len(t) == 4:
        a = a.transpose(2, 3, 1, 0)
        return a if a.shape == t else None
      if a.shape[2:] != (1, 1):
        return None
      a = a[:, :, 0, 0]
    if a.ndim != 2:
      return None
    a = a.T
    if len(t) == 4:
      return a[None, None] if (1, 1) + a.shape == t else None
    if len(t) == 2:
      return a if a.shape == t else None
    if len(t) == 3 and ((a.shape == (t[0], t[1] * t[2])) or (a.shape == (t[0] * t[1], t[2]))):
      return a.reshape(t)
    return None
  if a.ndim != 1 or a.size != int(np.prod(t)):
    return None
  return a.reshape(t)


@dataclasses.dataclass
class Adapted:
  """One tensor that did not carry over unchanged."""

  path: str
  source_shape: tuple
  target_shape: tuple
  how: str

  def __str__(self):
    return f"{self.path}: {self.source_shape} -> {self.target_shape} ({self.how})"


# Tensors whose shape may legitimately differ between a diffusers checkpoint and our UNet.
def _adaptation(path: str, src: np.ndarray, target_shape: tuple) -> tuple[str, Callable] | None:
  """(description, fn(fresh_init) -> array) for an allowed adaptation, else None."""
  parts = path.split(SEP)
  if path == "conv_in/kernel" and src.ndim == 4:
    k = src.transpose(2, 3, 1, 0)  # (kh,kw,I_src,O)
    if k.shape[:2] == target_shape[:2] and k.shape[3] == target_shape[3]:
      i_src, i_tgt = k.shape[2], target_shape[2]
      if i_tgt > i_src:

        def fn(fresh, k=k):
          out = np.zeros(target_shape, np.float32)
          out[:, :, :i_src] = k
          return out

        return (
          f"input channels {i_src} -> {i_tgt}: copied the first {i_src}, "
          f"zero-initialised the other {i_tgt - i_src}",
          fn,
        )
      return (
        f"input channels {i_src} -> {i_tgt}: kept the first {i_tgt}",
        lambda fresh, k=k: np.ascontiguousarray(k[:, :, :i_tgt]),
      )
  if parts[0] == "conv_out":
    return ("output channels differ: re-initialised", lambda fresh: fresh)
  if len(parts) >= 3 and parts[-3] == "attn2" and parts[-2] in ("to_k", "to_v"):
    return ("cross-attention context width differs: re-initialised", lambda fresh: fresh)
  return None


def fresh_init(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
  """A freshly initialised tensor as our modules would make it: biases 0, norm scales 1,
  kernels lecun_normal (fan-in = all input axes; attention kernels (D, heads, head_dim)
  have fan-in D). Deterministic in (name, seed)."""

  leaf = name.split(SEP)[-1]
  if leaf == "bias":
    return np.zeros(shape, np.float32)
  if leaf == "scale":
    return np.ones(shape, np.float32)
  key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)
  init = jax.nn.initializers.lecun_normal()
  if len(shape) == 3:  # DenseGeneral (in, heads, head_dim)
    return np.asarray(init(key, (shape[0], shape[1] * shape[2]))).reshape(shape)
  return np.asarray(init(key, shape), np.float32)


def convert_state_dict(
  state: Mapping[str, np.ndarray], target: Mapping, *, source: str, adapt_seed: int | None = None
) -> tuple[dict, list[Adapted]]:
  """Maps a diffusers state dict onto the (abstract or concrete) params tree ``target``.

  target: nested dict whose leaves have ``.shape`` (e.g. from ``jax.eval_shape``).
  adapt_seed: when given, tensors whose shape differs in an allowed place (conv_in input
  channels, conv_out, attn2 to_k/to_v) are adapted (``fresh_init`` with this seed for
  re-initialised ones) instead of raising. Returns (params as float32 numpy, adapted).
  Raises ValueError naming ``source`` on missing/unexpected/mis-shaped tensors.
  """
  flat_t = {k: tuple(v.shape) for k, v in flatten_params(_unbox(target)).items()}
  out: dict[str, np.ndarray] = {}
  adapted: list[Adapted] = []
  unexpected, mismatched = [], []
  for key, arr in state.items():
    path = torch_key_to_path(key)
    leaf = path[-1]
    prefix = SEP.join(path[:-1])
    if leaf == "weight":
      leaf = "kernel" if f"{prefix}{SEP}kernel" in flat_t else "scale"
    elif leaf != "bias":
      unexpected.append(key)
      continue
    name = f"{prefix}{SEP}{leaf}"
    if name not in flat_t:
      unexpected.append(key)
      continue
    shape = flat_t[name]
    a = _to_flax(arr, leaf, shape)
    if a is None:
      rule = _adaptation(name, np.asarray(arr), shape) if adapt_seed is not None else None
      if rule is None:
        mismatched.append(f"{key} {tuple(arr.shape)} vs ours {name} {shape}")
        continue
      how, fn = rule
      a = np.asarray(fn(fresh_init(name, shape, adapt_seed)), np.float32)
      adapted.append(Adapted(name, tuple(arr.shape), shape, how))
    out[name] = np.ascontiguousarray(a, dtype=np.float32)
  missing = sorted(set(flat_t) - set(out))
  if unexpected or missing or mismatched:
    msg = [f"{source} does not match the model config"]
    if mismatched:
      msg.append(f"{len(mismatched)} tensors with other shapes (e.g. {mismatched[:3]})")
    if missing:
      msg.append(f"{len(missing)} tensors missing (e.g. {missing[:3]})")
    if unexpected:
      msg.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
    msg.append(
      "check that config.json belongs to these weights, or that the config "
      "layout (block_out_channels, layers_per_block, block types) matches"
    )
    raise ValueError("; ".join(msg))
  return unflatten_params(out), adapted


# ----------------------------------------------------------------------------------------
# Public importers
# ----------------------------------------------------------------------------------------


def _model_folder(folder: str, sub: str) -> str:
  """Accepts either the model folder itself or a pipeline folder containing ``sub/``."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"diffusers folder {folder} not found")
  if os.path.isfile(os.path.join(folder, CONFIG_NAME)):
    return folder
  if os.path.isfile(os.path.join(folder, sub, CONFIG_NAME)):
    return os.path.join(folder, sub)
  raise FileNotFoundError(
    f"{os.path.join(folder, CONFIG_NAME)} not found (nor "
    f"{os.path.join(folder, sub, CONFIG_NAME)}); pass a diffusers "
    f"model folder"
  )


def _abstract_unet(cfg):
  model = UNet(UNetSpec.from_config(cfg))
  return jax.eval_shape(lambda: init_unet(model, jax.random.key(0)))["params"]


def _abstract_vae(cfg):
  model = AutoencoderKL(AutoencoderSpec.from_config(cfg))
  return jax.eval_shape(lambda: init_autoencoder(model, jax.random.key(0)))["params"]


def load_diffusers_unet(folder: str) -> tuple[dict, dict]:
  """diffusers UNet2DConditionModel folder -> (our ``config.unet`` dict, params tree).

  ``folder`` holds config.json + diffusion_pytorch_model.safetensors (or contains
  ``unet/`` with them). Params are float32 numpy arrays, tree as ``UNet.init`` makes it.
  """
  folder = _model_folder(folder, "unet")
  cfg_path = os.path.join(folder, CONFIG_NAME)
  cfg = unet_config_from_diffusers(read_json(cfg_path), cfg_path)
  state = _read_model_weights(folder)
  params, _ = convert_state_dict(
    state, _abstract_unet(cfg), source=os.path.join(folder, WEIGHTS_NAME)
  )
  return cfg, params


def load_diffusers_vae(folder: str) -> tuple[dict, dict]:
  """diffusers AutoencoderKL folder (or a pipeline folder with ``vae/``) -> (our
  ``config.autoencoder`` dict, params tree)."""
  folder = _model_folder(folder, "vae")
  cfg_path = os.path.join(folder, CONFIG_NAME)
  cfg = vae_config_from_diffusers(read_json(cfg_path), cfg_path)
  state = _read_model_weights(folder)
  params, _ = convert_state_dict(
    state, _abstract_vae(cfg), source=os.path.join(folder, WEIGHTS_NAME)
  )
  return cfg, params


_LAYOUT_KEYS = (
  "block_out_channels",
  "down_block_types",
  "up_block_types",
  "layers_per_block",
  "transformer_layers_per_block",
  "norm_num_groups",
  "use_linear_projection",
)


def convert_unet_into(folder: str, unet_config, seed: int = 0) -> tuple[dict, list[Adapted]]:
  """Imports a diffusers UNet into the layout of ``unet_config`` (our config.unet).

  The block layout (block_out_channels, block types, layers, groups, projection kind and
  resolved heads) must match the checkpoint; in_channels, out_channels and
  cross_attention_dim may differ and are adapted (see the module docstring), the fresh
  tensors coming from an init with ``jax.random.key(seed)``. Returns (params, adapted).
  """
  folder = check_unet_layout(folder, unet_config)
  state = _read_model_weights(folder)
  return convert_state_dict(
    state, _abstract_unet(unet_config), source=os.path.join(folder, WEIGHTS_NAME), adapt_seed=seed
  )


def check_unet_layout(folder: str, unet_config) -> str:
  """Raises ValueError unless the diffusers UNet in ``folder`` has the block layout of
  ``unet_config`` (channels, block types, layers, groups, projections, heads); returns
  the model folder. Cheap: reads config.json only."""
  folder = _model_folder(folder, "unet")
  cfg_path = os.path.join(folder, CONFIG_NAME)
  src = UNetSpec.from_config(unet_config_from_diffusers(read_json(cfg_path), cfg_path))
  dst = UNetSpec.from_config(unet_config)
  diff = [k for k in _LAYOUT_KEYS + ("heads",) if getattr(src, k) != getattr(dst, k)]
  if diff:
    raise ValueError(
      f"{cfg_path} does not match the config's UNet layout: "
      + ", ".join(f"{k}: checkpoint {getattr(src, k)} vs config {getattr(dst, k)}" for k in diff)
      + "; use a config with the checkpoint's layout (e.g. configs/sd15_init.py)"
    )
  return folder


def check_vae_matches(vae_cfg: Mapping, autoencoder_config, source: str) -> None:
  """Raises ValueError when a converted VAE's layout differs from config.autoencoder."""
  a, b = AutoencoderSpec.from_config(vae_cfg), AutoencoderSpec.from_config(autoencoder_config)
  keys = (
    "in_channels",
    "out_channels",
    "latent_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "mid_block_add_attention",
    "use_quant_conv",
    "use_post_quant_conv",
  )
  diff = [k for k in keys if getattr(a, k) != getattr(b, k)]
  if diff:
    raise ValueError(
      f"{source} does not match config.autoencoder: "
      + ", ".join(f"{k}: checkpoint {getattr(a, k)} vs config {getattr(b, k)}" for k in diff)
      + "; pick a config whose autoencoder matches the checkpoint"
    )


# ----------------------------------------------------------------------------------------
# Our params on disk
# ----------------------------------------------------------------------------------------


def _plain(v):
  if isinstance(v, tuple):
    return [_plain(x) for x in v]
  if isinstance(v, list):
    return [_plain(x) for x in v]
  if isinstance(v, Mapping):
    return {k: _plain(x) for k, x in v.items()}
  if hasattr(v, "to_dict"):
    return _plain(v.to_dict())
  if dataclasses.is_dataclass(v):
    return _plain(dataclasses.asdict(v))
  if isinstance(v, np.generic):
    return v.item()
  return v


def save_params(path: str, params: Mapping, config: Any | None = None) -> None:
  """Writes ``path/params.safetensors`` (float32/as stored, '/'-joined keys) and, when
  ``config`` is given (a dict, ConfigDict or spec dataclass), ``path/config.json``."""
  os.makedirs(path, exist_ok=True)
  flat = flatten_params(_unbox(params))
  arrays = {k: np.ascontiguousarray(np.asarray(jax.device_get(v))) for k, v in flat.items()}
  save_file(arrays, os.path.join(path, PARAMS_NAME))
  if config is not None:
    with open(os.path.join(path, CONFIG_NAME), "w") as fh:
      json.dump(_plain(config), fh, indent=2, sort_keys=True)


def load_params(path: str) -> tuple[dict, dict | None]:
  """Reads what ``save_params`` wrote: (params tree of numpy arrays, config dict or None)."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path} not found")
  weights = os.path.join(path, PARAMS_NAME)
  if not os.path.isfile(weights):
    raise FileNotFoundError(
      f"weight file {weights} not found; write it with `emotalker convert` or save_params"
    )
  flat = {k: np.array(v) for k, v in read_safetensors(weights).items()}
  cfg_path = os.path.join(path, CONFIG_NAME)
  cfg = read_json(cfg_path) if os.path.isfile(cfg_path) else None
  return unflatten_params(flat), cfg


def check_params_match(params: Mapping, abstract: Mapping, source: str) -> None:
  """Raises ValueError when ``params`` (e.g. from load_params) does not fit the model
  whose abstract params are ``abstract`` (names and shapes)."""
  a = {k: tuple(v.shape) for k, v in flatten_params(_unbox(abstract)).items()}
  p = {k: tuple(np.shape(v)) for k, v in flatten_params(_unbox(params)).items()}
  missing, extra = sorted(set(a) - set(p)), sorted(set(p) - set(a))
  bad = [f"{k} {p[k]} vs {a[k]}" for k in sorted(set(a) & set(p)) if a[k] != p[k]]
  if missing or extra or bad:
    raise ValueError(
      f"{source} does not match the model config: {len(missing)} missing "
      f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}), {len(bad)} "
      f"with other shapes (e.g. {bad[:3]}); use the config the checkpoint was saved with"
    )
