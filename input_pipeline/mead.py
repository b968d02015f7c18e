"""TFDS builder ``mead``: MEAD (Wang et al., ECCV 2020) from a user's manual download.

MEAD cannot be downloaded automatically (it needs a licence agreement), so the builder
reads the folders a user extracted (``manual_dir``), in MEAD's own layout:

  <manual_dir>/<actor>/video/front/<emotion>/level_<n>/<clip>.mp4
  <manual_dir>/<actor>/audio/<emotion>/level_<n>/<clip>.m4a

(actor ``M003`` ... ``W040``; emotion one of angry contempt disgusted fear happy neutral
sad surprised; n in 1, 2, 3; clip ``001``...). Only the frontal camera is used.

Each clip becomes one record with the per-clip layout of ``synthetic_talk``:
  frames               (T, S, S, 3) uint8   face crops at 25 fps (Haar face track, see
                                            ``video_io``), S = config.image_size
  face_mask            (T, S, S)    uint8   {0, 1} approximate face region (ellipse)
  audio                (T * 640,)   float32 16 kHz mono, trimmed/zero-padded to the video
  emotion              (8,)         float32 one-hot x intensity (``labels``: 1/3, 2/3, 1;
                                            neutral 1)
  identity             int64        ``labels.mead_identity``: M003 -> 3, W009 -> 1009
  clip_id              int64        ``labels.mead_clip_id``
  is_neutral_reference bool         True for every neutral clip (reference frames)
  actor, level, source Text         "M003", "level_2", relative path of the video
  crop_box             (T, 4)       float32 crop square in decoded-frame pixels

Splits are identity-disjoint: ``test`` = actors M003, M030, W009, W015 (as in the
talking-face literature), ``train`` = every other actor present. A split with no clips is
left out (with a warning).

Build (the manual dir is checked before any decoding; a malformed one raises an error that
lists the expected layout):

  emotalker prepare mead --manual_dir ~/MEAD --data_dir data/tfds --image_size 128 \
      [--max_clips 200 --max_frames 100 --num_workers 2]

or ``build(manual_dir, data_dir, image_size=128, max_clips=..., max_frames=...)``; read with
``input_pipeline.pipeline.make_loader("mead/<config name>", "train", data_dir=...)``.
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

from emotalker_jax.emotions import NUM_EMOTIONS
from input_pipeline import labels, video_io

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
  detect_every / smoothing: face-track sampling and moving-average length (frames)."""

  image_size: int = 128
  max_clips: int | None = None
  max_frames: int | None = None
  actors: tuple | None = None
  max_side: int = 960
  detect_every: int = 5
  smoothing: int = 9


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


def clip_features(image_size: int, extra: dict | None = None) -> tfds.features.FeaturesDict:
  f = tfds.features
  s = int(image_size)
  d = {
    "frames": f.Tensor(shape=(None, s, s, 3), dtype=np.uint8),
    "face_mask": f.Tensor(shape=(None, s, s), dtype=np.uint8),
    "audio": f.Tensor(shape=(None,), dtype=np.float32),
    "emotion": f.Tensor(shape=(NUM_EMOTIONS,), dtype=np.float32),
    "identity": f.Scalar(dtype=np.int64),
    "clip_id": f.Scalar(dtype=np.int64),
    "is_neutral_reference": f.Scalar(dtype=np.bool_),
    "actor": f.Text(),
    "level": f.Text(),
    "source": f.Text(),
    "crop_box": f.Tensor(shape=(None, 4), dtype=np.float32),
  }
  d.update(extra or {})
  return f.FeaturesDict(d)


def _load_job(job):
  """(ClipFiles, config kwargs, detector, strict, root) -> (key, example) or (key, None)."""
  clip, kw, detector, strict, root = job
  try:
    arrays = video_io.load_clip(
      clip.video,
      clip.audio,
      kw["image_size"],
      fps=FPS,
      sample_rate=SAMPLE_RATE,
      max_frames=kw["max_frames"],
      max_side=kw["max_side"],
      detector=detector,
      smoothing=kw["smoothing"],
      detect_every=kw["detect_every"],
    )
  except (ValueError, FileNotFoundError) as e:
    if strict:
      raise
    return os.path.relpath(clip.video, root), str(e)
  emotion = np.asarray(clip.emotion_vec, np.float32)
  example = {
    **arrays,
    "emotion": emotion,
    "identity": clip.identity,
    "clip_id": clip.clip_id,
    "is_neutral_reference": labels.is_neutral(emotion),
    "actor": clip.actor,
    "level": clip.level,
    "source": os.path.relpath(clip.video, root),
  }
  return os.path.relpath(clip.video, root), example


def generate_clips(
  clips: Sequence[ClipFiles],
  cfg: RealVideoConfig,
  root: str,
  detector: video_io.Detector,
  strict: bool,
  num_workers: int,
  extra: Callable[[ClipFiles], dict] | None = None,
) -> Iterable:
  """Yields (key, example) for each clip, decoding in ``num_workers`` processes."""
  kw = dict(
    image_size=cfg.image_size,
    max_frames=cfg.max_frames,
    max_side=cfg.max_side,
    smoothing=cfg.smoothing,
    detect_every=cfg.detect_every,
  )
  jobs = [(c, kw, detector, strict, root) for c in clips]
  by_key = {os.path.relpath(c.video, root): c for c in clips}
  if num_workers > 0:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers) as pool:
      results = pool.imap(_load_job, jobs, chunksize=1)
      yield from _emit(results, by_key, extra)
  else:
    yield from _emit(map(_load_job, jobs), by_key, extra)


def _emit(results, by_key, extra):
  failed = 0
  for key, ex in results:
    if isinstance(ex, str):
      failed += 1
      log.warning("skipping %s: %s", key, ex)
      continue
    if extra is not None:
      ex.update(extra(by_key[key]))
    yield key, ex
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
    out[split] = builder._generate_examples(chosen, root)  # pylint: disable=protected-access
  return out


# ---------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------
class Mead(_FileCodePath, tfds.core.GeneratorBasedBuilder):
  """MEAD talking faces (frontal camera) as per-clip face crops + 16 kHz audio."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [make_config(64), make_config(128), make_config(256)]
  DEFAULT_CONFIG_NAME = "res128"

  def __init__(
    self,
    *,
    detector: video_io.Detector = video_io.haar_detector,
    strict: bool = False,
    num_workers: int = 0,
    **kwargs,
  ):
    """detector: frame -> face box or None (picklable for num_workers > 0);
    strict: raise on a clip without a face / undecodable instead of skipping it."""
    kwargs.setdefault("file_format", "array_record")
    self.detector, self.strict, self.num_workers = detector, strict, int(num_workers)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=clip_features(self.builder_config.image_size),
      homepage="https://wywu.github.io/projects/MEAD/MEAD.html",
      metadata=tfds.core.MetadataDict(
        fps=FPS, sample_rate=SAMPLE_RATE, test_actors=list(labels.MEAD_TEST_ACTORS)
      ),
    )

  def _split_generators(self, dl_manager):
    root = manual_dir_of(dl_manager)
    clips = scan_manual_dir(root, self.builder_config.actors)
    return split_generators(self, clips, root)

  def _generate_examples(self, clips, root):
    return generate_clips(
      clips, self.builder_config, root, self.detector, self.strict, self.num_workers
    )


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
  **builder_kwargs,
):
  """Checks ``manual_dir`` (clear error first), then builds; returns the builder."""
  scan(manual_dir, actors)  # fails fast with the expected layout
  cfg = make_config(image_size, max_clips, max_frames, actors)
  if cfg.name in builder_cls.builder_configs:  # a predefined config: pass it by name
    cfg = cfg.name
  b = builder_cls(config=cfg, data_dir=data_dir, num_workers=num_workers, **builder_kwargs)
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir))
  )
  return b
