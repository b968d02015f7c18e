"""A fixed pool of FED prompts per emotion label, and a cache of their frozen text states.

Why: the text tower is frozen while the generator trains, yet with a fresh FED prompt for
every example (``input_pipeline.pipeline.fed_prompt``: ~93 % of 12 000 drawn prompts are
distinct) it has to run inside every train step (~50 ms of the demo's 286 ms step on 2
cores). With ``train.prompt_pool_size = P > 0`` each clip label gets P FED prompts instead,
so the same strings recur and their token states are computed once:

- ``PooledFedPrompt`` (the pipeline's prompt_fn): example -> one of the P prompts of its
  label. Prompt j of label s is ``fed.describe(s, rng(seed, digest(s), j))``: a pure
  function of (seed, s, j), so every process, grain worker and resumed run draws the same
  strings, and the example's own rng picks j.
- ``training.frozen_cache.TextStateCache`` (the trainer's): prompts -> the frozen tower's
  token states, each distinct string encoded once, so the step reads ``text_states``
  instead of tokens.

The training distribution changes only in how many paraphrases each label has (P instead
of FED's open-ended supply); labels, mixtures and strengths are unchanged.
"""

from __future__ import annotations

import hashlib

import numpy as np

from emotalker_jax import fed
from emotalker_jax.emotions import NUM_EMOTIONS

# Labels are keyed to this many decimals (clip labels lie on the benchmark's grids).
LABEL_DECIMALS = 3


def label_digest(s: np.ndarray) -> int:
  """A stable 64-bit integer of a label (8,) rounded to LABEL_DECIMALS (not Python's
  per-process ``hash``)."""
  r = np.round(np.asarray(s, np.float64).reshape(-1), LABEL_DECIMALS) + 0.0  # -0.0 -> 0.0
  return int.from_bytes(hashlib.sha1(r.tobytes()).digest()[:8], "little")


class PooledFedPrompt:
  """prompt_fn(s (8,), rng) -> ``fed.FedRecord``: one of ``pool_size`` FED prompts of s.

  Picklable (grain workers get a copy). ``prompt(s, j)`` is the pool's j-th prompt of s.
  """

  def __init__(self, pool_size: int, seed: int = 0):
    if int(pool_size) < 1:
      raise ValueError(f"train.prompt_pool_size must be >= 1 to pool prompts, got {pool_size}")
    self.pool_size, self.seed = int(pool_size), int(seed)

  def prompt(self, s, j: int) -> fed.FedRecord:
    s = np.round(np.asarray(s, np.float32).reshape(-1), LABEL_DECIMALS)
    if s.shape[0] != NUM_EMOTIONS:
      raise ValueError(f"PooledFedPrompt: expected {NUM_EMOTIONS} intensities, got {s.shape}")
    if not 0 <= int(j) < self.pool_size:
      raise IndexError(f"prompt {j} outside the pool of {self.pool_size}")
    rng = np.random.default_rng([self.seed, label_digest(s), int(j)])
    return fed.describe(s, rng)

  def __call__(self, s, rng: np.random.Generator) -> fed.FedRecord:
    return self.prompt(s, int(rng.integers(self.pool_size)))


def prompt_fn_from_config(config):
  """The training loader's prompt_fn: PooledFedPrompt when train.prompt_pool_size > 0,
  else None (the pipeline's default: a fresh FED prompt per example)."""
  if not pool_enabled(config):
    return None
  return PooledFedPrompt(int(config.train.prompt_pool_size), seed=int(config.seed))


def pool_enabled(config) -> bool:
  p = int(config.train.get("prompt_pool_size", 0))
  if p < 0:
    raise ValueError(f"train.prompt_pool_size must be >= 0 (0: no pool), got {p}")
  return p > 0


__all__ = [
  "PooledFedPrompt",
  "label_digest",
  "pool_enabled",
  "prompt_fn_from_config",
]
