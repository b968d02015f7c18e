"""Frame-level records (MEAD, CREMA-D), the frame sources the pipeline reads, ``read_clips``.

One array_record record per video frame, so a training example reads two small records
(target and reference frame) instead of two whole clips. Feature dict of a record
(``frame_features``; S = the builder config's image size):

  image                Tensor () bytes   the aligned S x S RGB crop as JPEG, quality
                                         ``JPEG_QUALITY`` (95, 4:2:0): at 256 x 256 on the
                                         test photos 26 KiB and 0.7 ms to decode, 40 dB
                                         PSNR; PNG was 109 KiB and 4.0 ms; raw 192 KiB
  landmarks            (68, 2) float32   dlib's 68 points in crop pixels (smoothed track)
  landmarks_replaced   bool              the frame's points were interpolated
  audio                (n,)    float32   the clip's waveform samples [audio_offset,
                                         audio_offset + n) that this frame's log-mel window
                                         needs (for windows up to ``audio_window_s``);
                                         features are computed when read
                                         (``pipeline.MelWindow``)
  audio_offset         int64             first sample of ``audio`` in the clip
  num_samples          int64             the clip's audio length (T * sample_rate / fps)
  matrix               (2, 3)  float32   the clip's alignment: source-frame -> crop pixels
  emotion              (8,)    float32   one-hot x intensity (``labels``)
  identity, clip_id    int64             ``labels``' stable ids
  frame, num_frames    int64             this frame's index and its clip's length T
  is_neutral_reference bool              the clip is neutral (references come from these)
  actor, level, source Text              "M003", "level_2", the video's relative path
  (CREMA-D adds ``sentence``.)

The face mask is not stored: it is the landmark hull ``faces.align.face_hull_mask``,
15 us to draw at 256 x 256 when read.

Order and index: the builders disable TFDS's shuffling and give frame f of the c-th
written clip a key that sorts as (c, f), so the records of a clip are contiguous and in
frame order: clip c holds records [first_record[c], first_record[c] + num_frames[c]).
Keys are spread over TFDS's 128-bit key space (``SplitIndex.key``) so its on-disk sort
buckets stay small. Per split, the clip table (``pipeline.ClipIndex`` columns, plus
first_record, actor, source) and the audio/video length report are written at build time
to the dataset's ``metadata.json`` (``frame_index`` / ``av_length``), so a loader on a
pod reads one small file instead of scanning every record.

Audio/video lengths: a clip whose audio is shorter or longer than its video by more than
one frame period is counted; one off by more than ``MAX_AV_MISMATCH_FRAMES`` (5 frames,
0.2 s: one audio window, past which the last frames' windows would hold only padding or
audio of nothing on screen) is skipped with a warning naming its file. Kept clips get
their audio trimmed / zero-padded to the video.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import json
import logging
import os
import re

import cv2
import numpy as np
import tensorflow_datasets as tfds

from emotalker_jax.emotions import NUM_EMOTIONS
from emotalker_jax.faces import align

log = logging.getLogger(__name__)

RECORD_FORMAT = "frame"  # metadata.json "record_format" of frame-level datasets
JPEG_QUALITY = 95
AUDIO_WINDOW_S = 0.2  # audio stored per frame covers log-mel windows up to this long
MAX_AV_MISMATCH_FRAMES = 5.0  # clips whose audio and video differ by more are skipped
MAX_CLIP_FRAMES = 8192  # frames per clip the key scheme holds (5.5 min at 25 fps)
WORST_CLIPS = 10  # clips listed in the length report
INDEX_COLUMNS = ("num_frames", "identity", "clip_id", "reference", "neutral")


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
def frame_features(image_size: int, extra: dict | None = None) -> tfds.features.FeaturesDict:
  """The record's TFDS features (module doc); no TensorFlow needed to write or read them."""
  del image_size  # the JPEG holds the size; kept so builders state it
  f = tfds.features
  d = {
    "image": f.Tensor(shape=(), dtype=np.object_),
    "landmarks": f.Tensor(shape=(68, 2), dtype=np.float32),
    "landmarks_replaced": f.Scalar(dtype=np.bool_),
    "audio": f.Tensor(shape=(None,), dtype=np.float32),
    "audio_offset": f.Scalar(dtype=np.int64),
    "num_samples": f.Scalar(dtype=np.int64),
    "matrix": f.Tensor(shape=(2, 3), dtype=np.float32),
    "emotion": f.Tensor(shape=(NUM_EMOTIONS,), dtype=np.float32),
    "identity": f.Scalar(dtype=np.int64),
    "clip_id": f.Scalar(dtype=np.int64),
    "frame": f.Scalar(dtype=np.int64),
    "num_frames": f.Scalar(dtype=np.int64),
    "is_neutral_reference": f.Scalar(dtype=np.bool_),
    "actor": f.Text(),
    "level": f.Text(),
    "source": f.Text(),
  }
  d.update(extra or {})
  return f.FeaturesDict(d)


def encode_frame(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """(S, S, 3) uint8 RGB -> JPEG bytes."""
  ok, buf = cv2.imencode(
    ".jpg",
    cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR),
    [cv2.IMWRITE_JPEG_QUALITY, int(quality)],
  )
  if not ok:
    raise ValueError(f"JPEG encoding failed for a frame of shape {np.shape(frame)}")
  return buf.tobytes()


def decode_frame(data: bytes) -> np.ndarray:
  """JPEG (or PNG) bytes -> (S, S, 3) uint8 RGB."""
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if img is None:
    raise ValueError(f"cannot decode a stored frame ({len(data)} bytes): the record is corrupt")
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def length_status(av: dict, max_mismatch: float = MAX_AV_MISMATCH_FRAMES) -> str:
  """'ok' (|audio - video| <= 1 frame), 'fitted' (<= max_mismatch: trimmed / padded) or
  'skipped'."""
  d = abs(float(av["diff_frames"]))
  return "ok" if d <= 1.0 else ("fitted" if d <= max_mismatch else "skipped")


class SplitIndex:
  """The side-file rows of one split, filled while its records are generated.

  ``add_clip`` gives the clip its position c (clips in the order written) and ``key(c, f)``
  the TFDS key of its frame f; ``note_length`` collects the length report; ``to_json``
  gives {frame_index: columns, av_length: report}."""

  def __init__(self, split: str, num_clips: int, max_mismatch: float = MAX_AV_MISMATCH_FRAMES):
    self.split, self.max_mismatch = split, float(max_mismatch)
    self.stride = 2**127 // (max(1, int(num_clips)) * MAX_CLIP_FRAMES)
    self.rows = {k: [] for k in INDEX_COLUMNS + ("first_record", "actor", "source")}
    self.lengths: list[dict] = []
    self.no_face: list[str] = []

  def key(self, clip_pos: int, frame: int) -> int:
    return (int(clip_pos) * MAX_CLIP_FRAMES + int(frame)) * self.stride

  def add_clip(self, ex: dict, num_frames: int) -> int:
    r = self.rows
    r["first_record"].append(int(sum(r["num_frames"])))
    r["num_frames"].append(int(num_frames))
    r["identity"].append(int(ex["identity"]))
    r["clip_id"].append(int(ex["clip_id"]))
    r["reference"].append(bool(ex["is_neutral_reference"]))
    e = np.asarray(ex["emotion"], np.float32)
    r["neutral"].append(bool(e[0] > 0 and not np.any(e[1:] > 0)))
    r["actor"].append(str(ex["actor"]))
    r["source"].append(str(ex["source"]))
    return len(r["num_frames"]) - 1

  def note_length(self, source: str, av: dict) -> str:
    status = length_status(av, self.max_mismatch)
    self.lengths.append({"source": source, **av, "status": status})
    return status

  def report(self) -> dict:
    by = {s: [x for x in self.lengths if x["status"] == s] for s in ("ok", "fitted", "skipped")}
    off = [x for x in self.lengths if x["status"] != "ok"]
    worst = sorted(self.lengths, key=lambda x: -abs(x["diff_frames"]))[:WORST_CLIPS]
    return {
      "clips_checked": len(self.lengths),
      "within_one_frame": len(by["ok"]),
      "fitted": len(by["fitted"]),
      "skipped": len(by["skipped"]),
      "audio_shorter": sum(x["diff_frames"] < -1.0 for x in off),
      "audio_longer": sum(x["diff_frames"] > 1.0 for x in off),
      "max_abs_diff_frames": max((abs(x["diff_frames"]) for x in self.lengths), default=0.0),
      "max_mismatch_frames": self.max_mismatch,
      "skipped_sources": [x["source"] for x in by["skipped"]],
      "no_face_sources": list(self.no_face),
      "worst": [x for x in worst if x["status"] != "ok"],
    }

  def to_json(self) -> dict:
    return {"frame_index": self.rows, "av_length": self.report()}


def clip_examples(
  arrays: dict, ex: dict, clip_pos: int, index: SplitIndex, ranges: np.ndarray
) -> Iterator[tuple[int, dict]]:
  """(key, record) for every frame of one aligned clip (``video_io.load_clip``'s arrays
  with ``images``: the JPEG bytes per frame); ``ex``: the clip's labels (module doc);
  ``ranges`` (T, 2): the [lo, hi) audio samples each frame's window needs."""
  audio = arrays["audio"]
  t = len(arrays["images"])
  for f in range(t):
    lo, hi = int(ranges[f, 0]), int(ranges[f, 1])
    yield (
      index.key(clip_pos, f),
      {
        **ex,
        "image": arrays["images"][f],
        "landmarks": arrays["landmarks"][f],
        "landmarks_replaced": bool(arrays["landmarks_replaced"][f]),
        "audio": audio[lo:hi],
        "audio_offset": lo,
        "num_samples": int(audio.shape[0]),
        "matrix": arrays["matrix"],
        "frame": f,
        "num_frames": t,
      },
    )


def log_length_report(name: str, split: str, rep: dict) -> None:
  log.info(
    "%s/%s audio vs video: %d clips checked, %d within one frame, %d trimmed/padded "
    "(<= %g frames off), %d skipped (more); %d without a face; worst (source, audio - video "
    "frames): %s",
    name,
    split,
    rep["clips_checked"],
    rep["within_one_frame"],
    rep["fitted"],
    rep["max_mismatch_frames"],
    rep["skipped"],
    len(rep["no_face_sources"]),
    [(w["source"], w["diff_frames"]) for w in rep["worst"][:3]],
  )


# ---------------------------------------------------------------------------------------
# Opening prepared data
# ---------------------------------------------------------------------------------------
def _prepared_configs(name: str, data_dir: str | None) -> list[str]:
  root = os.path.join(data_dir or "", name)
  if not os.path.isdir(root):
    return []
  return sorted(
    d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
  )


def open_source(dataset: str, split: str, data_dir: str | None = None):
  """A random-access tfds source over one split of a prepared array_record dataset.

  ``dataset`` is a tfds name (``"synthetic_talk/tiny"``, ``"mead/res64"``; a bare
  ``"mead"`` when exactly one config of it is prepared) looked up in ``data_dir`` from the
  prepared files (no builder code needed), or a path to a prepared version directory
  (``.../synthetic_talk/tiny/<version>``). Returns (source, builder_dir).
  """
  if os.path.isfile(os.path.join(dataset, "dataset_info.json")):
    builder = tfds.builder_from_directory(dataset)
  else:
    if "/" not in dataset and data_dir:
      configs = _prepared_configs(dataset, data_dir)
      has_version = any(re.fullmatch(r"\d+\.\d+\.\d+", c) for c in configs)
      if len(configs) > 1 and not has_version:
        raise ValueError(
          f"dataset {dataset!r} has several prepared configs in {data_dir!r} "
          f"({', '.join(configs)}); name one, e.g. {dataset}/{configs[0]}"
        )
      if len(configs) == 1 and not has_version:
        dataset = f"{dataset}/{configs[0]}"
    try:
      builder = tfds.core.read_only_builder.builder_from_files(dataset, data_dir=data_dir)
    except Exception as e:  # tfds raises its own DatasetNotFoundError / FileNotFoundError
      raise FileNotFoundError(
        f"dataset {dataset!r} is not prepared in data_dir {data_dir!r} ({e}); build it "
        "first (e.g. `emotalker synth --out DIR --size tiny` for synthetic_talk, or "
        "`emotalker prepare mead|crema_d`) and pass --config.data.data_dir=DIR"
      ) from None
  fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
  if fmt != "array_record":
    raise ValueError(
      f"dataset {dataset!r} is stored as {builder.info.file_format}; the grain "
      "pipeline needs file_format='array_record' (rebuild it with that format)"
    )
  if split not in builder.info.splits and not re.match(r"^\w+\[.*\]$", split):
    raise ValueError(
      f"dataset {dataset!r} has no split {split!r}; it has {', '.join(builder.info.splits)}"
    )
  return builder.as_data_source(split=split), str(builder.data_dir)


def read_metadata(builder_dir: str) -> dict:
  """The dataset's ``metadata.json`` ({} when there is none)."""
  path = os.path.join(builder_dir, "metadata.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def is_frame_dataset(builder_dir: str) -> bool:
  return read_metadata(builder_dir).get("record_format") == RECORD_FORMAT


def load_index(builder_dir: str, split: str) -> dict:
  """The split's clip table from the side file: {column: list}, ``INDEX_COLUMNS`` plus
  first_record, actor, source (one entry per clip, in record order)."""
  meta = read_metadata(builder_dir)
  table = meta.get("frame_index", {}).get(split)
  if table is None:
    raise ValueError(
      f"frame-level dataset {builder_dir!r} has no index for split {split!r} in its "
      f"metadata.json (it has {sorted(meta.get('frame_index', {}))}); frame-level splits "
      "are read whole (no slices such as train[:10%])"
    )
  first = np.concatenate([[0], np.cumsum(table["num_frames"])[:-1]]).astype(np.int64)
  if not np.array_equal(first, np.asarray(table["first_record"], np.int64)):
    raise ValueError(f"the frame index of {builder_dir!r} ({split}) is inconsistent; rebuild it")
  return table


def check_records(builder, clips: int = 8) -> None:
  """Reads the first and last frame of up to ``clips`` clips per split of a freshly built
  frame-level dataset and checks them against its side file: RuntimeError when TFDS wrote
  the records in another order than the keys promise."""
  builder_dir = str(builder.data_dir)
  for split in builder.info.splits:
    table = load_index(builder_dir, split)
    src = builder.as_data_source(split)
    n = len(table["num_frames"])
    for c in np.unique(np.linspace(0, n - 1, min(n, clips)).astype(int)).tolist():
      for f in (0, int(table["num_frames"][c]) - 1):
        r = src[int(table["first_record"][c]) + f]
        if (int(r["clip_id"]), int(r["frame"])) != (int(table["clip_id"][c]), f):
          raise RuntimeError(
            f"{builder_dir} ({split}): record {int(table['first_record'][c]) + f} holds clip "
            f"{int(r['clip_id'])} frame {int(r['frame'])}, not clip {table['clip_id'][c]} "
            f"frame {f}: TFDS did not keep the key order"
          )


# ---------------------------------------------------------------------------------------
# Frame sources: what pipeline.MakeExample reads, over per-clip or per-frame records
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Frame:
  """One frame of a clip, whatever the record layout.

  image (S, S, 3) uint8; face_mask (S, S) uint8 {0, 1}; landmarks (68, 2) float32 pixels
  of ``image`` or None; mouth_open float (-1: unknown); emotion (8,) float32; identity int;
  audio (n,) float32: the clip's samples [audio_offset, audio_offset + n) (a whole clip
  for per-clip records); num_samples: the clip's audio length."""

  image: np.ndarray
  face_mask: np.ndarray
  landmarks: np.ndarray | None
  mouth_open: float
  emotion: np.ndarray
  identity: int
  audio: np.ndarray
  audio_offset: int
  num_samples: int


class ClipRecords:
  """Frames of per-clip records (synthetic_talk's layout: ``frames`` (T, S, S, 3), ``face_mask``
  (T, S, S), optional ``landmarks`` / ``mouth_open``, ``audio`` of the whole clip), through a
  per-process LRU cache of at most ``cache_mb`` MiB of decoded clips."""

  def __init__(self, source, index, cache_mb: float = 256.0):
    self.source, self.index = source, index
    self.cache_bytes = int(cache_mb * 2**20)
    self._cache: dict[int, tuple[dict, int]] = {}
    self._cached_bytes = 0

  def __getstate__(self):
    d = dict(self.__dict__)
    d["_cache"], d["_cached_bytes"] = {}, 0
    return d

  def _read(self, record: int) -> dict:
    hit = self._cache.pop(record, None)
    if hit is None:
      r = self.source[record]
      hit = (r, sum(int(getattr(v, "nbytes", 8)) for v in r.values()))
      self._cached_bytes += hit[1]
    self._cache[record] = hit  # most recent last
    while self._cached_bytes > self.cache_bytes and self._cache:
      self._cached_bytes -= self._cache.pop(next(iter(self._cache)))[1]
    return hit[0]

  def frame(self, clip: int, f: int) -> Frame:
    rec = self._read(clip)
    audio = rec["audio"]
    return Frame(
      image=rec["frames"][f],
      face_mask=rec["face_mask"][f],
      landmarks=rec["landmarks"][f] if "landmarks" in rec else None,
      mouth_open=float(rec["mouth_open"][f]) if "mouth_open" in rec else -1.0,
      emotion=np.asarray(rec["emotion"], np.float32),
      identity=int(rec["identity"]),
      audio=audio,
      audio_offset=0,
      num_samples=int(audio.shape[0]),
    )


class FrameRecords:
  """Frames of frame-level records (module doc): frame f of clip c is record
  ``index.offsets[c] + f``; the JPEG is decoded and the face mask drawn from the landmarks."""

  def __init__(self, source, index):
    self.source, self.index = source, index
    if len(source) != index.total_frames:
      raise ValueError(
        f"the frame index lists {index.total_frames} frames but the split holds "
        f"{len(source)} records; rebuild the dataset"
      )

  def frame(self, clip: int, f: int) -> Frame:
    r = self.source[int(self.index.offsets[clip]) + int(f)]
    if int(r["clip_id"]) != int(self.index.clip_id[clip]) or int(r["frame"]) != f:
      raise ValueError(
        f"record {int(self.index.offsets[clip]) + f} holds clip {int(r['clip_id'])} frame "
        f"{int(r['frame'])}, the index says clip {int(self.index.clip_id[clip])} frame {f}; "
        "the metadata.json does not belong to these records: rebuild the dataset"
      )
    image = decode_frame(r["image"])
    points = np.asarray(r["landmarks"], np.float32)
    return Frame(
      image=image,
      face_mask=align.face_hull_mask(points, image.shape[0]),
      landmarks=points,
      mouth_open=-1.0,
      emotion=np.asarray(r["emotion"], np.float32),
      identity=int(r["identity"]),
      audio=np.asarray(r["audio"], np.float32),
      audio_offset=int(r["audio_offset"]),
      num_samples=int(r["num_samples"]),
    )


# ---------------------------------------------------------------------------------------
# Whole clips back (evaluation on real faces)
# ---------------------------------------------------------------------------------------
def read_clips(
  dataset_name: str, split: str, data_dir: str | None = None, max_clips: int | None = None
) -> Iterator[dict]:
  """Yields one dict per clip of a prepared frame-level split, in record order:

  ``clip_id`` int, ``identity`` int, ``actor`` str, ``emotion`` (8,) float32, ``frames``
  (T, S, S, 3) uint8 (the decoded JPEGs), ``landmarks`` (T, 68, 2) float32 crop pixels,
  ``audio`` (T * sample_rate / fps,) float32 (stitched from the per-frame slices),
  ``sample_rate`` int, ``fps`` float, ``is_neutral_reference`` bool; and ``source`` str
  (the video's relative path), ``matrix`` (2, 3) float32 (source-frame -> crop pixels).

  dataset_name: ``"mead/res256"`` (or ``"mead"`` when one config is prepared) in
  ``data_dir``, or a prepared version directory. Raises ValueError for a per-clip dataset.
  """
  source, builder_dir = open_source(dataset_name, split, data_dir)
  meta = read_metadata(builder_dir)
  if meta.get("record_format") != RECORD_FORMAT:
    raise ValueError(
      f"dataset {dataset_name!r} is not frame-level (no record_format={RECORD_FORMAT!r} in "
      f"{builder_dir}/metadata.json); read_clips reads what `emotalker prepare mead|crema_d` "
      "builds"
    )
  table = load_index(builder_dir, split)
  n = (
    len(table["num_frames"]) if max_clips is None else min(int(max_clips), len(table["num_frames"]))
  )
  for c in range(n):
    first, t = int(table["first_record"][c]), int(table["num_frames"][c])
    recs = [source[first + f] for f in range(t)]
    if [int(r["frame"]) for r in recs] != list(range(t)) or any(
      int(r["clip_id"]) != int(table["clip_id"][c]) for r in recs
    ):
      raise ValueError(
        f"records of clip {table['clip_id'][c]} in {builder_dir} are out of order; rebuild"
      )
    total = int(recs[0]["num_samples"])
    audio, covered = np.zeros(total, np.float32), np.zeros(total, bool)
    for r in recs:
      lo = int(r["audio_offset"])
      audio[lo : lo + len(r["audio"])] = r["audio"]
      covered[lo : lo + len(r["audio"])] = True
    if not covered.all():
      raise ValueError(
        f"the stored audio windows of clip {table['clip_id'][c]} do not cover its audio "
        f"({int((~covered).sum())} of {total} samples missing)"
      )
    r0 = recs[0]
    yield {
      "clip_id": int(r0["clip_id"]),
      "identity": int(r0["identity"]),
      "actor": r0["actor"].decode() if isinstance(r0["actor"], bytes) else str(r0["actor"]),
      "emotion": np.asarray(r0["emotion"], np.float32),
      "frames": np.stack([decode_frame(r["image"]) for r in recs]),
      "landmarks": np.stack([np.asarray(r["landmarks"], np.float32) for r in recs]),
      "audio": audio,
      "sample_rate": int(meta["sample_rate"]),
      "fps": float(meta["fps"]),
      "is_neutral_reference": bool(r0["is_neutral_reference"]),
      "source": r0["source"].decode() if isinstance(r0["source"], bytes) else str(r0["source"]),
      "matrix": np.asarray(r0["matrix"], np.float32),
    }
