"""TFDS builder ``synthetic_talk``: the procedural talking-face benchmark (no TensorFlow needed).

One record per clip (array_record; only Tensor/Scalar features, so reading needs no TF):
  frames          (T, S, S, 3) uint8    RGB frames at 25 fps
  face_mask       (T, S, S)    uint8    {0,1} face region (expression area), per frame
  landmarks       (T, 68, 2)   float32  iBUG-68 landmarks in pixels (x, y)
  mouth_open      (T,)         float32  speech mouth opening in [0, 1]
  audio           (T * 640,)   float32  16 kHz speech-like audio
  emotion         (8,)         float32  intensities, MEAD order
  identity        int64                 identity id (disjoint between splits)
  identity_params (P,)         float32  identity vector in [0, 1] (face_model.IDENTITY_PARAM_NAMES)
  clip_id         int64                 identity * 1000 + clip index
  is_neutral_reference bool             the identity's neutral reference clip

Configs (see docs/SYNTHETIC.md): ``tiny`` (32x32), ``small`` (64x64), ``full`` (128x128).
Splits: ``train`` / ``test`` with disjoint identities (the first ``num_train_identities``
ids train, the rest test). Build: ``emotalker synth --out DIR --size tiny`` or
``SyntheticTalk(config='tiny', data_dir=DIR).download_and_prepare()``; read:
``tfds.data_source('synthetic_talk/tiny', data_dir=DIR)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from emotalker_jax.emotions import NUM_EMOTIONS
from input_pipeline.synthetic import audio as audio_lib
from input_pipeline.synthetic import clips as clips_lib
from input_pipeline.synthetic import face_model, renderer, sizes


@dataclasses.dataclass
class SyntheticTalkConfig(tfds.core.BuilderConfig):
  """Size of the benchmark. Identities [0, num_train_identities) train, the rest test."""

  image_size: int = 64
  num_identities: int = 16
  num_train_identities: int = 12
  frames_per_clip: int = 25
  num_neutral: int = 3
  num_mixtures: int = 7
  mixture_levels: tuple = clips_lib.MIXTURE_LEVELS
  seed: int = 0

  def clip_plan(self, identity_id: int) -> list:
    """``clips.clip_plan`` of one identity under this config."""
    return clips_lib.clip_plan(
      identity_id, self.seed, self.num_neutral, self.num_mixtures, tuple(self.mixture_levels)
    )

  @property
  def clips_per_identity(self) -> int:
    return self.num_neutral + (NUM_EMOTIONS - 1) * len(clips_lib.LEVELS) + self.num_mixtures

  def validate(self):
    if not 0 < self.num_train_identities < self.num_identities:
      raise ValueError(
        f"synthetic_talk/{self.name}: need 0 < num_train_identities < num_identities, got "
        f"{self.num_train_identities} / {self.num_identities}"
      )
    if self.frames_per_clip < 1 or self.image_size < 16 or self.num_neutral < 1:
      raise ValueError(
        f"synthetic_talk/{self.name}: need frames_per_clip >= 1, image_size >= 16 and "
        f"num_neutral >= 1, got {self.frames_per_clip}, {self.image_size}, {self.num_neutral}"
      )
    if not 0 <= self.num_mixtures <= 21:
      raise ValueError(
        f"synthetic_talk/{self.name}: num_mixtures must be in [0, 21] "
        f"(pairs of the 7 non-neutral emotions), got {self.num_mixtures}"
      )


SIZES = sizes.SIZES


def make_config(size: str, seed: int = 0, **overrides) -> SyntheticTalkConfig:
  """The config for `size` (tiny|small|full); a non-zero seed gets its own name ('tiny_seed3')."""
  if size not in SIZES:
    raise ValueError(f"unknown synthetic_talk size {size!r}; choose from {', '.join(SIZES)}")
  name = size if seed == 0 and not overrides else f"{size}_seed{seed}"
  if overrides:
    name += "_" + "_".join(f"{k}{v}" for k, v in sorted(overrides.items()))
  kw = {**SIZES[size], **overrides}
  return SyntheticTalkConfig(name=name, description=f"{size}: {kw}", seed=seed, **kw)


def _render_job(job):
  spec, params, size, frames, seed = job
  return f"{spec.clip_id:09d}", clips_lib.render_clip(spec, params, size, frames, seed)


class SyntheticTalk(tfds.core.GeneratorBasedBuilder):
  """Procedural talking faces with ground-truth emotion, identity, landmarks and lip sync."""

  # Bump whenever the renderer's pixels change: TFDS reuses a prepared build of the same
  # version without looking at the code.
  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": "Mouth interior fades in with the opening below one pixel (visible small "
    "openings at 32x32).",
    "1.2.0": "The demo size has 14 two-emotion mixtures per identity (was 7); the other "
    "sizes' records are unchanged.",
  }
  BUILDER_CONFIGS = [make_config(s) for s in SIZES]
  DEFAULT_CONFIG_NAME = "tiny"

  # TFDS 4.9.10 resolves the code path of a builder that lives in a package through the
  # optional `importlib_resources` package; the plain file path is equivalent here and
  # avoids that dependency.
  @tfds.core.utils.py_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, num_workers: int = 0, **kwargs):
    """num_workers > 0 renders clips in that many processes (output is identical)."""
    kwargs.setdefault("file_format", "array_record")
    self._num_workers = int(num_workers)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    S, T = cfg.image_size, cfg.frames_per_clip
    f = tfds.features
    # Large tensors are stored as raw bytes (zlib for the compressible images/masks): fast to
    # write and read, and still decoded by TFDS without TensorFlow.
    zlib, raw = f.Encoding.ZLIB, f.Encoding.BYTES
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=f.FeaturesDict(
        {
          "frames": f.Tensor(shape=(T, S, S, 3), dtype=np.uint8, encoding=zlib),
          "face_mask": f.Tensor(shape=(T, S, S), dtype=np.uint8, encoding=zlib),
          "landmarks": f.Tensor(
            shape=(T, renderer.NUM_LANDMARKS, 2), dtype=np.float32, encoding=raw
          ),
          "mouth_open": f.Tensor(shape=(T,), dtype=np.float32),
          "audio": f.Tensor(
            shape=(T * audio_lib.SAMPLES_PER_FRAME,), dtype=np.float32, encoding=raw
          ),
          "emotion": f.Tensor(shape=(NUM_EMOTIONS,), dtype=np.float32),
          "identity": f.Scalar(dtype=np.int64),
          "identity_params": f.Tensor(shape=(face_model.NUM_IDENTITY_PARAMS,), dtype=np.float32),
          "clip_id": f.Scalar(dtype=np.int64),
          "is_neutral_reference": f.Scalar(dtype=np.bool_),
        }
      ),
      supervised_keys=None,
      metadata=tfds.core.MetadataDict(
        image_size=S,
        fps=audio_lib.FPS,
        sample_rate=audio_lib.SAMPLE_RATE,
        num_identities=cfg.num_identities,
        num_train_identities=cfg.num_train_identities,
        frames_per_clip=T,
        clips_per_identity=cfg.clips_per_identity,
        seed=cfg.seed,
        identity_param_names=list(face_model.IDENTITY_PARAM_NAMES),
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    cfg.validate()
    return {
      "train": self._generate_examples(range(0, cfg.num_train_identities)),
      "test": self._generate_examples(range(cfg.num_train_identities, cfg.num_identities)),
    }

  def _generate_examples(self, identity_ids):
    cfg = self.builder_config
    jobs = []
    for i in identity_ids:
      params = face_model.sample_identity(i, cfg.seed)
      for spec in cfg.clip_plan(i):
        jobs.append((spec, params, cfg.image_size, cfg.frames_per_clip, cfg.seed))
    if self._num_workers > 0:
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(self._num_workers) as pool:
        yield from pool.imap(_render_job, jobs, chunksize=4)
    else:
      for job in jobs:
        yield _render_job(job)


def get_builder(
  size: str, data_dir: str, seed: int = 0, num_workers: int = 0, **overrides
) -> SyntheticTalk:
  """A SyntheticTalk builder for `size` (tiny|small|full) and seed, writing under data_dir."""
  cfg = make_config(size, seed=seed, **overrides)
  cfg.validate()
  # TFDS refuses a custom config object that reuses a registered name: pass the name then.
  config = cfg.name if cfg.name in SIZES else cfg
  return SyntheticTalk(config=config, data_dir=data_dir, num_workers=num_workers)


def is_built(size: str, data_dir: str | None, seed: int = 0) -> bool:
  """Whether synthetic_talk/<size> (this code's VERSION) is prepared under ``data_dir``;
  looks for the folder first so that a missing build creates nothing."""
  name = make_config(size, seed=seed).name
  return (
    bool(data_dir)
    and os.path.isdir(os.path.join(data_dir, "synthetic_talk", name))
    and get_builder(size, data_dir, seed=seed).is_prepared()
  )


def split_identities(cfg: SyntheticTalkConfig) -> dict[str, range]:
  """Identity ids per split (disjoint)."""
  return {
    "train": range(0, cfg.num_train_identities),
    "test": range(cfg.num_train_identities, cfg.num_identities),
  }
