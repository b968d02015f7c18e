"""grain pipelines: TFDS array_record records (per clip or per frame) -> training batches.

A training example is one video frame (METHOD.md, "Training example"):

  x_tgt        (H, W, 3) float32 in [-1, 1]  the target frame tau of clip c (identity i)
  x_ref        (H, W, 3) float32 in [-1, 1]  a reference frame of identity i (below)
  x_mask       (H, W, 3) float32 in [-1, 1]  x_tgt with ``mask_region`` set to ``fill`` (0)
  face_mask    (H, W)    float32 {0, 1}      the face region of x_tgt (per-clip records: the
                                             stored mask; frame-level records: the hull of
                                             its landmarks, ``faces.align.face_hull_mask``)
  mask_region  (H, W)    float32 {0, 1}      the blanked region: the face (``mask='face'``)
                                             or the lower half of its box (``'lower_face'``)
  mouth_region (H, W)    float32 {0, 1}      the mouth's box: landmarks 48-67 (iBUG layout)
                                             grown by MOUTH_PAD_PX; without landmarks the
                                             lower half of the face box (``mouth_region``)
  eyes_region  (H, W)    float32 {0, 1}      the box of the brows and eyes: landmarks 17-26,
                                             36-47; without landmarks the upper half of the
                                             face box (``eyes_region``)
  audio_mel    (W, n_mels) float32           log-mel window centred on frame tau
                                             (``emotalker_jax.audio``: 21 x 80 for 0.2 s)
  emotion      (8,) float32                  intensities s of the clip, MEAD order
  prompt       str                           a text describing s: by default a FED prompt
                                             (``emotalker_jax.fed.describe(s, rng)``)
  prompt_emotion (8,) float32                the prompt's own label (FED: s rounded to its
                                             degree grid; plain-string prompt_fn: s)
  identity     int32
  mouth_open   float32                       ground-truth mouth opening; -1 if unknown
  clip_id, frame, ref_clip_id, ref_frame  int32   provenance (tests, debugging)

After batching every leaf gets a leading batch axis; ``prompt`` becomes a numpy unicode
array (B,) (``list(batch["prompt"])`` gives the strings for a tokenizer).

Reference frame x_ref, first rule that applies (rng-driven, so deterministic per seed):
  1. a random frame of a random *reference clip* of the identity other than the target clip
     (``is_neutral_reference`` in the record; datasets without the flag: neutral clips);
  2. a random frame of another neutral clip of the identity;
  3. a random frame of the same clip at least ``ref_min_gap`` (60) frames from tau;
  4. a random frame of another clip of the identity;
  5. the frame of the same clip farthest from tau.

Index: the clips are expanded to a flat index of frames (``ClipIndex``: cumulative frame
counts, ``locate`` by binary search); grain's ``IndexSampler`` shuffles and repeats that
index, ``ShardOptions`` splits it between processes, a ``RandomMapTransform``
(``MakeExample``) reads the target and reference frames through a frame source
(``frame_records``: ``ClipRecords`` over per-clip records such as synthetic_talk's, with a
per-process LRU cache of ``cache_mb`` MiB of decoded clips; ``FrameRecords`` over
MEAD / CREMA-D's frame-level records, where flat frame f of clip c is record
offsets[c] + f) and builds the example with the per-record rng grain derives from the seed.
Clip metadata (frame count, identity, flags): frame-level datasets carry it in their
metadata.json (written at build time); per-clip datasets are read once per split and
cached as JSON beside the dataset (``clip_index.<split>.json``) when that directory is
writable.

Batches are per process: ``global_batch // process_count``. grain's DataLoader gives
every process the same number of examples per epoch, so with P processes an epoch (the
evaluation loaders, ``train=False``) skips up to P - 1 frames. The iterator is
checkpointable: ``it.get_state()`` / ``it.set_state(state)`` (bytes), or grain's
``PyGrainCheckpointHandler`` in orbax. Each example depends only on (seed, position in
the stream); grain batches inside each worker, so which examples share a batch depends on
``worker_count``: keep it fixed across a resume (grain checks it).

Benchmark: ``emotalker pipeline-bench --workers 0,1,2`` (``benchmark_report``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import time
from typing import Any

from absl import flags
import cv2
import grain
import grain.python as gp
import jax
import numpy as np
from tqdm import tqdm

from emotalker_jax import audio as A
from emotalker_jax import fed
from emotalker_jax.emotions import EMOTIONS
from input_pipeline import frame_records, synthetic_talk
from input_pipeline.frame_records import open_source

MASK_MODES = ("face", "lower_face")
REF_MIN_GAP = 60  # frames between target and same-clip reference
REFERENCE_FLAG_KEYS = ("is_neutral_reference",)
MOUTH_LANDMARKS = slice(48, 68)  # iBUG 300-W / dlib 68-point layout: outer + inner lips
MOUTH_PAD_PX = 0  # the mouth box grows by this much on each side (px)
# Brows (17-26) and eyes (36-47): where surprise, fear, sadness and anger differ.
EYES_LANDMARKS = np.r_[17:27, 36:48]
# prompt_fn(s (8,), rng) -> str, or an object with .prompt (str) and .intensities (8,)
PromptFn = Callable[[np.ndarray, np.random.Generator], Any]


# ---------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------
_ADJECTIVES = {
  "neutral": "neutral",
  "angry": "angry",
  "contempt": "contemptuous",
  "disgusted": "disgusted",
  "fear": "fearful",
  "happy": "happy",
  "sad": "sad",
  "surprised": "surprised",
}
_TEMPLATES = (
  "{}",
  "a face that looks {}",
  "looking {}",
  "a person who is {}",
  "{} expression",
  "speaking while {}",
)


def simple_prompt(intensities: np.ndarray, rng: np.random.Generator) -> str:
  """A short description of an intensity vector (8,): "a slightly sad and very fearful face".

  Fallback used when ``emotalker_jax.fed`` offers no ``describe(s, rng)``. Emotions above
  0.05 are named in decreasing intensity with an adverb for the strength
  (<0.45 "slightly", <0.8 "", else "very"); all-zero -> "neutral".
  """
  s = np.asarray(intensities, np.float32).reshape(-1)
  order = [int(k) for k in np.argsort(-s, kind="stable") if s[k] > 0.05]
  if not order:
    order = [0]
  words = []
  for k in order:
    adj = _ADJECTIVES[EMOTIONS[k]]
    if EMOTIONS[k] != "neutral":
      adv = "slightly " if s[k] < 0.45 else ("" if s[k] < 0.8 else "very ")
      adj = adv + adj
    words.append(adj)
  desc = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
  return _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(desc)


def fed_prompt(intensities: np.ndarray, rng: np.random.Generator):
  """A FED prompt for s: ``emotalker_jax.fed.describe(s, rng)`` (a FedRecord with
  ``.prompt`` and ``.intensities``, the prompt's own label: s rounded to FED's degree grid)."""
  return fed.describe(intensities, rng)


def default_prompt_fn() -> PromptFn:
  """``fed_prompt``: FED's descriptions of the clip's intensities."""
  return fed_prompt


# ---------------------------------------------------------------------------------------
# The flat frame index
# ---------------------------------------------------------------------------------------
def _num_frames(record: dict) -> int:
  for key in ("frames", "mouth_open", "face_mask"):
    if key in record:
      return int(np.shape(record[key])[0])
  raise ValueError("record has no 'frames' feature")


def _reference_flag(record: dict) -> bool:
  for key in REFERENCE_FLAG_KEYS:
    if key in record:
      return bool(record[key])
  return _is_neutral(record["emotion"])


def _is_neutral(emotion) -> bool:
  e = np.asarray(emotion, np.float32).reshape(-1)
  return bool(e[0] > 0 and not np.any(e[1:] > 0))


@dataclasses.dataclass
class ClipIndex:
  """Per-clip metadata of a split (C clips, in record order) and the flat frame index.

  num_frames, identity, clip_id: (C,) int64; reference, neutral: (C,) bool;
  offsets: (C + 1,) int64 cumulative frame counts (flat index f of clip c: offsets[c] + f).
  """

  num_frames: np.ndarray
  identity: np.ndarray
  clip_id: np.ndarray
  reference: np.ndarray
  neutral: np.ndarray

  def __post_init__(self):
    self.num_frames = np.asarray(self.num_frames, np.int64)
    self.identity = np.asarray(self.identity, np.int64)
    self.clip_id = np.asarray(self.clip_id, np.int64)
    self.reference = np.asarray(self.reference, bool)
    self.neutral = np.asarray(self.neutral, bool)
    self.offsets = np.concatenate([[0], np.cumsum(self.num_frames)]).astype(np.int64)
    self._by_identity = {}
    for c, i in enumerate(self.identity.tolist()):
      self._by_identity.setdefault(i, []).append(c)
    self._by_identity = {i: np.asarray(v, np.int64) for i, v in self._by_identity.items()}

  @property
  def num_clips(self) -> int:
    return int(self.num_frames.shape[0])

  @property
  def total_frames(self) -> int:
    return int(self.offsets[-1])

  def locate(self, flat: int) -> tuple[int, int]:
    """Flat frame index -> (record index, frame index in the clip)."""
    if not 0 <= flat < self.total_frames:
      raise IndexError(f"frame index {flat} outside [0, {self.total_frames})")
    c = int(np.searchsorted(self.offsets, flat, side="right") - 1)
    return c, int(flat - self.offsets[c])

  def clips_of(self, identity: int) -> np.ndarray:
    return self._by_identity.get(int(identity), np.zeros(0, np.int64))

  def to_json(self) -> dict:
    return {
      k: getattr(self, k).tolist()
      for k in ("num_frames", "identity", "clip_id", "reference", "neutral")
    }

  @classmethod
  def from_json(cls, d: dict) -> ClipIndex:
    return cls(**{k: d[k] for k in ("num_frames", "identity", "clip_id", "reference", "neutral")})

  @classmethod
  def from_source(
    cls, source, cache_dir: str | None = None, split: str = "", progress: bool = False
  ) -> ClipIndex:
    """Reads every record once (or the JSON cache ``<cache_dir>/clip_index.<split>.json``)."""
    n = len(source)
    cache = None
    if cache_dir:
      tag = re.sub(r"[^\w.-]+", "_", split) or "split"
      if tag != split:
        tag += "-" + hashlib.sha1(split.encode()).hexdigest()[:8]
      cache = os.path.join(cache_dir, f"clip_index.{tag}.json")
      if os.path.isfile(cache):
        try:
          with open(cache) as f:
            d = json.load(f)
          if len(d["num_frames"]) == n:
            return cls.from_json(d)
        except (OSError, ValueError, KeyError):
          pass
    rows = {"num_frames": [], "identity": [], "clip_id": [], "reference": [], "neutral": []}
    it = range(n)
    if progress:
      it = tqdm(it, desc=f"indexing clips ({split})", unit="clip")
    for i in it:
      r = source[i]
      rows["num_frames"].append(_num_frames(r))
      rows["identity"].append(int(r["identity"]))
      rows["clip_id"].append(int(r.get("clip_id", i)))
      rows["reference"].append(_reference_flag(r))
      rows["neutral"].append(_is_neutral(r["emotion"]))
    index = cls(**rows)
    if cache:
      tmp = f"{cache}.{os.getpid()}.tmp"
      try:
        with open(tmp, "w") as f:
          json.dump(index.to_json(), f)
        os.replace(tmp, cache)  # atomic: concurrent writers write identical content
      except OSError:
        pass
    return index


def choose_reference(
  index: ClipIndex, clip: int, frame: int, rng: np.random.Generator, min_gap: int = REF_MIN_GAP
) -> tuple[int, int]:
  """(record, frame) of the reference for target (clip, frame), by the module doc's rules."""
  same_id = index.clips_of(index.identity[clip])
  others = same_id[same_id != clip]
  for pool in (others[index.reference[others]], others[index.neutral[others]]):
    if pool.size:
      c = int(pool[rng.integers(pool.size)])
      return c, int(rng.integers(index.num_frames[c]))
  t = int(index.num_frames[clip])
  far = np.flatnonzero(np.abs(np.arange(t) - frame) >= min_gap)
  if far.size:
    return clip, int(far[rng.integers(far.size)])
  if others.size:
    c = int(others[rng.integers(others.size)])
    return c, int(rng.integers(index.num_frames[c]))
  return clip, (0 if frame >= t - 1 - frame else t - 1)


# ---------------------------------------------------------------------------------------
# Per-example transforms (numpy; run in grain worker processes)
# ---------------------------------------------------------------------------------------
def to_float_image(frame: np.ndarray, size: int | None = None) -> np.ndarray:
  """uint8 (h, w, 3) -> float32 (size, size, 3) in [-1, 1] (cv2 INTER_AREA when shrinking)."""
  frame = np.asarray(frame)
  if size is not None and frame.shape[:2] != (size, size):
    interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR
    frame = cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=interp)
  return frame.astype(np.float32) / 127.5 - 1.0


def binary_mask(mask: np.ndarray, size: int | None = None) -> np.ndarray:
  """A face mask (h, w) of {0,1} or {0,255} -> float32 {0, 1} at (size, size)."""
  m = np.asarray(mask, np.float32)
  if m.size and m.max() > 1.0:
    m = m / 255.0
  if size is not None and m.shape != (size, size):
    interp = cv2.INTER_AREA if m.shape[0] > size else cv2.INTER_LINEAR
    m = cv2.resize(m, (size, size), interpolation=interp)
  return (m >= 0.5).astype(np.float32)


def mask_region(face_mask: np.ndarray, mode: str) -> np.ndarray:
  """The region of a frame to blank: (H, W) float32 {0, 1}.

  ``'face'``: the face mask itself. ``'lower_face'`` (DiffTalk's): the lower half of the
  face mask's bounding box, rows ``[(y0 + y1) // 2, y1)`` x columns ``[x0, x1)``; with an
  empty face mask, the lower half of the frame.
  """
  if mode == "face":
    return face_mask.astype(np.float32)
  if mode != "lower_face":
    raise ValueError(f"mask mode {mode!r} is not one of {', '.join(MASK_MODES)}")
  h, w = face_mask.shape
  out = np.zeros((h, w), np.float32)
  rows, cols = np.flatnonzero(face_mask.any(1)), np.flatnonzero(face_mask.any(0))
  if rows.size == 0:
    out[h // 2 :] = 1.0
    return out
  y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
  out[(y0 + y1) // 2 : y1, x0:x1] = 1.0
  return out


def _landmark_box(
  face_mask: np.ndarray, landmarks, index, scale: float, pad: int, fallback: np.ndarray
) -> np.ndarray:
  """The box of ``landmarks[index]`` (scaled, grown by ``pad`` px, clipped to the frame) as
  an (H, W) float32 {0, 1} map; ``fallback`` when there are no (finite) landmarks."""
  h, w = face_mask.shape
  pts = None if landmarks is None else np.asarray(landmarks, np.float32)[index]
  if pts is None or pts.size == 0 or not np.all(np.isfinite(pts)):
    return fallback
  pts = pts * np.float32(scale)
  x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
  x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, w)
  y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
  y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, h)
  out = np.zeros((h, w), np.float32)
  out[y0:y1, x0:x1] = 1.0
  return out


def mouth_region(
  face_mask: np.ndarray,
  landmarks: np.ndarray | None = None,
  scale: float = 1.0,
  pad: int = MOUTH_PAD_PX,
) -> np.ndarray:
  """The mouth's box as an (H, W) float32 {0, 1} map (the train step's mouth loss weight).

  landmarks: (68, 2) pixel (x, y) in the iBUG layout, at ``scale`` times the resolution of
  ``face_mask`` (H, W); the box spans points 48-67 and grows by ``pad`` pixels. None (a
  dataset without landmarks) or non-finite points: the lower half of the face box.
  """
  return _landmark_box(
    face_mask, landmarks, MOUTH_LANDMARKS, scale, pad, mask_region(face_mask, "lower_face")
  )


def eyes_region(
  face_mask: np.ndarray,
  landmarks: np.ndarray | None = None,
  scale: float = 1.0,
  pad: int = MOUTH_PAD_PX,
) -> np.ndarray:
  """The box of the brows and eyes (points 17-26, 36-47) as an (H, W) float32 {0, 1} map
  (the train step's eyes loss weight); arguments as ``mouth_region``. Without landmarks:
  the face box minus its lower half (``mask_region(..., 'lower_face')``)."""
  face = face_mask > 0
  box = np.zeros(face.shape, np.float32)
  rows, cols = np.flatnonzero(face.any(1)), np.flatnonzero(face.any(0))
  if rows.size:
    box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1.0
  upper = box * (1.0 - mask_region(face_mask, "lower_face"))
  return _landmark_box(face_mask, landmarks, EYES_LANDMARKS, scale, pad, upper)


class MelWindow:
  """The log-mel window of one video frame, in numpy, equal to ``emotalker_jax.audio``'s
  ``audio_features(audio, T)[frame]`` (same STFT, HTK filterbank, log floor, alignment),
  computed from only the samples the window needs: (W, n_mels) float32."""

  def __init__(
    self, fps: float = 25.0, window_s: float = 0.2, sample_rate: int = 16000, n_mels: int = 80
  ):
    self.fps, self.window_s, self.sr = float(fps), float(window_s), int(sample_rate)
    if self.sr == A.SAMPLE_RATE:
      self.hop, self.n_fft, self.win = A.HOP_LENGTH, A.N_FFT, A.WIN_LENGTH
    else:  # the same scaling as audio.audio_features
      self.hop = int(round(A.HOP_LENGTH * self.sr / A.SAMPLE_RATE))
      self.n_fft = int(2 ** math.ceil(math.log2(A.N_FFT * self.sr / A.SAMPLE_RATE)))
      self.win = int(round(A.WIN_LENGTH * self.sr / A.SAMPLE_RATE))
    self.window = A.hann_window(self.win, self.n_fft).astype(np.float64)
    self.fb = A.mel_filterbank(
      self.sr, self.n_fft, n_mels, A.FMIN, min(A.FMAX, self.sr / 2.0)
    ).astype(np.float64)
    self.floor = A.LOG_FLOOR
    self.length = A.window_length(self.window_s, self.hop / self.sr)

  def _starts(self, frame: int, num_frames: int, total: int) -> np.ndarray:
    """(W, n_fft) clip sample positions of the window's STFT frames (may leave [0, total))."""
    m = A.num_mel_frames(total, self.hop)
    idx = A.window_indices(m, num_frames, self.fps, self.window_s, self.hop / self.sr)[frame]
    return idx.astype(np.int64)[:, None] * self.hop + np.arange(self.n_fft)[None] - self.n_fft // 2

  def sample_range(self, frame: int, num_frames: int, total: int) -> tuple[int, int]:
    """[lo, hi): the clip samples frame ``frame``'s window reads, within [0, total)."""
    st = self._starts(frame, num_frames, total)
    return max(0, int(st.min())), min(int(total), int(st.max()) + 1)

  def sample_ranges(self, num_frames: int, total: int) -> np.ndarray:
    """(num_frames, 2) int64: ``sample_range`` of every frame of a clip of ``total`` samples."""
    return np.array([self.sample_range(f, num_frames, total) for f in range(num_frames)], np.int64)

  def __call__(
    self,
    audio: np.ndarray,
    frame: int,
    num_frames: int,
    offset: int = 0,
    total: int | None = None,
  ) -> np.ndarray:
    """The window of frame ``frame`` of a ``num_frames``-frame clip.

    audio: the whole clip's waveform, or a slice of it: samples [offset, offset + n) of a
    clip of ``total`` samples (default: ``offset + n``, i.e. a whole clip when offset is 0).
    The result is the same for any slice that holds ``sample_range``; ValueError otherwise.
    """
    audio = np.asarray(audio, np.float64).reshape(-1)
    total = offset + audio.shape[0] if total is None else int(total)
    start = self._starts(frame, num_frames, total)
    valid = (start >= 0) & (start < total)
    rel = start - int(offset)
    if np.any(valid & ((rel < 0) | (rel >= audio.shape[0]))):
      lo, hi = self.sample_range(frame, num_frames, total)
      raise ValueError(
        f"the audio slice [{offset}, {offset + audio.shape[0]}) does not hold samples "
        f"[{lo}, {hi}) that frame {frame}'s {self.window_s:g} s window needs; the dataset's "
        "stored audio serves shorter windows (rebuild it with a larger audio_window_s)"
      )
    frames = np.where(valid, audio[np.clip(rel, 0, max(0, audio.shape[0] - 1))], 0.0)
    mag = np.abs(np.fft.rfft(frames * self.window, n=self.n_fft, axis=-1))
    return np.log(np.maximum(mag @ self.fb, self.floor)).astype(np.float32)


class MakeExample(gp.RandomMapTransform):
  """grain ``RandomMapTransform``: flat frame index -> one training example (module doc).

  ``frames``: a frame source (``frame_records.ClipRecords`` or ``FrameRecords``) with its
  ``index`` (``ClipIndex``). Picklable (worker processes get a copy; caches are per process).
  """

  def __init__(
    self,
    frames,
    image_size: int | None = None,
    mask: str = "face",
    fill: float = 0.0,
    fps: float = 25.0,
    window_s: float = 0.2,
    sample_rate: int = 16000,
    n_mels: int = 80,
    prompt_fn: PromptFn | None = None,
    ref_min_gap: int = REF_MIN_GAP,
  ):
    if mask not in MASK_MODES:
      raise ValueError(f"data.mask={mask!r} is not one of {', '.join(MASK_MODES)}")
    self.frames, self.index = frames, frames.index
    self.image_size, self.mask, self.fill = image_size, mask, float(fill)
    self.mel = MelWindow(fps, window_s, sample_rate, n_mels)
    self.prompt_fn = prompt_fn or default_prompt_fn()
    self.ref_min_gap = int(ref_min_gap)

  def random_map(self, flat, rng: np.random.Generator) -> dict[str, Any]:
    clip, frame = self.index.locate(int(flat))
    tgt = self.frames.frame(clip, frame)
    ref_clip, ref_frame = choose_reference(self.index, clip, frame, rng, self.ref_min_gap)
    ref = self.frames.frame(ref_clip, ref_frame)
    size = self.image_size
    x_tgt = to_float_image(tgt.image, size)
    x_ref = to_float_image(ref.image, size)
    face = binary_mask(tgt.face_mask, x_tgt.shape[0])
    region = mask_region(face, self.mask)
    x_mask = np.where(region[..., None] > 0, np.float32(self.fill), x_tgt)
    scale = x_tgt.shape[0] / tgt.image.shape[0]
    num_frames = int(self.index.num_frames[clip])
    p = self.prompt_fn(tgt.emotion, rng)
    text, p_emotion = (p, tgt.emotion) if isinstance(p, str) else (p.prompt, p.intensities)
    return {
      "x_tgt": x_tgt,
      "x_ref": x_ref,
      "x_mask": x_mask.astype(np.float32),
      "face_mask": face,
      "mask_region": region,
      "mouth_region": mouth_region(face, tgt.landmarks, scale),
      "eyes_region": eyes_region(face, tgt.landmarks, scale),
      "audio_mel": self.mel(tgt.audio, frame, num_frames, tgt.audio_offset, tgt.num_samples),
      "emotion": tgt.emotion,
      "prompt": np.asarray(str(text)),
      "prompt_emotion": np.asarray(p_emotion, np.float32),
      "identity": np.int32(tgt.identity),
      "mouth_open": np.float32(tgt.mouth_open),
      "clip_id": np.int32(self.index.clip_id[clip]),
      "frame": np.int32(frame),
      "ref_clip_id": np.int32(self.index.clip_id[ref_clip]),
      "ref_frame": np.int32(ref_frame),
    }


def open_frames(
  dataset: str,
  split: str,
  data_dir: str | None = None,
  *,
  cache_mb: float = 256.0,
  progress: bool = False,
  fps: float | None = None,
  sample_rate: int | None = None,
  window_s: float | None = None,
):
  """The frame source of one split: ``frame_records.FrameRecords`` for frame-level datasets
  (index from their metadata.json), else ``ClipRecords`` (index from the records, cached).

  fps / sample_rate / window_s (optional): what the loader will use; a frame-level dataset
  built with other rates, or with audio for shorter windows, raises ValueError naming the fix.
  """
  source, builder_dir = open_source(dataset, split, data_dir)
  if not frame_records.is_frame_dataset(builder_dir):
    cache_dir = builder_dir if os.access(builder_dir, os.W_OK) else None
    index = ClipIndex.from_source(source, cache_dir=cache_dir, split=split, progress=progress)
    return frame_records.ClipRecords(source, index, cache_mb)
  meta = frame_records.read_metadata(builder_dir)
  for key, want in (("fps", fps), ("sample_rate", sample_rate)):
    if want is not None and float(meta[key]) != float(want):
      raise ValueError(
        f"dataset {dataset!r} has {key}={meta[key]} but the loader was asked for {want}; set "
        f"--config.data.{key}={meta[key]}"
      )
  if window_s is not None and window_s > float(meta["audio_window_s"]) + 1e-9:
    raise ValueError(
      f"dataset {dataset!r} stores the audio of {meta['audio_window_s']} s windows but "
      f"config.audio.window_s is {window_s}; use a window <= {meta['audio_window_s']} or "
      "rebuild the dataset with a larger audio_window_s"
    )
  index = ClipIndex.from_json(frame_records.load_index(builder_dir, split))
  return frame_records.FrameRecords(source, index)


# ---------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------
def ensure_absl_flags_parsed() -> None:
  """grain worker processes read absl flags; outside absl.app mark them parsed (DESIGN.md)."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def process_shard_options(drop_remainder: bool = True):
  """grain ShardOptions for this JAX process: shard ``jax.process_index()`` of
  ``process_count()``."""
  return gp.ShardOptions(
    shard_index=jax.process_index(), shard_count=jax.process_count(), drop_remainder=drop_remainder
  )


def make_loader(
  dataset: str,
  split: str,
  *,
  batch_size: int,
  seed: int = 0,
  data_dir: str | None = None,
  train: bool = True,
  shard_options=None,
  worker_count: int = 0,
  worker_buffer_size: int = 2,
  image_size: int | None = None,
  mask: str = "face",
  fill: float = 0.0,
  fps: float = 25.0,
  window_s: float = 0.2,
  sample_rate: int = 16000,
  n_mels: int = 80,
  prompt_fn: PromptFn | None = None,
  ref_min_gap: int = REF_MIN_GAP,
  num_epochs: int | None = None,
  read_threads: int = 1,
  cache_mb: float = 256.0,
  progress: bool = False,
):
  """A grain DataLoader of per-process batches of training examples (module doc).

  Args:
    dataset, split, data_dir: see ``open_source``.
    batch_size: examples per batch *in this process* (``global // process_count``).
    seed: shuffling and per-example randomness (reference frame, prompt).
    train: shuffle, repeat forever (``num_epochs=None``), drop the last partial batch.
      False: dataset order, one epoch (unless ``num_epochs``), keep the partial batch.
    shard_options: ``grain.python.ShardOptions``; None -> this JAX process's shard.
    worker_count: grain worker processes (0: in this process).
    image_size: resize frames to this (None: the dataset's resolution).
    mask: 'face' | 'lower_face'; fill: the value blanked pixels get in x_mask.
    cache_mb: per-clip records only: per-process LRU cache of decoded clip records
      (reference clips are reused by many examples; a small dataset ends up fully
      cached). 0 disables it. Frame-level records are small and read as needed.
  Returns: ``grain.python.DataLoader``; ``iter(loader)`` is a checkpointable iterator.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  frames = open_frames(
    dataset,
    split,
    data_dir,
    cache_mb=cache_mb,
    progress=progress,
    fps=fps,
    sample_rate=sample_rate,
    window_s=window_s,
  )
  index = frames.index
  if index.total_frames == 0:
    raise ValueError(f"dataset {dataset!r} split {split!r} has no frames")
  if shard_options is None:
    shard_options = process_shard_options(drop_remainder=train)
  transform = MakeExample(
    frames,
    image_size=image_size,
    mask=mask,
    fill=fill,
    fps=fps,
    window_s=window_s,
    sample_rate=sample_rate,
    n_mels=n_mels,
    prompt_fn=prompt_fn,
    ref_min_gap=ref_min_gap,
  )
  sampler = gp.IndexSampler(
    num_records=index.total_frames,
    shard_options=shard_options,
    shuffle=train,
    num_epochs=(num_epochs if (num_epochs is not None or train) else 1),
    seed=int(seed),
  )
  if worker_count > 0:
    ensure_absl_flags_parsed()
  return gp.DataLoader(
    data_source=gp.RangeDataSource(0, index.total_frames, 1),
    sampler=sampler,
    operations=[transform, gp.Batch(batch_size=batch_size, drop_remainder=train)],
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    shard_options=shard_options,
    read_options=gp.ReadOptions(num_threads=read_threads, prefetch_buffer_size=64),
  )


def per_process_batch_size(global_batch: int, process_count: int) -> int:
  """global // process_count; ValueError when it does not divide."""
  if global_batch % process_count:
    raise ValueError(
      f"train.batch_size={global_batch} is not divisible by the "
      f"{process_count} processes; use a multiple of {process_count}"
    )
  return global_batch // process_count


def dataset_name(config) -> str:
  """tfds name of ``config.data.dataset`` (synthetic_talk gets its size as config name)."""
  name = config.data.dataset
  if name == "synthetic_talk" and "/" not in name:
    name = f"synthetic_talk/{config.data.synthetic_size}"
  return name


def make_train_loader(
  config,
  split: str = "train",
  *,
  data_dir: str | None = None,
  shard_options=None,
  worker_count: int | None = None,
  prompt_fn: PromptFn | None = None,
  train: bool = True,
  seed=None,
):
  """``make_loader`` with everything from a config (data.*, audio.*, train.batch_size, seed).

  Per-process batch = ``train.batch_size // process_count`` (process count from
  ``shard_options`` or JAX). ``data.worker_count`` sets worker processes and
  ``data.worker_buffer_size`` the batches each worker prefetches.
  """
  if shard_options is None:
    shard_options = process_shard_options(drop_remainder=train)
  d = config.data
  return make_loader(
    dataset_name(config),
    split,
    batch_size=per_process_batch_size(config.train.batch_size, shard_options.shard_count),
    seed=int(config.seed if seed is None else seed),
    data_dir=data_dir or d.data_dir,
    train=train,
    shard_options=shard_options,
    worker_count=int(d.worker_count if worker_count is None else worker_count),
    worker_buffer_size=int(d.worker_buffer_size),
    image_size=d.image_size,
    mask=d.mask,
    fps=d.fps,
    window_s=config.audio.window_s,
    sample_rate=d.sample_rate,
    n_mels=config.audio.n_mels,
    prompt_fn=prompt_fn,
    ref_min_gap=int(d.ref_min_gap),
  )


# ---------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------
def benchmark(
  dataset: str,
  data_dir: str | None,
  split: str = "train",
  workers: Sequence[int] = (0, 1, 2),
  batch_size: int = 8,
  batches: int = 50,
  warmup: int = 5,
  image_size: int | None = None,
  seed: int = 0,
  cache_mb: float = 256.0,
  prompt_fn: PromptFn | None = None,
  worker_buffer_size: int = 2,
) -> list[dict]:
  """examples/s of the training loader per worker count (after ``warmup`` batches)."""
  results = []
  for w in workers:
    loader = make_loader(
      dataset,
      split,
      batch_size=batch_size,
      seed=seed,
      data_dir=data_dir,
      worker_count=w,
      worker_buffer_size=worker_buffer_size,
      image_size=image_size,
      cache_mb=cache_mb,
      prompt_fn=prompt_fn,
      shard_options=gp.NoSharding(),
    )
    it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(warmup):
      next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
      next(it)
    t2 = time.perf_counter()
    results.append(
      {
        "workers": w,
        "batch_size": batch_size,
        "batches": batches,
        "cache_mb": cache_mb,
        "startup_s": round(t1 - t0, 3),
        "examples_per_s": round(batches * batch_size / (t2 - t1), 1),
      }
    )
    del it, loader
  return results


def benchmark_report(
  dataset: str = "synthetic_talk/tiny",
  data_dir: str = "data/tfds",
  split: str = "train",
  workers: Sequence[int] = (0, 1, 2),
  batch_size: int = 8,
  batches: int = 50,
  image_size: int | None = None,
  cache_mb: float = 256.0,
  prompt: str = "default",
) -> dict:
  """``benchmark`` with the machine and versions recorded (``emotalker pipeline-bench``).

  A ``synthetic_talk/<size>`` dataset is built under ``data_dir`` first when it is missing.
  prompt: "default" (FED prompts, ``default_prompt_fn``) or "simple" (``simple_prompt``).
  Returns {machine, cpu_count, grain, dataset, split, prompt, prompt_fn, load_average_1m,
  results: the rows of ``benchmark``}.
  """
  if prompt not in ("default", "simple"):
    raise ValueError(f"prompt must be 'default' or 'simple', got {prompt!r}")
  if dataset.startswith("synthetic_talk"):
    size = dataset.split("/")[1] if "/" in dataset else "tiny"
    synthetic_talk.SyntheticTalk(config=size, data_dir=data_dir).download_and_prepare()
  prompt_fn = simple_prompt if prompt == "simple" else None
  res = benchmark(
    dataset,
    data_dir,
    split,
    [int(w) for w in workers],
    batch_size,
    batches,
    image_size=image_size,
    cache_mb=cache_mb,
    prompt_fn=prompt_fn,
  )
  return {
    "machine": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "grain": getattr(grain, "__version__", "?"),
    "dataset": dataset,
    "split": split,
    "prompt": prompt,
    "prompt_fn": (prompt_fn or default_prompt_fn()).__name__,
    "load_average_1m": os.getloadavg()[0],
    "results": res,
  }
