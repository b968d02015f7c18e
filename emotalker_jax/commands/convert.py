"""``emotalker convert``: import a diffusers UNet and/or VAE into our params.

    emotalker convert --diffusers DIR --out OUT [--config configs/sd15_init.py ...]

DIR is a diffusers pipeline folder (with ``unet/`` and/or ``vae/``, each holding
config.json + diffusion_pytorch_model.safetensors) or a single model folder. Writes
OUT/unet and/or OUT/vae (params.safetensors + config.json, readable with
``emotalker_jax.checkpoints.load_params``) and OUT/convert_report.json.

Without --config the checkpoint's own layout is kept. With --config the UNet is adapted
into ``config.unet`` (extra conv_in input channels zero-initialised; attn2 to_k/to_v
re-initialised when the context width differs; conv_out re-initialised when the output
width differs) and the VAE must match ``config.autoencoder``. Adapted tensors are printed.
"""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--diffusers",
    required=True,
    metavar="DIR",
    help="diffusers folder: a pipeline (unet/, vae/) or one model folder",
  )
  parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
  parser.add_argument(
    "--only", choices=("unet", "vae"), default=None, help="convert only this component"
  )
  parser.add_argument(
    "--seed", type=int, default=0, help="seed for re-initialised tensors (with --config)"
  )
  parser.add_argument(
    "--config",
    dest="_config_placeholder",
    metavar="FILE",
    help="our config (configs/X.py, with --config.a=b overrides): adapt "
    "the UNet into config.unet and check the VAE against "
    "config.autoencoder",
  )


def _components(folder: str, only: str | None) -> dict[str, str]:
  """{'unet': path, 'vae': path} found under ``folder``."""
  from emotalker_jax.checkpoints import CONFIG_NAME

  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--diffusers folder {folder} not found")
  found = {}
  own = os.path.join(folder, CONFIG_NAME)
  if os.path.isfile(own):
    with open(own) as fh:
      try:
        cls = json.load(fh).get("_class_name", "")
      except json.JSONDecodeError as e:
        raise ValueError(f"{own} is not valid JSON: {e}") from None
    if cls == "UNet2DConditionModel":
      found["unet"] = folder
    elif cls == "AutoencoderKL":
      found["vae"] = folder
    else:
      raise ValueError(
        f"{own}: _class_name {cls!r} is neither UNet2DConditionModel nor AutoencoderKL"
      )
  for sub in ("unet", "vae"):
    if os.path.isfile(os.path.join(folder, sub, CONFIG_NAME)):
      found[sub] = os.path.join(folder, sub)
  if only:
    found = {k: v for k, v in found.items() if k == only}
  if not found:
    want = f"{only}/" if only else "unet/ or vae/"
    raise FileNotFoundError(
      f"no diffusers model in {folder}: expected {want} with "
      f"{CONFIG_NAME} (or a model folder's own {CONFIG_NAME})"
    )
  return found


def run(args) -> int:
  from tqdm import tqdm

  from emotalker_jax import checkpoints as ck
  from emotalker_jax.config_utils import config_from_args

  config, _, _ = config_from_args(args.config_args, required=False)
  comps = _components(args.diffusers, args.only)
  if config is not None:  # layout checks read config.json only: fail before any work
    if "unet" in comps:
      ck.check_unet_layout(comps["unet"], config.unet)
    if "vae" in comps:
      vpath = os.path.join(comps["vae"], ck.CONFIG_NAME)
      ck.check_vae_matches(
        ck.vae_config_from_diffusers(ck.read_json(vpath), vpath), config.autoencoder, vpath
      )
  os.makedirs(args.out, exist_ok=True)
  report = {
    "source": os.path.abspath(args.diffusers),
    "config": config.name if config is not None else None,
  }
  for name in tqdm(list(comps), desc="convert", unit="model"):
    folder = comps[name]
    dst = os.path.join(args.out, name)
    if name == "unet":
      if config is None:
        cfg, params = ck.load_diffusers_unet(folder)
        adapted = []
      else:
        params, adapted = ck.convert_unet_into(folder, config.unet, seed=args.seed)
        cfg = config.unet.to_dict()
    else:
      cfg, params = ck.load_diffusers_vae(folder)
      adapted = []
      if config is not None:
        if abs(float(config.autoencoder.scaling_factor) - cfg["scaling_factor"]) > 1e-9:
          tqdm.write(
            f"note: the checkpoint's scaling_factor {cfg['scaling_factor']} "
            f"differs from config.autoencoder.scaling_factor "
            f"{config.autoencoder.scaling_factor}; the saved config keeps "
            "the checkpoint's"
          )
    ck.save_params(dst, params, cfg)
    n = sum(int(v.size) for v in ck.flatten_params(params).values())
    tqdm.write(f"{name}: {n:,} parameters from {folder} -> {dst}")
    for a in adapted:
      tqdm.write(f"  adapted {a}")
    if config is not None and name == "unet" and not adapted:
      tqdm.write("  adapted: none (the checkpoint fits config.unet exactly)")
    report[name] = {
      "from": os.path.abspath(folder),
      "to": os.path.abspath(dst),
      "parameters": n,
      "adapted": [str(a) for a in adapted],
    }
  with open(os.path.join(args.out, "convert_report.json"), "w") as fh:
    json.dump(report, fh, indent=2)
  return 0
