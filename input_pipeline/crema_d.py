"""TFDS builder ``crema_d``: CREMA-D (Cao et al., 2014) video + audio from a manual download.

The builder reads the dataset's own layout in ``manual_dir``:

  <manual_dir>/VideoFlash/<actor>_<sentence>_<EMO>_<LVL>.flv
  <manual_dir>/AudioWAV/<actor>_<sentence>_<EMO>_<LVL>.wav

(e.g. ``1001_DFA_ANG_XX``; EMO in ANG DIS FEA HAP NEU SAD; LVL in LO MD HI XX). Clips are
aligned and stored one record per frame as ``mead``'s (``input_pipeline.frame_records``),
plus ``sentence`` (Text). Labels (``input_pipeline.labels``): one-hot x intensity with
LO/MD/HI/XX -> 1/3, 2/3, 1, 2/3 (neutral: 1); identity = the actor number (1001-1091).

Splits are identity-disjoint and fixed: ``test`` = actors 1082-1091, ``train`` = 1001-1081
(CREMA-D papers use random identity splits without publishing them; this one is
documented in ``labels.CREMA_TEST_ACTORS``).

Note: TensorFlow Datasets ships an audio-only ``crema_d`` in its catalog. Importing this
module replaces that registration, so ``tfds.builder("crema_d")`` means this builder.
The pipeline reads prepared data from its files (no registry lookup), so either way
``make_loader("crema_d/res256", ...)`` reads what this builder wrote.

Build: ``emotalker prepare crema_d --manual_dir ~/CREMA-D --data_dir data/tfds
--image_size 256 [--max_clips N --max_frames N --num_workers 8]``.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import os

import tensorflow_datasets as tfds
from tensorflow_datasets.core import registered

from input_pipeline import frame_records, labels, mead

log = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download CREMA-D (https://github.com/CheyneyComputerScience/CREMA-D; the media files are
stored with git-lfs) and put its VideoFlash and AudioWAV folders in manual_dir:

  <manual_dir>/VideoFlash/1001_DFA_ANG_XX.flv
  <manual_dir>/AudioWAV/1001_DFA_ANG_XX.wav
  ...

File stems are <actor>_<sentence>_<EMO>_<LVL>: actor 1001-1091, a 3-letter sentence code,
EMO in ANG DIS FEA HAP NEU SAD, LVL in LO MD HI XX. A video is used when the .wav with the
same stem exists. (Git-lfs pointer files, ~130 bytes, are not media: run `git lfs pull`.)
"""


def scan_manual_dir(
  root: str | os.PathLike, actors: Sequence[int] | None = None
) -> list[mead.ClipFiles]:
  """All CREMA-D (flv, wav) pairs under ``root``, sorted; raises on a malformed tree.

  Raises FileNotFoundError (listing the expected layout and what ``root`` holds) when
  ``root``, VideoFlash/ or AudioWAV/ is missing, or no video has its wav. Names outside
  the scheme and videos without audio are skipped with a warning.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(
      f"CREMA-D manual_dir {root!r} does not exist.\nExpected layout:\n"
      f"{MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  vdir, adir = os.path.join(root, "VideoFlash"), os.path.join(root, "AudioWAV")
  for d in (vdir, adir):
    if not os.path.isdir(d):
      raise mead.layout_error(
        root,
        f"CREMA-D manual_dir has no {os.path.basename(d)}/ folder.",
        MANUAL_DOWNLOAD_INSTRUCTIONS,
      )
  want = {int(a) for a in actors} if actors else None
  clips, bad_names, no_audio, lfs = [], [], [], []
  for name in sorted(os.listdir(vdir)):
    stem, ext = os.path.splitext(name)
    if ext.lower() != ".flv":
      continue
    try:
      p = labels.parse_crema_stem(stem)
    except ValueError:
      bad_names.append(name)
      continue
    if want is not None and p["actor"] not in want:
      continue
    video, audio = os.path.join(vdir, name), os.path.join(adir, stem + ".wav")
    if not os.path.isfile(audio):
      no_audio.append(name)
      continue
    if os.path.getsize(video) < 1024 and _is_lfs_pointer(video):
      lfs.append(name)
      continue
    clips.append(
      mead.ClipFiles(
        video=video,
        audio=audio,
        actor=str(p["actor"]),
        emotion=p["emotion"],
        level=p["level"],
        stem=stem,
        split=labels.crema_split(p["actor"]),
        group=(p["actor"], p["code"]),
        clip_id=labels.crema_clip_id(stem),
        identity=p["actor"],
        emotion_vec=tuple(labels.crema_emotion_vector(p["code"], p["level"]).tolist()),
      )
    )
  if bad_names:
    log.warning(
      "CREMA-D: %d files in VideoFlash/ do not follow <actor>_<sentence>_<EMO>_<LVL>"
      ".flv and are ignored, e.g. %s",
      len(bad_names),
      bad_names[:3],
    )
  if no_audio:
    log.warning(
      "CREMA-D: %d videos have no AudioWAV/<stem>.wav and are skipped, e.g. %s",
      len(no_audio),
      no_audio[:3],
    )
  if lfs:
    raise mead.layout_error(
      root,
      f"CREMA-D: {len(lfs)} videos are git-lfs pointer files, not media (e.g. "
      f"{lfs[:2]}); run `git lfs pull` in the CREMA-D checkout.",
      MANUAL_DOWNLOAD_INSTRUCTIONS,
    )
  if want is not None:
    missing = sorted(want - {int(c.actor) for c in clips})
    if missing:
      raise mead.layout_error(
        root, f"CREMA-D actors {missing} requested but have no clips.", MANUAL_DOWNLOAD_INSTRUCTIONS
      )
  if not clips:
    detail = (
      f" ({len(no_audio)} videos lack their .wav, e.g. {no_audio[:2]})"
      if no_audio
      else f" (VideoFlash/ holds: {mead._listing(vdir)})"
    )  # pylint: disable=protected-access
    raise mead.layout_error(
      root,
      "CREMA-D manual_dir has no clip with both VideoFlash/<stem>.flv and "
      "AudioWAV/<stem>.wav" + detail + ".",
      MANUAL_DOWNLOAD_INSTRUCTIONS,
    )
  return clips


def _is_lfs_pointer(path: str) -> bool:
  try:
    with open(path, "rb") as f:
      return f.read(40).startswith(b"version https://git-lfs")
  except OSError:
    return False


def _register_over_tfds_catalog() -> None:
  """TFDS's catalog has an audio-only ``crema_d``: import the catalog now and drop that
  entry, so this module's class registers (and later catalog imports don't collide)."""
  try:
    registered._import_legacy_builders()  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    pass
  registered._DATASET_REGISTRY.pop("crema_d", None)  # pylint: disable=protected-access


_register_over_tfds_catalog()


class CremaD(mead._FileCodePath, tfds.core.GeneratorBasedBuilder):  # pylint: disable=protected-access
  """CREMA-D talking faces: one record per frame, aligned face crops."""

  name = "crema_d"
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release: per-clip records, Haar face boxes.",
    "2.0.0": "Frame-level records: dlib landmarks, one alignment per clip, JPEG frames, "
    "per-frame audio windows, length report.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [mead.make_config(64), mead.make_config(128), mead.make_config(256)]
  DEFAULT_CONFIG_NAME = "res128"

  def __init__(self, *, strict: bool = False, num_workers: int = 0, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self.strict, self.num_workers = strict, int(num_workers)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=frame_records.frame_features(
        self.builder_config.image_size, {"sentence": tfds.features.Text()}
      ),
      homepage="https://github.com/CheyneyComputerScience/CREMA-D",
      disable_shuffling=True,  # records in (clip, frame) order: frame_records
      metadata=mead.info_metadata(self.builder_config, labels.CREMA_TEST_ACTORS),
    )

  def _split_generators(self, dl_manager):
    root = mead.manual_dir_of(dl_manager)
    clips = scan_manual_dir(root, self.builder_config.actors)
    return mead.split_generators(self, clips, root)

  def _generate_examples(self, split, clips, root):
    return mead.generate_clips(
      self, split, clips, root, extra=lambda c: {"sentence": c.stem.split("_")[1]}
    )


def build(
  manual_dir: str,
  data_dir: str,
  image_size: int = 128,
  max_clips: int | None = None,
  max_frames: int | None = None,
  actors: Sequence[int] | None = None,
  num_workers: int = 0,
  options: dict | None = None,
  **builder_kwargs,
):
  """Checks ``manual_dir`` (clear error first), then builds; returns the builder
  (options: as ``mead.build``'s)."""
  return mead.build(
    manual_dir,
    data_dir,
    CremaD,
    scan_manual_dir,
    image_size,
    max_clips,
    max_frames,
    actors,
    num_workers,
    options,
    **builder_kwargs,
  )
