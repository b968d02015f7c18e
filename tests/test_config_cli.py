"""Config loading with overrides, and the CLI registry."""
import subprocess
import sys

import pytest

from emotalker_jax import cli
from emotalker_jax.config_utils import load_config, split_config_args


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


def test_cli_lists_every_designed_command():
    names = set(cli.COMMANDS)
    assert {"synth", "fed", "eib-train", "emotion", "train", "generate", "generate-dataset",
            "eval", "bench", "convert"} <= names


def test_cli_help_runs_as_console_script():
    out = subprocess.run([sys.executable, "-m", "emotalker_jax.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert name in out
