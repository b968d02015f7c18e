"""Multi-process training on one machine: 2 processes x 4 simulated CPU devices joined by
``jax.distributed`` (gloo collectives over TCP), launched as subprocesses.

Default tier: a stand-in trainer (a linear model whose weights are sharded over all 8
devices, fed by a real grain DataLoader sharded per process) through the real
``loop.train``: the 2-process run equals the single-process 8-device run; a SIGTERM to
one process stops both at the same step with one checkpoint holding one grain state per
process, and the resume equals the straight run bitwise, each process's data order
continued.

Slow tier (``-m slow``): the same and a SIGKILL of one process, on ``emotalker train
--config configs/tiny.py`` itself (the EmoTalker step compiles for minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
NPROC = 2
LOCAL_DEVICES = 4
D = 16  # stand-in weights, sharded 2 per device over the 8-device data axis
N_RECORDS = 96
LOCAL_BATCH = 4
# EMOTALKER_HEARTBEAT_TIMEOUT_S of these jobs (jax's default: 100 s); the SIGKILL test's
# survivor must end within KILL_HEARTBEAT_S (+ a margin).
HEARTBEAT_S = 30
KILL_HEARTBEAT_S = 10


# ---------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------
def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(
  code: str,
  args: list[str],
  logs: pathlib.Path,
  env_extra: dict | None = None,
  per_process_env: list[dict] | None = None,
):
  """NPROC subprocesses running ``python -c code args...`` joined by jax.distributed (the
  environment names the coordinator, the process count and each one's id)."""
  port = free_port()
  logs.mkdir(parents=True, exist_ok=True)
  procs = []
  for i in range(NPROC):
    env = {
      **os.environ,
      "PYTHONPATH": str(REPO),
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
      "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
      "JAX_NUM_PROCESSES": str(NPROC),
      "JAX_PROCESS_ID": str(i),
      "EMOTALKER_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S),
      "PYTHONUNBUFFERED": "1",
      **(env_extra or {}),
      **(per_process_env[i] if per_process_env else {}),
    }
    out = open(logs / f"process_{i}.log", "w")
    procs.append(
      subprocess.Popen([PY, "-c", code, *args], cwd=REPO, env=env, stdout=out, stderr=out)
    )
  return procs


def log_text(logs: pathlib.Path, i: int) -> str:
  return (logs / f"process_{i}.log").read_text()


def wait_all(procs, logs: pathlib.Path, timeout: float) -> list[int]:
  """Exit codes; on a timeout every process is killed and the test fails with the logs."""
  deadline = time.monotonic() + timeout
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      tails = "\n".join(log_text(logs, i)[-3000:] for i in range(NPROC))
      pytest.fail(f"processes still running after {timeout} s:\n{tails}")
  return codes


def wait_for(predicate, timeout: float, what: str, procs=()):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    if any(p.poll() is not None for p in procs):
      pytest.fail(f"a process exited while waiting for {what}")
    time.sleep(0.2)
  pytest.fail(f"timed out after {timeout} s waiting for {what}")


def check_ok(codes, logs):
  assert codes == [0] * NPROC, "\n".join(log_text(logs, i)[-3000:] for i in range(NPROC))


# ---------------------------------------------------------------------------------------
# The stand-in trainer (what loop.train needs of a Trainer)
# ---------------------------------------------------------------------------------------
@struct.dataclass
class LinState:
  step: jax.Array
  w: jax.Array  # (D,) sharded over the data axis
  m: jax.Array  # momentum, sharded like w


def features(idx: np.ndarray):
  """Record indices (n,) -> x (n, D), y (n,): functions of the index only."""
  idx = np.asarray(idx, np.float64)
  x = np.sin(np.outer(idx + 1.0, np.arange(1, D + 1)) * 0.37).astype(np.float32)
  return x, np.cos(idx * 0.11).astype(np.float32)


class StandIn:
  """Momentum SGD on least squares; the loss is the global batch's mean."""

  def __init__(self, config, mesh, progress_file: str | None = None, sleep_s: float = 0.0):
    from emotalker_jax import parallel

    self.config, self.mesh, self.served = config, mesh, []
    self.text_states = self.reference_latents = None  # Trainer's frozen caches: none here
    self.progress_file, self.sleep_s = progress_file, sleep_s
    rep, shard = parallel.replicated(mesh), NamedSharding(mesh, P("data"))
    self.state_shardings = LinState(step=rep, w=shard, m=shard)
    self.state = jax.device_put(
      LinState(step=np.int32(0), w=np.zeros(D, np.float32), m=np.zeros(D, np.float32)),
      self.state_shardings,
    )
    batch_shard = parallel.batch_sharding(mesh, 2), parallel.batch_sharding(mesh, 1)

    def step(s, x, y):
      loss, g = jax.value_and_grad(lambda w: jnp.mean(jnp.square(x @ w - y)))(s.w)
      m = 0.9 * s.m + g
      return LinState(step=s.step + 1, w=s.w - 0.05 * m, m=m), {"loss": loss}

    self._step = jax.jit(
      step,
      in_shardings=(self.state_shardings, *batch_shard),
      out_shardings=(self.state_shardings, rep),
    )

  def device_batch(self, host_batch):
    from emotalker_jax import parallel

    idx = np.asarray(host_batch).reshape(-1)
    self.served.append([int(i) for i in idx])
    if self.progress_file:  # replaced atomically: the test polls it from another process
      tmp = pathlib.Path(f"{self.progress_file}.tmp")
      tmp.write_text(str(len(self.served)))
      os.replace(tmp, self.progress_file)
    time.sleep(self.sleep_s)
    x, y = features(idx)
    return parallel.shard_batch({"x": x, "y": y}, self.mesh)

  def step(self, batch):
    self.state, metrics = self._step(self.state, batch["x"], batch["y"])
    return metrics


def stand_in_config(steps: int, ckpt_every: int = 1000):
  from emotalker_jax.config_utils import load_config

  return load_config(
    str(REPO / "configs" / "tiny.py"),
    [
      f"--config.train.steps={steps}",
      "--config.train.log_every=1",
      f"--config.train.ckpt_every={ckpt_every}",
      f"--config.train.batch_size={NPROC * LOCAL_BATCH}",
    ],
  )


def shard_loader(shard_index: int, shard_count: int):
  import grain.python as gp

  shard = gp.ShardOptions(shard_index=shard_index, shard_count=shard_count, drop_remainder=True)
  return gp.DataLoader(
    data_source=gp.RangeDataSource(0, N_RECORDS, 1),
    sampler=gp.IndexSampler(N_RECORDS, shard_options=shard, shuffle=True, seed=3),
    operations=[gp.Batch(batch_size=LOCAL_BATCH, drop_remainder=True)],
    worker_count=0,
    shard_options=shard,
  )


def stand_in_worker(workdir: str, steps: str, ckpt_every: str, sleep_s: str, tag: str) -> None:
  """One process of a stand-in job: train, then write the gathered final state, the
  batches this process fed and the result to WORKDIR/<tag>_<process>.json."""
  from jax.experimental import multihost_utils

  from emotalker_jax import parallel
  from emotalker_jax.training import loop

  assert parallel.maybe_initialize_distributed("auto")
  pid = jax.process_index()
  config = stand_in_config(int(steps), int(ckpt_every))
  mesh = parallel.create_mesh(config.mesh)
  progress = os.path.join(workdir, f"{tag}_progress_{pid}")
  trainer = StandIn(config, mesh, progress_file=progress, sleep_s=float(sleep_s))
  loader = shard_loader(pid, jax.process_count())
  res = loop.train(config, workdir, loader=loader, trainer=trainer, progress=False)
  full = {
    k: np.asarray(multihost_utils.process_allgather(getattr(trainer.state, k), tiled=True))
    for k in ("w", "m")
  }
  out = {**res, "served": trainer.served, **{k: v.tolist() for k, v in full.items()}}
  pathlib.Path(workdir, f"{tag}_{pid}.json").write_text(json.dumps(out))


STAND_IN = (
  "import sys; from tests.test_multiprocess import stand_in_worker; stand_in_worker(*sys.argv[1:])"
)


def read_results(workdir: pathlib.Path, tag: str) -> list[dict]:
  return [json.loads((workdir / f"{tag}_{i}.json").read_text()) for i in range(NPROC)]


def metric_rows(workdir: pathlib.Path) -> dict[int, float]:
  rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


class TwoShards:
  """The single-process view of the 2-process job: each batch is shard 0's local batch
  then shard 1's (how make_array_from_process_local_data lays out the global batch)."""

  def __init__(self):
    self.its = [iter(shard_loader(i, NPROC)) for i in range(NPROC)]

  def __iter__(self):
    return self

  def __next__(self):
    return np.concatenate([next(it) for it in self.its])


# ---------------------------------------------------------------------------------------
# Default tier: the stand-in job
# ---------------------------------------------------------------------------------------
STEPS = 12


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """The uninterrupted 2-process run of STEPS steps."""
  wd = tmp_path_factory.mktemp("mp_straight")
  procs = launch(STAND_IN, [str(wd), str(STEPS), "1000", "0", "run"], wd / "logs")
  check_ok(wait_all(procs, wd / "logs", 240), wd / "logs")
  return wd, read_results(wd, "run")


def test_two_processes_equal_one_process_with_eight_devices(straight, tmp_path):
  from emotalker_jax import parallel
  from emotalker_jax.training import loop

  wd, res = straight
  assert [r["stopped_by"] for r in res] == ["done", "done"] and res[0]["step"] == STEPS
  assert res[0]["w"] == res[1]["w"]  # both processes hold the same global state
  config = stand_in_config(STEPS)
  mesh = parallel.create_mesh(config.mesh, jax.devices()[:8])
  ref = StandIn(config, mesh)
  loop.train(config, str(tmp_path / "ref"), loader=TwoShards(), trainer=ref, progress=False)
  served = [sum(row, []) for row in zip(res[0]["served"], res[1]["served"])]
  assert served == ref.served  # the global batches are the same
  got, want = metric_rows(wd), metric_rows(tmp_path / "ref")
  assert sorted(got) == list(range(1, STEPS + 1))
  np.testing.assert_allclose(
    [got[s] for s in sorted(got)], [want[s] for s in sorted(got)], rtol=1e-5
  )
  w_ref = np.asarray(jax.device_get(ref.state.w))
  assert np.linalg.norm(np.asarray(res[0]["w"]) - w_ref) <= 1e-5 * np.linalg.norm(w_ref)
  # The checkpoint holds one grain iterator state per process, each for its own shard.
  data = wd / "checkpoints" / str(STEPS) / "data"
  assert sorted(p.name for p in data.glob("process_*")) == [
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
  for i in range(NPROC):
    state = json.loads((data / f"process_{i}-of-2.json").read_text())
    assert f"shard_index={i}, shard_count=2" in state["sampler"]


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_bitwise(straight, tmp_path):
  wd0, want = straight
  wd = tmp_path / "job"
  wd.mkdir()
  logs = wd / "logs"
  procs = launch(STAND_IN, [str(wd), str(STEPS), "1000", "0.3", "first"], logs)
  wait_for(
    lambda: all(
      (wd / f"first_progress_{i}").exists() and int((wd / f"first_progress_{i}").read_text()) >= 3
      for i in range(NPROC)
    ),
    180,
    "3 steps on both processes",
    procs,
  )
  procs[1].send_signal(signal.SIGTERM)  # process 0 only learns of it through jax
  check_ok(wait_all(procs, logs, 120), logs)
  first = read_results(wd, "first")
  assert [r["stopped_by"] for r in first] == ["SIGTERM", "SIGTERM"]
  stop = first[0]["step"]
  assert first[1]["step"] == stop and 3 <= stop < STEPS
  steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [stop]  # exactly one checkpoint, at the agreed step
  data = wd / "checkpoints" / str(stop) / "data"
  states = [json.loads((data / f"process_{i}-of-2.json").read_text()) for i in range(NPROC)]
  for i, st in enumerate(states):  # process i's shard, read up to its last batch
    assert f"shard_index={i}, shard_count=2" in st["sampler"]
    # record j of shard i is global index j * 2 + i (grain's IndexSampler)
    assert st["last_seen_indices"] == {"0": (stop * LOCAL_BATCH - 1) * NPROC + i}

  procs = launch(STAND_IN, [str(wd), str(STEPS), "1000", "0", "second"], logs)
  check_ok(wait_all(procs, logs, 240), logs)
  second = read_results(wd, "second")
  for i in range(NPROC):  # each process's data order continues where it stopped
    assert first[i]["served"] + second[i]["served"] == want[i]["served"], i
    assert second[i]["step"] == STEPS and second[i]["stopped_by"] == "done"
  assert second[0]["w"] == want[0]["w"] and second[0]["m"] == want[0]["m"]  # bitwise


@pytest.mark.slow
def test_sigkill_of_one_process_ends_the_other_and_a_restart_resumes(straight, tmp_path):
  """SIGKILL of process 1 after the step-4 checkpoint: process 0 exits non-zero within the
  heartbeat timeout with jax's message naming the lost task (no hang), and a restart of
  both resumes from step 4 and ends with the straight run's state."""
  wd0, want = straight
  wd = tmp_path / "job"
  wd.mkdir()
  logs = wd / "logs"
  fast_heartbeat = {"EMOTALKER_HEARTBEAT_TIMEOUT_S": str(KILL_HEARTBEAT_S)}
  procs = launch(STAND_IN, [str(wd), str(STEPS), "4", "0.3", "first"], logs, fast_heartbeat)

  def past_checkpoint():
    done = (wd / "checkpoints" / "4" / "data" / "commit_success.txt").exists()
    prog = [wd / f"first_progress_{i}" for i in range(NPROC)]
    return done and all(p.exists() and int(p.read_text()) >= 6 for p in prog)

  wait_for(past_checkpoint, 180, "the step-4 checkpoint and step 6", procs)
  procs[1].kill()
  t0 = time.monotonic()
  code = procs[0].wait(timeout=KILL_HEARTBEAT_S + 60)
  took = time.monotonic() - t0
  text = log_text(logs, 0)
  assert code != 0, text[-3000:]
  assert took < KILL_HEARTBEAT_S + 60
  assert "stopped sending heartbeats" in text and "Terminating process" in text, text[-3000:]
  procs[1].wait()

  logs2 = wd / "logs2"
  procs = launch(STAND_IN, [str(wd), str(STEPS), "4", "0", "second"], logs2)
  check_ok(wait_all(procs, logs2, 240), logs2)
  second = read_results(wd, "second")
  for i in range(NPROC):  # resumed at step 4: the batches of steps 5..12 again
    assert second[i]["served"] == want[i]["served"][4:], i
  assert second[0]["step"] == STEPS and second[0]["w"] == want[0]["w"]


# ---------------------------------------------------------------------------------------
# Slow tier: `emotalker train --config configs/tiny.py` in 2 processes
# ---------------------------------------------------------------------------------------
REAL_STEPS = 12
# Minutes-long compiles on a shared 2-core machine can starve the heartbeat threads for
# longer than the stand-in's 10 s.
REAL_HEARTBEAT_S = 90
# A process of a launch may run with a hook (MP_HOOK): 'sigterm' sends this process a
# SIGTERM while it fetches batch MP_HOOK_AT + 1 (as the single-process test does);
# 'sigkill' SIGKILLs it right after its checkpoint of step MP_HOOK_AT is committed.
CLI = """
import os, signal, sys
from emotalker_jax import checkpoints
from emotalker_jax.training import loop
hook, at = os.environ.get("MP_HOOK", ""), int(os.environ.get("MP_HOOK_AT", "0"))
if hook == "sigterm":
  fetch, calls = loop.Trainer.device_batch, [0]
  def device_batch(self, batch):
    calls[0] += 1
    if calls[0] == at + 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return fetch(self, batch)
  loop.Trainer.device_batch = device_batch
elif hook == "sigkill":
  save = checkpoints.save_checkpoint
  def save_then_die(mngr, trainer, iterator, force=False):
    step = save(mngr, trainer, iterator, force=force)
    if step == at:
      mngr.wait_until_finished()
      os.kill(os.getpid(), signal.SIGKILL)
    return step
  checkpoints.save_checkpoint = save_then_die
from emotalker_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_tiny_bert(folder: pathlib.Path) -> None:
  """A 1-layer, 32-wide random BERT (HF layout) with MiniLM's tokenizer, without torch:
  the frozen text tower's role here is structural, and a small one compiles fast."""
  import shutil

  from safetensors.numpy import save_file

  from emotalker_jax.models.text_encoder import default_minilm_path

  folder.mkdir(parents=True, exist_ok=True)
  h, f, vocab, pos = 32, 64, 30522, 64
  shapes = {
    "embeddings.word_embeddings.weight": (vocab, h),
    "embeddings.position_embeddings.weight": (pos, h),
    "embeddings.token_type_embeddings.weight": (2, h),
    "embeddings.LayerNorm.weight": (h,),
    "embeddings.LayerNorm.bias": (h,),
  }
  pre = "encoder.layer.0."
  for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
    shapes |= {f"{pre}{name}.weight": (h, h), f"{pre}{name}.bias": (h,)}
  shapes |= {
    f"{pre}attention.output.dense.weight": (h, h),
    f"{pre}attention.output.dense.bias": (h,),
    f"{pre}attention.output.LayerNorm.weight": (h,),
    f"{pre}attention.output.LayerNorm.bias": (h,),
    f"{pre}intermediate.dense.weight": (f, h),
    f"{pre}intermediate.dense.bias": (f,),
    f"{pre}output.dense.weight": (h, f),
    f"{pre}output.dense.bias": (h,),
    f"{pre}output.LayerNorm.weight": (h,),
    f"{pre}output.LayerNorm.bias": (h,),
  }
  rng = np.random.default_rng(0)
  tensors = {
    k: (np.ones(s) if k.endswith("LayerNorm.weight") else 0.02 * rng.standard_normal(s)).astype(
      np.float32
    )
    for k, s in shapes.items()
  }
  save_file(tensors, str(folder / "model.safetensors"))
  cfg = dict(
    model_type="bert",
    architectures=["BertModel"],
    hidden_size=h,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=f,
    max_position_embeddings=pos,
    vocab_size=vocab,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    pad_token_id=0,
  )
  (folder / "config.json").write_text(json.dumps(cfg))
  for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(os.path.join(default_minilm_path(), name), folder)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
  """(config overrides, env) of the small tiny.py job: a 2-identity synthetic_talk
  dataset, the tiny BERT, small channels, 12 steps; one persistent compilation cache for
  every launch (the 2-process programs are the same each time)."""
  from emotalker_jax import cli

  root = tmp_path_factory.mktemp("mp_tiny")
  assert (
    cli.main(
      [
        "synth",
        "--out",
        str(root / "tfds"),
        "--size",
        "tiny",
        "--num-identities",
        "3",
        "--num-train-identities",
        "2",
        "--frames-per-clip",
        "4",
        "--sheet-identities",
        "1",
      ]
    )
    == 0
  )
  write_tiny_bert(root / "bert")
  overrides = [
    "--config.unet.block_out_channels=(16, 32)",
    "--config.autoencoder.block_out_channels=(16, 16, 32)",
    "--config.context_dim=32",
    "--config.audio.width=32",
    "--config.eib.hidden=64",
    "--config.train.batch_size=8",
    "--config.train.warmup_steps=2",
    "--config.train.log_every=1",
    f"--config.train.steps={REAL_STEPS}",
    f"--config.text.path={root / 'bert'}",
    "--config.text.encoder=bert",
    "--config.text.max_length=16",
    f"--config.data.data_dir={root / 'tfds'}",
    "--config.data.synthetic_size="
    "tiny_seed0_frames_per_clip4_num_identities3_num_train_identities2",
  ]
  env = {
    "EMOTALKER_HEARTBEAT_TIMEOUT_S": str(REAL_HEARTBEAT_S),
    "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
  }
  return overrides, env


def train_job(
  tiny_job, workdir, extra=(), hooks=(None, None), hook_at=0, timeout=1500, expect_ok=True
):
  """`emotalker train` in NPROC processes (process i with hooks[i]); returns the logs."""
  overrides, env = tiny_job
  args = ["train", "--config", "configs/tiny.py", "--workdir", str(workdir), *overrides, *extra]
  logs = pathlib.Path(f"{workdir}_logs{len(list(pathlib.Path(workdir).parent.glob('*_logs*')))}")
  per = [{"MP_HOOK": h or "", "MP_HOOK_AT": str(hook_at)} for h in hooks]
  procs = launch(CLI, args, logs, env, per_process_env=per)
  if expect_ok:
    check_ok(wait_all(procs, logs, timeout), logs)
  return procs, logs


def cli_result(logs: pathlib.Path, i: int) -> dict:
  """The JSON line `emotalker train` prints last."""
  lines = [ln for ln in log_text(logs, i).splitlines() if ln.startswith('{"workdir"')]
  assert lines, log_text(logs, i)[-3000:]
  return json.loads(lines[-1])


@pytest.fixture(scope="module")
def real_reference(tiny_job, tmp_path_factory):
  """The single-process 8-device run of the same job (in this process), fed the two
  process shards' batches side by side; its trainer restores the 2-process checkpoints."""
  import grain.python as gp

  from emotalker_jax import parallel
  from emotalker_jax.config_utils import load_config
  from emotalker_jax.training import loop
  from input_pipeline.pipeline import make_train_loader

  overrides, _ = tiny_job
  config = load_config(str(REPO / "configs" / "tiny.py"), overrides)
  mesh = parallel.create_mesh(config.mesh, jax.devices()[:8])
  tr = loop.build_trainer(config, mesh)
  loaders = [
    iter(make_train_loader(config, shard_options=gp.ShardOptions(i, NPROC, drop_remainder=True)))
    for i in range(NPROC)
  ]

  def two_shards():
    while True:
      parts = [next(it) for it in loaders]
      yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  wd = tmp_path_factory.mktemp("mp_ref") / "ref"
  loop.train(config, str(wd), loader=two_shards(), trainer=tr, progress=False)
  return tr, jax.device_get(tr.state), metric_rows(wd)


def restored_state(trainer, workdir, step: int):
  """The train state of WORKDIR's checkpoint ``step`` (numpy), through ``trainer``'s
  layout (the reference's 8 local devices; orbax reshards a 2-process checkpoint)."""
  from emotalker_jax import checkpoints

  class Holder:
    pass

  h = Holder()
  h.state, h.state_shardings, h.config = trainer.state, trainer.state_shardings, trainer.config
  mngr = checkpoints.checkpoint_manager(workdir, trainer.config)
  try:
    checkpoints.restore_checkpoint(mngr, h, None, step)
  finally:
    mngr.close()
  return jax.device_get(h.state)


def states_equal(a, b) -> bool:
  """Bitwise equality of two train states (step, params, EMA, optimizer state)."""
  for name in ("step", "params", "ema_params", "opt_state"):
    la, lb = jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))
    if len(la) != len(lb) or not all(np.array_equal(x, y) for x, y in zip(la, lb)):
      return False
  return True


@pytest.fixture(scope="module")
def real_straight(tiny_job, tmp_path_factory):
  wd = tmp_path_factory.mktemp("mp_real") / "straight"
  _, logs = train_job(tiny_job, wd)
  return wd, logs


@pytest.mark.slow
def test_emotalker_train_two_processes_equal_one_process(real_straight, real_reference):
  """6+6 steps of `emotalker train` in 2 processes x 4 devices = the 8-device run (the
  mesh test's tolerance: losses 1e-5 relative, the parameter vector 1e-5 relative)."""
  wd, logs = real_straight
  tr, ref_state, ref_rows = real_reference
  assert [cli_result(logs, i)["step"] for i in range(NPROC)] == [REAL_STEPS] * NPROC
  rows = metric_rows(wd)
  assert sorted(rows) == list(range(1, REAL_STEPS + 1))
  np.testing.assert_allclose(
    [rows[s] for s in sorted(rows)], [ref_rows[s] for s in sorted(rows)], rtol=1e-5
  )
  got = restored_state(tr, wd, REAL_STEPS)
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(got.params)])
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref_state.params)])
  assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)


@pytest.mark.slow
def test_emotalker_train_sigterm_to_both_saves_one_step_and_resumes(
  real_straight, real_reference, tiny_job, tmp_path
):
  """SIGTERM to both processes (each sends its own while it fetches its 4th batch; the
  stand-in test sends one from outside to one process): one checkpoint, at one step for
  both, with each process's grain state; the resume ends bitwise equal to the straight
  run."""
  wd0, _ = real_straight
  tr = real_reference[0]
  wd = tmp_path / "job"
  _, logs = train_job(tiny_job, wd, hooks=("sigterm", "sigterm"), hook_at=3)
  assert all("SIGTERM caught" in log_text(logs, i) for i in range(NPROC))  # jax's notifier
  first = [cli_result(logs, i) for i in range(NPROC)]
  assert [r["stopped_by"] for r in first] == ["SIGTERM", "SIGTERM"]
  stop = first[0]["step"]
  assert first[1]["step"] == stop and 4 <= stop < REAL_STEPS
  steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [stop]
  data = wd / "checkpoints" / str(stop) / "data"
  for i in range(NPROC):
    st = json.loads((data / f"process_{i}-of-2.json").read_text())
    assert f"shard_index={i}, shard_count=2" in st["sampler"]
    assert st["last_seen_indices"] == {"0": (stop * LOCAL_BATCH - 1) * NPROC + i}
  _, logs2 = train_job(tiny_job, wd)
  assert f"resumed from {wd} at step {stop}" in log_text(logs2, 0)
  assert states_equal(restored_state(tr, wd, REAL_STEPS), restored_state(tr, wd0, REAL_STEPS))


@pytest.mark.slow
def test_emotalker_train_sigkill_of_one_process_then_restart(
  real_straight, real_reference, tiny_job, tmp_path
):
  """SIGKILL of process 1 right after the step-4 checkpoint: process 0 exits non-zero
  within the heartbeat timeout (+ margin) naming the lost task; a restart of both resumes
  at step 4 and ends bitwise equal to the straight run."""
  wd0, _ = real_straight
  tr = real_reference[0]
  wd = tmp_path / "job"
  ckpt = ["--config.train.ckpt_every=4"]
  procs, logs = train_job(tiny_job, wd, ckpt, hooks=(None, "sigkill"), hook_at=4, expect_ok=False)
  assert procs[1].wait(timeout=1500) == -signal.SIGKILL
  t0 = time.monotonic()
  code = procs[0].wait(timeout=REAL_HEARTBEAT_S + 120)
  assert time.monotonic() - t0 < REAL_HEARTBEAT_S + 120
  text = log_text(logs, 0)
  assert code != 0, text[-3000:]
  assert "stopped sending heartbeats" in text and "Terminating process" in text, text[-3000:]
  _, logs2 = train_job(tiny_job, wd, ckpt)
  assert f"resumed from {wd} at step 4" in log_text(logs2, 0)
  assert states_equal(restored_state(tr, wd, REAL_STEPS), restored_state(tr, wd0, REAL_STEPS))
