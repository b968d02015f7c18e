"""TFDS builder ``mead``: MEAD (Wang et al., ECCV 2020) from a user's manual download.

MEAD cannot be downloaded automatically (it needs a licence agreement), so the builder
reads the folders a user extracted (``manual_dir``), in MEAD's own layout:

  <manual_dir>/<actor>/video/front/<emotion>/level_<n>/<clip>.mp4
  <manual_dir>/<actor>/audio/<emotion>/level_<n>/<clip>.m4a

(actor ``M003`` ... ``W040``; emotion one of angry contempt disgusted fear happy neutral
sad surprised; n in 1, 2, 3; clip ``001``...). Only the frontal camera is used.

Each clip is aligned once (``video_io.align_clip``: dlib landmarks tracked through the
clip, one similarity transform from the median of the smoothed track, every frame warped
with it) and becomes one record per video frame (``input_pipeline.frame_records``: the
frame as JPEG at S = config.image_size, its 68 landmarks in crop pixels, the audio samples
its log-mel window needs, the clip's labels and provenance):
  emotion              (8,)         float32 one-hot x intensity (``labels``: 1/3, 2/3, 1;
                                            neutral 1)
  identity             int64        ``labels.mead_identity``: M003 -> 3, W009 -> 1009
  clip_id              int64        ``labels.mead_clip_id``
  is_neutral_reference bool         True for every neutral clip (reference frames)
  actor, level, source Text         "M003", "level_2", relative path of the video
The per-split clip table and the audio/video length report go to the dataset's
metadata.json (``frame_records``).

Splits are identity-disjoint: ``test`` = actors M003, M030, W009, W015 (as in the
talking-face literature), ``train`` = every other actor present. A split with no clips is
left out (with a warning).

Build (the manual dir is checked before any decoding; a malformed one raises an error that
lists the expected layout):

  emotalker prepare mead --manual_dir ~/MEAD --data_dir data/tfds --image_size 256 \
      [--max_clips 200 --max_frames 100 --num_workers 8]

or ``build(manual_dir, data_dir, image_size=256, max_clips=..., max_frames=...)``; read with
``input_pipeline.pipeline.make_loader("mead/<config name>", "train", data_dir=...)`` (training
examples) or ``input_pipeline.frame_records.read_clips("mead/<config name>", "test", ...)``
(whole clips).
``max_clips`` (per split) takes clips round-robin over (actor, emotion, level) groups, so
a subset still covers every actor and emotion (and the neutral references).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import dataclasses
import inspect
import logging
import multiprocessing
import os
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from input_pipeline import frame_records, labels, video_io
from input_pipeline.pipeline import MelWindow

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FPS = 25

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download MEAD (https://wywu.github.io/projects/MEAD/MEAD.html; licence required) and, for
each actor, extract its video.tar and audio.tar inside a folder named after the actor, so
that manual_dir looks like:

  <manual_dir>/M003/video/front/angry/level_1/001.mp4
  <manual_dir>/M003/audio/angry/level_1/001.m4a
  <manual_dir>/W009/video/front/neutral/level_1/001.mp4
  ...

(actor folders M### / W###; emotion folders angry contempt disgusted fear happy neutral
sad surprised; level folders level_1 level_2 level_3). Only video/front is read; other
camera angles may be present and are ignored.
"""


@dataclasses.dataclass(frozen=True)
class ClipFiles:
  """One clip on disk: its video, its audio, its labels and its split."""

  video: str
  audio: str
  actor: str
  emotion: str
  level: str
  stem: str
  split: str
  group: tuple
  clip_id: int
  identity: int
  emotion_vec: tuple


# ---------------------------------------------------------------------------------------
# Scanning the manual dir (fast, before any decoding)
# ---------------------------------------------------------------------------------------
def _listing(root: str, limit: int = 10) -> str:
  try:
    names = sorted(os.listdir(root))
  except OSError:
    return "(unreadable)"
  shown = ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
  return shown or "(empty)"


def layout_error(root: str, problem: str, instructions: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"{problem}\nmanual_dir {root!r} contains: {_listing(root)}\nExpected layout:\n{instructions}"
  )


def scan_manual_dir(
  root: str | os.PathLike, actors: Sequence[str] | None = None
) -> list[ClipFiles]:
  """All MEAD (video, audio) pairs under ``root``, sorted; raises on a malformed tree.

  Raises FileNotFoundError (listing the expected layout and what ``root`` holds) when
  ``root`` is missing, has no actor folders, or no clip has both its video and audio.
  Videos without audio (and unknown emotion/level folders) are skipped with a warning.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(
      f"MEAD manual_dir {root!r} does not exist.\nExpected layout:\n{MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  found = sorted(
    d for d in os.listdir(root) if labels.is_mead_actor(d) and os.path.isdir(os.path.join(root, d))
  )
  if actors:
    missing = sorted(set(actors) - set(found))
    if missing:
      raise layout_error(
        root,
        f"MEAD actors {missing} requested but not in manual_dir.",
        MANUAL_DOWNLOAD_INSTRUCTIONS,
      )
    found = [a for a in found if a in set(actors)]
  if not found:
    raise layout_error(
      root, "MEAD manual_dir has no actor folders (M### or W###).", MANUAL_DOWNLOAD_INSTRUCTIONS
    )
  clips, no_audio, skipped, no_video = [], [], [], []
  for actor in found:
    front = os.path.join(root, actor, "video", "front")
    if not os.path.isdir(front):
      no_video.append(actor)
      continue
    for emotion in sorted(os.listdir(front)):
      edir = os.path.join(front, emotion)
      if not os.path.isdir(edir):
        continue
      if emotion not in labels.MEAD_EMOTIONS:
        skipped.append(edir)
        continue
      for level in sorted(os.listdir(edir)):
        ldir = os.path.join(edir, level)
        if not os.path.isdir(ldir):
          continue
        m = re.fullmatch(r"level_([123])", level)
        if not m:
          skipped.append(ldir)
          continue
        for name in sorted(os.listdir(ldir)):
          stem, ext = os.path.splitext(name)
          if ext.lower() != ".mp4" or not stem.isdigit():
            continue
          audio = os.path.join(root, actor, "audio", emotion, level, stem + ".m4a")
          video = os.path.join(ldir, name)
          if not os.path.isfile(audio):
            no_audio.append(video)
            continue
          clips.append(
            ClipFiles(
              video=video,
              audio=audio,
              actor=actor,
              emotion=emotion,
              level=level,
              stem=stem,
              split=labels.mead_split(actor),
              group=(actor, emotion, level),
              clip_id=labels.mead_clip_id(actor, emotion, int(m.group(1)), int(stem)),
              identity=labels.mead_identity(actor),
              emotion_vec=tuple(labels.mead_emotion_vector(emotion, int(m.group(1))).tolist()),
            )
          )
  if skipped:
    log.warning(
      "MEAD: ignored %d folders with unknown emotion/level names, e.g. %s",
      len(skipped),
      skipped[:3],
    )
  if no_audio:
    log.warning(
      "MEAD: %d videos have no matching audio and are skipped, e.g. %s", len(no_audio), no_audio[:3]
    )
  if not clips:
    detail = []
    if no_video:
      detail.append(f"actors without video/front: {no_video[:5]}")
    if no_audio:
      detail.append(f"{len(no_audio)} videos without their .m4a, e.g. {no_audio[:2]}")
    raise layout_error(
      root,
      "MEAD manual_dir has no clip with both <actor>/video/front/<emotion>/level_<n>/"
      "<clip>.mp4 and <actor>/audio/<emotion>/level_<n>/<clip>.m4a"
      + (" (" + "; ".join(detail) + ")" if detail else "")
      + ".",
      MANUAL_DOWNLOAD_INSTRUCTIONS,
    )
  return clips


def subset(clips: Sequence[ClipFiles], max_clips: int | None) -> list[ClipFiles]:
  """The first ``max_clips`` clips taken round-robin over ``clip.group`` (sorted groups)."""
  if max_clips is None or max_clips >= len(clips):
    return list(clips)
  groups: dict = {}
  for c in clips:
    groups.setdefault(c.group, []).append(c)
  queues = [groups[g] for g in sorted(groups)]
  out, i = [], 0
  while len(out) < max_clips:
    for q in queues:
      if i < len(q) and len(out) < max_clips:
        out.append(q[i])
    i += 1
  return out


# ---------------------------------------------------------------------------------------
# Shared by the MEAD and CREMA-D builders
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class RealVideoConfig(tfds.core.BuilderConfig):
  """image_size: crop side S; max_clips: per split (None = all); max_frames: per clip;
  actors: only these (None = all); max_side: decode so the longest side is <= this;
  detect_every / smooth_window: face detection interval and landmark moving average
  (frames); jpeg_quality: of the stored frames; audio_window_s: the longest log-mel window
  the stored audio serves; max_av_mismatch_frames: clips whose audio and video lengths
  differ by more are skipped (``frame_records``)."""

  image_size: int = 128
  max_clips: int | None = None
  max_frames: int | None = None
  actors: tuple | None = None
  max_side: int = 960
  detect_every: int = 5
  smooth_window: int = 3
  jpeg_quality: int = frame_records.JPEG_QUALITY
  audio_window_s: float = frame_records.AUDIO_WINDOW_S
  max_av_mismatch_frames: float = frame_records.MAX_AV_MISMATCH_FRAMES


def make_config(
  image_size: int = 128,
  max_clips: int | None = None,
  max_frames: int | None = None,
  actors: Sequence | None = None,
  **kw,
) -> RealVideoConfig:
  """A config named after its options: ``res128``, ``res64_clips20_frames50``, ..."""
  name = f"res{int(image_size)}"
  if max_clips is not None:
    name += f"_clips{int(max_clips)}"
  if max_frames is not None:
    name += f"_frames{int(max_frames)}"
  if actors:
    name += "_" + "-".join(str(a) for a in actors)
  for k, v in sorted(kw.items()):
    name += f"_{k}{v}"
  return RealVideoConfig(
    name=name,
    image_size=int(image_size),
    max_clips=max_clips,
    max_frames=max_frames,
    actors=tuple(actors) if actors else None,
    **kw,
  )


def info_metadata(cfg: RealVideoConfig, test_actors) -> tfds.core.MetadataDict:
  """The dataset's metadata.json: rates, the record format and its options; the builder
  adds ``frame_index`` and ``av_length`` per split while it writes them."""
  return tfds.core.MetadataDict(
    fps=FPS,
    sample_rate=SAMPLE_RATE,
    test_actors=list(test_actors),
    record_format=frame_records.RECORD_FORMAT,
    image_size=int(cfg.image_size),
    image_encoding="jpeg",
    jpeg_quality=int(cfg.jpeg_quality),
    audio_window_s=float(cfg.audio_window_s),
    frame_index={},
    av_length={},
  )


def _load_job(job):
  """(ClipFiles, config kwargs, strict, root) -> (key, ('clip', arrays, labels)),
  (key, ('skip', message, av)) or (key, ('error', message))."""
  clip, kw, strict, root = job
  key = os.path.relpath(clip.video, root)
  try:
    arrays = video_io.load_clip(
      clip.video,
      clip.audio,
      kw["image_size"],
      fps=FPS,
      sample_rate=SAMPLE_RATE,
      max_frames=kw["max_frames"],
      max_side=kw["max_side"],
      detect_every=kw["detect_every"],
      smooth_window=kw["smooth_window"],
      max_av_mismatch=kw["max_av_mismatch_frames"],
    )
  except video_io.AVLengthError as e:
    if strict:
      raise
    return key, ("skip", str(e), e.av)
  except (ValueError, FileNotFoundError) as e:
    if strict:
      raise
    return key, ("error", str(e))
  # JPEG-encode here, in the worker: the parent receives ~30 KB per frame, not raw pixels.
  arrays["images"] = [
    frame_records.encode_frame(f, kw["jpeg_quality"]) for f in arrays.pop("frames")
  ]
  emotion = np.asarray(clip.emotion_vec, np.float32)
  labels_ = {
    "emotion": emotion,
    "identity": clip.identity,
    "clip_id": clip.clip_id,
    "is_neutral_reference": labels.is_neutral(emotion),
    "actor": clip.actor,
    "level": clip.level,
    "source": key,
  }
  return key, ("clip", arrays, labels_)


def generate_clips(
  builder,
  split: str,
  clips: Sequence[ClipFiles],
  root: str,
  extra: Callable[[ClipFiles], dict] | None = None,
) -> Iterable:
  """Yields (key, record) for every frame of every clip (decoding and face alignment in
  ``builder.num_workers`` processes), then stores the split's clip table and length
  report in ``builder.info.metadata``."""
  cfg = builder.builder_config
  kw = {
    k: getattr(cfg, k)
    for k in (
      "image_size",
      "max_side",
      "detect_every",
      "smooth_window",
      "jpeg_quality",
      "max_av_mismatch_frames",
    )
  }
  kw["max_frames"] = min(
    cfg.max_frames or frame_records.MAX_CLIP_FRAMES, frame_records.MAX_CLIP_FRAMES
  )
  jobs = [(c, kw, builder.strict, root) for c in clips]
  by_key = {os.path.relpath(c.video, root): c for c in clips}
  index = frame_records.SplitIndex(split, len(clips), cfg.max_av_mismatch_frames)
  mel = MelWindow(FPS, cfg.audio_window_s, SAMPLE_RATE)
  if builder.num_workers > 0:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(builder.num_workers) as pool:
      results = pool.imap(_load_job, jobs, chunksize=1)
      yield from _emit(results, by_key, extra, index, mel)
  else:
    yield from _emit(map(_load_job, jobs), by_key, extra, index, mel)
  side = index.to_json()
  builder.info.metadata["frame_index"][split] = side["frame_index"]
  builder.info.metadata["av_length"][split] = side["av_length"]
  frame_records.log_length_report(builder.name, split, side["av_length"])


def _emit(results, by_key, extra, index: frame_records.SplitIndex, mel: MelWindow):
  failed = 0
  for key, out in tqdm(results, total=len(by_key), desc="clips", unit="clip", leave=False):
    if out[0] == "error":
      failed += 1
      index.no_face.append(key)
      log.warning("skipping %s: %s", key, out[1])
      continue
    if out[0] == "skip":
      failed += 1
      index.note_length(key, out[2])
      log.warning("skipping %s: %s", key, out[1])
      continue
    _, arrays, ex = out
    index.note_length(key, arrays.pop("av_length"))
    if extra is not None:
      ex.update(extra(by_key[key]))
    t = len(arrays["images"])
    pos = index.add_clip(ex, t)
    ranges = mel.sample_ranges(t, arrays["audio"].shape[0])
    yield from frame_records.clip_examples(arrays, ex, pos, index, ranges)
  if failed:
    log.warning("%d clips were skipped (see warnings above)", failed)


def manual_dir_of(dl_manager) -> str:
  """The manual dir tfds was given, without tfds's own existence check (ours is clearer)."""
  path = getattr(dl_manager, "_manual_dir", None)
  if path is None:
    path = dl_manager.manual_dir
  return os.fspath(path)


class _FileCodePath:
  """tfds 4.9.10 resolves a packaged builder's code path through the optional
  ``importlib_resources``; the module's file is the same path."""

  @tfds.core.utils.py_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


def split_generators(builder, clips: Sequence[ClipFiles], root: str) -> dict:
  """{split: builder._generate_examples(clips of that split, root)}, empty splits left out."""
  cfg = builder.builder_config
  out = {}
  for split in ("train", "test"):
    chosen = subset([c for c in clips if c.split == split], cfg.max_clips)
    if not chosen:
      log.warning(
        "%s: no clips for split %r in %s; the split is left out", builder.name, split, root
      )
      continue
    out[split] = builder._generate_examples(split, chosen, root)  # pylint: disable=protected-access
  return out


# ---------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------
class Mead(_FileCodePath, tfds.core.GeneratorBasedBuilder):
  """MEAD talking faces (frontal camera): one record per frame, aligned face crops."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release: per-clip records, Haar face boxes.",
    "2.0.0": "Frame-level records: dlib landmarks, one alignment per clip, JPEG frames, "
    "per-frame audio windows, length report.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [make_config(64), make_config(128), make_config(256)]
  DEFAULT_CONFIG_NAME = "res128"

  def __init__(self, *, strict: bool = False, num_workers: int = 0, **kwargs):
    """strict: raise on a clip without a face, undecodable, or with mismatched audio
    instead of skipping it; num_workers: decoding / alignment processes."""
    kwargs.setdefault("file_format", "array_record")
    self.strict, self.num_workers = strict, int(num_workers)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=frame_records.frame_features(self.builder_config.image_size),
      homepage="https://wywu.github.io/projects/MEAD/MEAD.html",
      disable_shuffling=True,  # records in (clip, frame) order: frame_records
      metadata=info_metadata(self.builder_config, labels.MEAD_TEST_ACTORS),
    )

  def _split_generators(self, dl_manager):
    root = manual_dir_of(dl_manager)
    clips = scan_manual_dir(root, self.builder_config.actors)
    return split_generators(self, clips, root)

  def _generate_examples(self, split, clips, root):
    return generate_clips(self, split, clips, root)


def build(
  manual_dir: str,
  data_dir: str,
  builder_cls=Mead,
  scan=scan_manual_dir,
  image_size: int = 128,
  max_clips: int | None = None,
  max_frames: int | None = None,
  actors: Sequence | None = None,
  num_workers: int = 0,
  options: dict | None = None,
  **builder_kwargs,
):
  """Checks ``manual_dir`` (clear error first), then builds; returns the builder.

  options: other ``RealVideoConfig`` fields (``max_av_mismatch_frames``, ``audio_window_s``,
  ``jpeg_quality``, ``detect_every``, ``smooth_window``, ``max_side``); each one given
  joins the config's name (``res256_max_av_mismatch_frames10``)."""
  fields = {f.name for f in dataclasses.fields(RealVideoConfig)} - {
    f.name for f in dataclasses.fields(tfds.core.BuilderConfig)
  }
  bad = sorted(set(options or {}) - (fields - {"image_size", "max_clips", "max_frames", "actors"}))
  if bad:
    raise ValueError(f"unknown build options {bad}; use some of {sorted(fields)}")
  scan(manual_dir, actors)  # fails fast with the expected layout
  cfg = make_config(image_size, max_clips, max_frames, actors, **(options or {}))
  if cfg.name in builder_cls.builder_configs:  # a predefined config: pass it by name
    cfg = cfg.name
  b = builder_cls(config=cfg, data_dir=data_dir, num_workers=num_workers, **builder_kwargs)
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir))
  )
  frame_records.check_records(b)
  return b
