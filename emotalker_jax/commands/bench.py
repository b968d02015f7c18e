"""``emotalker bench <what> --config configs/X.py [--config.a=b] --json OUT.json``.

what: sampler | unet | train-step | compile | pipeline | gpu | stats | all, or ``report``
(writes docs/BENCHMARKS.md from the JSON files). This module only parses flags; the
benchmarks are the ``emotalker_jax.bench`` package (one module per benchmark, see its
docstring) and docs/BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import shlex
import sys

WHATS = ("sampler", "unet", "train-step", "compile", "pipeline", "gpu", "stats", "all", "report")
# --batch when not given: model stats count one frame, the timed benchmarks use 4 frames
# (gpu: 32, the GPU goal's batch).
DEFAULT_BATCH = {"stats": 1, "gpu": 32}


def _ints(s: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in s.split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "what",
    choices=WHATS,
    help="which benchmark ('all': sampler, unet, "
    "train-step, compile, pipeline; 'gpu': train-step MFU + sampler frames/s + "
    "PyTorch/JAX ratio in one JSON; 'stats': parameter counts and UNet FLOPs; "
    "'report': write the markdown tables from --json-dir)",
  )
  p.add_argument("--json", default=None, help="write the results to this JSON file")
  p.add_argument(
    "--batch",
    type=int,
    default=None,
    help="frames per sampler batch / UNet batch / compile-bench frames (default 4; "
    "gpu: 32; stats: 1)",
  )
  p.add_argument(
    "--steps",
    type=int,
    default=None,
    help="sampler DDIM steps (default: config.sampler.steps; gpu: 25)",
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=5,
    help="timed rounds after warm-up; the median is reported (default 5)",
  )
  p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
  p.add_argument(
    "--no-torch-compile", action="store_true", help="sampler: skip the torch.compile variant"
  )
  p.add_argument(
    "--torch-compile-backend",
    default="inductor",
    help="sampler: torch.compile backend (default inductor)",
  )
  p.add_argument(
    "--remat",
    choices=("both", "on", "off"),
    default="both",
    help="train-step: UNet remat settings to measure (default both)",
  )
  p.add_argument(
    "--compare-frozen-inputs",
    action="store_true",
    help="train-step: also measure the frozen networks' outputs the other way (the text "
    "tower and the reference frames' encoding inside the step vs passed in: "
    "train.prompt_pool_size, train.cache_reference_latents), side by side in this run",
  )
  p.add_argument(
    "--train-batch",
    type=int,
    default=None,
    help="train-step/pipeline global batch (default: config.train.batch_size)",
  )
  p.add_argument(
    "--matmul-n",
    type=int,
    default=None,
    help="size of the reference matmul (default 2048 on CPU, 8192 on GPU)",
  )
  p.add_argument(
    "--compile-steps",
    type=_ints,
    default=(10, 25, 50),
    help="compile: comma-separated sampler step counts (default 10,25,50)",
  )
  p.add_argument(
    "--compile-repeats",
    type=int,
    default=2,
    help="compile: rounds per step count, min taken (default 2)",
  )
  p.add_argument(
    "--workers",
    type=_ints,
    default=(0, 2),
    help="pipeline: comma-separated grain worker counts (default 0,2)",
  )
  p.add_argument(
    "--pipeline-batches",
    type=int,
    default=20,
    help="pipeline: timed batches per worker count (default 20)",
  )
  p.add_argument(
    "--data-dir",
    default=None,
    help="pipeline: TFDS dir (default config.data.data_dir; with --photo-tree "
    "data/bench_photo_tree)",
  )
  p.add_argument(
    "--photo-tree",
    action="store_true",
    help="pipeline: build a mead / crema_d config's dataset, when missing, from the test "
    "photos with synthetic head motion (input_pipeline/photo_trees.py)",
  )
  p.add_argument(
    "--pod-hosts",
    type=int,
    default=None,
    help="pipeline: compare with a pod host's share instead of the train step measured "
    "here: global batch / --pod-step-s / hosts (the pipeline runs the per-host batch)",
  )
  p.add_argument(
    "--pod-step-s", type=float, default=None, help="pipeline: the pod's train-step time (s)"
  )
  p.add_argument(
    "--size",
    type=int,
    default=None,
    help="stats: latent H=W of the FLOP count (default image_size / f)",
  )
  p.add_argument(
    "--context-len",
    type=int,
    default=None,
    help="stats: context tokens of the FLOP count (default: the config's)",
  )
  p.add_argument(
    "--no-flops", action="store_true", help="stats: parameter counts only (no compile)"
  )
  p.add_argument(
    "--threads",
    type=int,
    default=None,
    help="CPU threads for both frameworks: torch.set_num_threads(N), and for N=1 "
    "XLA's single-threaded CPU runtime (default: each library's own default). "
    "On a machine shared with other jobs, N=1 avoids OpenMP spin-wait stalls",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--note", default=None, help="a remark stored in the JSON and the report")
  p.add_argument("--json-dir", default="docs/bench", help="report: folder of JSON files")
  p.add_argument("--out", default="docs/BENCHMARKS.md", help="report: markdown to write")


def batch_of(args) -> int:
  """--batch, or the benchmark's default when it was not given."""
  return args.batch if args.batch is not None else DEFAULT_BATCH.get(args.what, 4)


def command_string(args) -> str:
  """The command line that reproduces this run (every option that affects the figures)."""
  parts = ["emotalker", "bench", args.what]
  cfg = [a.split("=", 1)[1] for a in args.config_args if a.startswith("--config=")]
  if cfg:
    parts += ["--config", cfg[0]]
  parts += [a for a in args.config_args if not a.startswith("--config=")]
  w = args.what
  if w in ("sampler", "unet", "compile", "gpu", "stats", "all"):
    parts += ["--batch", str(batch_of(args))]
  if w in ("sampler", "gpu", "all") and args.steps:
    parts += ["--steps", str(args.steps)]
  if w == "stats":
    parts += [f for f, v in (("--no-flops", args.no_flops),) if v]
    parts += [
      x
      for f, v in (("--size", args.size), ("--context-len", args.context_len))
      if v
      for x in (f, str(v))
    ]
  elif w != "compile":
    parts += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
  if w in ("sampler", "all"):
    if args.no_torch_compile:
      parts.append("--no-torch-compile")
    elif args.torch_compile_backend != "inductor":
      parts += ["--torch-compile-backend", args.torch_compile_backend]
  if w in ("train-step", "all") and args.remat != "both":
    parts += ["--remat", args.remat]
  if w in ("train-step", "all") and args.compare_frozen_inputs:
    parts.append("--compare-frozen-inputs")
  if w in ("train-step", "pipeline", "gpu", "all") and args.train_batch:
    parts += ["--train-batch", str(args.train_batch)]
  if w in ("unet", "train-step", "gpu", "all") and args.matmul_n:
    parts += ["--matmul-n", str(args.matmul_n)]
  if w in ("compile", "all"):
    if tuple(args.compile_steps) != (10, 25, 50):
      parts += ["--compile-steps", ",".join(map(str, args.compile_steps))]
    if args.compile_repeats != 2:
      parts += ["--compile-repeats", str(args.compile_repeats)]
  if w in ("pipeline", "all"):
    if tuple(args.workers) != (0, 2):
      parts += ["--workers", ",".join(map(str, args.workers))]
    if args.pipeline_batches != 20:
      parts += ["--pipeline-batches", str(args.pipeline_batches)]
    if args.photo_tree:
      parts.append("--photo-tree")
    if args.pod_hosts:
      parts += ["--pod-hosts", str(args.pod_hosts), "--pod-step-s", f"{args.pod_step_s:g}"]
    if args.data_dir:
      parts += ["--data-dir", args.data_dir]
  if args.threads:
    parts += ["--threads", str(args.threads)]
  if args.seed:
    parts += ["--seed", str(args.seed)]
  if args.json:
    parts += ["--json", args.json]
  return shlex.join(parts)


def _print_summary(what: str, r: dict) -> None:
  def g(k, fmt="{:.4g}"):
    v = r.get(k)
    return "n/a" if v is None else fmt.format(v)

  if r.get("error"):
    print(f"{what}: FAILED: {r['error'][:500]}")
  elif what == "sampler":
    print(
      f"sampler: JAX {g('jax_frames_per_s')} frames/s, PyTorch eager "
      f"{g('torch_eager_frames_per_s')}, torch.compile {g('torch_compile_frames_per_s')}; "
      f"eager/JAX {g('ratio_torch_eager_over_jax', '{:.3f}')}, compile/JAX "
      f"{g('ratio_torch_compile_over_jax', '{:.3f}')}; max abs diff "
      f"{g('max_abs_output_diff', '{:.3g}')} (of {g('max_abs_output', '{:.3g}')})"
    )
    if r.get("torch_compile_error"):
      print(f"  torch.compile failed: {r['torch_compile_error'][:300]}")
  elif what == "unet":
    fb = r["forward_backward"]
    print(
      f"unet: forward {r['flops'] / 1e9:.4g} GFLOPs at {r['achieved_flops_per_s'] / 1e9:.4g} "
      f"GFLOP/s; matmul {r['matmul_flops_per_s'] / 1e9:.4g} GFLOP/s; roofline "
      f"{r['roofline_fraction']:.3f} (fwd+bwd {fb['roofline_fraction']:.3f})"
      + (f"; MFU {r['mfu']:.3f}" if r.get("mfu") else "")
    )
  elif what in ("train-step", "train_step"):
    for k, v in r["remat"].items():
      print(
        f"train-step remat={k}: {v['step_s'] * 1e3:.4g} ms/step, "
        f"{v['examples_per_s']:.4g} examples/s, {v['flops_per_step'] / 1e9:.4g} GFLOPs/step, "
        f"roofline {v['roofline_fraction']:.3f}, peak memory "
        f"{v['peak_memory_bytes'] / 2**20:.0f} MiB"
        + (f", MFU {v['mfu']:.3f}" if v.get("mfu") else "")
      )
    fi = r.get("frozen_inputs")
    if fi:
      print(
        f"train-step frozen networks (remat={fi['remat']}): inside the step "
        f"{fi['in_step']['step_s'] * 1e3:.4g} ms, outputs passed in "
        f"{fi['cached']['step_s'] * 1e3:.4g} ms: ratio "
        f"{fi['step_ratio_in_step_over_cached']:.3f} (FLOPs "
        f"{fi['flops_ratio_in_step_over_cached']:.3f})"
      )
  elif what == "compile":
    tot = r.get("total_compile_s", {})
    print(
      "compile: sampler "
      + ", ".join(f"{k} steps {v:.3g} s" for k, v in tot.items())
      + f"; ratio 50/10 {g('ratio_50_over_10', '{:.3f}')}"
      + (f"; train step {r['train_step']['total_s']:.3g} s" if "train_step" in r else "")
    )
  elif what == "pipeline":
    need = "pod host needs" if r.get("pod") else "train step"
    print(
      f"pipeline: {r['pipeline_examples_per_s']:.4g} examples/s (best, "
      f"{r['best_workers']} workers) vs {need} {r['train_step_examples_per_s']:.4g} "
      f"examples/s: ratio {r['ratio_pipeline_over_train_step']:.3g}"
    )
  elif what == "gpu":
    from emotalker_jax.bench import gpu

    print("\n".join(gpu.summary_lines(r)))
  elif what == "stats":
    from emotalker_jax.bench import model_stats

    print("\n".join(model_stats.summary_lines(r)))


def _limit_threads(n: int) -> None:
  """torch.set_num_threads(n); n = 1 also switches XLA's CPU runtime to one thread (XLA_FLAGS,
  which only takes effect when JAX has not started yet: a warning says otherwise)."""
  import os

  if n == 1:
    if "jax" in sys.modules:
      print(
        "emotalker bench: warning: JAX is already loaded; --threads 1 cannot change "
        "XLA's CPU threads in this process",
        file=sys.stderr,
      )
    flag = "--xla_cpu_multi_thread_eigen=false"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
      os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
  try:
    import torch
  except ImportError:
    return
  torch.set_num_threads(n)


def run(args) -> int:
  from emotalker_jax.config_utils import config_from_args

  if args.what == "report":
    from emotalker_jax import bench

    bench.write_report(args.json_dir, args.out)
    print(f"wrote {args.out}")
    return 0
  args.batch = batch_of(args)
  for name in ("batch", "repeats"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
  config, _, overrides = config_from_args(args.config_args)
  if args.threads is not None:
    if args.threads < 1:
      raise ValueError(f"--threads must be >= 1, got {args.threads}")
    _limit_threads(args.threads)

  from emotalker_jax import bench

  progress = bench.stderr
  opts = dict(
    batch=args.batch,
    steps=args.steps,
    repeats=args.repeats,
    warmup=args.warmup,
    torch_compile=not args.no_torch_compile,
    compile_backend=args.torch_compile_backend,
    remat={"both": (True, False), "on": (True,), "off": (False,)}[args.remat],
    train_batch=args.train_batch,
    compare_frozen_inputs=args.compare_frozen_inputs,
    matmul_n=args.matmul_n,
    compile_steps=tuple(args.compile_steps),
    compile_repeats=args.compile_repeats,
    workers=tuple(args.workers),
    pipeline_batches=args.pipeline_batches,
    data_dir=args.data_dir,
    photo_tree=args.photo_tree,
    pod_hosts=args.pod_hosts,
    pod_step_s=args.pod_step_s,
    seed=args.seed,
    size=args.size,
    context_len=args.context_len,
    flops=not args.no_flops,
  )
  base = bench.header(config, overrides, command_string(args), args.note)
  base["threads"] = args.threads
  if args.what == "all":
    result = bench.run_all(config, opts, base=base, json_path=args.json, progress=progress)
    for what, r in result["results"].items():
      _print_summary(what, r)
    failed = [w for w, r in result["results"].items() if r.get("error")]
  else:
    result = dict(base, **bench.run_one(args.what, config, opts, progress))
    if args.json:
      bench.write_json(args.json, result)
    _print_summary(args.what, result)
    failed = []
  if args.json:
    print(f"wrote {args.json}")
  if failed:
    print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0
