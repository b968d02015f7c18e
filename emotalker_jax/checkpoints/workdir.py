"""A training workdir on disk: the orbax checkpoints, the saved config, calibration.json,
and the frozen autoencoder a run loads.

Layout (``emotalker train --workdir DIR``)::

  DIR/checkpoints/<step>/{state, data, config}   orbax CheckpointManager, ITEM_NAMES
  DIR/calibration.json                            `emotalker calibrate` (intensity_gamma)

* ``checkpoint_manager(workdir, config)`` / ``save_checkpoint`` / ``restore_checkpoint``:
  the training side (train state + grain iterator state + config JSON).
* ``find_checkpoint_dir`` / ``load_checkpoint_config`` / ``restore_params``: the inference
  side (a read-only manager over the same items; only the params a generator needs).
* ``read_calibration`` / ``write_calibration`` / ``calibration_mismatches``: the workdir's
  calibration record and when it applies.
* ``load_frozen_autoencoder`` (``config.train.autoencoder_checkpoint``); a pre-trained
  EIB folder is ``checkpoints.eib``.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import logging
import os
from typing import Any
import warnings

from absl import flags
from flax import linen as nn
import jax
from ml_collections import config_flags
import numpy as np
import orbax.checkpoint as ocp

from emotalker_jax import parallel
from emotalker_jax.checkpoints.atomic import atomic_output
from emotalker_jax.checkpoints.weights import load_params
from emotalker_jax.config_utils import merge_onto_base
from emotalker_jax.models.autoencoder import init_autoencoder

log = logging.getLogger(__name__)

# The items of every training checkpoint step: the train state (PyTree), the data
# iterator's state and the run's config (JSON).
ITEM_NAMES = ("state", "data", "config")
CHECKPOINTS_SUBDIR = "checkpoints"
CALIBRATION_FILE = "calibration.json"  # beside checkpoints/ in the workdir


# ---------------------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------------------
def checkpoint_manager(workdir: str, config):
  """The CheckpointManager of WORKDIR/checkpoints for training (created when missing;
  ``config.train.keep_checkpoints`` kept, async saves unless train.async_checkpointing)."""
  opts = ocp.CheckpointManagerOptions(
    max_to_keep=int(config.train.keep_checkpoints),
    create=True,
    enable_async_checkpointing=bool(config.train.async_checkpointing),
  )
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, CHECKPOINTS_SUBDIR)), options=opts, item_names=ITEM_NAMES
  )


def open_checkpoints(folder: str):
  """A read-only CheckpointManager over an existing checkpoints folder (the same items)."""
  return ocp.CheckpointManager(
    folder,
    item_handlers={
      "state": ocp.PyTreeCheckpointHandler(),
      "data": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
    },
    options=ocp.CheckpointManagerOptions(create=False),
  )


def save_checkpoint(mngr, trainer, iterator, force: bool = False) -> int:
  """Saves ``trainer.state`` (any object with .state and .config), the iterator's state and
  the config at the state's step; returns the step. ``force``: an end-of-run / signal save
  (a step the schedule already saved is not written twice)."""
  step = int(jax.device_get(trainer.state.step))
  if force:  # an end-of-run / signal save may land on a step the schedule just saved
    mngr.wait_until_finished()
    if step in mngr.all_steps():
      return step
  data = {"iterator": _iterator_state(iterator)}
  mngr.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(trainer.state),
      data=ocp.args.JsonSave(data),
      config=ocp.args.JsonSave(json.loads(trainer.config.to_json())),
    ),
    force=force,
  )
  return step


def restore_checkpoint(mngr, trainer, iterator, step: int | None = None) -> int:
  """Restores ``trainer.state`` (laid out by ``trainer.state_shardings``) and the iterator's
  state from ``step`` (None: the latest); returns the step."""
  step = mngr.latest_step() if step is None else step
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    trainer.state,
    trainer.state_shardings,
  )
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()),
  )
  trainer.state = restored["state"]
  if iterator is not None and restored["data"].get("iterator") is not None:
    _set_iterator_state(iterator, restored["data"]["iterator"])
  return step


def _iterator_state(iterator) -> str | None:
  if iterator is None or not hasattr(iterator, "get_state"):
    return None
  s = iterator.get_state()
  return s.decode() if isinstance(s, bytes) else json.dumps(s)


def _set_iterator_state(iterator, s: str) -> None:
  try:
    iterator.set_state(s.encode())
  except (TypeError, AttributeError):
    iterator.set_state(json.loads(s))


# ---------------------------------------------------------------------------------------
# The saved config and the params, for inference
# ---------------------------------------------------------------------------------------
def config_from_json(saved: dict, overrides: Sequence[str] = ()):
  """The config saved with a checkpoint (JSON dict) merged onto the base config
  (``config_utils.merge_onto_base``: a key the saved config predates gets the base's
  value), with ``--config.a.b=value`` overrides applied by ``ml_collections.config_flags``
  (the same parser as ``config_utils.load_config``). JSON lists become tuples again.

  Raises ValueError naming the override when a key does not exist or a value does not parse.
  """
  config = merge_onto_base(saved)
  args = ["emotalker"]
  for o in overrides:
    o = o if o.startswith("--") else f"--config.{o}"
    if not o.startswith("--config."):
      raise ValueError(
        f"override {o!r}: generation reads the config saved with the "
        "checkpoint; pass only --config.a.b=value overrides"
      )
    args.append(o)
  if len(args) == 1:
    return config
  fv = flags.FlagValues()
  try:  # the overrides are applied while the flag is defined (sys_argv) and parsed
    config_flags.DEFINE_config_dict(
      "config", config, flag_values=fv, lock_config=True, sys_argv=args
    )
    fv(args)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(
      f"bad config override in {list(overrides)}: {e}; check the key exists "
      "in the checkpoint's config (e.g. --config.sampler.constraint.strength=0.8)"
    ) from None
  return fv.config


def find_checkpoint_dir(path: str | os.PathLike) -> str:
  """WORKDIR or WORKDIR/checkpoints -> the orbax CheckpointManager folder (absolute).

  Raises FileNotFoundError naming the folder and how to make one when there is none.
  """
  path = os.path.abspath(os.fspath(path))
  how = (
    "train one with `emotalker train --config configs/tiny.py --workdir DIR` and pass "
    "--checkpoint DIR"
  )
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path} not found; {how}")
  sub = os.path.join(path, CHECKPOINTS_SUBDIR)
  folder = sub if os.path.isdir(sub) else path
  steps = [
    d for d in os.listdir(folder) if d.isdigit() and os.path.isdir(os.path.join(folder, d, "state"))
  ]
  if not steps:
    raise FileNotFoundError(
      f"no checkpoint in {path} (no step folders with a saved state in {folder}); {how}"
    )
  return folder


def load_checkpoint_config(
  checkpoint_dir: str | os.PathLike,
  config_overrides: Sequence[str] = (),
  step: int | None = None,
  *,
  use_ema: bool = True,
  judge: str | None = None,
):
  """(config with overrides, CheckpointManager folder, step) of a training workdir, reading
  only the small 'config' item (cheap: lets a command check its inputs before loading).

  The workdir's calibration.json sets ``sampler.intensity_gamma`` only when it was measured
  on this step with the same params kind (``use_ema``), DDIM steps and guidance (those of
  the config with its overrides) and, when ``judge`` is given, the same judge folder;
  otherwise a warning and the configured gamma (1). A ``--config.sampler.intensity_gamma``
  override always wins.

  Raises FileNotFoundError (no checkpoint) / ValueError (no saved config, bad override).
  """
  folder = find_checkpoint_dir(checkpoint_dir)
  mngr = open_checkpoints(folder)
  try:
    step = mngr.latest_step() if step is None else int(step)
    if step is None or step not in mngr.all_steps():
      raise FileNotFoundError(
        f"no checkpoint step {step} in {folder}; steps there: {list(mngr.all_steps())}"
      )
    saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  finally:
    mngr.close()
  if not saved:
    raise ValueError(
      f"checkpoint {folder}/{step} has no saved config; it was not written by `emotalker train`"
    )
  config = config_from_json(saved, config_overrides)
  if any("sampler.intensity_gamma" in o for o in config_overrides):
    return config, folder, int(step)
  calibration = read_calibration(
    folder,
    int(step),
    params="ema" if use_ema else "raw",
    steps=int(config.sampler.steps),
    guidance=float(config.sampler.guidance),
    judge=judge,
  )
  if calibration is not None:
    sampler = dict(saved.get("sampler", {}), intensity_gamma=float(calibration["intensity_gamma"]))
    config = config_from_json(dict(saved, sampler=sampler), config_overrides)
  return config, folder, int(step)


def restore_params(
  folder: str, step: int, abstract, mesh, *, use_ema: bool = True, source: str = ""
):
  """(params, step) of checkpoint ``step`` in ``folder``: only ``ema_params`` (or ``params``
  with use_ema=False) and ``step`` are read (a partial restore), laid out as ``abstract``
  (a tree of ShapeDtypeStruct with shardings); the step scalar is replicated on ``mesh``.

  Raises ValueError when the saved tree does not fit ``abstract`` (``source`` names the
  overrides that built it).
  """
  key = "ema_params" if use_ema else "params"
  item = {
    key: abstract,
    "step": jax.ShapeDtypeStruct((), np.int32, sharding=parallel.replicated(mesh)),
  }
  mngr = open_checkpoints(folder)
  try:
    restored = mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
          item=item,
          restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True,
        )
      ),
    )["state"]
  except (ValueError, KeyError) as e:
    raise ValueError(
      f"checkpoint {folder}/{step} does not match its saved config "
      f"{source}: {str(e)[:400]}; override only sampler / mesh keys"
    ) from None
  finally:
    mngr.close()
  return restored[key], int(jax.device_get(restored["step"]))


# ---------------------------------------------------------------------------------------
# calibration.json
# ---------------------------------------------------------------------------------------
def calibration_path(checkpoint_dir: str | os.PathLike) -> str:
  """WORKDIR/calibration.json for a workdir or its checkpoints/ folder."""
  folder = find_checkpoint_dir(checkpoint_dir)
  workdir = os.path.dirname(folder) if os.path.basename(folder) == CHECKPOINTS_SUBDIR else folder
  return os.path.join(workdir, CALIBRATION_FILE)


def calibration_mismatches(
  record: dict,
  *,
  step: int | None = None,
  params: str | None = None,
  steps: int | None = None,
  guidance: float | None = None,
  judge: str | None = None,
) -> list[str]:
  """What differs between a calibration record and the settings it would be applied to:
  'steps 10 (measured with 20)' strings, one per given setting that does not match (a
  setting the record lacks does not match)."""

  def same_judge(a, b):
    return a is not None and os.path.realpath(str(a)) == os.path.realpath(str(b))

  checks = (
    ("checkpoint step", "checkpoint_step", step, lambda a, b: a is not None and int(a) == int(b)),
    ("params", "params", params, lambda a, b: a == b),
    ("DDIM steps", "steps", steps, lambda a, b: a is not None and int(a) == int(b)),
    (
      "guidance",
      "guidance",
      guidance,
      lambda a, b: a is not None and abs(float(a) - float(b)) < 1e-9,
    ),
    ("judge", "judge", judge, same_judge),
  )
  return [
    f"{name} {want} (measured with {record.get(key)})"
    for name, key, want, ok in checks
    if want is not None and not ok(record.get(key), want)
  ]


def read_calibration(
  checkpoint_dir: str | os.PathLike,
  step: int,
  *,
  params: str | None = None,
  steps: int | None = None,
  guidance: float | None = None,
  judge: str | None = None,
) -> dict | None:
  """The workdir's calibration.json (written by `emotalker calibrate`) when it was measured
  on checkpoint ``step`` and with the given params kind ('ema' | 'raw'), DDIM steps,
  guidance and judge folder (each checked when given); None when there is none. A
  calibration measured under other settings is not applied: a warning names what differs
  and how to measure it again."""
  path = calibration_path(checkpoint_dir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    cal = json.load(f)
  diff = calibration_mismatches(
    cal, step=step, params=params, steps=steps, guidance=guidance, judge=judge
  )
  if diff:
    warnings.warn(
      f"{path} does not apply to these settings: {'; '.join(diff)}; "
      "intensity_gamma 1 is used (no calibration). Run `emotalker calibrate "
      f"--checkpoint {os.path.dirname(path)} ...` with these settings again, or "
      "pass --config.sampler.intensity_gamma=G",
      stacklevel=2,
    )
    return None
  return cal


def write_calibration(gen, result: dict, judge_dir: str) -> str:
  """WORKDIR/calibration.json for ``gen``'s checkpoint step (atomic). ``gen``: a loaded
  ``inference.Generator`` (its checkpoint_dir, step, use_ema and config.sampler are
  recorded). Returns the path."""
  path = calibration_path(gen.checkpoint_dir)
  sc = gen.config.sampler
  record = {
    "intensity_gamma": result["intensity_gamma"],
    "checkpoint_step": gen.step,
    "params": "ema" if gen.use_ema else "raw",
    "judge": os.path.abspath(judge_dir),
    "steps": int(result.get("steps") or sc.steps),
    "guidance": float(result.get("guidance", sc.guidance)),
    **{k: v for k, v in result.items() if k not in ("intensity_gamma", "steps", "guidance")},
  }
  with atomic_output(path) as tmp:
    with open(tmp, "w") as fh:
      json.dump(record, fh, indent=2)
  return path


# ---------------------------------------------------------------------------------------
# The frozen autoencoder
# ---------------------------------------------------------------------------------------
def load_frozen_autoencoder(config, vae, rng) -> Any:
  """Autoencoder params from ``config.train.autoencoder_checkpoint`` (a directory written by
  ``emotalker train --stage autoencoder`` or ``emotalker convert``); '' -> fresh random
  init (only sensible for tests and smoke runs: a warning says so)."""
  path = config.train.autoencoder_checkpoint
  if path:
    params, saved = load_params(path)
    for key in ("scaling_factor", "shift_factor"):
      if not saved or key not in saved:
        continue
      want = float(saved[key] or 0.0)
      have = float(config.autoencoder[key] or 0.0)
      if abs(want - have) > 1e-6 * max(1.0, abs(want)):
        log.warning(
          "autoencoder %s: %s was calibrated with %s=%.6g but the config "
          "has %.6g; pass --config.autoencoder.%s=%.6g so the latents "
          "have unit variance",
          path,
          key,
          key,
          want,
          have,
          key,
          want,
        )
    return params["vae"] if "vae" in params else params
  log.warning(
    "config.train.autoencoder_checkpoint is empty: using a randomly initialised "
    "(untrained) autoencoder"
  )
  return nn.meta.unbox(init_autoencoder(vae, rng, config.data.image_size)["params"])
