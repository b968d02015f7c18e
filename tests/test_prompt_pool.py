"""training/prompt_pool.py: the pooled FED prompts (their cached text states:
tests/test_frozen_cache.py; the train step fed them: tests/test_training.py)."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from emotalker_jax import fed
from emotalker_jax.training import prompt_pool
from tests.test_training import small_config

MIXED = np.array([0, 0.6, 0, 0.3, 0, 0, 0, 0], np.float32)  # mostly angry, a little disgusted


def test_pool_draws_exactly_its_prompts_and_labels_them_as_fed_does():
  pool = prompt_pool.PooledFedPrompt(6, seed=0)
  rng = np.random.default_rng(0)
  drawn = [pool(MIXED, rng) for _ in range(300)]
  members = [pool.prompt(MIXED, j) for j in range(6)]
  assert {r.prompt for r in drawn} == {r.prompt for r in members}
  assert len({r.prompt for r in members}) == 6  # six different paraphrases
  for r in members:  # the prompt's own FED label: the mixture's order and emotions
    lab = np.asarray(r.intensities)
    assert set(np.flatnonzero(lab > 0)) == {1, 3} and lab[1] > lab[3]
  # A label's pool is fixed by (seed, label): the same after pickling (grain workers) and
  # in a fresh interpreter with another hash seed; other labels and seeds get other pools.
  again = pickle.loads(pickle.dumps(pool))
  assert [again.prompt(MIXED, j).prompt for j in range(6)] == [r.prompt for r in members]
  code = (
    "import numpy as np; from emotalker_jax.training import prompt_pool as p; "
    f"print(p.PooledFedPrompt(6, 0).prompt(np.array({MIXED.tolist()}), 4).prompt)"
  )
  env = dict(os.environ, PYTHONHASHSEED="7")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
  assert out.stdout.strip() == members[4].prompt, out.stderr[-2000:]
  other_seed = {prompt_pool.PooledFedPrompt(6, seed=1).prompt(MIXED, j).prompt for j in range(6)}
  assert other_seed != {r.prompt for r in members}
  happy = np.eye(8, dtype=np.float32)[5] * 0.7
  assert all(np.argmax(pool.prompt(happy, j).intensities) == 5 for j in range(6))
  # Labels within LABEL_DECIMALS are one label.
  assert pool.prompt(MIXED + 1e-5, 2).prompt == members[2].prompt
  assert isinstance(members[0], fed.FedRecord)


def test_pool_size_is_checked():
  with pytest.raises(ValueError, match="prompt_pool_size"):
    prompt_pool.PooledFedPrompt(0)
  with pytest.raises(ValueError, match="prompt_pool_size"):
    prompt_pool.pool_enabled(small_config(**{"train.prompt_pool_size": -1}))
  with pytest.raises(IndexError, match="outside the pool"):
    prompt_pool.PooledFedPrompt(3).prompt(MIXED, 3)
  assert prompt_pool.prompt_fn_from_config(small_config()) is None
  fn = prompt_pool.prompt_fn_from_config(small_config(**{"train.prompt_pool_size": 5}))
  assert fn.pool_size == 5
