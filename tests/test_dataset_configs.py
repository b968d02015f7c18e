"""configs/mead.py and configs/crema_d.py: only real keys of the base config, a batch that
divides the pod's mesh and hosts, and the dataset the prepare command builds."""

import jax
import pytest

from emotalker_jax import config_base, parallel
from emotalker_jax.config_utils import load_config, load_config_module
from input_pipeline import labels, mead
from input_pipeline import pipeline as P


def leaves(d, prefix=""):
  """{dotted key: value} of every leaf of a (nested) ConfigDict."""
  out = {}
  for k, v in d.items():
    if hasattr(v, "items"):
      out.update(leaves(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


@pytest.fixture(scope="module", params=["mead", "crema_d"])
def cfg(request, repo_root):
  return request.param, load_config(str(repo_root / "configs" / f"{request.param}.py"))


def test_configs_set_only_real_keys(cfg):
  name, c = cfg
  got, base = leaves(c.to_dict()), leaves(config_base.get_config().to_dict())
  assert set(got) == set(base), f"typo keys: {set(got) - set(base)}"
  changed = {k for k in got if got[k] != base[k]}
  assert {"data.dataset", "train.batch_size", "data.worker_count"} <= changed
  assert c.data.dataset == f"{name}/res256" and c.data.image_size == 256
  assert 2 ** (len(c.autoencoder.block_out_channels) - 1) == 4  # f = 4: 64x64 latents
  assert c.train.autoencoder_checkpoint.endswith(f"{name}/autoencoder")
  # the loader reads what `emotalker prepare <name> --image_size 256` builds
  assert P.dataset_name(c) == f"{name}/{mead.make_config(c.data.image_size).name}"


def test_batch_divides_the_pod_mesh_and_hosts(cfg, repo_root):
  _, c = cfg
  pod = load_config_module(str(repo_root / "configs" / "mead.py"))
  sizes = parallel.resolve_mesh_shape(
    [c.mesh.data, c.mesh.fsdp, c.mesh.tensor], pod.POD_CHIPS, "mesh"
  )
  assert sizes[0] * sizes[1] * sizes[2] == pod.POD_CHIPS
  assert c.train.batch_size % (sizes[0] * sizes[1]) == 0  # the batch axes (data, fsdp)
  assert c.train.batch_size % pod.POD_HOSTS == 0  # per-host loader batch
  assert P.per_process_batch_size(c.train.batch_size, pod.POD_HOSTS) == 64
  # and the mesh builds on the 8 simulated devices of the tests
  mesh = parallel.create_mesh(c.mesh, jax.devices())
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  assert c.train.batch_size % batch_ways == 0


def test_test_actors_are_the_literatures():
  assert [labels.mead_split(a) for a in ("M003", "M030", "W009", "W015")] == ["test"] * 4
  assert labels.mead_split("M005") == "train"
  assert labels.CREMA_TEST_ACTORS == tuple(range(1082, 1092))
  assert labels.crema_split(1081) == "train" and labels.crema_split(1091) == "test"


def test_bench_pipeline_on_a_photo_tree_against_a_pod_host(repo_root, tmp_path, monkeypatch):
  """`emotalker bench pipeline --photo-tree --pod-hosts H --pod-step-s S`: builds the
  config's dataset from a photo tree (a small plan here), runs the per-host batch and
  compares with global batch / S / H; the JSON holds the arithmetic."""
  import json

  from emotalker_jax.cli import main
  from input_pipeline import photo_trees

  name = "mead"
  small = photo_trees.benchmark_mead_plan(actors=2, clips_per_actor=2, frames=6)
  monkeypatch.setattr(photo_trees, "benchmark_mead_plan", lambda: small)
  out = tmp_path / "bench.json"
  args = ["bench", "pipeline", "--config", str(repo_root / "configs" / f"{name}.py")]
  args += [f"--config.data.dataset={name}/res32", "--config.data.image_size=32"]
  args += ["--config.train.batch_size=16"]
  args += ["--photo-tree", "--data-dir", str(tmp_path / "d"), "--pod-hosts", "8"]
  args += ["--pod-step-s", "0.1", "--workers", "0", "--pipeline-batches", "3"]
  assert main(args + ["--warmup", "0", "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  assert r["dataset"] == f"{name}/res32" and r["photo_tree"] and r["batch"] == 2
  assert r["pod"] == {
    "hosts": 8,
    "step_s": 0.1,
    "global_batch": 16,
    "examples_per_s_per_host_needed": 16 / 0.1 / 8,
  }
  assert r["train_step_examples_per_s"] == 20.0 and not r["train_step_measured_here"]
  assert r["ratio_pipeline_over_train_step"] == pytest.approx(r["pipeline_examples_per_s"] / 20.0)
  assert [w["workers"] for w in r["per_workers"]] == [0] and r["per_workers"][0]["batch_size"] == 2
  assert "--photo-tree --pod-hosts 8 --pod-step-s 0.1" in r["command"]


def test_photo_tree_plans_for_both_layouts():
  """The benchmark's MEAD plan uses train actors only, with a neutral clip each; its
  CREMA-D version keeps every clip whose emotion CREMA-D has, under valid file names."""
  from emotalker_jax.bench.pipeline import _crema_plan
  from input_pipeline import photo_trees

  plan = photo_trees.benchmark_mead_plan()
  assert len(plan) == 24 and {labels.mead_split(a) for a, *_ in plan} == {"train"}
  assert {a for a, e, *_ in plan if e == "neutral"} == {a for a, *_ in plan}
  crema = _crema_plan(plan)
  kept = [k for k in plan if k[1] in labels.CREMA_EMOTIONS.values()]
  assert len(crema) == len(kept) and set(crema.values()) == {plan[k] for k in kept}
  for stem, clip in crema.items():
    p = labels.parse_crema_stem(stem)
    src = next(k for k in kept if plan[k] == clip)
    assert p["emotion"] == src[1] and labels.crema_split(p["actor"]) == "train"
