"""`emotalker generate`: portrait + audio + emotion -> talking-face mp4 (+ contact sheet).

  emotalker generate --checkpoint WORKDIR --portrait face.jpg --audio speech.wav \\
      (--prompt "a little sad and fearful" | --emotion happy=0.7,surprised=0.3) \\
      --out out.mp4 [--seed 0 --steps 25 --guidance 2 --eta 0 --crop face|center \\
      --batch-frames 8] [--config.sampler.constraint.strength=0.8 ...]

The model config is the one saved with the checkpoint; ``--config.a.b=value`` flags
override it (the sampler and constraint knobs: ``sampler.constraint.strength``,
``.schedule``, ``.until``, ``.m_face``, ``.init``, ``sampler.spacing``,
``sampler.inversion_iters``; ``mesh.*``). Writes OUT.mp4 (H.264 + AAC audio, 25 fps, one
frame per 40 ms of audio), OUT.png (the portrait as the model sees it, then frames spread
over the clip) and prints a JSON summary.
"""

from __future__ import annotations

import argparse


def add_common_arguments(p: argparse.ArgumentParser) -> None:
  """Flags shared with ``generate-dataset``."""
  p.add_argument(
    "--checkpoint",
    required=True,
    help="training workdir (emotalker train --workdir) or its checkpoints/ folder",
  )
  p.add_argument("--seed", type=int, default=0, help="random seed (eta > 0, init=noise)")
  p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: sampler.steps)")
  p.add_argument(
    "--guidance",
    type=float,
    default=None,
    help="classifier-free guidance scale on the emotion (default: sampler.guidance)",
  )
  p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: sampler.eta)")
  p.add_argument(
    "--crop",
    choices=("face", "center"),
    default="face",
    help="face: crop around the detected face (Haar); center: the image is "
    "already a centred face (e.g. synthetic portraits)",
  )
  p.add_argument(
    "--batch-frames",
    type=int,
    default=8,
    help="frames per compiled batch (rounded up to a multiple of the devices)",
  )
  p.add_argument(
    "--max-audio-seconds", type=float, default=600.0, help="refuse longer audio (default 600 s)"
  )
  p.add_argument(
    "--raw-params", action="store_true", help="use the raw training params instead of their EMA"
  )
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.epilog = (
    "config: the checkpoint's saved config, with --config.a.b=value overrides, "
    "e.g. --config.sampler.constraint.strength=0.8"
  )


def add_arguments(p: argparse.ArgumentParser) -> None:
  add_common_arguments(p)
  p.add_argument("--portrait", required=True, help="portrait image (PNG, JPEG, ...)")
  p.add_argument("--audio", required=True, help="speech audio (wav, mp3, m4a, or a video)")
  emo = p.add_mutually_exclusive_group(required=True)
  emo.add_argument("--prompt", help="emotion description, e.g. 'a little sad and fearful'")
  emo.add_argument("--emotion", help="explicit intensities, e.g. happy=0.7,surprised=0.3")
  p.add_argument("--out", required=True, help="output .mp4 (OUT.png is written beside it)")


def quiet_fork_warning() -> None:
  """ffmpeg is started with fork+exec; JAX's warning about fork in a multithreaded process
  does not apply (the child execs at once), so it is hidden from the command's output."""
  import warnings

  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


class FrameProgress:
  """tqdm bar in frames whose clock restarts when sampling starts (``generate`` calls it
  with 0 after compiling), so its rate is frames/s of sampling, not of compilation."""

  def __init__(self, total: int, desc: str, disable: bool):
    from tqdm import tqdm

    self.desc = desc
    self.bar = tqdm(
      total=total, desc=f"{desc} (compiling)", unit="frame", disable=disable, dynamic_ncols=True
    )

  def __call__(self, k: int) -> None:
    if k == 0:
      self.bar.set_description(self.desc, refresh=False)
      self.bar.reset()
    else:
      self.bar.update(k)

  def close(self) -> None:
    self.bar.close()


def run(args) -> int:
  import json
  import os

  import numpy as np

  from emotalker_jax import inference as I
  from emotalker_jax.checkpoints import load_checkpoint_config
  from emotalker_jax.config_utils import checkpoint_overrides
  from emotalker_jax.emotions import parse_emotion_spec

  quiet_fork_warning()
  overrides = checkpoint_overrides(args.config_args)
  out = os.fspath(args.out)
  if not out.lower().endswith(".mp4"):
    raise ValueError(f"--out {out!r} must end in .mp4")
  intensities = parse_emotion_spec(args.emotion) if args.emotion is not None else None
  if args.prompt is not None and not args.prompt.strip():
    raise ValueError("--prompt is empty; describe the emotion, e.g. --prompt 'very happy'")
  # Cheap checks first: the checkpoint's config, the portrait and the audio.
  config, _, _ = load_checkpoint_config(args.checkpoint, overrides)
  portrait = I.prepare_portrait(
    args.portrait, int(config.data.image_size), detect=args.crop == "face"
  )
  audio = I.load_generation_audio(
    args.audio, int(config.data.sample_rate), float(config.data.fps), args.max_audio_seconds
  )
  n = I.num_frames_for(len(audio), int(config.data.sample_rate), float(config.data.fps))
  gen = I.load_generator(args.checkpoint, overrides, use_ema=not args.raw_params)
  bar = FrameProgress(n, "generate", args.no_progress)
  try:
    frames, info = gen.generate(
      portrait.image,
      audio,
      prompt=args.prompt,
      intensities=intensities,
      steps=args.steps,
      guidance=args.guidance,
      eta=args.eta,
      seed=args.seed,
      face_mask=portrait.face_mask,
      batch_frames=args.batch_frames,
      max_audio_seconds=args.max_audio_seconds,
      progress=bar,
    )
  finally:
    bar.close()
  png = os.path.splitext(out)[0] + ".png"
  I.write_mp4(out, frames, audio, gen.sample_rate, gen.fps)
  I.write_png(png, I.contact_sheet(frames, portrait.image))
  summary = {
    "out": out,
    "contact_sheet": png,
    "portrait": os.fspath(args.portrait),
    "audio": os.fspath(args.audio),
    "crop": portrait.crop,
    "face_box": None
    if portrait.face_box is None
    else [round(float(v), 1) for v in np.asarray(portrait.face_box)],
    **info,
  }
  print(json.dumps(summary))
  return 0
