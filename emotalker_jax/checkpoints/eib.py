"""A trained EIB folder on disk (what `emotalker eib-train --out DIR` writes)::

  DIR/checkpoint   orbax StandardCheckpointer: the EIB params (numpy tree)
  DIR/config.json  the eib-train config
  DIR/eib.json     what the EIB was trained with (text encoder, pool, FED source, ...)
  DIR/text_encoder the fine-tuned text tower (config.eib.finetune_layers > 0 only), a
                   Hugging Face-style folder for ``load_text_encoder`` / config.text.path

``models.eib.load_eib`` builds the module and its text encoder from ``read_eib``;
``training.loop`` initialises a generator's EIB from ``restore_eib_params``.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from emotalker_jax.config_utils import merge_onto_base

EIB_FILES = ("config.json", "eib.json", "checkpoint")
TEXT_ENCODER_DIR = "text_encoder"


def tuned_text_path(path: str, info: dict) -> str | None:
  """The fine-tuned tower folder of the EIB folder ``path`` (eib.json ``info``), or None
  when its tower is the frozen one. FileNotFoundError when eib.json names a fine-tuned
  tower that is not there."""
  k = int(info.get("finetune_layers", 0))
  if k <= 0:
    return None
  tuned = os.path.join(path, TEXT_ENCODER_DIR)
  if not os.path.isfile(os.path.join(tuned, "model.safetensors")):
    raise FileNotFoundError(
      f"EIB folder {path!r} was trained with config.eib.finetune_layers={k} but has no "
      f"{TEXT_ENCODER_DIR}/model.safetensors; retrain it with `emotalker eib-train --out {path}`"
    )
  return tuned


def check_eib_text_encoder(path: str, text_path: str) -> None:
  """Refuses a generator whose text tower (``text_path``, the loaded encoder's folder) is
  not the one the EIB folder ``path`` was fine-tuned with: its head would read states it
  never saw. ValueError naming both folders and the fix; nothing for a frozen-tower EIB."""
  info_file = os.path.join(path, "eib.json")
  if not os.path.isfile(info_file):
    return  # restore_eib_params names the missing folder
  with open(info_file) as f:
    tuned = tuned_text_path(path, json.load(f))
  if tuned is not None and os.path.realpath(tuned) != os.path.realpath(text_path):
    raise ValueError(
      f"config.train.eib_checkpoint={path!r} holds an EIB fine-tuned with its own text tower "
      f"{tuned}, but this run's text encoder is {text_path}; pass "
      f"--config.text.path={tuned} so the EIB head reads the states it was trained on"
    )


def save_eib(out: str, params: dict, config, info: dict) -> None:
  """Writes out/checkpoint (orbax), out/config.json and out/eib.json."""
  ckpt = os.path.abspath(os.path.join(out, "checkpoint"))
  if os.path.exists(ckpt):
    shutil.rmtree(ckpt)
  with ocp.StandardCheckpointer() as c:
    c.save(ckpt, jax.tree.map(np.asarray, params))
  with open(os.path.join(out, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1))
  with open(os.path.join(out, "eib.json"), "w") as f:
    json.dump(info, f, indent=1)


def read_eib(path: str) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(config, info, params as numpy) of a folder written by ``save_eib``. Raises
  FileNotFoundError / ValueError naming the folder and the fix."""
  if not os.path.isdir(path):
    raise FileNotFoundError(
      f"EIB folder {path!r} not found; train one with `emotalker eib-train --out {path}`"
    )
  missing = [n for n in EIB_FILES if not os.path.exists(os.path.join(path, n))]
  if missing:
    raise FileNotFoundError(
      f"EIB folder {path!r} lacks {', '.join(missing)}; it is not (or "
      f"not completely) written by `emotalker eib-train --out {path}`"
    )
  try:
    with open(os.path.join(path, "config.json")) as f:
      config = merge_onto_base(json.load(f))  # keys the folder predates: the base's value
    with open(os.path.join(path, "eib.json")) as f:
      info = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(
      f"EIB folder {path!r}: unreadable config.json / eib.json ({e}); "
      "retrain with `emotalker eib-train`"
    ) from None
  ckpt = os.path.abspath(os.path.join(path, "checkpoint"))
  try:
    with ocp.StandardCheckpointer() as c:
      params = c.restore(ckpt)
  except Exception as e:  # orbax raises several types for damaged folders
    raise ValueError(
      f"EIB folder {path!r}: cannot restore the checkpoint ({type(e).__name__}: "
      f"{e}); retrain with `emotalker eib-train --out {path}`"
    ) from None
  return config, info, params


def restore_eib_params(path: str) -> dict:
  """The EIB params (numpy tree) of an `emotalker eib-train --out PATH` folder's
  checkpoint/ (``config.train.eib_checkpoint``). Raises FileNotFoundError naming the
  folder when it has none."""
  ckpt = os.path.abspath(os.path.join(path, "checkpoint"))
  if not os.path.isdir(ckpt):
    raise FileNotFoundError(
      f"config.train.eib_checkpoint={path!r} has no checkpoint/; "
      f"write one with `emotalker eib-train --out {path}`"
    )
  with ocp.StandardCheckpointer() as c:
    return c.restore(ckpt)
