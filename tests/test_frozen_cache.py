"""training/frozen_cache.py: the frozen networks' outputs computed once per input (the train
step fed them: tests/test_training.py)."""

import jax
import numpy as np

from emotalker_jax.models.autoencoder import build_autoencoder, encode_to_latent, init_autoencoder
from emotalker_jax.training import frozen_cache
from tests.test_training import small_config, text  # noqa: F401 (the fixture)


def test_cache_gives_the_towers_states_and_encodes_each_prompt_once(text):  # noqa: F811
  """Reference: TextEncoder.encode (the tower on the unpadded batch). Each distinct prompt
  is a miss once; an LRU bound evicts, and an evicted prompt comes back the same."""
  prompts = ["very happy", "a little sad", "very happy", "at the funeral of an old friend"]
  want_h, want_m = text.encode(prompts)
  cache = frozen_cache.TextStateCache(text)
  h, m = cache(prompts)
  np.testing.assert_array_equal(m, np.asarray(want_m))
  np.testing.assert_allclose(h, np.asarray(want_h), rtol=1e-5, atol=1e-5)
  assert (cache.misses, cache.hits, len(cache)) == (3, 1, 3)
  h2, _ = cache(prompts[::-1])
  np.testing.assert_array_equal(h2, h[::-1])
  assert (cache.misses, cache.hits) == (3, 5)
  per_entry = text.max_length * text.hidden_size * 4
  small = frozen_cache.TextStateCache(text, max_bytes=2 * per_entry)
  small(prompts[:2])
  small(prompts[3:])  # evicts "very happy", the least recently used
  assert len(small) == 2 and "very happy" not in small
  h3, _ = small(["very happy"])
  np.testing.assert_allclose(h3[0], h[0], rtol=1e-5, atol=1e-5)


def test_reference_latents_are_the_autoencoders_and_keyed_by_frame():
  """Reference: encode_to_latent on each frame alone. A key seen before is not recomputed
  (its stored latent comes back even if other pixels arrive under it); 11 misses in one
  batch pad to 16 rows and still give each frame its own latent."""
  cfg = small_config()
  vae = build_autoencoder(cfg)
  params = init_autoencoder(vae, jax.random.key(0), 32)["params"]
  x = np.random.default_rng(0).uniform(-1, 1, (11, 32, 32, 3)).astype(np.float32)
  cache = frozen_cache.ReferenceLatentCache(vae, params, 32)
  clips, frames = np.arange(11) // 4, np.arange(11) % 4
  z = cache(clips, frames, x)
  want = np.concatenate(
    [np.asarray(encode_to_latent(vae, params, x[i : i + 1])) for i in range(11)]
  )
  np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-5)
  assert z.shape == (11, 32 // vae.spec.downsample_factor, 32 // vae.spec.downsample_factor, 4)
  assert (cache.misses, cache.hits) == (11, 0)
  again = cache(clips[:3], frames[:3], np.zeros_like(x[:3]))
  np.testing.assert_array_equal(again, z[:3])
  assert (cache.misses, cache.hits, len(cache)) == (11, 3, 11)
  assert [frozen_cache.padded_rows(n) for n in (1, 2, 3, 8, 11)] == [1, 2, 4, 8, 16]
