"""Checkpoint and artifact I/O: everything that reads or writes weights, training
checkpoints and their records.

* ``weights``: diffusers import (``load_diffusers_unet`` / ``convert_unet_into`` / ...) and
  our safetensors params (``save_params`` / ``load_params``).
* ``workdir``: a training workdir, local or gs:// (``as_path``: every path an
  ``etils.epath.Path``; orbax managers over ``ITEM_NAMES`` with per-process grain iterator
  states, the saved config, calibration.json, the frozen autoencoder).
* ``eib``: a trained EIB folder (``save_eib`` / ``read_eib`` / ``restore_eib_params``).
* ``atomic``: atomic file writes (``atomic_output``) and a killed run's leftovers.
"""

from emotalker_jax.checkpoints.atomic import TMP_PREFIX, atomic_output, remove_temp_files
from emotalker_jax.checkpoints.eib import EIB_FILES, read_eib, restore_eib_params, save_eib
from emotalker_jax.checkpoints.weights import (
  CONFIG_NAME,
  PARAMS_NAME,
  SEP,
  WEIGHTS_INDEX_NAME,
  WEIGHTS_NAME,
  Adapted,
  check_params_match,
  check_unet_layout,
  check_vae_matches,
  convert_state_dict,
  convert_unet_into,
  flatten_params,
  fresh_init,
  load_diffusers_unet,
  load_diffusers_vae,
  load_params,
  read_json,
  read_safetensors,
  save_params,
  torch_key_to_path,
  unet_config_from_diffusers,
  unflatten_params,
  vae_config_from_diffusers,
)
from emotalker_jax.checkpoints.workdir import (
  CALIBRATION_FILE,
  ITEM_NAMES,
  as_path,
  calibration_mismatches,
  calibration_path,
  checkpoint_manager,
  config_from_json,
  copy_folder,
  find_checkpoint_dir,
  is_remote,
  iterator_state_file,
  load_checkpoint_config,
  load_frozen_autoencoder,
  open_checkpoints,
  read_calibration,
  restore_checkpoint,
  restore_params,
  save_checkpoint,
  write_calibration,
)

__all__ = [
  # atomic
  "TMP_PREFIX",
  "atomic_output",
  "remove_temp_files",
  # eib
  "EIB_FILES",
  "read_eib",
  "restore_eib_params",
  "save_eib",
  # weights
  "CONFIG_NAME",
  "PARAMS_NAME",
  "SEP",
  "WEIGHTS_INDEX_NAME",
  "WEIGHTS_NAME",
  "Adapted",
  "check_params_match",
  "check_unet_layout",
  "check_vae_matches",
  "convert_state_dict",
  "convert_unet_into",
  "flatten_params",
  "fresh_init",
  "load_diffusers_unet",
  "load_diffusers_vae",
  "load_params",
  "read_json",
  "read_safetensors",
  "save_params",
  "torch_key_to_path",
  "unet_config_from_diffusers",
  "unflatten_params",
  "vae_config_from_diffusers",
  # workdir
  "CALIBRATION_FILE",
  "ITEM_NAMES",
  "as_path",
  "calibration_mismatches",
  "calibration_path",
  "checkpoint_manager",
  "config_from_json",
  "copy_folder",
  "find_checkpoint_dir",
  "is_remote",
  "iterator_state_file",
  "load_checkpoint_config",
  "load_frozen_autoencoder",
  "open_checkpoints",
  "read_calibration",
  "restore_checkpoint",
  "restore_params",
  "save_checkpoint",
  "write_calibration",
]
