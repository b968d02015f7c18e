"""`emotalker aot-compile --config FILE (--topology v5e:2x2 | --cpu-devices N) [--json OUT]`:
compiles the sharded train step for a TPU topology (or N simulated CPU devices) with no
accelerator and prints per-device memory and FLOPs (the library: emotalker_jax/aot.py).

JAX reads JAX_PLATFORMS / XLA_FLAGS when it starts, so ``run`` sets them before importing
anything that imports JAX.
"""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
  g = p.add_mutually_exclusive_group()
  g.add_argument(
    "--topology", default=None, help="TPU topology, e.g. v5e:2x2, v5p:2x2x2, v6e:4x4 (needs libtpu)"
  )
  g.add_argument("--cpu-devices", type=int, default=8, help="simulated CPU devices")
  p.add_argument("--json", default=None, help="write the report here")


def run(args) -> int:
  from emotalker_jax.config_utils import config_from_args

  config, _, _ = config_from_args(args.config_args)
  if args.topology:
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from jax.experimental import topologies

    try:
      topo = topologies.get_topology_desc(topology_name=args.topology, platform="tpu")
    except Exception as e:  # noqa: BLE001 - libtpu missing or bad name: say which
      raise ValueError(
        f"--topology {args.topology}: no TPU compiler available ({type(e).__name__}: "
        f"{str(e)[:200]}); install libtpu at the version jax[tpu] pins "
        "(jax 0.10.2: pip install 'libtpu==0.0.42.*') or use --cpu-devices N"
      ) from None
    devices, target = list(topo.devices), f"tpu:{args.topology}"
  else:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
      f"{flags} --xla_force_host_platform_device_count={args.cpu_devices}"
    ).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    devices, target = jax.devices()[: args.cpu_devices], f"cpu:{args.cpu_devices}"
    if len(devices) < args.cpu_devices:
      raise ValueError(
        f"--cpu-devices {args.cpu_devices}: JAX was already started with "
        f"{len(devices)} devices; run in a fresh process"
      )
  from emotalker_jax.aot import compile_report

  report = compile_report(config, devices, target)
  print(json.dumps(report, indent=2))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
      json.dump(report, fh, indent=2)
  return 0
