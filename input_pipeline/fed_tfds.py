"""TFDS builder ``fed``: the FED prompt corpus (emotalker_jax.fed) as array_record files.

Needs no TensorFlow: only Text / Tensor / Scalar / ClassLabel features are used and the
files are array_record, read back with ``tfds.data_source`` (random access, grain-ready).

Splits: train / validation / test (80 / 10 / 10 % of size) and the diagnostic
test_frames (docs/FED.md). Builder configs carry (size, seed):
``FedConfig(name=..., size=60000, seed=0)``;
``builder(data_dir, size, seed)`` makes one. Features per example:

    prompt       Text                   the description (UTF-8; data_source returns bytes)
    intensities  Tensor (8,) float32    MEAD order, in [0, 1]
    category     ClassLabel             fed_lexicon.CATEGORIES: single | mixture | proportion
                                        | negation | contrast | content_free | situation
                                        | facial_action | idiom | hedge | concealment
                                        | contrast_mix | multi_clause
    n_emotions   Scalar int32           emotions with intensity > 0
    is_mixed     Scalar int32           1 when n_emotions >= 2
    is_negated   Scalar int32           1 when the prompt negates an emotion
    dominant     Scalar int32           argmax of intensities, -1 when tied within 0.1
    order        Tensor (3,) int32      worded dominance order ("mostly X, a little Y"),
                                        -1 padded
    frame        Text                   frame / connective ids
    terms        Text                   '|'-joined term ids
"""

from __future__ import annotations

import dataclasses
import inspect

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from emotalker_jax import fed, fed_lexicon
from emotalker_jax.emotions import NUM_EMOTIONS


@dataclasses.dataclass
class FedConfig(tfds.core.BuilderConfig):
  size: int = fed.DEFAULT_SIZE
  seed: int = 0


def config_name(size: int, seed: int) -> str:
  return f"n{int(size)}_seed{int(seed)}"


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict(
    {
      "prompt": tfds.features.Text(),
      "intensities": tfds.features.Tensor(shape=(NUM_EMOTIONS,), dtype=np.float32),
      "category": tfds.features.ClassLabel(names=list(fed_lexicon.CATEGORIES)),
      "n_emotions": tfds.features.Scalar(dtype=np.int32),
      "is_mixed": tfds.features.Scalar(dtype=np.int32),
      "is_negated": tfds.features.Scalar(dtype=np.int32),
      "dominant": tfds.features.Scalar(dtype=np.int32),
      "order": tfds.features.Tensor(shape=(3,), dtype=np.int32),
      "frame": tfds.features.Text(),
      "terms": tfds.features.Text(),
    }
  )


def to_example(r: fed.FedRecord) -> dict:
  """A FedRecord -> the TFDS feature dict."""
  s = np.asarray(r.intensities, np.float32)
  srt = np.sort(s)[::-1]
  dominant = int(np.argmax(s)) if srt[0] - srt[1] >= 0.1 - 1e-6 else -1
  order = np.full((3,), -1, np.int32)
  order[: len(r.order)] = r.order[:3]
  return {
    "prompt": r.prompt,
    "intensities": s,
    "category": fed_lexicon.CATEGORIES.index(r.category),
    "n_emotions": np.int32(r.n_emotions),
    "is_mixed": np.int32(r.is_mixed),
    "is_negated": np.int32(r.is_negated),
    "dominant": np.int32(dominant),
    "order": order,
    "frame": r.frame,
    "terms": "|".join(r.terms),
  }


class Fed(tfds.core.GeneratorBasedBuilder):
  """FED: (prompt, 8 emotion intensities) pairs with held-out synonyms and frames."""

  VERSION = tfds.core.Version(fed_lexicon.FED_VERSION)
  RELEASE_NOTES = {
    "1.0.0": "First FED corpus: emotion words, mixtures, negation (docs/FED.md).",
    "2.0.0": "Situations, everyday facial actions, idioms, hedges, concealment, contrast and "
    "multi-clause prompts; NRC lexicon words (docs/FED.md).",
  }
  BUILDER_CONFIGS = [
    FedConfig(
      name=config_name(fed.DEFAULT_SIZE, 0),
      size=fed.DEFAULT_SIZE,
      seed=0,
      description="default size, seed 0",
    )
  ]

  # tfds 4.9.10 resolves a packaged builder's code path through the optional
  # `importlib_resources`; the plain file path is the same thing here.
  @tfds.core.utils.py_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, records: dict | None = None, progress=None, **kwargs):
    """records: optional {split: [FedRecord]} already generated (skips regeneration);
    progress: optional callable(n) called once per example written."""
    self._records = records
    self._progress = progress
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=_features(),
      supervised_keys=("prompt", "intensities"),
      homepage="docs/FED.md",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    records = self._records
    if records is None:
      records = fed.generate(cfg.size, cfg.seed)
    return {split: self._generate_examples(records[split]) for split in records}

  def _generate_examples(self, records):
    for i, r in enumerate(records):
      if self._progress is not None:
        self._progress(1)
      yield i, to_example(r)


def builder(data_dir: str, size: int = fed.DEFAULT_SIZE, seed: int = 0, **kwargs) -> Fed:
  """The ``fed`` builder for (size, seed), writing array_record files under data_dir."""
  name = config_name(size, seed)
  if name in Fed.builder_configs:  # tfds refuses a new config under a registered name
    return Fed(data_dir=data_dir, config=name, file_format="array_record", **kwargs)
  cfg = FedConfig(
    name=config_name(size, seed),
    size=int(size),
    seed=int(seed),
    description=f"size {size}, seed {seed}",
  )
  return Fed(data_dir=data_dir, config=cfg, file_format="array_record", **kwargs)


def data_source(data_dir: str, split: str, size: int = fed.DEFAULT_SIZE, seed: int = 0):
  """Random-access source of one split (``len``, ``__getitem__``); prompts come back as bytes."""
  return builder(data_dir, size, seed).as_data_source(split=split)
