"""A training workdir: the orbax checkpoints, the saved config, calibration.json,
and the frozen autoencoder a run loads.

Layout (``emotalker train --workdir DIR``; DIR a local folder or ``gs://bucket/dir``)::

  DIR/checkpoints/<step>/state                    the train state (orbax, every process)
  DIR/checkpoints/<step>/data/process_<i>-of-<n>.json   process i's grain iterator state
  DIR/checkpoints/<step>/config                   the run's config (JSON)
  DIR/calibration.json                            `emotalker calibrate` (intensity_gamma)

* ``as_path`` / ``is_remote`` / ``copy_folder``: every training path is an
  ``etils.epath.Path``; a URL is never turned into a local path.
* ``checkpoint_manager(workdir, config)`` / ``save_checkpoint`` / ``restore_checkpoint``:
  the training side (train state + per-process grain iterator states + config JSON).
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
import tempfile
from typing import Any
import warnings

from absl import flags
from etils import epath
from flax import linen as nn
from grain import checkpoint as grain_checkpoint
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
# iterators' states (one file per process, grain's handler) and the run's config (JSON).
ITEM_NAMES = ("state", "data", "config")
CHECKPOINTS_SUBDIR = "checkpoints"
CALIBRATION_FILE = "calibration.json"  # beside checkpoints/ in the workdir


# ---------------------------------------------------------------------------------------
# Paths: local folders and gs:// (or any etils.epath URL), never mixed up
# ---------------------------------------------------------------------------------------
def is_remote(path: str | os.PathLike) -> bool:
  """True for a URL (``gs://bucket/dir``, ``s3://...``): a path no os.path call may touch."""
  return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """``epath.Path`` of a workdir, checkpoint or log folder: a URL stays a URL (its
  file system is etils.epath's: fsspec/gcsfs or tf.io.gfile for gs://), a local path is
  made absolute (orbax needs absolute local paths)."""
  if isinstance(path, epath.Path) and (is_remote(path) or path.is_absolute()):
    return path
  text = os.fspath(path)
  return epath.Path(text if is_remote(text) else os.path.abspath(text))


def copy_folder(src: str | os.PathLike, dst: str | os.PathLike) -> epath.Path:
  """Copies the files of folder ``src`` into ``dst`` (created), either side local or a
  URL (one level: the weight folders this project writes have no subfolders)."""
  src, dst = as_path(src), as_path(dst)
  if not src.is_dir():
    raise FileNotFoundError(f"folder {src} not found")
  dst.mkdir(parents=True, exist_ok=True)
  for f in src.iterdir():
    if not f.is_dir():
      (dst / f.name).write_bytes(f.read_bytes())
  return dst


# ---------------------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------------------
def checkpoint_manager(workdir: str | os.PathLike, config):
  """The CheckpointManager of WORKDIR/checkpoints for training (created when missing;
  ``config.train.keep_checkpoints`` kept, async saves unless train.async_checkpointing).

  WORKDIR may be ``gs://...``: orbax gets it as an ``epath.Path`` URL. The items: 'state'
  (the train state, every process writes its shards), 'data' (grain's handler: each
  process writes its own iterator state, ``process_<i>-of-<n>.json``) and 'config' (JSON,
  the primary process)."""
  opts = ocp.CheckpointManagerOptions(
    max_to_keep=int(config.train.keep_checkpoints),
    create=True,
    enable_async_checkpointing=bool(config.train.async_checkpointing),
  )
  return ocp.CheckpointManager(
    as_path(workdir) / CHECKPOINTS_SUBDIR,
    options=opts,
    item_handlers={
      "state": ocp.StandardCheckpointHandler(),
      "data": grain_checkpoint.CheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
    },
  )


def open_checkpoints(folder: str | os.PathLike):
  """A read-only CheckpointManager over an existing checkpoints folder (the same items;
  the data iterator is not read here)."""
  return ocp.CheckpointManager(
    as_path(folder),
    item_handlers={
      "state": ocp.PyTreeCheckpointHandler(),
      "data": grain_checkpoint.CheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
    },
    options=ocp.CheckpointManagerOptions(create=False),
  )


def _has_state(iterator) -> bool:
  return iterator is not None and hasattr(iterator, "get_state")


def save_checkpoint(mngr, trainer, iterator, force: bool = False) -> int:
  """Saves ``trainer.state`` (any object with .state and .config), the iterator's state
  (this process's, through grain's orbax handler; skipped for an iterator without
  get_state) and the config at the state's step; returns the step. Every process calls
  it at the same step. ``force``: an end-of-run / signal save (a step the schedule
  already saved is not written twice)."""
  step = int(jax.device_get(trainer.state.step))
  if force:  # an end-of-run / signal save may land on a step the schedule just saved
    mngr.wait_until_finished()
    if step in mngr.all_steps():
      return step
  items = {
    "state": ocp.args.StandardSave(trainer.state),
    "config": ocp.args.JsonSave(json.loads(trainer.config.to_json())),
  }
  if _has_state(iterator):
    items["data"] = grain_checkpoint.CheckpointSave(iterator)
  mngr.save(step, args=ocp.args.Composite(**items), force=force)
  return step


def iterator_state_file(step_dir: epath.Path, index: int | None = None, count: int | None = None):
  """STEP/data/process_<index>-of-<count>.json: grain's per-process iterator state file
  (this process's when index/count are None)."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  return step_dir / "data" / f"process_{index}-of-{count}.json"


def _data_item_kind(step_dir: epath.Path) -> str:
  """'grain' (per-process files), 'legacy' (one JSON of a single-process run written
  before the per-process files) or 'none'; raises ValueError when the files were
  written by another number of processes."""
  data = step_dir / "data"
  if iterator_state_file(step_dir).exists():
    return "grain"
  files = sorted(f.name for f in data.iterdir()) if data.is_dir() else []
  written = [f for f in files if f.startswith("process_") and f.endswith(".json")]
  if written:
    raise ValueError(
      f"checkpoint {step_dir} holds the data iterator states {written}, not one for "
      f"process {jax.process_index()} of {jax.process_count()}: grain's data order can "
      "only continue with the process count that wrote it; resume with that many "
      "processes (or train into a fresh --workdir)"
    )
  return "legacy" if (data / "metadata").exists() else "none"


def restore_checkpoint(mngr, trainer, iterator, step: int | None = None) -> int:
  """Restores ``trainer.state`` (laid out by ``trainer.state_shardings``) and this
  process's iterator state from ``step`` (None: the latest); returns the step.

  A checkpoint of a single-process run from before the per-process iterator files (its
  'data' item one JSON) still restores in a single process."""
  step = mngr.latest_step() if step is None else step
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    trainer.state,
    trainer.state_shardings,
  )
  step_dir = as_path(mngr.directory) / str(step)
  kind = _data_item_kind(step_dir) if _has_state(iterator) else "none"
  items = {"state": ocp.args.StandardRestore(abstract)}
  if kind == "grain":
    items["data"] = grain_checkpoint.CheckpointRestore(iterator)
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  trainer.state = restored["state"]
  if kind == "legacy":
    saved = json.loads((step_dir / "data" / "metadata").read_text()).get("iterator")
    if saved is not None:
      if jax.process_count() > 1:
        raise ValueError(
          f"checkpoint {step_dir} was written by a single-process run (one data iterator "
          "state); resume it with one process"
        )
      _set_iterator_state(iterator, saved)
  return step


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
  """WORKDIR or WORKDIR/checkpoints -> the orbax CheckpointManager folder (absolute; a
  ``gs://`` URL stays one).

  Raises FileNotFoundError naming the folder and how to make one when there is none.
  """
  path = as_path(path)
  how = (
    "train one with `emotalker train --config configs/tiny.py --workdir DIR` and pass "
    "--checkpoint DIR"
  )
  if not path.is_dir():
    raise FileNotFoundError(f"checkpoint directory {path} not found; {how}")
  sub = path / CHECKPOINTS_SUBDIR
  folder = sub if sub.is_dir() else path
  steps = [d for d in folder.iterdir() if d.name.isdigit() and (d / "state").is_dir()]
  if not steps:
    raise FileNotFoundError(
      f"no checkpoint in {path} (no step folders with a saved state in {folder}); {how}"
    )
  return os.fspath(folder)


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
  folder = as_path(find_checkpoint_dir(checkpoint_dir))
  workdir = folder.parent if folder.name == CHECKPOINTS_SUBDIR else folder
  return os.fspath(workdir / CALIBRATION_FILE)


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
  if not as_path(path).exists():
    return None
  cal = json.loads(as_path(path).read_text())
  diff = calibration_mismatches(
    cal, step=step, params=params, steps=steps, guidance=guidance, judge=judge
  )
  if diff:
    warnings.warn(
      f"{path} does not apply to these settings: {'; '.join(diff)}; "
      "intensity_gamma 1 is used (no calibration). Run `emotalker calibrate "
      f"--checkpoint {as_path(path).parent} ...` with these settings again, or "
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
  if is_remote(path):  # an object store's write is atomic already
    as_path(path).write_text(json.dumps(record, indent=2))
    return path
  with atomic_output(path) as tmp:
    with open(tmp, "w") as fh:
      json.dump(record, fh, indent=2)
  return path


# ---------------------------------------------------------------------------------------
# The frozen autoencoder
# ---------------------------------------------------------------------------------------
def load_frozen_autoencoder(config, vae, rng) -> Any:
  """Autoencoder params from ``config.train.autoencoder_checkpoint`` (a directory written by
  ``emotalker train --stage autoencoder`` or ``emotalker convert``, local or a gs:// URL
  read through etils.epath); '' -> fresh random init (only sensible for tests and smoke
  runs: a warning says so)."""
  path = config.train.autoencoder_checkpoint
  if path:
    if is_remote(path):  # safetensors reads local files: fetch the folder first
      with tempfile.TemporaryDirectory(prefix="emotalker-autoencoder-") as tmp:
        params, saved = load_params(os.fspath(copy_folder(path, tmp)))
    else:
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
