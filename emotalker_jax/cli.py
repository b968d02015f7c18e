"""``emotalker <command>``: one console script, one module per subcommand.

Each subcommand lives in ``emotalker_jax/commands/<module>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``; the module is imported when the parser
is built.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under emotalker_jax.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
  "synth": ("synth", "render the procedural talking-face benchmark (TFDS synthetic_talk)"),
  "prepare": ("prepare", "build the TFDS dataset mead or crema_d from a manual download"),
  "pipeline-bench": (
    "pipeline_bench",
    "examples/s of the grain training pipeline per worker count",
  ),
  "fed": ("fed", "write the FED emotion-description corpus"),
  "eib-train": ("eib_train", "train the Emotion Intensity Block on FED"),
  "emotion": ("emotion", "print per-emotion intensities of prompts as JSON"),
  "eib-eval": (
    "eib_eval",
    "score an EIB or the keyword baseline on the hand-written human prompt set",
  ),
  "train": ("train", "train EmoTalker (sharded, checkpointed, resumable)"),
  "generate": ("generate", "portrait + audio + emotion prompt -> talking-face mp4"),
  "generate-dataset": ("generate_dataset", "batch generation from a manifest, resumable"),
  "calibrate": ("calibrate", "measure the sampler's intensity calibration on training identities"),
  "judge": (
    "judge",
    "train the judge network on rendered frames, or measure one on held-out identities",
  ),
  "eval": ("evaluate", "evaluate a checkpoint (emotion, identity, lip sync, PSNR/SSIM)"),
  "face-metrics": (
    "face_metrics",
    "identity, emotion and mouth opening of a video's faces against a portrait, as JSON",
  ),
  "bench": ("bench", "benchmarks: JAX vs PyTorch, FLOPs, compile time, memory"),
  "convert": ("convert", "import a diffusers UNet/VAE folder into our params"),
  "aot-compile": (
    "aot_compile",
    "compile the train step for a TPU topology / N devices, report per-device memory",
  ),
  "demo": ("demo", "end-to-end demo on the synthetic benchmark (make demo)"),
  "report": (
    "report",
    "write docs/RESULTS.md and the README's results table from a demo run's JSON",
  ),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="emotalker", description="EmoTalker in JAX/Flax: emotion-editable talking faces."
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module, help_text) in COMMANDS.items():
    mod = importlib.import_module(f"emotalker_jax.commands.{module}")
    p = sub.add_parser(name, help=help_text, description=help_text)
    mod.add_arguments(p)
    p.set_defaults(_module=mod, _name=name)
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
