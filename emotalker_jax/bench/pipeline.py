"""Input-pipeline examples/s (``input_pipeline.pipeline.benchmark``) per grain worker count
vs the train step's consumption rate (ratio > 1: the input keeps up).

The consumption rate is the train step measured here, or, for a pod (``pod_hosts`` and
``pod_step_s``), what one host must deliver: global batch / step time / hosts; the
pipeline then runs with the per-host batch (global batch / hosts).

``photo_tree``: a MEAD or CREMA-D config's dataset is built first, when missing, from a
tree in the dataset's own layout made of the test photos with synthetic head motion
(``input_pipeline.photo_trees.benchmark_mead_plan``: 4 train actors x 6 clips x 50
frames) at the config's image size, under ``data_dir`` (default ``PHOTO_TREE_DIR``, never
the config's own data dir, so it cannot pass for the real dataset).
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import re

from emotalker_jax.bench.common import log
from emotalker_jax.bench.train_step import run_train_step_bench
from input_pipeline import crema_d, labels, mead, photo_trees, synthetic_talk
from input_pipeline import pipeline as pl

PHOTO_TREE_DIR = "data/bench_photo_tree"


def _crema_plan(mead_plan: dict) -> dict:
  """The MEAD benchmark plan in CREMA-D names: actor 1001 + k, its emotions' codes."""
  codes = {v: k for k, v in labels.CREMA_EMOTIONS.items()}
  actors = sorted({a for a, *_ in mead_plan})
  out = {}
  for (actor, emotion, level, number), clip in mead_plan.items():
    if emotion not in codes:
      continue
    lvl = "XX" if emotion == "neutral" else ("LO", "MD", "HI")[level - 1]
    stem = (
      f"{1001 + actors.index(actor)}_{('DFA', 'IEO', 'TIE')[number - 1]}_{codes[emotion]}_{lvl}"
    )
    out[stem] = clip
  return out


def build_photo_tree_dataset(name: str, data_dir: str, image_size: int, progress=None) -> None:
  """Builds ``mead/res<S>`` or ``crema_d/res<S>`` under ``data_dir`` from a photo tree (S from
  the name, else ``image_size``)."""
  kind, _, variant = name.partition("/")
  if kind not in ("mead", "crema_d"):
    raise ValueError(f"--photo-tree builds mead or crema_d, not {name!r}")
  m = re.fullmatch(r"res(\d+)", variant)
  image_size = int(m.group(1)) if m else int(image_size)
  root = os.path.join(data_dir, "manual", kind)
  plan = photo_trees.benchmark_mead_plan()
  side = max(192, 2 * int(image_size))  # the face fills the crop without upsampling
  if not os.path.isdir(root):
    log(progress, f"pipeline: writing a {kind} photo tree ({len(plan)} clips) to {root}")
    if kind == "mead":
      photo_trees.write_mead_tree(root, plan, side=side)
    else:
      photo_trees.write_crema_tree(root, _crema_plan(plan), side=side)
  log(progress, f"pipeline: preparing {kind}/res{image_size} from {root}")
  builder = mead if kind == "mead" else crema_d
  builder.build(root, data_dir, image_size=int(image_size), num_workers=min(4, os.cpu_count() or 1))


def run_pipeline_bench(
  config,
  *,
  workers: Sequence[int] = (0, 2),
  batches: int = 20,
  data_dir: str | None = None,
  train_examples_per_s: float | None = None,
  train_steps: int = 3,
  photo_tree: bool = False,
  pod_hosts: int | None = None,
  pod_step_s: float | None = None,
  progress=None,
) -> dict:
  """Training-pipeline examples/s per grain worker count vs the train step's examples/s
  (measured here unless given, or a pod host's share: see the module doc)."""
  name = pl.dataset_name(config)
  data_dir = data_dir or (PHOTO_TREE_DIR if photo_tree else config.data.data_dir)
  folder = os.path.join(data_dir, *name.split("/"))
  if not os.path.isdir(folder):
    if photo_tree:
      build_photo_tree_dataset(name, data_dir, int(config.data.image_size), progress)
    elif not name.startswith("synthetic_talk"):
      raise FileNotFoundError(
        f"dataset {name} not found under {data_dir} ({folder}); build "
        "the TFDS dataset first (see input_pipeline/), or pass --photo-tree"
      )
    else:
      size = name.split("/")[1] if "/" in name else "tiny"
      log(
        progress,
        f"pipeline: {name} not under {data_dir}: building it (as `emotalker synth "
        f"--out {data_dir} --size {size}` does)",
      )
      synthetic_talk.get_builder(size, data_dir).download_and_prepare()
  global_batch = int(config.train.batch_size)
  if (pod_hosts is None) != (pod_step_s is None):
    raise ValueError("--pod-hosts and --pod-step-s go together (the pod's hosts and step time)")
  hosts = int(pod_hosts or 1)
  batch = pl.per_process_batch_size(global_batch, hosts)
  log(progress, f"pipeline: {name}, workers {list(workers)}, batch {batch} per host")
  rows = pl.benchmark(
    name,
    data_dir,
    "train",
    workers=tuple(int(w) for w in workers),
    batch_size=batch,
    batches=int(batches),
    image_size=int(config.data.image_size),
    worker_buffer_size=int(config.data.worker_buffer_size),
  )
  pod = None
  if pod_hosts:
    train_examples_per_s = global_batch / float(pod_step_s) / hosts
    pod = {
      "hosts": hosts,
      "step_s": float(pod_step_s),
      "global_batch": global_batch,
      "examples_per_s_per_host_needed": train_examples_per_s,
    }
  measured_here = train_examples_per_s is None
  if measured_here:
    ts = run_train_step_bench(
      config, remat=(bool(config.unet.remat),), steps=train_steps, progress=progress
    )
    train_examples_per_s = ts["examples_per_s"]
  best = max(rows, key=lambda r: r["examples_per_s"])
  return {
    "benchmark": "pipeline",
    "dataset": name,
    "data_dir": data_dir,
    "photo_tree": bool(photo_tree),
    "batch": batch,
    "image_size": int(config.data.image_size),
    "per_workers": rows,
    "pipeline_examples_per_s": best["examples_per_s"],
    "best_workers": best["workers"],
    "train_step_examples_per_s": train_examples_per_s,
    "train_step_measured_here": measured_here,
    "pod": pod,
    "ratio_pipeline_over_train_step": best["examples_per_s"] / train_examples_per_s,
  }
