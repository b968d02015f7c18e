"""Outputs of the frozen networks the diffusion step reads, each computed once per input.

The autoencoder and the text tower are frozen while the generator trains, so what they
give for a recurring input is a constant: the token states of a pooled prompt
(``train.prompt_pool_size``, ``training/prompt_pool.py``) and the latent of a reference
frame (``train.cache_reference_latents``: every example's x_ref is a frame of one of its
identity's few reference clips, so the same frames recur; ~9 % of the demo's step encoded
them). ``FrozenCache`` keeps them on the host, LRU-bounded by ``max_bytes`` (an evicted
input is recomputed to the same output); the trainer feeds them to the step as inputs.

Misses are computed together, padded to a power of two rows (``padded_rows``), so a few
compiled shapes serve every batch. ``hits`` / ``misses`` count inputs (a key twice in one batch is
computed once).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from emotalker_jax.models.autoencoder import encode_to_latent
from emotalker_jax.training.step import text_hidden_states

DEFAULT_CACHE_BYTES = 2 << 30


def padded_rows(n: int) -> int:
  """Rows a batch of n misses is padded to: the next power of two. Not more: most batches
  hold only a few misses, and the frozen network's cost grows with its rows, so a fixed
  batch-size pad would spend nearly the in-step cost on every batch with one miss."""
  return 1 << (max(1, n) - 1).bit_length()


class FrozenCache:
  """key -> one output (a numpy array or a tuple of them) of a frozen network.

  ``lookup(keys, inputs, compute)``: ``compute(inputs of the missing keys)`` returns their
  outputs in order; the result is the list of outputs of ``keys``.
  """

  def __init__(self, entry_bytes: int, max_bytes: int = DEFAULT_CACHE_BYTES):
    self.max_entries = max(1, int(max_bytes) // max(1, int(entry_bytes)))
    self._cache: collections.OrderedDict[Hashable, object] = collections.OrderedDict()
    self.hits = self.misses = 0

  def __len__(self) -> int:
    return len(self._cache)

  def __contains__(self, key) -> bool:
    return key in self._cache

  def lookup(self, keys: Sequence[Hashable], inputs: Sequence, compute: Callable) -> list:
    first = {}
    for i, k in enumerate(keys):
      if k not in self._cache and k not in first:
        first[k] = i
    self.misses += len(first)
    self.hits += len(keys) - len(first)
    if first:
      outs = compute([inputs[i] for i in first.values()])
      for k, o in zip(first, outs, strict=True):
        self._cache[k] = o
    got = []
    for k in keys:
      self._cache.move_to_end(k)
      got.append(self._cache[k])
    while len(self._cache) > self.max_entries:
      self._cache.popitem(last=False)
    return got


class TextStateCache(FrozenCache):
  """prompts -> (token states (B, L, D) float32, attention_mask (B, L) int32) of a frozen
  ``models.text_encoder.TextEncoder``. Memory: L * D * 4 bytes per prompt (49 KiB for
  MiniLM at L = 32)."""

  def __init__(self, text, max_bytes: int = DEFAULT_CACHE_BYTES):
    super().__init__(int(text.max_length) * int(text.hidden_size) * 4, max_bytes)
    self.text = text
    # the step's own reading of the tower (tuple outputs, float32), jitted once here
    self._apply = jax.jit(functools.partial(text_hidden_states, text.module))

  def _compute(self, prompts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    tok = self.text.tokenize(prompts)
    n = len(prompts)
    ids = np.full((padded_rows(n), tok["input_ids"].shape[1]), self.text.pad_id, np.int32)
    mask = np.zeros_like(ids)
    ids[:n], mask[:n] = tok["input_ids"], tok["attention_mask"]
    mask[n:, 0] = 1  # filler rows: one token, so no row is empty
    states = np.asarray(self._apply(self.text.params, ids, mask))[:n]
    return list(zip(states, tok["attention_mask"], strict=True))

  def __call__(self, prompts) -> tuple[np.ndarray, np.ndarray]:
    prompts = [str(p) for p in prompts]
    got = self.lookup(prompts, prompts, self._compute)
    return np.stack([h for h, _ in got]), np.stack([m for _, m in got]).astype(np.int32)


class ReferenceLatentCache(FrozenCache):
  """(ref_clip_id, ref_frame) keys and their frames x_ref (B, S, S, 3) in [-1, 1] ->
  the frozen autoencoder's latents ``encode_to_latent`` (B, S/f, S/f, C) float32."""

  def __init__(self, vae, vae_params, image_size: int, max_bytes: int = DEFAULT_CACHE_BYTES):
    f, c = vae.spec.downsample_factor, vae.spec.latent_channels
    super().__init__((int(image_size) // f) ** 2 * c * 4, max_bytes)
    self.vae_params = vae_params
    self._encode = jax.jit(lambda p, x: encode_to_latent(vae, p, x).astype(jnp.float32))

  def _compute(self, frames: list[np.ndarray]) -> list[np.ndarray]:
    x = np.stack(frames).astype(np.float32)
    n = len(frames)
    pad = np.zeros((padded_rows(n) - n,) + x.shape[1:], np.float32)
    return list(np.asarray(self._encode(self.vae_params, np.concatenate([x, pad])))[:n])

  def __call__(self, ref_clip_id, ref_frame, x_ref) -> np.ndarray:
    keys = [(int(c), int(f)) for c, f in zip(np.ravel(ref_clip_id), np.ravel(ref_frame))]
    return np.stack(self.lookup(keys, list(np.asarray(x_ref)), self._compute))


__all__ = ["FrozenCache", "ReferenceLatentCache", "TextStateCache", "padded_rows"]
