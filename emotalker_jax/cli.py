"""``emotalker <command>``: one console script, one module per subcommand.

Each subcommand lives in ``emotalker_jax/commands/<module>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``. Commands whose module does not exist
yet exit with a clear message naming the issue that builds them.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under emotalker_jax.commands, one-line help, issue that builds it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("synth", "render the procedural talking-face benchmark (TFDS synthetic_talk)", "#5"),
    "fed": ("fed", "write the FED emotion-description corpus", "#4"),
    "eib-train": ("eib_train", "train the Emotion Intensity Block on FED", "#4"),
    "emotion": ("emotion", "print per-emotion intensities of prompts as JSON", "#4"),
    "train": ("train", "train EmoTalker (sharded, checkpointed, resumable)", "#7"),
    "generate": ("generate", "portrait + audio + emotion prompt -> talking-face mp4", "#6"),
    "generate-dataset": ("generate_dataset", "batch generation from a manifest, resumable", "#6"),
    "calibrate": ("calibrate", "measure the sampler's intensity calibration on training "
                  "identities", "#8"),
    "eval": ("evaluate", "evaluate a checkpoint (emotion, identity, lip sync, PSNR/SSIM)", "#8"),
    "bench": ("bench", "benchmarks: JAX vs PyTorch, FLOPs, compile time, memory", "#9"),
    "convert": ("convert", "import a diffusers UNet/VAE folder into our params", "#3"),
    "aot-compile": ("aot_compile", "compile the train step for a TPU topology / N devices, "
                    "report per-device memory", "#7"),
    "demo": ("demo", "end-to-end demo on the synthetic benchmark (make demo)", "#8"),
    "report": ("report", "write docs/RESULTS.md and the README's results table from a demo "
               "run's JSON", "#18"),
}


def _load(module: str):
    try:
        return importlib.import_module(f"emotalker_jax.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"emotalker_jax.commands.{module}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotalker", description="EmoTalker in JAX/Flax: emotion-editable talking faces.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text, issue) in COMMANDS.items():
        mod = _load(module)
        p = sub.add_parser(name, help=help_text if mod else f"{help_text} [not available yet: {issue}]",
                           description=help_text)
        if mod is not None:
            mod.add_arguments(p)
        p.set_defaults(_module=mod, _issue=issue, _name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from emotalker_jax.config_utils import split_config_args
    config_args, rest = split_config_args(argv)
    parser = build_parser()
    args = parser.parse_args(rest)
    if args.command is None:
        parser.print_help()
        return 2
    if args._module is None:
        print(f"emotalker {args._name}: not available yet: see issue {args._issue}", file=sys.stderr)
        return 2
    args.config_args = config_args
    try:
        return int(args._module.run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Errors a user can cause: one clear line, no traceback.
        print(f"emotalker {args._name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emotalker {args._name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
