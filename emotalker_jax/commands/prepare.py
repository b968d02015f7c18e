"""``emotalker prepare mead|crema_d --manual_dir DIR [--data_dir data/tfds] ...``.

Builds the TFDS dataset ``mead`` or ``crema_d`` (``input_pipeline/mead.py``,
``input_pipeline/crema_d.py``) from the folders a user downloaded and extracted (neither
can be downloaded automatically). The manual dir's layout is checked before any decoding.
Records are frame-level (``input_pipeline/frame_records.py``); read them with
``input_pipeline.pipeline.make_loader("mead/<config>", ...)`` (training examples) or
``input_pipeline.frame_records.read_clips("mead/<config>", split)`` (whole clips). The
build logs an audio/video length report and writes it to the dataset's metadata.json.
"""

from __future__ import annotations

import argparse

DATASETS = ("mead", "crema_d")


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("dataset", choices=DATASETS, help="which dataset to build")
  p.add_argument(
    "--manual_dir", required=True, help="the extracted download, in the dataset's own layout"
  )
  p.add_argument("--data_dir", default="data/tfds")
  p.add_argument("--image_size", type=int, default=128)
  p.add_argument("--max_clips", type=int, default=None, help="per split")
  p.add_argument("--max_frames", type=int, default=None, help="per clip")
  p.add_argument("--actors", default=None, help="comma-separated subset of actors")
  p.add_argument("--num_workers", type=int, default=0)
  p.add_argument(
    "--strict", action="store_true", help="fail on a clip without a face or with mismatched audio"
  )
  p.add_argument(
    "--max_av_mismatch_frames",
    type=float,
    default=None,
    help="skip clips whose audio and video lengths differ by more frames (default 5)",
  )
  p.add_argument(
    "--audio_window_s",
    type=float,
    default=None,
    help="store the audio of log-mel windows up to this long (s, default 0.2)",
  )
  p.add_argument("--jpeg_quality", type=int, default=None, help="stored frames (default 95)")


def run(args) -> int:
  actors = args.actors.split(",") if args.actors else None
  options = {
    k: getattr(args, k)
    for k in ("max_av_mismatch_frames", "audio_window_s", "jpeg_quality")
    if getattr(args, k) is not None
  }
  if args.dataset == "crema_d":
    from input_pipeline import crema_d

    if actors:
      try:
        actors = [int(x) for x in actors]
      except ValueError:
        raise ValueError(
          f"--actors {args.actors!r}: CREMA-D actors are numbers, e.g. 1001,1002"
        ) from None
    b = crema_d.build(
      args.manual_dir,
      args.data_dir,
      args.image_size,
      args.max_clips,
      args.max_frames,
      actors,
      args.num_workers,
      options,
      strict=args.strict,
    )
  else:
    from input_pipeline import mead

    b = mead.build(
      args.manual_dir,
      args.data_dir,
      image_size=args.image_size,
      max_clips=args.max_clips,
      max_frames=args.max_frames,
      actors=actors,
      num_workers=args.num_workers,
      options=options,
      strict=args.strict,
    )
  print(
    f"built {b.name}/{b.builder_config.name} in {b.data_dir}: "
    + ", ".join(f"{k}={v.num_examples}" for k, v in b.info.splits.items())
  )
  return 0
