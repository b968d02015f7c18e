"""aot-compile and the train-step benchmark build their inputs from ``batch_spec``.

With ``configs/demo.py`` (mouth loss weight 10: the batch carries ``mouth_region``) both
must compile the real train step, and the two routes (abstract inputs with no arrays vs a
real trainer on a synthetic batch) must agree on what one step costs. Both compile the
step (1-3 min on 2 cores), so both are in the slow tier (`make test-slow`); the default tier
checks ``batch_spec`` against the loader's batches (tests/test_pipeline.py).
"""

from __future__ import annotations

import math

import jax
import pytest

from emotalker_jax import aot, bench, parallel
from emotalker_jax.config_utils import load_config
from emotalker_jax.training import loop
from emotalker_jax.training.state import param_count
from emotalker_jax.training.step import batch_spec

DEMO_SMALL = ("--config.train.batch_size=8", "--config.unet.remat=False")


@pytest.fixture(scope="module")
def demo_config(repo_root):
  return load_config(str(repo_root / "configs" / "demo.py"), list(DEMO_SMALL))


@pytest.fixture(scope="module")
def aot_report(demo_config):
  return aot.compile_report(demo_config, jax.devices(), "cpu:test")


@pytest.fixture(scope="module")
def bench_result(demo_config):
  return bench.run_train_step_bench(demo_config, remat=(False,), steps=1, warmup=0, matmul_n=256)


@pytest.mark.slow  # a compile of the demo step on 8 devices and a real trainer (~2 min)
def test_aot_compiles_the_demo_step_with_its_mouth_region(demo_config, aot_report):
  assert "mouth_region" in batch_spec(demo_config)
  mesh = parallel.create_mesh(demo_config.mesh, jax.devices())
  _, (state, _, batch), _ = aot.abstract_train_step(demo_config, mesh)
  assert {k: v.shape for k, v in batch.items()} == {
    k: v.shape for k, v in batch_spec(demo_config).items()
  }
  # The abstract state is the trainer's: the same parameter count as a real initialisation.
  real = loop.build_trainer(demo_config)
  assert aot_report["trainable_params"] == param_count(real.state.params)
  assert aot_report["trainable_params"] == param_count(state.params)
  assert aot_report["num_devices"] == len(jax.devices())
  assert aot_report["flops_per_step"] > 0
  assert aot_report["per_device_bytes"]["argument_size_in_bytes"] > 0


@pytest.mark.slow  # a second compile of the step (~1 min on 2 cores)
def test_train_step_bench_runs_the_demo_step_that_aot_compiles(aot_report, bench_result):
  off = bench_result["remat"]["off"]
  assert math.isfinite(off["final_loss"]) and off["final_loss"] > 0
  # Two routes to one XLA program: the FLOPs of a step agree (same HLO, same shardings).
  assert off["flops_per_step"] == pytest.approx(aot_report["flops_per_step"], rel=0.01)


def test_program_size_counts_grow_with_an_unrolled_loop():
  """The size figures aot-compile reports beside the compile time: an unrolled loop of 8
  dependent matmul + nonlinearity steps compiles to more instructions and entry fusions than
  one of 2 (what makes large unrolled programs slow to compile)."""
  import jax.numpy as jnp

  def unrolled(n):
    def f(x, w):
      for i in range(n):
        x = jnp.tanh(x @ w + i)
      return x

    x = jax.ShapeDtypeStruct((8, 8), jnp.float32)
    return aot.program_size(jax.jit(f).lower(x, x).compile())

  small, large = unrolled(2), unrolled(8)
  assert small["entry_fusions"] >= 1
  assert large["hlo_instructions"] > 2 * small["hlo_instructions"]
  assert large["entry_fusions"] > small["entry_fusions"]
