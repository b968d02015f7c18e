"""`emotalker generate`: portrait + audio + emotion -> talking-face mp4 (+ contact sheet).

  emotalker generate --checkpoint WORKDIR --portrait photo.jpg --audio speech.wav \\
      (--prompt "a little sad and fearful" | --emotion happy=0.7,surprised=0.3) \\
      --out out.mp4 [--paste-back] [--frames-dir DIR] [--crop face|center] \\
      [--guidance-mode joint|composed] \\
      [--face-index N] [--seed 0 --steps 25 --guidance 2 --eta 0 --batch-frames 8] \\
      [--config.sampler.constraint.strength=0.8 ...]

The model config is the one saved with the checkpoint; ``--config.a.b=value`` flags
override it (the sampler and constraint knobs: ``sampler.constraint.strength``,
``.schedule``, ``.until``, ``.m_face``, ``.init``, ``sampler.spacing``,
``sampler.inversion_iters``; ``mesh.*``).

``--crop face`` (default): the face is detected (dlib, on the luma; the largest, or
``--face-index N``), aligned to the canonical S x S crop by its landmarks, and its
landmark hull is the face mask. ``--crop center``: the image is already a centred face
(synthetic portraits). ``--paste-back`` (needs ``--crop face``): the video has the photo's
size, each generated crop blended back into the photo inside the face hull (outside it
the photo's pixels, unchanged). Without it the video is the S x S crop.

Writes OUT.mp4 (H.264 + AAC audio, 25 fps, one frame per 40 ms of audio), OUT.png (the
portrait as the model sees it, then crops spread over the clip), with ``--frames-dir``
the video's frames as lossless PNGs (DIR/000000.png, ...), and prints a JSON summary.
Frames stream from the sampler to the writers chunk by chunk, so memory does not grow
with the clip's length.
"""

from __future__ import annotations

import argparse


def add_common_arguments(p: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
  """Flags shared with ``generate-dataset`` (whose ``--merge`` needs no checkpoint)."""
  p.add_argument(
    "--checkpoint",
    required=checkpoint_required,
    help="training workdir (emotalker train --workdir) or its checkpoints/ folder (local or gs://)",
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
    help="face: detect the face (the largest), align it by its landmarks, mask its "
    "landmark hull; center: the image is already a centred face crop (e.g. synthetic "
    "portraits): its central square, no detection",
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
  p.add_argument(
    "--face-index",
    type=int,
    default=None,
    help="with several faces in the photo: which one, 0 = largest (default: the largest, "
    "with a warning)",
  )
  p.add_argument(
    "--paste-back",
    action="store_true",
    help="the video at the photo's size: each generated face blended back into the photo "
    "(needs --crop face)",
  )
  p.add_argument(
    "--guidance-mode",
    default=None,
    help="joint: one guidance term for the whole emotion (eq. 5); composed: one term per "
    "active emotion of a mixture, out_u + w sum_i (out_i - out_u), costing (|A| + 1) / 2 "
    "times the UNet work (default: sampler.guidance_mode)",
  )
  p.add_argument(
    "--frames-dir",
    default=None,
    help="also write the video's frames as PNGs DIR/000000.png, ... (a new or empty folder)",
  )


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
  import time

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
  if args.crop == "center" and args.paste_back:
    raise ValueError(
      "--paste-back needs --crop face (the face's landmarks place the crop in the photo); "
      "with --crop center the output is the crop itself: drop --paste-back"
    )
  if args.crop == "center" and args.face_index is not None:
    raise ValueError("--face-index picks a detected face: it needs --crop face")
  if args.face_index is not None and args.face_index < 0:
    raise ValueError(f"--face-index must be >= 0 (0 = largest), got {args.face_index}")
  if args.guidance_mode is not None:
    from emotalker_jax.diffusion.compose import check_guidance_mode

    check_guidance_mode(args.guidance_mode, "--guidance-mode")
  intensities = parse_emotion_spec(args.emotion) if args.emotion is not None else None
  if args.prompt is not None and not args.prompt.strip():
    raise ValueError("--prompt is empty; describe the emotion, e.g. --prompt 'very happy'")
  # Cheap checks first: the checkpoint's config, the portrait, the audio, the frames dir.
  config, _, _ = load_checkpoint_config(args.checkpoint, overrides)
  portrait = I.prepare_portrait(
    args.portrait, int(config.data.image_size), crop=args.crop, face_index=args.face_index
  )
  audio = I.load_generation_audio(
    args.audio, int(config.data.sample_rate), float(config.data.fps), args.max_audio_seconds
  )
  frames_dir = None if args.frames_dir is None else I.check_frames_dir(args.frames_dir)
  n = I.num_frames_for(len(audio), int(config.data.sample_rate), float(config.data.fps))
  gen = I.load_generator(args.checkpoint, overrides, use_ema=not args.raw_params)
  bar = FrameProgress(n, "generate", args.no_progress)
  try:
    stream = gen.stream(
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
      guidance_mode=args.guidance_mode,
    )
    # crops -> (contact sheet) -> rendered frames -> (PNG frames) -> mp4, a chunk at a time
    sheet = I.SheetFrames(stream.num_frames)
    video = I.render_frames(stream, portrait, paste_back=args.paste_back, crops_tap=sheet)
    pngs = None if frames_dir is None else I.PngFrames(frames_dir)
    if pngs is not None:
      video = I.tap(video, pngs)
    t0 = time.perf_counter()
    written = I.write_mp4(out, video, audio, gen.sample_rate, gen.fps)
    t_write = time.perf_counter() - t0
  finally:
    bar.close()
  png = os.path.splitext(out)[0] + ".png"
  I.write_png(png, sheet.sheet(portrait.image))
  info = stream.info
  info["timing"]["write_s"] = round(max(0.0, t_write - info["timing"]["sample_s"]), 3)
  h, w = portrait.photo.shape[:2] if args.paste_back else portrait.image.shape[:2]
  h, w = h + h % 2, w + w % 2  # the mp4's: H.264 4:2:0 needs even sides (write_mp4)
  summary = {
    "out": out,
    "contact_sheet": png,
    "frames_dir": frames_dir,
    "frames_written": written,
    "portrait": os.fspath(args.portrait),
    "audio": os.fspath(args.audio),
    "crop": portrait.crop,
    "paste_back": bool(args.paste_back),
    "video_size": [int(w), int(h)],
    "photo_size": list(portrait.source_size),
    "greyscale": portrait.greyscale,
    "faces_found": portrait.num_faces,
    "face_index": portrait.face_index,
    "face_box": None
    if portrait.face_box is None
    else [round(float(v), 1) for v in np.asarray(portrait.face_box)],
    **info,
  }
  print(json.dumps(summary))
  return 0
