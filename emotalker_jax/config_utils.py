"""Loading ml_collections configs by path with ``--config.a.b=value`` overrides.

The CLI uses argparse for subcommands; the config flags are parsed by
``ml_collections.config_flags`` on a private absl FlagValues, exactly as big_vision's
``--config path.py[:arg] --config.x=y`` works (``configs/demo.py:quick`` calls
``get_config("quick")``). Every config file starts from ``config_base.get_config()``; a
config saved with a checkpoint is read back with ``merge_onto_base``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import importlib.util
import os
import types
from typing import Any

from absl import flags
from ml_collections import ConfigDict, config_flags

from emotalker_jax import config_base


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits argv into (config flag args, the rest). ``--config X`` and ``--config.k=v``."""
  config_args, rest = [], []
  i = 0
  argv = list(argv)
  while i < len(argv):
    a = argv[i]
    if a == "--config" and i + 1 < len(argv):
      config_args.append(f"--config={argv[i + 1]}")
      i += 2
      continue
    if a.startswith("--config=") or a.startswith("--config."):
      if a.startswith("--config.") and "=" not in a and i + 1 < len(argv):
        config_args.append(f"{a}={argv[i + 1]}")
        i += 2
        continue
      config_args.append(a)
    else:
      rest.append(a)
    i += 1
  return config_args, rest


def load_config(path: str, overrides: Sequence[str] = ()) -> ConfigDict:
  """Loads ``get_config()`` from ``path`` (``get_config(arg)`` for ``path.py:arg``) and
  applies ``--config.a.b=value`` overrides.

  Raises FileNotFoundError / ValueError with a message naming the bad input.
  """
  file = path.split(":", 1)[0]
  if not os.path.isfile(file):
    raise FileNotFoundError(f"config file {file!r} not found; pass e.g. --config configs/tiny.py")
  args = ["emotalker", f"--config={path}"]
  for o in overrides:
    o = o if o.startswith("--") else f"--config.{o}"
    if not o.startswith("--config."):
      raise ValueError(f"override {o!r} must look like --config.a.b=value")
    args.append(o)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", default=path, flag_values=fv, lock_config=True, sys_argv=args
  )
  try:
    fv(args)
  except (flags.Error, AttributeError, KeyError) as e:
    raise ValueError(
      f"bad config override in {list(overrides)} for {path}: {e}; "
      "check the key exists in the config file"
    ) from None
  return fv.config


def config_from_args(
  config_args: Sequence[str], default: str | None = None, *, required: bool = True
) -> tuple[ConfigDict | None, str | None, list[str]]:
  """The config a command's config flags name: returns (config, path, overrides).

  config_args: what ``split_config_args`` split off, ``--config=FILE`` (at most one) and
  ``--config.a.b=value`` overrides in command-line order (``cli.main`` stores them as
  ``args.config_args``). Without ``--config FILE`` the ``default`` path is loaded; with
  no default, ``required=False`` and no overrides give (None, None, []); otherwise a
  ValueError says what to pass.
  """
  paths = [a.split("=", 1)[1] for a in config_args if a.startswith("--config=")]
  overrides = [a for a in config_args if not a.startswith("--config=")]
  if len(paths) > 1:
    raise ValueError(
      f"--config given {len(paths)} times ({', '.join(paths)}); pass one "
      "config file plus --config.a.b=value overrides"
    )
  path = paths[0] if paths else default
  if path is None:
    if overrides:
      raise ValueError(f"the overrides {overrides} need --config FILE")
    if required:
      raise ValueError("no config given: pass --config configs/tiny.py (or another config)")
    return None, None, []
  return load_config(path, overrides), path, overrides


def checkpoint_overrides(config_args: Sequence[str]) -> list[str]:
  """The ``--config.a.b=v`` flags of a command that reads a checkpoint's saved config; a
  ``--config FILE`` is refused (the checkpoint carries its config)."""
  for a in config_args:
    if a.startswith("--config="):
      raise ValueError(
        f"{a}: generation uses the config saved with the checkpoint; "
        "pass only --config.a.b=value overrides"
      )
  return list(config_args)


def load_config_module(path: str) -> types.ModuleType:
  """The config file at ``path`` as a module, for a config that derives from another
  (configs/sd15_init.py from configs/base256.py): config files are loaded by path, not
  imported as a package, so they find each other through their own ``__file__``."""
  name = "emotalker_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f"config file {path!r} not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _tuplify(x: Any) -> Any:
  if isinstance(x, list):
    return tuple(_tuplify(v) for v in x)
  if isinstance(x, dict):
    return {k: _tuplify(v) for k, v in x.items()}
  return x


def _merge(base: dict, saved: Mapping) -> dict:
  out = dict(base)
  for k, v in saved.items():
    out[k] = _merge(base[k], v) if isinstance(v, Mapping) and isinstance(base.get(k), dict) else v
  return out


def merge_onto_base(saved: Mapping) -> ConfigDict:
  """A config saved with a checkpoint (its JSON dict) merged onto ``config_base``: every
  saved value wins, and a key the checkpoint's config lacks (written before the key
  existed) gets the base's value. JSON lists become tuples again."""
  return ConfigDict(_tuplify(_merge(config_base.get_config().to_dict(), saved)))
