"""The training loop: data, sharded steps, checkpoints (``emotalker_jax.checkpoints``),
metrics, signals.

``emotalker train --config configs/X.py --workdir DIR`` runs ``train(config, DIR)``:
- resumes from the latest checkpoint in DIR/checkpoints automatically (train state +
  grain iterator state: the data order continues exactly where it stopped);
- SIGTERM / SIGINT (preemption) saves a checkpoint at the next step boundary and exits;
- a non-finite loss stops training with a message naming the step (checked one step
  behind, so the host never waits on the device inside the loop);
- metrics go to DIR/metrics.jsonl and TensorBoard event files (tensorboardX, no TF);
- ``--profile`` writes a jax.profiler trace of a few steps to DIR/profile.

DIR may be ``gs://bucket/run``: every path is an ``etils.epath.Path`` (``checkpoints.as_path``).
Several processes (``jax.distributed``): each reads its shard of the data and saves its own
grain iterator state; a SIGTERM to any of them stops all at the same step (orbax's
``reached_preemption``), and the NaN and max-steps stops agree (global loss, same steps).
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import io
import json
import logging
import math
import os
import signal
import time
from typing import Any

from etils import epath
from flax import linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX import record_writer as tb_record_writer
from tqdm import tqdm

from emotalker_jax import checkpoints, parallel
from emotalker_jax.diffusion import schedule as sched
from emotalker_jax.models.autoencoder import build_autoencoder
from emotalker_jax.models.emotalker import EmoTalker, init_emotalker
from emotalker_jax.models.text_encoder import load_text_encoder
from emotalker_jax.training import frozen_cache, prompt_pool
from emotalker_jax.training import state as state_lib
from emotalker_jax.training.step import (
  REF_LATENT_KEY,
  TEXT_STATES_KEY,
  TOKEN_KEYS,
  batch_keys,
  batch_spec,
  cache_reference_latents,
  jit_train_step,
  make_train_step,
)
from input_pipeline.pipeline import make_train_loader

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss; the message names the step."""


class PeerLostError(RuntimeError):
  """A collective of a multi-process job failed: another process is gone. jax's
  coordination service names it in the log (after EMOTALKER_HEARTBEAT_TIMEOUT_S) and then
  ends this process too; restarting every process resumes from the last checkpoint."""


@dataclasses.dataclass
class Trainer:
  """Everything a train step needs, built once from a config (see ``build_trainer``)."""

  config: Any
  mesh: Any
  rules: Any
  model: EmoTalker
  vae: Any
  text: Any  # models.text_encoder.TextEncoder (frozen)
  schedule: sched.Schedule
  state: state_lib.TrainState
  state_shardings: Any
  frozen: dict
  frozen_shardings: Any
  step_fn: Any
  # train.prompt_pool_size > 0: the pooled prompts' frozen token states; and with
  # train.cache_reference_latents, the reference frames' latents (training/frozen_cache.py).
  text_states: frozen_cache.TextStateCache | None = None
  reference_latents: frozen_cache.ReferenceLatentCache | None = None
  compiled: bool = dataclasses.field(default=False, repr=False)

  def device_batch(self, host_batch: dict) -> dict:
    """Pipeline batch (numpy, with 'prompt' strings) -> sharded arrays of ``batch_keys(config)``."""
    prompts = [str(p) for p in np.asarray(host_batch["prompt"]).reshape(-1)]
    batch = {
      k: np.asarray(host_batch[k], np.float32)
      for k in batch_keys(self.config)
      if k not in TOKEN_KEYS and k not in (TEXT_STATES_KEY, REF_LATENT_KEY)
    }
    if self.reference_latents is not None:
      missing = [k for k in ("ref_clip_id", "ref_frame", "x_ref") if k not in host_batch]
      if missing:
        raise ValueError(
          f"train.cache_reference_latents needs the pipeline's {', '.join(missing)} in the "
          "batch (input_pipeline.pipeline.MakeExample gives them); set "
          "--config.train.cache_reference_latents=False for another loader"
        )
      batch[REF_LATENT_KEY] = self.reference_latents(
        host_batch["ref_clip_id"], host_batch["ref_frame"], host_batch["x_ref"]
      )
    if self.text_states is not None:
      batch[TEXT_STATES_KEY], batch["attention_mask"] = self.text_states(prompts)
    else:
      tok = self.text.tokenize(prompts)
      batch["input_ids"] = tok["input_ids"]
      batch["attention_mask"] = tok["attention_mask"]
    return parallel.shard_batch(batch, self.mesh)

  def step(self, batch: dict):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      if not self.compiled and jax.process_count() > 1:
        # Compile first (the call below reuses it), then meet the other processes: their
        # compile may take longer than a new collective waits for a peer.
        self.step_fn.lower(self.state, self.frozen, batch).compile()
        parallel.barrier("train_step_compiled")
      self.compiled = True
      self.state, metrics = self.step_fn(self.state, self.frozen, batch)
    return metrics


def with_pretrained_eib(state, shardings, path: str):
  """Replaces the EIB params (and their EMA) by those of an `emotalker eib-train` folder
  (its intensity head is trained on FED; the generator then fine-tunes everything)."""
  eib = checkpoints.restore_eib_params(path)
  want = jax.tree.map(lambda x: x.shape, state.params["eib"])
  got = jax.tree.map(lambda x: tuple(x.shape), eib)
  if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
    raise ValueError(
      f"EIB in {path} does not fit this config's EIB (context_dim, "
      "eib.hidden, eib.num_text_tokens must match the eib-train config)"
    )
  eib = jax.device_put(eib, shardings.params["eib"])
  params = {**state.params, "eib": eib}
  ema = {**state.ema_params, "eib": jax.tree.map(lambda x: x.copy(), eib)}
  log.info("EIB initialised from %s", path)
  return state.replace(params=params, ema_params=ema)


def build_trainer(
  config, mesh=None, rng: jax.Array | None = None, text=None, vae_params=None
) -> Trainer:
  """Model, frozen parts, sharded state and the jitted step for ``config``."""
  mesh = mesh if mesh is not None else parallel.create_mesh(config.mesh)
  rules = parallel.rules_from_config(config)
  rng = jax.random.key(int(config.seed)) if rng is None else rng
  r_init, r_vae = jax.random.split(rng)
  if text is None:
    text = load_text_encoder(
      config.text.path or None, kind=config.text.encoder, max_length=int(config.text.max_length)
    )
  model = EmoTalker(config)
  vae = build_autoencoder(config)
  if vae_params is None:
    vae_params = checkpoints.load_frozen_autoencoder(config, vae, r_vae)
  tx = state_lib.make_optimizer(config.train)
  init = state_lib.init_state_fn(lambda r: init_emotalker(model, r, text.hidden_size), tx)
  state, state_shardings = state_lib.create_sharded_state(init, r_init, mesh, rules)
  parallel.barrier("trainer_initialised")  # before the first collective (device_put checks)
  if config.train.eib_checkpoint:
    checkpoints.eib.check_eib_text_encoder(config.train.eib_checkpoint, text.path)
    state = with_pretrained_eib(state, state_shardings, config.train.eib_checkpoint)
  frozen = {"vae": vae_params, "text": text.params}
  frozen_shardings = jax.tree.map(lambda _: parallel.replicated(mesh), frozen)
  frozen = jax.device_put(frozen, frozen_shardings)
  schedule = sched.from_config(config.diffusion)
  step = make_train_step(model, vae, text.module, schedule, config)
  batch_shardings = {
    k: parallel.batch_sharding(mesh, len(v.shape)) for k, v in batch_spec(config).items()
  }
  step_fn = jit_train_step(step, state_shardings, frozen_shardings, batch_shardings)
  return Trainer(
    config,
    mesh,
    rules,
    model,
    vae,
    text,
    schedule,
    state,
    state_shardings,
    frozen,
    frozen_shardings,
    step_fn,
    frozen_cache.TextStateCache(text) if prompt_pool.pool_enabled(config) else None,
    (
      # the process-local params (not the mesh's): each process computes its own misses
      frozen_cache.ReferenceLatentCache(vae, vae_params, int(config.data.image_size))
      if cache_reference_latents(config)
      else None
    ),
  )


# ---------------------------------------------------------------------------------------
# Loop
# ---------------------------------------------------------------------------------------
class _Signals:
  """Turns SIGTERM/SIGINT into a stop at a step boundary (save, then exit).

  One process: a Python handler sets ``stop``. Several processes (``synchronised``): SIGTERM
  is left to jax's preemption notifier (installed by jax.distributed.initialize, so a
  Python handler here would replace it), which makes every process reach
  ``CheckpointManager.reached_preemption`` at the same step; SIGINT is forwarded to it as
  a SIGTERM of this process, so Ctrl-C also saves in step.
  """

  def __init__(self, synchronised: bool = False):
    self.stop = None
    self.synchronised = synchronised
    self._old = {}

  def __enter__(self):
    sigs = (signal.SIGINT,) if self.synchronised else (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside some test runners)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.stop = signal.Signals(signum).name
    if self.synchronised:
      os.kill(os.getpid(), signal.SIGTERM)  # to jax's preemption notifier

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class _EpathEventFile:
  """tensorboardX's record-file protocol (write / flush / close) over an etils.epath URL:
  object stores have no append, so each flush rewrites the whole file (what tensorboardX's
  own gs:// writer does, without needing google-cloud-storage)."""

  def __init__(self, path: str):
    self.path = checkpoints.as_path(path)
    self.buffer = io.BytesIO()
    self.closed = False

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    if not self.closed:  # tensorboardX's atexit hook flushes closed writers again
      self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()
    self.closed = True


class _EpathEventFiles:
  """A tensorboardX writer factory for one URL scheme (``gs``) through etils.epath."""

  def open(self, path: str) -> _EpathEventFile:
    return _EpathEventFile(path)

  def directory_check(self, path: str) -> None:
    checkpoints.as_path(path).mkdir(parents=True, exist_ok=True)


def _tensorboard_writer(logdir: epath.Path) -> SummaryWriter:
  """A SummaryWriter for a local folder or a URL (event files written through epath)."""
  if checkpoints.is_remote(logdir):
    scheme = os.fspath(logdir).split("://", 1)[0]
    tb_record_writer.register_writer_factory(scheme, _EpathEventFiles())
  return SummaryWriter(os.fspath(logdir))


class MetricWriter:
  """Scalars to WORKDIR/metrics.jsonl (one JSON object per logged step) and TensorBoard
  event files in WORKDIR/tensorboard (tensorboardX), written by process 0 only (the
  metrics are global: every process holds the same values).

  WORKDIR may be a URL (``gs://...``): everything goes through etils.epath. A local
  metrics.jsonl is appended to row by row; an object store cannot append, so there the
  file (its earlier rows read back first) is rewritten at most every ``flush_every_s``
  seconds and at ``close``, and the event files likewise on tensorboardX's flushes.
  """

  def __init__(self, workdir: str | os.PathLike, flush_every_s: float = 60.0):
    self.active = jax.process_index() == 0
    self.workdir = checkpoints.as_path(workdir)
    self.remote = checkpoints.is_remote(self.workdir)
    self.jsonl_path = self.workdir / "metrics.jsonl"
    self.flush_every_s = float(flush_every_s)
    self._jsonl = self._tb = None
    self._text, self._dirty, self._flushed = "", False, time.monotonic()
    if not self.active:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    if self.remote:
      self._text = self.jsonl_path.read_text() if self.jsonl_path.exists() else ""
    else:
      self._jsonl = self.jsonl_path.open("a")
    self._tb = _tensorboard_writer(self.workdir / "tensorboard")

  def write(self, step: int, scalars: dict) -> None:
    if not self.active:
      return
    row = json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n"
    if self.remote:
      self._text += row
      self._dirty = True
      if time.monotonic() - self._flushed >= self.flush_every_s:
        self.flush()
    else:
      self._jsonl.write(row)
      self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))

  def flush(self) -> None:
    """Writes buffered rows (remote workdirs; local rows are written as they come)."""
    if self.active and self.remote and self._dirty:
      self.jsonl_path.write_text(self._text)
      self._dirty, self._flushed = False, time.monotonic()

  def close(self) -> None:
    if self.active:
      self.flush()
      if self._jsonl is not None:
        self._jsonl.close()
      self._tb.close()


def _stop_requested(signals: _Signals, mngr, step: int, multi: bool) -> bool:
  """Whether every process stops after ``step`` (they must agree, or the next collective
  hangs): one process asks its own signal flag; several ask orbax's synchronised
  ``reached_preemption`` (True on all of them at the same step once any of them got a
  SIGTERM), or, with jax's preemption service off, an all-gather of the local flags."""
  if not multi:
    return signals.stop is not None
  if signals.synchronised:
    return bool(mngr.reached_preemption(step))
  flags = multihost_utils.process_allgather(np.int32(signals.stop is not None))
  return bool(np.any(flags))


def train(
  config,
  workdir: str | os.PathLike,
  *,
  loader=None,
  trainer: Trainer | None = None,
  max_steps: int | None = None,
  profile: bool = False,
  progress: bool = True,
) -> dict:
  """Trains until ``config.train.steps`` (or ``max_steps`` more steps in this call).

  WORKDIR: a local folder or a URL (``gs://bucket/run``, through etils.epath). In a
  multi-process job every process runs this with the same arguments; each feeds its own
  shard of the data and saves its own iterator state.

  Returns {'step', 'stopped_by' ('done' | 'max_steps' | 'SIGTERM' | 'SIGINT'), 'last'
  (the last logged metrics)}, and per frozen cache in use ('prompt_pool',
  'reference_latents') its counts: computed by the frozen network, reused, cached.
  Raises NonFiniteLossError on a NaN/Inf loss.
  """
  tc = config.train
  workdir = checkpoints.as_path(workdir)
  multi = jax.process_count() > 1
  trainer = trainer or build_trainer(config)
  if loader is None:
    loader = make_train_loader(config, prompt_fn=prompt_pool.prompt_fn_from_config(config))
  iterator: Iterator = iter(loader)
  mngr = checkpoints.checkpoint_manager(workdir, config)
  start = 0
  if mngr.latest_step() is not None:
    start = checkpoints.restore_checkpoint(mngr, trainer, iterator)
    log.info("resumed from %s at step %d", workdir, start)
  total = int(tc.steps)
  end = total if max_steps is None else min(total, start + int(max_steps))
  if multi:  # the stops below are functions of (start, end) and the global loss
    multihost_utils.assert_equal(
      np.array([start, end]), f"processes resumed at different steps from {workdir}"
    )
  writer = MetricWriter(workdir)
  stopped_by, last, pending = "done", {}, None
  bar = tqdm(
    total=total,
    initial=start,
    desc="train",
    unit="step",
    disable=not progress or jax.process_index() != 0,
    dynamic_ncols=True,
  )
  t0, n0 = time.perf_counter(), start
  try:
    with _Signals(synchronised=multi and _preemption_service_on()) as signals:
      step = start
      while step < end:
        batch = trainer.device_batch(next(iterator))
        if profile and step == start + 2:
          jax.profiler.start_trace(os.fspath(workdir / "profile"))
        metrics = trainer.step(batch)
        if profile and step == start + 5:
          jax.profiler.stop_trace()
        if pending is not None:  # check the previous step: no sync on this one
          _check_finite(*pending)
        pending = (step, metrics)
        step += 1
        bar.update(1)
        if step % int(tc.log_every) == 0 or step == end:
          _check_finite(*pending)
          last = {k: float(v) for k, v in jax.device_get(metrics).items()}
          dt = time.perf_counter() - t0
          last["steps_per_s"] = (step - n0) / max(dt, 1e-9)
          t0, n0 = time.perf_counter(), step
          writer.write(step, last)
          bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
        if step % int(tc.ckpt_every) == 0 or step == total:
          checkpoints.save_checkpoint(mngr, trainer, iterator)
        if _stop_requested(signals, mngr, step, multi):
          stopped_by = signals.stop or "SIGTERM"  # a peer's SIGTERM when not ours
          checkpoints.save_checkpoint(mngr, trainer, iterator, force=True)
          log.warning("%s received: checkpoint saved at step %d", stopped_by, step)
          break
      if pending is not None:
        _check_finite(*pending)
      if stopped_by == "done" and step < total:
        stopped_by = "max_steps"
        checkpoints.save_checkpoint(mngr, trainer, iterator, force=True)
  except jax.errors.JaxRuntimeError as e:
    if not multi:
      raise
    raise PeerLostError(
      f"process {jax.process_index()} of {jax.process_count()}: a collective failed "
      f"({str(e)[:300]}); another process of the job most likely died: jax's coordination "
      "service names it below ('stopped sending heartbeats') and then ends this process. "
      "Restart every process with the same command: training resumes from the last "
      f"checkpoint in {workdir / checkpoints.workdir.CHECKPOINTS_SUBDIR} (step "
      f"{mngr.latest_step()})"
    ) from None
  finally:
    bar.close()
    try:
      mngr.wait_until_finished()
      mngr.close()
    finally:
      writer.close()
  out = {"step": int(jax.device_get(trainer.state.step)), "stopped_by": stopped_by, "last": last}
  for name, cache in (
    ("prompt_pool", trainer.text_states),
    ("reference_latents", trainer.reference_latents),
  ):
    if cache is not None:  # inputs computed by the frozen network this run / reused
      out[name] = {"computed": cache.misses, "reused": cache.hits, "cached": len(cache)}
      log.info("%s: %d computed, %d reused", name, cache.misses, cache.hits)
  return out


def _preemption_service_on() -> bool:
  return bool(jax.config.jax_enable_preemption_service)


def _check_finite(step: int, metrics: dict) -> None:
  """Raises NonFiniteLossError naming ``step`` when the loss is NaN/Inf. The loss is the
  global batch's (replicated), so every process raises at the same step."""
  loss = float(jax.device_get(metrics["loss"]))
  if not math.isfinite(loss):
    raise NonFiniteLossError(
      f"loss is {loss} at step {step} (0-based; the batch of that step or a too large "
      "learning rate is the cause): training stopped, the last checkpoint is intact; "
      "lower --config.train.lr or check the data"
    )


__all__ = [
  "Trainer",
  "build_trainer",
  "train",
  "NonFiniteLossError",
  "PeerLostError",
  "MetricWriter",
]
