"""Config loading with overrides, and the CLI registry."""

import subprocess
import sys

import pytest

from emotalker_jax import cli, config_base
from emotalker_jax.config_utils import (
  checkpoint_overrides,
  config_from_args,
  load_config,
  merge_onto_base,
  split_config_args,
)


def test_overrides_apply_and_references_follow(repo_root):
  c = load_config(
    str(repo_root / "configs/tiny.py"), ["--config.context_dim=32", "--config.unet.dropout=0.25"]
  )
  assert c.context_dim == 32
  # unet.cross_attention_dim is a reference to context_dim: one knob, both places.
  assert c.unet.cross_attention_dim == 32
  assert c.unet.dropout == 0.25


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


def test_every_config_loads(repo_root):
  base = set(_flat(config_base.get_config().to_dict()))
  for name, arg in [
    ("tiny", ""),
    ("base256", ""),
    ("sd15_init", ""),
    ("demo", ":quick"),
    ("demo", ":full"),
  ]:
    c = load_config(str(repo_root / f"configs/{name}.py") + arg)
    assert c.name == name + arg.replace(":", "_")
    assert c.unet.in_channels == 3 * c.autoencoder.latent_channels
    assert len(c.unet.down_block_types) == len(c.unet.block_out_channels)
    # every config changes only values of the base (the demo adds its own section)
    assert set(k for k in _flat(c.to_dict()) if not k.startswith("demo.")) == base


def test_demo_modes_are_tiny_and_the_demo_model_with_their_step_counts(repo_root):
  tiny = _flat(load_config(str(repo_root / "configs/tiny.py")).to_dict())
  quick = _flat(load_config(str(repo_root / "configs/demo.py:quick")).to_dict())
  full = _flat(load_config(str(repo_root / "configs/demo.py:full")).to_dict())
  assert _flat(load_config(str(repo_root / "configs/demo.py")).to_dict()) == full
  steps = {"eib.steps", "eib.fed_size", "eib.finetune_layers"} | {
    "autoencoder_train.steps",
    "train.steps",
    # where the frozen networks' outputs are computed, not what is trained
    "train.prompt_pool_size",
    "train.cache_reference_latents",
    "name",
  }
  assert {k for k in tiny if tiny[k] != quick[k]} <= steps  # quick's eib.steps may be tiny's
  assert (
    quick["eib.steps"],
    quick["eib.fed_size"],
    quick["autoencoder_train.steps"],
    quick["train.steps"],
    quick["sampler.steps"],
  ) == (600, 8000, 300, 400, 10)
  assert {k for k in tiny if tiny[k] != full[k]} == steps | {
    "data.synthetic_size",
    "autoencoder.block_out_channels",
    "train.mouth_loss_weight",
    "unet.attention_head_dim",
    "text.max_length",
  }
  assert (
    full["eib.steps"],
    full["eib.fed_size"],
    full["autoencoder_train.steps"],
    full["train.steps"],
    full["sampler.steps"],
  ) == (1500, 24000, 900, 5500, 10)
  assert full["autoencoder.block_out_channels"] == (32, 64)  # f=2
  assert (quick["demo.eval_frames"], full["demo.eval_frames"]) == (2, 4)
  assert full["demo.eval_sweep_frames"] == 1
  assert quick["train.prompt_pool_size"] == full["train.prompt_pool_size"] == 64
  assert quick["train.cache_reference_latents"] and full["train.cache_reference_latents"]
  with pytest.raises(ValueError, match="nope"):
    load_config(str(repo_root / "configs/demo.py:nope"))


def test_saved_config_merges_onto_the_base():
  base = config_base.get_config()
  saved = base.to_dict()
  del saved["data"]["synthetic_seed"], saved["sampler"]["intensity_gamma"]  # older config
  saved["unet"]["block_out_channels"] = [16, 32]  # JSON list
  saved["sampler"]["steps"] = 7
  saved["extra"] = {"kept": 1}
  c = merge_onto_base(saved)
  assert c.data.synthetic_seed == base.data.synthetic_seed
  assert c.sampler.intensity_gamma == base.sampler.intensity_gamma
  assert c.sampler.steps == 7 and c.unet.block_out_channels == (16, 32)
  assert c.extra.kept == 1


def test_bad_config_inputs_name_the_input(repo_root):
  with pytest.raises(FileNotFoundError, match="nope.py"):
    load_config("configs/nope.py")
  with pytest.raises(FileNotFoundError, match="'configs/nope.py'"):
    load_config("configs/nope.py:quick")
  with pytest.raises(ValueError, match="nope"):
    load_config(str(repo_root / "configs/tiny.py"), ["--config.unet.nope=1"])


def test_split_config_args():
  cfg, rest = split_config_args(
    ["train", "--config", "configs/tiny.py", "--config.train.lr=0.1", "--workdir", "w"]
  )
  assert cfg == ["--config=configs/tiny.py", "--config.train.lr=0.1"]
  assert rest == ["train", "--workdir", "w"]


def test_config_from_args(repo_root):
  tiny = str(repo_root / "configs/tiny.py")
  c, path, overrides = config_from_args([f"--config={tiny}", "--config.context_dim=32"])
  assert (path, overrides) == (tiny, ["--config.context_dim=32"])
  assert c.context_dim == 32 and c.unet.cross_attention_dim == 32
  # a default path, and the overrides applied to it
  c, path, _ = config_from_args(["--config.unet.dropout=0.25"], default=tiny)
  assert path == tiny and c.unet.dropout == 0.25
  assert c.to_dict() == load_config(tiny, ["--config.unet.dropout=0.25"]).to_dict()
  assert config_from_args([], required=False) == (None, None, [])
  with pytest.raises(ValueError, match="no config given"):
    config_from_args([])
  with pytest.raises(ValueError, match="need --config FILE"):
    config_from_args(["--config.unet.dropout=0.25"], required=False)
  with pytest.raises(ValueError, match="2 times"):
    config_from_args([f"--config={tiny}", f"--config={tiny}"])
  assert checkpoint_overrides(["--config.sampler.steps=4"]) == ["--config.sampler.steps=4"]
  with pytest.raises(ValueError, match="saved with the checkpoint"):
    checkpoint_overrides([f"--config={tiny}"])


def test_cli_lists_every_designed_command():
  names = set(cli.COMMANDS)
  assert {
    "synth",
    "fed",
    "eib-train",
    "emotion",
    "train",
    "generate",
    "generate-dataset",
    "eval",
    "bench",
    "convert",
    "judge",
    "prepare",
    "pipeline-bench",
  } <= names


def test_cli_help_runs_as_console_script():
  out = subprocess.run(
    [sys.executable, "-m", "emotalker_jax.cli", "--help"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  for name in cli.COMMANDS:
    assert name in out
