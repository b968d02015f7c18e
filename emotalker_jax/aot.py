"""Ahead-of-time compilation of the train step for a target topology, with no accelerator.

    emotalker aot-compile --config configs/base256.py --topology v5e:2x2
    emotalker aot-compile --config configs/tiny.py --cpu-devices 8

With ``--topology`` the step is lowered and compiled for that TPU slice through
``jax.experimental.topologies`` (needs the ``libtpu`` package at the version ``jax[tpu]``
pins, e.g. ``pip install 'libtpu==0.0.42.*'`` for jax 0.10.2; no TPU is attached). With
``--cpu-devices N`` it compiles for N simulated CPU devices instead. Either way it prints
and saves (``--json``) per-device memory (arguments, outputs, temporaries, generated
code) and the FLOPs of one step from XLA's analyses: whether a config fits before any pod
time is spent. Nothing is allocated: every array is a ``jax.ShapeDtypeStruct``.
"""

from __future__ import annotations

import os
import re
import time

from flax import linen as nn
import jax
import jax.numpy as jnp

from emotalker_jax import parallel
from emotalker_jax.diffusion import schedule as sched
from emotalker_jax.models import text_encoder as te
from emotalker_jax.models.autoencoder import build_autoencoder, init_autoencoder
from emotalker_jax.models.emotalker import EmoTalker, init_emotalker
from emotalker_jax.training import state as state_lib
from emotalker_jax.training.state import param_count
from emotalker_jax.training.step import batch_spec, jit_train_step, make_train_step


def abstract_train_step(config, mesh):
  """(jitted step, abstract (state, frozen, batch) with shardings) for ``config`` on ``mesh``."""

  rules = parallel.rules_from_config(config)
  family, tcfg, _, _ = te.read_text_config(config.text.path or None, kind=config.text.encoder)
  text_module = (
    te.BertTextModel(tcfg, dtype=jnp.dtype(config.dtype))
    if family == "bert"
    else te.CLIPTextModel(tcfg, dtype=jnp.dtype(config.dtype))
  )
  L = int(config.text.max_length)
  model, vae = EmoTalker(config), build_autoencoder(config)
  tx = state_lib.make_optimizer(config.train)
  init = state_lib.init_state_fn(lambda r: init_emotalker(model, r, tcfg.hidden_size), tx)
  abstract_state, state_sh = state_lib.abstract_state_and_shardings(init, mesh, rules)
  rep = parallel.replicated(mesh)
  ids = jnp.zeros((1, L), jnp.int32)
  frozen = {
    "vae": nn.meta.unbox(
      jax.eval_shape(
        lambda r: init_autoencoder(vae, r, config.data.image_size)["params"], jax.random.key(0)
      )
    ),
    "text": nn.meta.unbox(
      jax.eval_shape(lambda r: text_module.init(r, ids, ids)["params"], jax.random.key(0))
    ),
  }
  frozen_sh = jax.tree.map(lambda _: rep, frozen)
  batch = batch_spec(config)
  batch_sh = {k: parallel.batch_sharding(mesh, len(v.shape)) for k, v in batch.items()}
  step = make_train_step(model, vae, text_module, sched.from_config(config.diffusion), config)
  jitted = jit_train_step(step, state_sh, frozen_sh, batch_sh)
  return jitted, (abstract_state, frozen, batch), rules


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = ", re.M)


def program_size(compiled) -> dict:
  """What the backend had to build: instructions of the optimised HLO module (all
  computations) and fusions called from its entry computation. XLA's TPU compile time grows
  with these, which is why they are reported beside the compile seconds."""
  text = compiled.as_text() or ""
  start = text.find("\nENTRY")
  entry = text[start : text.find("\n}", start)] if start >= 0 else ""
  return {
    "hlo_instructions": len(_INSTRUCTION.findall(text)),
    "entry_fusions": entry.count(" fusion("),
  }


def _cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def compile_report(config, devices, target: str) -> dict:
  mesh = parallel.create_mesh(config.mesh, devices)
  jitted, args, rules = abstract_train_step(config, mesh)
  t0 = time.perf_counter()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    lowered = jitted.lower(*args)
  t1, c1 = time.perf_counter(), _cpu_seconds()
  compiled = lowered.compile()
  t2, c2 = time.perf_counter(), _cpu_seconds()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  gib = 1024**3
  fields = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
    "alias_size_in_bytes",
  )
  per_device = {f: int(getattr(mem, f, 0) or 0) for f in fields} if mem is not None else {}
  peak = (
    per_device.get("argument_size_in_bytes", 0)
    + per_device.get("output_size_in_bytes", 0)
    + per_device.get("temp_size_in_bytes", 0)
    - per_device.get("alias_size_in_bytes", 0)
  )
  return {
    "target": target,
    "config": config.name,
    "num_devices": len(devices),
    "device_kind": devices[0].device_kind,
    "mesh": dict(mesh.shape),
    "global_batch": int(config.train.batch_size),
    "dtype": config.dtype,
    "remat": bool(config.unet.remat),
    "trainable_params": param_count(args[0].params),
    "per_device_bytes": per_device,
    "per_device_peak_gib_estimate": peak / gib,
    "flops_per_step": float(cost.get("flops", -1)) if cost else None,
    "lower_s": t1 - t0,
    "compile_s": t2 - t1,
    "compile_cpu_s": c2 - c1,
    **program_size(compiled),
  }
