"""Device meshes, logical-axis sharding rules and multi-host start-up.

The modules only name logical axes (``batch``, ``embed``, ``heads`` ...); the mapping to
mesh axes (``data``, ``fsdp``, ``tensor``) is data in the config
(``config.logical_axis_rules``), maxtext-style. Everything here is a thin layer over
``jax.sharding`` and ``flax.linen`` partitioning helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging
import math
import os
from typing import Any

from flax import linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

log = logging.getLogger(__name__)


# Environment variables of a hand-launched job (a CPU test, a bare-metal GPU box):
# jax.distributed.initialize reads JAX_COORDINATOR_ADDRESS itself but not these, so
# maybe_initialize_distributed passes them on.
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
# Seconds without heartbeats before the coordination service declares a process dead and
# every other process aborts (jax's default: 100 s).
HEARTBEAT_TIMEOUT_ENV = "EMOTALKER_HEARTBEAT_TIMEOUT_S"


def _env_int(name: str) -> int | None:
  v = os.environ.get(name, "").strip()
  if not v:
    return None
  try:
    return int(v)
  except ValueError:
    raise ValueError(f"{name}={v!r} is not an integer; unset it or set e.g. {name}=2") from None


def maybe_initialize_distributed(
  mode: str = "auto",
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  heartbeat_timeout_s: int | None = None,
) -> bool:
  """Calls ``jax.distributed.initialize`` when this process is one of several.

  mode: 'auto' (initialise when the environment describes a multi-process job: a
  coordinator address, a SLURM job with several tasks, or a multi-host TPU slice),
  'on' (always) or 'off'. Must run before any other JAX call. Returns True when it
  initialised.

  A job launched by hand names its peers with ``coordinator_address`` / ``num_processes``
  / ``process_id`` or the environment (``JAX_COORDINATOR_ADDRESS=host:port``,
  ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); on TPU and SLURM jax finds them itself.
  ``heartbeat_timeout_s`` (or ``EMOTALKER_HEARTBEAT_TIMEOUT_S``): after this long
  without a heartbeat from a process, the others abort with a message naming it
  (jax's default 100 s). On CPU the collectives go over gloo (TCP).
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"mesh.distributed={mode!r}: use 'auto', 'on' or 'off'")
  if mode == "off":
    return False
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = _env_int(NUM_PROCESSES_ENV) if num_processes is None else int(num_processes)
  process_id = _env_int(PROCESS_ID_ENV) if process_id is None else int(process_id)
  if heartbeat_timeout_s is None:
    heartbeat_timeout_s = _env_int(HEARTBEAT_TIMEOUT_ENV)
  multi = (
    coordinator_address is not None
    or (num_processes or 1) > 1
    # Only a task of an srun step is one of several processes: the batch script itself also
    # sees SLURM_NTASKS but runs once, and jax's SLURM detection needs the step's node list.
    or ("SLURM_STEP_NODELIST" in env and int(env.get("SLURM_NTASKS", "1")) > 1)
    or len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
    or "MEGASCALE_COORDINATOR_ADDRESS" in env
  )
  if not (mode == "on" or multi):
    return False
  kwargs = {}
  if heartbeat_timeout_s is not None:
    kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_s)
  if "cpu" in env.get("JAX_PLATFORMS", "").split(","):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # Unset values are found by jax's cluster detection (TPU metadata, SLURM, ...).
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    **kwargs,
  )
  log.info(
    "jax.distributed: process %d of %d, %d local of %d devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


_barrier_counts: dict[str, int] = {}


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Every process of a multi-process job waits here (a no-op in one process).

  A coordination-service barrier, not a device collective: the first collective of a new
  program opens a communicator, and CPU's gloo gives a late peer only 30 s to join it, so
  processes that compiled at different speeds meet here first. ``name`` may repeat (a
  per-name counter makes each barrier unique, the same on every process)."""
  if jax.process_count() == 1:
    return
  n = _barrier_counts[name] = _barrier_counts.get(name, 0) + 1
  ocp.multihost.get_barrier_sync_fn()(key=f"emotalker_{name}_{n}", timeout_ms=timeout_s * 1000)


def resolve_mesh_shape(
  sizes: Sequence[int], num_devices: int, what: str = "mesh"
) -> tuple[int, ...]:
  """Fills at most one ``-1`` so that the product equals ``num_devices``."""
  sizes = [int(s) for s in sizes]
  if sizes.count(-1) > 1:
    raise ValueError(f"{what} sizes {sizes}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
    raise ValueError(
      f"{what} sizes {dict(zip(MESH_AXES, sizes))} do not divide {num_devices} devices; "
      "set e.g. --config.mesh.data=-1 to fill the rest automatically"
    )
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(
      f"{what} sizes {dict(zip(MESH_AXES, sizes))} use {math.prod(sizes)} devices but "
      f"{num_devices} are present; make one axis -1"
    )
  return tuple(sizes)


def create_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``Mesh`` with axes (data, fsdp, tensor) from ``config.mesh``.

  ``mesh_config`` has ``data``, ``fsdp``, ``tensor`` (one may be -1) and optionally
  ``dcn_data``, ``dcn_fsdp`` (multi-slice: sizes across slices over the data-centre
  network; the ICI sizes are then per slice).
  """
  devices = list(jax.devices() if devices is None else devices)
  ici = [mesh_config.get(a, 1) for a in MESH_AXES]
  dcn = [mesh_config.get(f"dcn_{a}", 1) for a in MESH_AXES]
  num_slices = math.prod(dcn)
  if num_slices > 1:
    ici = resolve_mesh_shape(ici, len(devices) // num_slices, "mesh (per slice)")
    arr = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
  else:
    ici = resolve_mesh_shape(ici, len(devices))
    try:
      arr = mesh_utils.create_device_mesh(ici, devices=devices)
    except (AssertionError, NotImplementedError, ValueError):
      # Simulated or unusual topologies: a plain reshape keeps device order.
      arr = np.asarray(devices).reshape(ici)
  return Mesh(arr, MESH_AXES)


def rules_from_config(config: Any) -> tuple[tuple[str, Any], ...]:
  """The logical -> mesh axis rules as a tuple of (logical, mesh axes or None)."""
  return tuple(
    (name, tuple(m) if isinstance(m, list) else m) for name, m in config.logical_axis_rules
  )


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree of (abstract) params boxed with logical axis names."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Shards the leading (batch) axis over data and fsdp; other axes replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host-local batch (a pytree of numpy arrays) on the mesh, sharded on axis 0.

  Single process: a device_put. Several processes: each contributes its local slice
  of the global batch (``jax.make_array_from_process_local_data``).
  """

  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)


def _fit_spec(shape: tuple[int, ...], spec: P, mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide (e.g. a 4-channel latent conv
  on an 8-way fsdp axis): such a tensor is replicated on that dimension instead."""
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    size = math.prod(mesh.shape[n] for n in names)
    out.append(axes if shape[i] % size == 0 else None)
  return P(*out)


def fit_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """Makes every NamedSharding valid for its array's shape (see ``_fit_spec``)."""

  def fit(x, s):
    if isinstance(s, NamedSharding) and hasattr(x, "shape"):
      return NamedSharding(s.mesh, _fit_spec(tuple(x.shape), s.spec, s.mesh))
    return s

  return jax.tree.map(fit, abstract_tree, shardings)
