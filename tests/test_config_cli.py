"""Config loading with overrides, and the CLI registry."""
import subprocess
import sys

import pytest

from emotalker_jax import cli
from emotalker_jax.config_utils import (checkpoint_overrides, config_from_args, load_config,
                                        split_config_args)


def test_overrides_apply_and_references_follow(repo_root):
    c = load_config(str(repo_root / "configs/tiny.py"),
                    ["--config.context_dim=32", "--config.unet.dropout=0.25"])
    assert c.context_dim == 32
    # unet.cross_attention_dim is a reference to context_dim: one knob, both places.
    assert c.unet.cross_attention_dim == 32
    assert c.unet.dropout == 0.25


def test_every_config_loads(repo_root):
    for name in ["tiny", "base256", "sd15_init"]:
        c = load_config(str(repo_root / f"configs/{name}.py"))
        assert c.name == name
        assert c.unet.in_channels == 3 * c.autoencoder.latent_channels
        assert len(c.unet.down_block_types) == len(c.unet.block_out_channels)


def test_bad_config_inputs_name_the_input(repo_root):
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_config("configs/nope.py")
    with pytest.raises(ValueError, match="nope"):
        load_config(str(repo_root / "configs/tiny.py"), ["--config.unet.nope=1"])


def test_split_config_args():
    cfg, rest = split_config_args(
        ["train", "--config", "configs/tiny.py", "--config.train.lr=0.1", "--workdir", "w"])
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
    assert {"synth", "fed", "eib-train", "emotion", "train", "generate", "generate-dataset",
            "eval", "bench", "convert", "judge", "prepare", "pipeline-bench"} <= names


def test_cli_help_runs_as_console_script():
    out = subprocess.run([sys.executable, "-m", "emotalker_jax.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert name in out
