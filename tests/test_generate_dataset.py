"""`emotalker generate-dataset`: outputs, bad rows, resume after leftovers, shards (two
processes on one folder, a SIGKILL of one, a restart with another shard count), the merge
view, and remote (gs://) paths through etils.epath on a fake object store.

The real-model tests share one tiny random-weight checkpoint and one compiled Generator
(tests/test_generate.py's ``make_checkpoint``); the Generator's compilations go to a
persistent JAX cache that the shard subprocesses read, so they skip the compile. The
bookkeeping tests use ``FakeGen``, a stand-in with the Generator's interface whose frames
are a pure function of the inputs and the seed (no compile).
"""

import json
import os
import signal
import subprocess
import sys
import time

import fsspec
from fsspec.implementations.memory import MemoryFileSystem
import jax
import numpy as np
import pytest

from emotalker_jax import cli
from emotalker_jax import inference as I
from emotalker_jax.commands import generate_dataset as GD
from emotalker_jax.emotions import EMOTIONS
from emotalker_jax.inference import dataset as D
from emotalker_jax.inference import paths
from tests.test_generate import (
  REPO,
  STEPS,
  make_checkpoint,
  portrait32,
  probe,
  speech,
  write_png,
  write_wav,
)

# ffmpeg is started by fork+exec from this (JAX, multithreaded) process: harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

GOOD_ROWS = [
  {"id": "a", "portrait": "p0.png", "audio": "s0.wav", "prompt": "a little sad"},
  {"id": "b", "portrait": "p1.png", "audio": "s1.wav", "emotion": {"happy": 0.7}},
  {"id": "c", "portrait": "p0.png", "audio": "s1.wav", "intensities": [0, 0, 0, 0, 0.5, 0, 0, 1]},
  {"id": "d", "portrait": "p1.png", "audio": "s0.wav", "emotion": "angry=0.4"},
  {"id": "e", "portrait": "p0.png", "audio": "s0.wav", "prompt": "grinning"},
  {"id": "f", "portrait": "p1.png", "audio": "s1.wav", "emotion": {"surprised": 1.0}},
]
QUIET = {"progress": False, "log": lambda m: None}


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent compilation cache for this module's compilations (and, through the
  environment it returns, the subprocesses'); the previous settings come back after."""
  from jax._src import compilation_cache

  d = str(tmp_path_factory.mktemp("jax_cache"))
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {k: getattr(jax.config, k) for k in keys}
  jax.config.update("jax_compilation_cache_dir", d)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()  # re-read the settings at the next compile
  yield {"JAX_COMPILATION_CACHE_DIR": d, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  for k, v in old.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_checkpoint(str(tmp_path_factory.mktemp("ckpt")))["workdir"]


@pytest.fixture(scope="module")
def gen(workdir, compile_cache):
  return I.load_generator(workdir)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("ds")
  write_png(d / "p0.png", portrait32(0))
  write_png(d / "p1.png", portrait32(1))
  write_png(d / "noface.png", np.full((96, 96, 3), 90, np.uint8))
  write_wav(d / "s0.wav", speech(0.2, 0))
  write_wav(d / "s1.wav", speech(0.16, 1))
  return d


def write_manifest(path, rows, extra_lines=()):
  with open(path, "w") as fh:
    for r in rows:
      fh.write(json.dumps(r) + "\n")
    for line in extra_lines:
      fh.write(line + "\n")
  return str(path)


@pytest.fixture(scope="module")
def reference_run(gen, dataset_dir):
  """An uninterrupted single-process run over GOOD_ROWS (in-process)."""
  out = str(dataset_dir / "ref")
  man = write_manifest(dataset_dir / "good.jsonl", GOOD_ROWS)
  summary = GD.process_manifest(gen, D.read_manifest(man), out, steps=STEPS, crop="center", **QUIET)
  assert summary["generated"] == len(GOOD_ROWS) and summary["failed"] == 0
  return out, man


def done_ids(out, name="done.jsonl"):
  with open(os.path.join(out, name)) as fh:
    return [json.loads(line)["id"] for line in fh]


def all_done_ids(out):
  """Every id line of every shard's done file in OUT (duplicates kept)."""
  return [i for name, _ in D.log_files(str(out)) for i in done_ids(out, name)]


def assert_same_outputs(out, ref, ids=None):
  for rid in ids or [r["id"] for r in GOOD_ROWS]:
    a, b = np.load(os.path.join(out, rid + ".npz")), np.load(os.path.join(ref, rid + ".npz"))
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"{rid}:{k}")
    for ext in (".mp4", ".png"):
      with (
        open(os.path.join(out, rid + ext), "rb") as f1,
        open(os.path.join(ref, rid + ext), "rb") as f2,
      ):
        assert f1.read() == f2.read(), rid + ext


class FakeGen:
  """The Generator's interface (image_size, sample_rate, fps, generate) with frames that
  are a pure function of the portrait, the audio length, the intensities and the seed."""

  image_size, sample_rate, fps = 32, 16000, 25.0

  def __init__(self):
    self.calls = []

  def generate(self, image, audio, *, prompt=None, intensities=None, seed=0, **kw):
    self.calls.append(seed)
    n = I.num_frames_for(len(audio), self.sample_rate, self.fps)
    s = np.zeros(8, np.float32) if intensities is None else np.asarray(intensities, np.float32)
    if prompt is not None:
      s[EMOTIONS.index("sad")] = 0.5
    noise = np.random.default_rng(seed).integers(0, 40, (n, 32, 32, 3))
    frames = np.clip(image[None].astype(int) + noise - 20 + int(100 * s.max()), 0, 255)
    info = {
      "timing": {"sample_s": 0.01, "compile_s": 0.0},
      "intensities": {k: float(v) for k, v in zip(EMOTIONS, s)},
      "emotion_source": "prompt" if prompt is not None else "intensities",
    }
    return frames.astype(np.uint8), info


def fake_rows(n):
  return [
    {"id": f"r{i:02d}", "portrait": f"p{i % 2}.png", "audio": f"s{i % 2}.wav", "prompt": "sad"}
    for i in range(n)
  ]


# ---- single process: outputs, bad rows, leftovers -------------------------------------------


def test_dataset_outputs_bad_rows_and_resume_after_leftovers(gen, dataset_dir, reference_run):
  ref, _ = reference_run
  assert sorted(done_ids(ref)) == [r["id"] for r in GOOD_ROWS]
  z = np.load(os.path.join(ref, "b.npz"))
  assert z["frames"].shape == (4, 32, 32, 3) and z["seed"] == I.seed_for("b", 0)
  np.testing.assert_allclose(z["intensities"][EMOTIONS.index("happy")], 0.7)
  assert probe(os.path.join(ref, "a.mp4")) == (5, True)
  bad = [
    {"id": "m1", "portrait": "missing.png", "audio": "s0.wav", "prompt": "sad"},
    {"id": "m2", "portrait": "p0.png", "audio": "missing.wav", "prompt": "sad"},
    {"id": "m3", "portrait": "p0.png", "audio": "s0.wav", "emotion": {"grumpy": 0.5}},
    {"id": "m4", "portrait": "noface.png", "audio": "s0.wav", "prompt": "sad", "crop": "face"},
    {"id": "m5", "portrait": "p0.png", "audio": "s0.wav"},
    {"id": "../m6", "portrait": "p0.png", "audio": "s0.wav", "prompt": "sad"},
  ]
  out = dataset_dir / "mixed"
  out.mkdir()
  # Leftovers of a killed run: a temp file, a torn done line, a finished-but-unlisted row.
  (out / ".tmp-x1y2.npz").write_bytes(b"partial")
  with open(out / "done.jsonl", "w") as fh:
    fh.write(json.dumps({"id": "a", "outputs": []}) + "\n" + '{"id": "b", "outp')
  (out / "c.npz").write_bytes(b"stale")
  man = write_manifest(dataset_dir / "mixed.jsonl", GOOD_ROWS[1:] + bad, ["{not json"])
  kw = dict(steps=STEPS, crop="center", **QUIET)
  summary = GD.process_manifest(gen, D.read_manifest(man), str(out), **kw)
  assert summary["temp_files_removed"] == 1 and summary["already_done"] == 0
  assert summary["generated"] == 5 and summary["failed"] == 7
  fails = [json.loads(line) for line in open(out / "failures.jsonl")]
  reasons = {f["id"] or f"line{f['line']}": f["error"] for f in fails}
  assert "portrait" in reasons["m1"] and "not found" in reasons["m1"]
  assert "audio" in reasons["m2"] and "not found" in reasons["m2"]
  assert "unknown emotion 'grumpy'" in reasons["m3"]
  assert "no face found" in reasons["m4"] and "--crop center" in reasons["m4"]
  assert "exactly one of prompt, emotion, intensities" in reasons["m5"]
  assert "not a file name" in reasons["../m6"]
  assert "not valid JSON" in reasons[f"line{len(GOOD_ROWS) - 1 + len(bad) + 1}"]
  ids = done_ids(out)
  assert ids[0] == "a" and sorted(ids) == sorted({r["id"] for r in GOOD_ROWS})  # a: listed
  assert sorted(os.listdir(out)) == sorted(
    ["done.jsonl", "failures.jsonl"]
    + [f"{r['id']}.{e}" for r in GOOD_ROWS[1:] for e in ("npz", "mp4", "png")]
  )  # no temp files, no staging folder left
  assert_same_outputs(str(out), ref, [r["id"] for r in GOOD_ROWS[1:]])
  # A second run has nothing left to do but the bad rows; failures are appended.
  again = GD.process_manifest(gen, D.read_manifest(man), str(out), **kw)
  assert again["already_done"] == 5 and again["generated"] == 0 and again["failed"] == 7
  assert len(open(out / "failures.jsonl").readlines()) == 14
  status = D.merge_status(str(out), D.read_manifest(man))
  assert len(status["failed"]) == 7 and status["pending"] == [] and not status["complete"]
  # Duplicate ids: an error before any work.
  dup = write_manifest(dataset_dir / "dup.jsonl", GOOD_ROWS[:2] + [GOOD_ROWS[0]])
  with pytest.raises(ValueError, match=r"duplicate ids: 'a' \(lines 1 and 3\)"):
    D.read_manifest(dup)


# ---- two processes on one folder, one killed ------------------------------------------------


def _shard_process(workdir, man, out, shard, log_path, env):
  return subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys; from emotalker_jax.cli import main; sys.exit(main())",
      "generate-dataset",
      "--checkpoint",
      workdir,
      "--manifest",
      man,
      "--out",
      out,
      "--steps",
      str(STEPS),
      "--crop",
      "center",
      "--no-progress",
      "--shard",
      shard,
    ],
    stdout=open(log_path, "w"),
    stderr=subprocess.STDOUT,
    cwd=REPO,
    env=env,
  )


def test_two_shard_processes_with_a_sigkill_equal_one_process(
  gen, workdir, dataset_dir, reference_run, compile_cache
):
  """Shards 0/2 and 1/2 as two concurrent `emotalker generate-dataset` processes on one
  folder; shard 0 (5 of the 6 rows by the id hash) is SIGKILLed after its first row, shard
  1 finishes, shard 0 is restarted: every row once, the same bytes as one process."""
  ref, man = reference_run
  out = str(dataset_dir / "sharded")
  owner = {r["id"]: D.shard_of(r["id"], 0, 2) for r in GOOD_ROWS}
  assert sorted(owner.values()) == [0, 0, 0, 0, 0, 1]  # the hash split of these ids
  env = {**os.environ, **compile_cache, "PYTHONPATH": REPO}
  logs = [str(dataset_dir / f"shard{i}.log") for i in range(2)]
  procs = [_shard_process(workdir, man, out, f"{i}/2", logs[i], env) for i in range(2)]
  done0 = os.path.join(out, "done.0-of-2.jsonl")
  deadline = time.time() + 600
  try:
    while time.time() < deadline and procs[0].poll() is None:
      if os.path.exists(done0) and os.path.getsize(done0) > 0:
        break
      time.sleep(0.01)
    assert procs[0].poll() is None, open(logs[0]).read()[-2000:]
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    assert procs[1].wait(timeout=max(1, deadline - time.time())) == 0, open(logs[1]).read()
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert procs[0].returncode == -signal.SIGKILL
  summary1 = [json.loads(x) for x in open(logs[1]) if x.startswith('{"out"')][-1]
  assert summary1["shard"] == "1-of-2" and summary1["rows"] == 1 and summary1["generated"] == 1
  assert done_ids(out, "done.1-of-2.jsonl") == ["d"]
  first = done_ids(out, "done.0-of-2.jsonl")
  assert 1 <= len(first) < 5 and all(owner[i] == 0 for i in first)  # killed mid-run
  # The restart of shard 0 (same code path, in-process to reuse the compiled generator).
  rows = D.read_manifest(man)
  again = GD.process_manifest(
    gen, rows, out, shard=D.Shard(0, 2), steps=STEPS, crop="center", **QUIET
  )
  assert again["failed"] == 0 and again["already_done"] == len(first)
  assert again["already_done"] + again["generated"] == 5
  ids = all_done_ids(out)
  assert len(ids) == len(set(ids)) == len(GOOD_ROWS)  # nothing lost, nothing twice
  assert not [f for f in os.listdir(out) if f.startswith((".tmp-", ".staging"))]
  assert_same_outputs(out, ref)  # equals the single-process run, byte for byte
  # The merge view through the CLI (no checkpoint needed): complete, in manifest order.
  assert cli.main(["generate-dataset", "--merge", "--out", out, "--manifest", man]) == 0
  merged = [json.loads(line) for line in open(os.path.join(out, D.MERGED))]
  assert [r["id"] for r in merged] == [r["id"] for r in GOOD_ROWS]
  assert {r["shard"] for r in merged} == {"0-of-2", "1-of-2"}


# ---- bookkeeping (FakeGen) ------------------------------------------------------------------


def test_shard_assignment_and_flags(monkeypatch, capsys):
  ids = [f"row-{i}" for i in range(400)]
  for n in (1, 2, 3, 8):
    parts = [[i for i in ids if D.Shard(k, n).owns(D.Row(0, i))] for k in range(n)]
    assert sorted(sum(parts, [])) == sorted(ids)  # each row in exactly one shard
    assert min(map(len, parts)) > 400 / n * 0.7  # and the shards are near even
  # By the id only: the manifest's order and other rows do not move a row.
  assert [D.shard_of(i, 7, 3) for i in ids[:20]] == [D.shard_of(i, 1, 3) for i in ids[:20]]
  assert [D.shard_of(None, k, 3) for k in (1, 2, 3, 4)] == [0, 1, 2, 0]  # id-less: by line
  assert D.parse_shard("1/4") == D.Shard(1, 4) and D.parse_shard(" 0 / 1 ") == D.Shard()
  for bad in ("2/2", "1", "-1/2", "0/0", "a/b"):
    with pytest.raises(ValueError, match="--shard"):
      D.parse_shard(bad)
  assert (D.Shard().done_name, D.Shard(1, 3).done_name) == ("done.jsonl", "done.1-of-3.jsonl")
  assert D.Shard(1, 3).failures_name == "failures.1-of-3.jsonl"
  # Under jax.distributed the process index and count give the shard; --shard wins.
  monkeypatch.setattr(jax, "process_index", lambda: 2)
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  assert D.resolve_shard(None) == D.Shard(2, 3) and D.resolve_shard("0/2") == D.Shard(0, 2)
  # Generating needs a checkpoint and a manifest; a bad --shard is refused up front.
  assert cli.main(["generate-dataset", "--out", "x"]) == 2
  assert "--checkpoint WORKDIR and --manifest" in capsys.readouterr().err
  args = ["generate-dataset", "--checkpoint", "c", "--manifest", "m", "--out", "x", "--shard"]
  assert cli.main([*args, "3/2"]) == 2 and "--shard '3/2'" in capsys.readouterr().err
  assert cli.main(["generate-dataset", "--merge", "--out", "/nonexistent/x"]) == 2
  assert "output folder '/nonexistent/x' not found" in capsys.readouterr().err


def test_restart_with_another_shard_count_and_duplicates(tmp_path):
  for k in range(2):
    write_png(tmp_path / f"p{k}.png", portrait32(k))
    write_wav(tmp_path / f"s{k}.wav", speech(0.12, k))
  rows = D.read_manifest(write_manifest(tmp_path / "m.jsonl", fake_rows(12)))
  kw = dict(steps=STEPS, crop="center", outputs=("npz",), **QUIET)
  ref = GD.process_manifest(FakeGen(), rows, str(tmp_path / "ref"), **kw)
  assert ref["generated"] == 12
  out = str(tmp_path / "out")
  # Two shards of 2 ran; shard 1 of 2 was stopped after 2 rows.
  GD.process_manifest(FakeGen(), rows, out, shard=D.Shard(0, 2), **kw)
  mine1 = [r for r in rows if D.Shard(1, 2).owns(r)]
  GD.process_manifest(FakeGen(), mine1[:2], out, shard=D.Shard(1, 2), **kw)
  before = set(all_done_ids(out))
  # A restart with 3 shards reads every done file: it does only the rows still missing.
  gens = [FakeGen() for _ in range(3)]
  runs = [GD.process_manifest(g, rows, out, shard=D.Shard(k, 3), **kw) for k, g in enumerate(gens)]
  assert sum(r["generated"] for r in runs) == 12 - len(before) == len(mine1) - 2
  assert sum(len(g.calls) for g in gens) == 12 - len(before)
  status = D.merge_status(out, rows)
  assert status["complete"] and status["done"] == 12 and status["duplicates"] == {}
  assert [r["id"] for r in status["records"]] == [r.id for r in rows]
  for r in rows:
    np.testing.assert_array_equal(
      np.load(os.path.join(out, f"{r.id}.npz"))["frames"],
      np.load(tmp_path / "ref" / f"{r.id}.npz")["frames"],
    )
  # An id done twice (e.g. two runs with different counts at once) is reported.
  with open(os.path.join(out, "done.2-of-3.jsonl"), "a") as fh:
    fh.write(json.dumps({"id": "r00", "outputs": ["r00.npz"]}) + "\n")
  status = D.merge_status(out, rows)
  assert not status["complete"] and set(status["duplicates"]) == {"r00"}
  assert len(status["duplicates"]["r00"]) == 2 and status["done"] == 12
  assert cli.main(["generate-dataset", "--merge", "--out", out]) == 1


def test_a_shard_leaves_the_files_of_running_shards_alone(tmp_path):
  """Shard 1's in-flight state (a staging file, a half-appended done line) survives shard
  0's start; shard 1's own restart then repairs it and resumes."""
  for k in range(2):
    write_png(tmp_path / f"p{k}.png", portrait32(k))
    write_wav(tmp_path / f"s{k}.wav", speech(0.12, k))
  rows = D.read_manifest(write_manifest(tmp_path / "m.jsonl", fake_rows(8)))
  out = tmp_path / "out"
  mine1 = [r for r in rows if D.Shard(1, 2).owns(r)]
  stage1 = out / ".staging.1-of-2"
  stage1.mkdir(parents=True)
  (stage1 / ".tmp-abc.npz").write_bytes(b"being written")
  torn = json.dumps({"id": mine1[0].id, "outputs": []}) + "\n" + '{"id": "' + mine1[1].id
  (out / "done.1-of-2.jsonl").write_text(torn)
  kw = dict(crop="center", outputs=("npz", "png"), **QUIET)
  s0 = GD.process_manifest(FakeGen(), rows, str(out), shard=D.Shard(0, 2), **kw)
  assert s0["generated"] == len(rows) - len(mine1) and s0["temp_files_removed"] == 0
  assert (stage1 / ".tmp-abc.npz").read_bytes() == b"being written"
  assert (out / "done.1-of-2.jsonl").read_text() == torn
  assert D.merge_status(str(out), rows)["torn"] == ["done.1-of-2.jsonl"]
  g1 = FakeGen()
  s1 = GD.process_manifest(g1, rows, str(out), shard=D.Shard(1, 2), **kw)
  assert s1["temp_files_removed"] == 1 and s1["already_done"] == 1
  assert s1["generated"] == len(mine1) - 1 and len(g1.calls) == len(mine1) - 1
  assert not stage1.exists()
  assert done_ids(out, "done.1-of-2.jsonl")[0] == mine1[0].id  # torn line cut, then appended
  assert D.merge_status(str(out), rows)["complete"]


# ---- remote paths (a fake gs:// object store) -----------------------------------------------


class FakeGCS(MemoryFileSystem):
  """An in-memory gs:// for etils.epath's fsspec backend; like GCS it cannot append."""

  protocol = ("gs", "gcs")
  store: dict = {}
  pseudo_dirs = [""]

  def _open(self, path, mode="rb", **kw):
    if "a" in mode:
      raise OSError(f"{path}: an object store cannot append")
    return super()._open(path, mode, **kw)


@pytest.fixture
def fake_gcs(monkeypatch):
  from etils.epath import backend

  for proto in ("gs", "gcs"):
    fsspec.register_implementation(proto, FakeGCS, clobber=True)
  backend.fsspec_backend._get_filesystem.cache_clear()
  FakeGCS.store.clear()
  yield FakeGCS.store
  FakeGCS.store.clear()
  backend.fsspec_backend._get_filesystem.cache_clear()


def test_gs_paths_stay_remote_through_epath(tmp_path, fake_gcs, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a gs:// path turned local would appear under here
  local = tmp_path / "local"
  local.mkdir()
  write_png(local / "p0.png", portrait32(0))
  write_png(local / "p1.png", portrait32(1))
  write_wav(local / "s0.wav", speech(0.2, 0))
  write_wav(local / "s1.wav", speech(0.16, 1))
  bucket = "gs://bkt/data"
  for name in ("p0.png", "p1.png", "s0.wav", "s1.wav"):
    paths.as_path(f"{bucket}/{name}").write_bytes((local / name).read_bytes())
  rows = fake_rows(4)
  rows[3]["portrait"] = "missing.png"
  write_manifest(local / "m.jsonl", rows)
  paths.as_path(f"{bucket}/m.jsonl").write_bytes((local / "m.jsonl").read_bytes())
  # Inputs read from gs:// equal the local reads; relative paths resolve against gs://.
  remote_rows = D.read_manifest(f"{bucket}/m.jsonl")
  assert (
    remote_rows[0].portrait == f"{bucket}/p0.png" and remote_rows[1].audio == f"{bucket}/s1.wav"
  )
  np.testing.assert_array_equal(
    I.read_portrait(f"{bucket}/p1.png"), I.read_portrait(local / "p1.png")
  )
  np.testing.assert_array_equal(
    I.load_generation_audio(f"{bucket}/s1.wav", 16000),
    I.load_generation_audio(local / "s1.wav", 16000),
  )
  with pytest.raises(FileNotFoundError, match="gs://bkt/data/nope.wav"):
    I.load_generation_audio(f"{bucket}/nope.wav", 16000)
  # A run with OUT on gs:// writes objects there (done / failures rewritten whole: no append).
  out = "gs://bkt/gen"
  kw = dict(crop="center", **QUIET)
  s = GD.process_manifest(FakeGen(), remote_rows, out, shard=D.Shard(0, 1), **kw)
  lref = str(tmp_path / "lref")
  GD.process_manifest(FakeGen(), D.read_manifest(local / "m.jsonl"), lref, **kw)
  assert s["generated"] == 3 and s["failed"] == 1
  names = sorted(paths.listdir(out))
  assert (
    names
    == sorted(os.listdir(lref))
    == sorted(
      ["done.jsonl", "failures.jsonl"]
      + [f"r{i:02d}.{e}" for i in range(3) for e in ("npz", "mp4", "png")]
    )
  )
  for n in names:
    if not n.endswith(".jsonl"):
      assert paths.read_bytes(f"{out}/{n}") == (tmp_path / "lref" / n).read_bytes(), n
  assert [json.loads(x)["id"] for x in paths.read_bytes(f"{out}/done.jsonl").splitlines()] == [
    "r00",
    "r01",
    "r02",
  ]
  again = GD.process_manifest(FakeGen(), remote_rows, out, **kw)
  assert again["already_done"] == 3 and again["failed"] == 1
  assert len(paths.read_bytes(f"{out}/failures.jsonl").splitlines()) == 2
  status = D.merge_status(out, remote_rows)
  assert status["done"] == 3 and [f["id"] for f in status["failed"]] == ["r03"]
  assert D.write_merged(out, status) == f"{out}/outputs.jsonl" and paths.exists(
    f"{out}/outputs.jsonl"
  )
  assert all(k.startswith("gs://bkt/") for k in fake_gcs)
  assert sorted(os.listdir(tmp_path)) == ["local", "lref"]  # nothing local named gs:
  assert paths.join("gs://b/x", "y/z.png") == "gs://b/x/y/z.png"
  assert paths.join("/abs", "gs://b/p.png") == "gs://b/p.png"
  assert paths.folder_of("gs://b/x/m.jsonl") == "gs://b/x"


# ---- jax.distributed (slow: two more processes) ---------------------------------------------

DISTRIBUTED_MAIN = """
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), heartbeat_timeout_seconds=60)
from emotalker_jax.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_jax_distributed_processes_take_one_shard_each(
  workdir, dataset_dir, reference_run, compile_cache
):
  """Two processes joined by jax.distributed on localhost (8 CPU devices each), no
  --shard: each takes the shard of its process index on its local devices, both exit 0
  after the final barrier, and the folder equals the single-process run."""
  import socket

  ref, man = reference_run
  out = str(dataset_dir / "distributed")
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  env = {**os.environ, **compile_cache, "PYTHONPATH": REPO}
  args = ["generate-dataset", "--checkpoint", workdir, "--manifest", man, "--out", out]
  args += ["--steps", str(STEPS), "--crop", "center", "--no-progress", "--distributed", "off"]
  logs = [str(dataset_dir / f"dist{i}.log") for i in range(2)]
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", DISTRIBUTED_MAIN, address, str(i), *args],
      stdout=open(logs[i], "w"),
      stderr=subprocess.STDOUT,
      cwd=REPO,
      env=env,
    )
    for i in range(2)
  ]
  try:
    rcs = [p.wait(timeout=600) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert rcs == [0, 0], [open(f).read()[-2000:] for f in logs]
  for i in range(2):
    summary = [json.loads(x) for x in open(logs[i]) if x.startswith('{"out"')][-1]
    mine = [r["id"] for r in GOOD_ROWS if D.shard_of(r["id"], 0, 2) == i]
    assert summary["shard"] == f"{i}-of-2" and summary["generated"] == len(mine)
    assert sorted(done_ids(out, f"done.{i}-of-2.jsonl")) == mine
  assert D.merge_status(out, D.read_manifest(man))["complete"]
  assert_same_outputs(out, ref)
