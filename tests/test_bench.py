"""Benchmarks (the emotalker_jax/bench/ package): the JAX sampler and its PyTorch/diffusers
reference
compute the same thing (the correctness core of the framework comparison), the JSON has the
fixed keys with positive finite values, and the markdown report is made from the JSON.

One sampler benchmark run (tiny config, 2 frames, 2 steps, 1 repeat; torch.compile with the
'eager' backend, so dynamo traces and runs the compiled path without minutes of C++
compilation) is shared by the tests of this module. The inductor backend, the UNet and the
train-step benchmarks are in the slow tier.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from emotalker_jax import bench
from emotalker_jax.bench import torch_ref
from emotalker_jax.config_utils import load_config

SAMPLER_KEYS = (
  "jax_frames_per_s",
  "torch_eager_frames_per_s",
  "torch_compile_frames_per_s",
  "ratio_torch_eager_over_jax",
  "max_abs_output_diff",
)
UNET_KEYS = ("flops", "achieved_flops_per_s", "matmul_flops_per_s", "roofline_fraction")


def tiny(repo_root, *overrides):
  return load_config(str(repo_root / "configs" / "tiny.py"), list(overrides))


@pytest.fixture(scope="module")
def sampler_run(repo_root):
  config = tiny(repo_root)
  res = bench.run_sampler_bench(
    config,
    batch=2,
    steps=2,
    repeats=1,
    warmup=0,
    torch_compile=True,
    compile_backend="eager",
    return_outputs=True,
  )
  return config, res


def test_ddim_scheduler_steps_between_our_levels():
  """The spacing the bench picks makes diffusers' DDIMScheduler visit exactly our levels,
  stepping from each to the next (and from the last to ᾱ = 1)."""
  import ml_collections

  from emotalker_jax.diffusion import schedule as sched_lib
  from emotalker_jax.diffusion.sampler import _levels, ddim_timesteps

  for spacing, steps in (("uniform", 10), ("uniform", 25), ("trailing", 7), ("leading", 50)):
    cfg = ml_collections.ConfigDict(
      {
        "diffusion": {
          "num_train_timesteps": 1000,
          "schedule": "linear",
          "beta_start": 0.0015,
          "beta_end": 0.0195,
          "prediction_type": "epsilon",
        },
        "sampler": {"spacing": spacing},
      }
    )
    chosen, note = torch_ref.bench_spacing(cfg, steps)
    assert (note is None) == (chosen == spacing)
    s = torch_ref.make_ddim_scheduler(cfg, steps, chosen)
    ours = ddim_timesteps(1000, steps, chosen)[::-1]
    np.testing.assert_array_equal(s.timesteps.numpy(), ours)
    _, a_t, a_prev = _levels(sched_lib.from_config(cfg.diffusion), steps, chosen)
    for k, t in enumerate(ours):  # the ᾱ the scheduler steps to == our next level's
      prev = int(t) - 1000 // steps
      a = float(s.alphas_cumprod[prev]) if prev >= 0 else float(s.final_alpha_cumprod)
      assert a == pytest.approx(float(a_prev[k]), rel=1e-5)
      assert float(s.alphas_cumprod[int(t)]) == pytest.approx(float(a_t[k]), rel=1e-5)
  # 'uniform' at 10 steps (0, 111, ..., 999) is not evenly spaced by T // steps: fallback.
  cfg.sampler.spacing = "uniform"
  chosen, note = torch_ref.bench_spacing(cfg, 10)
  assert chosen == "trailing" and "uniform" in note


def test_diffusers_models_match_our_config_and_convert(repo_root):
  """The diffusers models built from our config have our layout and their weights convert
  into our params tree with every leaf filled (same shapes as our init)."""
  import jax

  from emotalker_jax.bench.model_stats import count_params
  from emotalker_jax.models.unet import build_unet, init_unet

  config = tiny(repo_root)
  unet_t, vae_t = torch_ref.build_torch_models(config, seed=3)
  up, vp = torch_ref.torch_params_to_ours(config, unet_t, vae_t)
  assert count_params(up) == sum(p.numel() for p in unet_t.parameters())
  assert count_params(vp) == sum(p.numel() for p in vae_t.parameters())
  target = jax.eval_shape(lambda: init_unet(build_unet(config), jax.random.key(0)))["params"]
  import flax.linen as nn

  assert jax.tree.structure(nn.meta.unbox(target)) == jax.tree.structure(up)


def test_jax_sampler_matches_torch_reference(sampler_run):
  """Same weights, same source latent / conditions / context tokens, eta = 0: the decoded
  frames of our jitted scan sampler equal diffusers' (eager and torch.compile'd) to float32
  rounding."""
  _, res = sampler_run
  out = res["_outputs"]
  ref = out["torch_eager"]
  assert ref.shape == (2, 32, 32, 3)
  scale = float(np.abs(ref).max())
  assert scale > 0.05  # a non-trivial image
  assert float(np.abs(ref[0] - ref[1]).max()) > 1e-3 * scale  # frames differ (own conditions)
  for name in ("jax", "torch_compile"):
    err = float(np.abs(out[name] - ref).max())
    assert err <= 1e-3 * scale, (name, err, scale)
  assert res["max_abs_output_diff"] == pytest.approx(float(np.abs(out["jax"] - ref).max()))
  assert res["outputs_agree"] is True


def test_sampler_json_has_fixed_keys_positive_finite(sampler_run, repo_root, tmp_path):
  config, res = sampler_run
  doc = dict(
    bench.header(config, [], "emotalker bench sampler --config configs/tiny.py"),
    **{k: v for k, v in res.items() if not k.startswith("_")},
  )
  path = tmp_path / "s.json"
  bench.write_json(str(path), doc)
  back = json.loads(path.read_text())
  for k in SAMPLER_KEYS[:4]:
    assert isinstance(back[k], float) and math.isfinite(back[k]) and back[k] > 0, k
  assert math.isfinite(back["max_abs_output_diff"]) and back["max_abs_output_diff"] >= 0
  # ratio = PyTorch eager time / JAX time, from the same run's medians.
  t = back["timings"]
  assert back["ratio_torch_eager_over_jax"] == pytest.approx(
    t["torch_eager"]["median_s"] / t["jax"]["median_s"]
  )
  assert back["jax_frames_per_s"] == pytest.approx(2 / t["jax"]["median_s"])
  assert back["torch_compile_error"] is None
  for k in ("machine", "versions", "config", "dtype", "batch", "command"):
    assert back[k] not in (None, ""), k
  assert back["machine"]["cpu_count"] >= 1 and back["versions"]["diffusers"]
  assert back["batch"] == 2 and back["config"] == "tiny" and back["dtype"] == "float32"


def test_report_tables_come_from_the_json(sampler_run, tmp_path):
  """`emotalker bench report` writes a table row per JSON with its figures and command."""
  from emotalker_jax import cli

  config, res = sampler_run
  cmd = "emotalker bench sampler --config configs/tiny.py --batch 2"
  doc = dict(
    bench.header(config, [], cmd, note="test note"),
    **{k: v for k, v in res.items() if not k.startswith("_")},
  )
  unet = dict(
    bench.header(config, [], "emotalker bench unet --config configs/tiny.py"),
    benchmark="unet",
    batch=4,
    flops=2.5e9,
    achieved_flops_per_s=1.0e10,
    matmul_flops_per_s=4.0e10,
    roofline_fraction=0.25,
    forward={"time": {"median_s": 0.25, "min_s": 0.2, "max_s": 0.3}},
    forward_backward={"flops": 7.5e9, "achieved_flops_per_s": 9e9, "roofline_fraction": 0.225},
  )
  d = tmp_path / "bench"
  bench.write_json(str(d / "a_sampler.json"), doc)
  bench.write_json(str(d / "b_unet.json"), unet)
  bench.write_json(
    str(d / "c_all.json"),
    dict(
      bench.header(config, [], "emotalker bench all"),
      benchmark="all",
      results={
        "compile": {
          "benchmark": "compile",
          "total_compile_s": {"10": 1.5, "50": 1.6},
          "ratio_50_over_10": 1.0667,
        },
        "pipeline": {"error": "FileNotFoundError: no data"},
      },
    ),
  )
  out = tmp_path / "BENCHMARKS.md"
  assert cli.main(["bench", "report", "--json-dir", str(d), "--out", str(out)]) == 0
  md = out.read_text()
  rows = [l for l in md.splitlines() if l.startswith("| ")]
  sampler_row = next(l for l in rows if cmd in l)
  assert f"{res['ratio_torch_eager_over_jax']:.3g}" in sampler_row
  assert f"{res['jax_frames_per_s']:.3g}" in sampler_row
  unet_row = next(l for l in rows if "bench unet --config configs/tiny.py" in l)
  assert "2.5 G" in unet_row and "0.25" in unet_row and "40 G" in unet_row
  compile_row = next(l for l in rows if "`emotalker bench all`" in l and "1.07" in l)
  assert "1.5" in compile_row and "1.6" in compile_row
  assert "test note" in md and "FileNotFoundError: no data" in md


def test_matmul_flops_match_xla_cost_analysis():
  """The roofline's FLOP count convention (2 n^3 per matmul) is XLA's cost analysis's, the
  same analysis that counts the UNet's FLOPs."""
  fn, flops, xla_flops = bench.make_matmul(96)
  fn()
  assert flops == 2 * 96**3 == xla_flops


def test_interleaved_timings_alternate_and_stats():
  order = []
  times = bench.interleaved_timings(
    {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3
  )
  assert order == ["a", "b"] * 3
  assert len(times["a"]) == len(times["b"]) == 3
  s = bench.stats([3.0, 1.0, 2.0, 10.0, 5.0])
  assert (s["median_s"], s["min_s"], s["max_s"], s["n"]) == (3.0, 1.0, 10.0, 5)


def test_peak_rss_reset_tracks_a_new_allocation():
  """In a fresh process (so no earlier peak hides the growth): a touched 64 MiB array raises
  peak RSS; after freeing it, a reset either lowers the peak (and says so) or reports that
  this kernel ignored it, never claims a reset that did not happen."""
  script = (
    "import json, numpy as np\n"
    "from emotalker_jax import bench\n"
    "base = bench.peak_rss_bytes()\n"
    "x = np.ones(64 * 2 ** 20 // 8)\n"
    "grown = bench.peak_rss_bytes()\n"
    "del x\n"
    "ok = bench.reset_peak_rss()\n"
    "print(json.dumps([base, grown, ok, bench.peak_rss_bytes()]))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    check=True,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  base, grown, reset_ok, after = json.loads(out.stdout.strip().splitlines()[-1])
  assert grown >= base + 48 * 2**20
  if reset_ok:
    assert after < grown - 32 * 2**20
  else:
    assert after >= grown


def test_command_string_reproduces_the_run():
  from emotalker_jax import cli
  from emotalker_jax.commands import bench as cmd
  from emotalker_jax.config_utils import split_config_args

  argv = [
    "bench",
    "sampler",
    "--config",
    "configs/base256.py",
    "--config.dtype=float32",
    "--batch",
    "2",
    "--steps",
    "5",
    "--threads",
    "1",
    "--json",
    "x.json",
  ]
  config_args, rest = split_config_args(argv)
  args = cli.build_parser().parse_args(rest)
  args.config_args = config_args
  s = cmd.command_string(args)
  assert s.startswith(
    "emotalker bench sampler --config configs/base256.py --config.dtype=float32 --batch 2 --steps 5"
  )
  assert "--threads 1" in s and s.endswith("--json x.json")


def test_cli_errors_name_the_fix(tmp_path, capsys):
  from emotalker_jax import cli

  assert cli.main(["bench", "unet"]) == 2
  assert "--config configs/tiny.py" in capsys.readouterr().err
  assert cli.main(["bench", "report", "--json-dir", str(tmp_path / "none")]) == 2
  assert "--json" in capsys.readouterr().err


# ---- slow tier -----------------------------------------------------------------------------


@pytest.mark.slow
def test_unet_bench_keys_and_flop_ratios(repo_root):
  config = tiny(repo_root)
  r = bench.run_unet_bench(config, batch=2, repeats=2, warmup=1, matmul_n=512)
  for k in UNET_KEYS:
    assert math.isfinite(r[k]) and r[k] > 0, k
  # backward ~ 2x forward: fwd+bwd FLOPs between 2x and 4x the forward's.
  assert 2.0 <= r["forward_backward"]["flops"] / r["flops"] <= 4.0
  assert r["roofline_fraction"] == pytest.approx(
    r["achieved_flops_per_s"] / r["matmul_flops_per_s"]
  )


@pytest.mark.slow
def test_train_step_bench_remat_on_off(repo_root):
  config = tiny(repo_root, "--config.train.batch_size=8")
  r = bench.run_train_step_bench(config, remat=(True, False), steps=2, warmup=1, matmul_n=512)
  on, off = r["remat"]["on"], r["remat"]["off"]
  for v in (on, off):
    assert v["examples_per_s"] > 0 and v["flops_per_step"] > 0 and v["peak_memory_bytes"] > 0
  # remat recomputes the forward in the backward: more FLOPs per step.
  assert on["flops_per_step"] > off["flops_per_step"]


@pytest.mark.slow
def test_train_step_bench_compares_the_frozen_networks_in_and_out_of_the_step(repo_root):
  """--compare-frozen-inputs: the variant with the text tower and the reference encoding
  inside the step does their forwards on top of the cached variant's work (more FLOPs)."""
  config = tiny(repo_root, "--config.train.batch_size=8")
  r = bench.run_train_step_bench(
    config, remat=(False,), steps=2, warmup=1, matmul_n=512, compare_frozen_inputs=True
  )
  fi = r["frozen_inputs"]
  in_step, cached = fi["in_step"], fi["cached"]
  assert in_step is r["remat"]["off"]  # tiny caches nothing: its measured row is in_step
  assert in_step["flops_per_step"] > cached["flops_per_step"] > 0
  assert fi["step_ratio_in_step_over_cached"] == pytest.approx(in_step["step_s"] / cached["step_s"])
  assert math.isfinite(cached["final_loss"])


@pytest.mark.slow
def test_sampler_inductor_matches_eager(repo_root):
  config = tiny(repo_root)
  r = bench.run_sampler_bench(
    config, batch=2, steps=2, repeats=1, warmup=0, torch_compile=True, compile_backend="inductor"
  )
  assert r["torch_compile_error"] is None
  assert r["torch_compile_frames_per_s"] > 0
  assert r["max_abs_output_diffs"]["torch_compile_vs_torch_eager"] <= 1e-3 * r["max_abs_output"]


@pytest.mark.slow  # two compiles (train step, sampler) and the torch sampler: ~4 min on 2 cores
def test_gpu_script_runs_end_to_end_on_cpu_at_tiny_size(repo_root, tmp_path):
  """bench/gpu.sh with the tiny config on the CPU: one JSON with the three GPU-goal figures,
  each the figure of its own section, and the printed summary."""
  out = tmp_path / "gpu.json"
  run = subprocess.run(
    [
      "bash",
      str(repo_root / "emotalker_jax" / "bench" / "gpu.sh"),
      "--python",
      sys.executable,
      "--config",
      str(repo_root / "configs" / "tiny.py"),
      "--dtype",
      "float32",
      "--batch",
      "2",
      "--steps",
      "2",
      "--repeats",
      "1",
      "--warmup",
      "0",
      "--matmul-n",
      "512",
      "--out",
      str(out),
    ],
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    timeout=1800,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  doc = json.loads(out.read_text())
  assert doc["benchmark"] == "gpu" and doc["config"] == "tiny" and doc["dtype"] == "float32"
  assert 0.0 < doc["train_step_mfu"] <= 1.0
  assert doc["sampler_frames_per_s"] > 0 and doc["ratio_torch_eager_over_jax"] > 0
  ts, sp = doc["results"]["train-step"], doc["results"]["sampler"]
  # No GPU peak on a CPU: the MFU is taken against the matmul rate measured in the same run.
  assert doc["train_step_mfu"] == pytest.approx(ts["roofline_fraction"])
  assert doc["sampler_frames_per_s"] == pytest.approx(sp["jax_frames_per_s"])
  assert doc["ratio_torch_eager_over_jax"] == pytest.approx(
    sp["timings"]["torch_eager"]["median_s"] / sp["timings"]["jax"]["median_s"]
  )
  assert sp["batch"] == 2 and sp["steps"] == 2 and sp["torch_compile_error"] is None
  assert "train-step MFU" in run.stdout and "frames/s" in run.stdout


def test_report_has_a_row_per_aot_compile_json(tmp_path, repo_root):
  """The committed v5p-64 `aot-compile --json` report becomes one row of the AOT table with
  its per-chip bytes (MiB), FLOPs and compile seconds."""
  from emotalker_jax import cli

  src = repo_root / "docs" / "bench" / "aot_base256_v5p64.json"
  doc = json.loads(src.read_text())
  d = tmp_path / "bench"
  d.mkdir()
  (d / src.name).write_text(src.read_text())
  out = tmp_path / "BENCHMARKS.md"
  assert cli.main(["bench", "report", "--json-dir", str(d), "--out", str(out)]) == 0
  md = out.read_text()
  assert "### AOT compile of the train step" in md
  row = next(l for l in md.splitlines() if l.startswith("| tpu:v5p:2x4x4"))
  mib = lambda k: f"{doc['per_device_bytes'][k] / 2**20:,.0f} MiB"  # noqa: E731
  assert mib("argument_size_in_bytes") in row and mib("temp_size_in_bytes") in row
  assert f"{doc['flops_per_step'] / 1e12:.3g} T" in row
  assert f"({doc['compile_cpu_s']:,.0f})" in row and "| data 32 |" in row
