"""A ``gs://`` workdir stays a ``gs://`` path from the command line to orbax and the
metric writer, and a run trains, checkpoints and resumes through it.

There is no GCS here: ``gs://`` is served by a fake fsspec file system (``FakeGCS``: the
bucket is a local folder) registered as etils.epath's gcs backend, orbax's TensorStore
kvstore for gs:// (its native GCS driver) is pointed at the same folder, and orbax's
bucket-layout query (google-cloud-storage) answers "flat". Every epath call
(step folders, commit markers, JSON items, grain's per-process files, metrics.jsonl,
TensorBoard events) goes through the fake; nothing is written under a local ``gs:``
folder.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from etils import epath
from fsspec.implementations.local import LocalFileSystem
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from emotalker_jax import checkpoints, parallel
from emotalker_jax.checkpoints import workdir as workdir_lib
from emotalker_jax.training import loop
from tests.test_multiprocess import StandIn, shard_loader, stand_in_config

BUCKET = "gs://emotalker-test"


class FakeGCS(LocalFileSystem):
  """``gs://bucket/key`` -> ``ROOT/bucket/key`` (ROOT set per test). Object-store rules
  that matter here: no append (``mode='a'`` raises), so writers must rewrite."""

  protocol = ("gs", "gcs")
  root = None
  calls: list = []

  def __init__(self, *args, **kwargs):
    kwargs.pop("finalize_on_close", None)
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for p in ("gs://", "gcs://"):
      if path.startswith(p):
        FakeGCS.calls.append(path)
        return os.path.join(cls.root, path[len(p) :])
    return super()._strip_protocol(path)

  def _to_key(self, local: str) -> str:
    """A local path under ROOT -> 'bucket/key', the names gcsfs returns (no protocol)."""
    return os.path.relpath(local, self.root) if local.startswith(self.root) else local

  def glob(self, path, **kwargs):  # epath prefixes the protocol to these
    return [self._to_key(p) for p in super().glob(path, **kwargs)]

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      raise OSError(f"{path}: object stores cannot append")
    return super()._open(path, mode=mode, **kwargs)


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """The fake bucket root; gs:// through FakeGCS for epath and orbax's TensorStore."""
  from etils.epath import backend as epath_backend
  from orbax.checkpoint._src.path import gcs_utils

  root = tmp_path / "fake_gcs"
  root.mkdir()
  monkeypatch.setattr(FakeGCS, "root", str(root))
  monkeypatch.setattr(FakeGCS, "calls", [])
  registry = importlib.import_module("fsspec.registry")._registry  # (fsspec.registry: a view)
  for name in ("gs", "gcs"):
    monkeypatch.setitem(registry, name, FakeGCS)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  FakeGCS.clear_instance_cache()

  def kvstore(path):
    # OCDBT's base is a folder and needs the explicit slash orbax gives local folders; a
    # plain (non-OCDBT) key such as state/_sharding is one file.
    folder = sys._getframe(1).f_code.co_name != "_build_non_ocdbt_kvstore_tspec"
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=folder)
    return {"driver": "file", "path": os.path.join(str(root), bucket, key)}

  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
  # orbax asks google-cloud-storage (not installed here) whether the bucket has a
  # hierarchical namespace before listing steps: a flat bucket.
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  monkeypatch.chdir(tmp_path)  # a gs:// path turned local would land here, as gs:/...
  yield root
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  assert not (tmp_path / "gs:").exists()


def test_paths_keep_urls_and_make_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(checkpoints.as_path("gs://b/run") / "checkpoints") == "gs://b/run/checkpoints"
  assert checkpoints.is_remote("gs://b/run") and not checkpoints.is_remote("run")
  assert os.fspath(checkpoints.as_path("run")) == str(tmp_path / "run")


def test_gs_workdir_reaches_orbax_and_the_writer_as_gs(fake_gcs, monkeypatch):
  seen = []

  class Recording(ocp.CheckpointManager):
    def __init__(self, directory, *args, **kwargs):
      seen.append(directory)
      super().__init__(directory, *args, **kwargs)

  monkeypatch.setattr(workdir_lib.ocp, "CheckpointManager", Recording)
  mngr = checkpoints.checkpoint_manager(f"{BUCKET}/run", stand_in_config(4))
  mngr.close()
  assert len(seen) == 1 and isinstance(seen[0], epath.Path)
  assert os.fspath(seen[0]) == f"{BUCKET}/run/checkpoints"
  assert os.fspath(mngr.directory) == f"{BUCKET}/run/checkpoints"
  assert (fake_gcs / "emotalker-test" / "run" / "checkpoints").is_dir()  # made via FakeGCS

  for rows in ([(1, 0.5), (2, 0.25)], [(3, 0.125)]):  # two runs: the second keeps the first's
    w = loop.MetricWriter(f"{BUCKET}/run")
    assert os.fspath(w.jsonl_path) == f"{BUCKET}/run/metrics.jsonl" and w.remote
    for step, loss in rows:
      w.write(step, {"loss": loss})
    w.close()
  text = (fake_gcs / "emotalker-test" / "run" / "metrics.jsonl").read_text()
  assert [json.loads(r) for r in text.splitlines()] == [
    {"step": 1, "loss": 0.5},
    {"step": 2, "loss": 0.25},
    {"step": 3, "loss": 0.125},
  ]
  # (both runs started within a second: tensorboardX names their event files alike)
  events = sorted((fake_gcs / "emotalker-test" / "run" / "tensorboard").glob("events.out.*"))
  assert events and all(b"loss" in e.read_bytes() for e in events)
  assert any(c.startswith(f"{BUCKET}/run/tensorboard/events.out") for c in FakeGCS.calls)


def test_training_on_a_gs_workdir_resumes_like_a_local_run(fake_gcs, tmp_path):
  """The stand-in trainer (tests/test_multiprocess.py) through loop.train: 3 steps into
  gs://, a resume for 3 more, equals 6 straight local steps; every file is in the fake
  bucket, and the inference side finds the checkpoints there."""
  config = stand_in_config(6)
  mesh = parallel.create_mesh(config.mesh, jax.devices()[:1])
  straight = StandIn(config, mesh)
  loop.train(
    config, str(tmp_path / "local"), loader=shard_loader(0, 1), trainer=straight, progress=False
  )

  url = f"{BUCKET}/gsrun"
  first = StandIn(config, mesh)
  r1 = loop.train(
    config, url, loader=shard_loader(0, 1), trainer=first, max_steps=3, progress=False
  )
  assert r1["stopped_by"] == "max_steps" and r1["step"] == 3
  second = StandIn(config, mesh)
  r2 = loop.train(config, url, loader=shard_loader(0, 1), trainer=second, progress=False)
  assert r2["step"] == 6
  assert first.served + second.served == straight.served  # the grain state came back
  for k in ("w", "m"):
    np.testing.assert_array_equal(
      jax.device_get(getattr(second.state, k)), jax.device_get(getattr(straight.state, k))
    )
  run = fake_gcs / "emotalker-test" / "gsrun"
  assert (run / "checkpoints" / "3" / "data" / "process_0-of-1.json").is_file()
  assert (run / "checkpoints" / "6" / "state").is_dir()
  rows = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]
  assert rows == [1, 2, 3, 4, 5, 6]
  assert checkpoints.find_checkpoint_dir(url) == f"{url}/checkpoints"


def test_autoencoder_checkpoint_is_read_from_gs(fake_gcs, tmp_path):
  params = {"encoder": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
  checkpoints.save_params(
    str(tmp_path / "ae"), params, {"scaling_factor": 1.0, "shift_factor": 0.0}
  )
  checkpoints.copy_folder(tmp_path / "ae", f"{BUCKET}/ae")
  assert (fake_gcs / "emotalker-test" / "ae" / "params.safetensors").is_file()
  config = stand_in_config(1)
  config.train.autoencoder_checkpoint = f"{BUCKET}/ae"
  got = checkpoints.load_frozen_autoencoder(config, None, None)
  np.testing.assert_array_equal(got["encoder"]["w"], params["encoder"]["w"])
