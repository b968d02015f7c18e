"""``emotalker synth``: build the procedural talking-face benchmark (TFDS ``synthetic_talk``).

  emotalker synth --out data/tfds --size tiny [--seed 0] [--workers 2]

Writes ``<out>/synthetic_talk/<config>/<version>/`` (array_record, readable without TensorFlow
via ``tfds.data_source('synthetic_talk/<config>', data_dir=<out>)``), a PNG contact sheet of
a few test identities x 8 emotions (rows: intensity 1, then the same identities at 1/3), and
prints a summary.
"""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", required=True, help="TFDS data_dir to build into")
  from input_pipeline.synthetic.sizes import SIZES

  parser.add_argument(
    "--size", default="tiny", choices=tuple(SIZES), help="benchmark size (docs/SYNTHETIC.md)"
  )
  parser.add_argument(
    "--seed",
    type=int,
    default=0,
    help="generation seed; a non-zero seed builds config '<size>_seed<S>'",
  )
  parser.add_argument(
    "--workers",
    type=int,
    default=0,
    help="render clips in this many processes (0: in this process)",
  )
  parser.add_argument(
    "--sheet",
    default=None,
    help="contact sheet PNG path (default: <out>/synthetic_talk_<config>.png)",
  )
  parser.add_argument(
    "--sheet-identities", type=int, default=4, help="identities (rows) on the contact sheet"
  )
  parser.add_argument("--overwrite", action="store_true", help="rebuild if it already exists")
  g = parser.add_argument_group("custom sizes (the config is then named '<size>_seed<S>_...')")
  for flag in (
    "image-size",
    "num-identities",
    "num-train-identities",
    "frames-per-clip",
    "num-neutral",
    "num-mixtures",
  ):
    g.add_argument(f"--{flag}", type=int, default=None, help=f"override the size's {flag}")


def contact_sheet(cfg, num_identities: int = 4, tile: int = 128):
  """(H, W, 3) uint8: test identities x 8 emotions at intensity 1, then the same at 1/3.

  Each tile is the middle frame of the clip the dataset holds for that identity/emotion
  (renders are deterministic, so this matches the stored frames), upscaled (nearest) to
  `tile` pixels.
  """
  import numpy as np

  from input_pipeline.synthetic import clips as clips_lib
  from input_pipeline.synthetic import face_model

  ids = list(
    range(
      cfg.num_train_identities, min(cfg.num_identities, cfg.num_train_identities + num_identities)
    )
  )
  rep = max(1, tile // cfg.image_size)
  mid = cfg.frames_per_clip // 2
  rows = []
  for level in (2, 0):  # level index into clips.LEVELS: 1.0 then 1/3
    for i in ids:
      params = face_model.sample_identity(i, cfg.seed)
      plan = cfg.clip_plan(i)
      tiles = []
      for e in range(8):
        spec = plan[0] if e == 0 else plan[cfg.num_neutral + (e - 1) * 3 + level]
        fr = clips_lib.render_clip(spec, params, cfg.image_size, cfg.frames_per_clip, cfg.seed)[
          "frames"
        ][mid]
        tiles.append(fr.repeat(rep, 0).repeat(rep, 1))
      rows.append(np.concatenate(tiles, 1))
  return np.concatenate(rows, 0)


def _dir_size(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def run(args) -> int:
  import imageio.v3 as iio
  import tensorflow_datasets as tfds

  from emotalker_jax.emotions import EMOTIONS
  from input_pipeline import synthetic_talk

  if args.workers < 0:
    raise ValueError(f"--workers must be >= 0, got {args.workers}")
  overrides = {
    k: getattr(args, k)
    for k in (
      "image_size",
      "num_identities",
      "num_train_identities",
      "frames_per_clip",
      "num_neutral",
      "num_mixtures",
    )
    if getattr(args, k) is not None
  }
  builder = synthetic_talk.get_builder(
    args.size, args.out, seed=args.seed, num_workers=args.workers, **overrides
  )
  cfg = builder.builder_config
  os.makedirs(args.out, exist_ok=True)
  # REUSE_CACHE_IF_EXISTS regenerates the dataset (there is nothing to download).
  mode = (
    tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    if args.overwrite
    else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
  )
  t0 = time.time()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  build_s = time.time() - t0

  sheet_path = args.sheet or os.path.join(args.out, f"synthetic_talk_{cfg.name}.png")
  iio.imwrite(sheet_path, contact_sheet(cfg, args.sheet_identities))

  info = builder.info
  n_clips = {k: v.num_examples for k, v in info.splits.items()}
  ids = synthetic_talk.split_identities(cfg)
  print(f"synthetic_talk/{cfg.name} -> {builder.data_dir}")
  print(
    f"  image {cfg.image_size}x{cfg.image_size}, {cfg.frames_per_clip} frames/clip at 25 fps "
    f"({cfg.frames_per_clip * 640} audio samples at 16 kHz), "
    f"{cfg.clips_per_identity} clips/identity, seed {cfg.seed}"
  )
  for split in ("train", "test"):
    print(
      f"  {split}: {len(ids[split])} identities ({ids[split].start}..{ids[split].stop - 1}), "
      f"{n_clips[split]} clips, {n_clips[split] * cfg.frames_per_clip} frames"
    )
  print(f"  disk {_dir_size(builder.data_dir) / 2**20:.1f} MiB, build {build_s:.1f} s")
  print(
    f"  contact sheet: {sheet_path} (columns: {', '.join(EMOTIONS)}; rows: "
    f"{args.sheet_identities} test identities at intensity 1, then at 1/3)"
  )
  print(f"  load: tfds.data_source('synthetic_talk/{cfg.name}', data_dir={args.out!r})")
  return 0
