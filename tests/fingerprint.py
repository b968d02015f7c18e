"""Behaviour fingerprint: the same seeds must give the same results before and after a
refactor. Runs the real commands end to end on configs/tiny.py and writes one JSON:

- ``train``: `emotalker train` for 3 steps (loss at every step; a float64 checksum of the
  saved params and EMA params, read from the orbax checkpoint without our own code),
- ``generate``: `emotalker generate` from that checkpoint (its JSON summary and a checksum
  of the contact sheet's pixels),
- ``eval``: a short judge (`judge train`, 60 steps) and `emotalker eval`'s metrics on a short
  protocol (2 identities, 2 frames, 8 lip frames, 4 DDIM steps).

  python tests/fingerprint.py --out /tmp/fp_before
  python tests/fingerprint.py --out /tmp/fp_after --compare /tmp/fp_before/fingerprint.json

Only the commands' command lines are used, so the script runs unchanged on both sides of a
refactor of the code behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python tests/fingerprint.py` puts tests/ first on sys.path, so `emotalker_jax` would be
# the installed copy: the command table read below must be this checkout's.
sys.path.insert(0, REPO)


def _run(cmd: list[str], out_dir: str, name: str) -> str:
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  print("+", " ".join(cmd), flush=True)
  res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  with open(os.path.join(out_dir, f"{name}.log"), "w") as f:
    f.write(res.stdout + "\n--- stderr ---\n" + res.stderr)
  if res.returncode:
    sys.exit(f"{name} failed (rc {res.returncode}); see {out_dir}/{name}.log")
  return res.stdout


def _emotalker(*args: str) -> list[str]:
  return [sys.executable, "-m", "emotalker_jax.cli", *args]


def _judge_train_cmd(out: str) -> list[str]:
  """`emotalker judge train` where it exists, else the older module entry point."""
  from emotalker_jax import cli

  common = ["train", "--size", "tiny", "--out", out, "--steps", "60", "--no-eval", "--quiet"]
  if "judge" in cli.COMMANDS:
    return _emotalker("judge", *common)
  return [sys.executable, "-m", "emotalker_jax.evaluation.judge", *common]


def _tree_checksum(path: str) -> dict:
  """sum and sum of squares (float64) over every float leaf of an orbax pytree item."""
  import orbax.checkpoint as ocp

  tree = ocp.PyTreeCheckpointer().restore(path)
  out = {}
  for key in ("params", "ema_params"):
    leaves = [np.asarray(x, np.float64) for x in __import__("jax").tree_util.tree_leaves(tree[key])]
    out[key] = {
      "n": int(sum(x.size for x in leaves)),
      "sum": float(sum(x.sum() for x in leaves)),
      "sumsq": float(sum((x * x).sum() for x in leaves)),
    }
  return out


def _inputs(out_dir: str) -> tuple[str, str]:
  import imageio.v3 as iio
  from scipy.io import wavfile

  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:32, 0:32] / 31.0
  img = np.stack([yy, xx, 0.5 * (yy + xx)], -1) + 0.1 * rng.standard_normal((32, 32, 3))
  portrait = os.path.join(out_dir, "portrait.png")
  iio.imwrite(portrait, (np.clip(img, 0, 1) * 255).astype(np.uint8))
  t = np.arange(int(16000 * 0.8)) / 16000
  wav = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
  audio = os.path.join(out_dir, "speech.wav")
  wavfile.write(audio, 16000, (wav * 32767).astype(np.int16))
  return portrait, audio


def fingerprint(out_dir: str) -> dict:
  import imageio.v3 as iio

  os.makedirs(out_dir, exist_ok=True)
  work = os.path.join(out_dir, "work")
  _run(_emotalker("synth", "--out", f"{out_dir}/tfds", "--size", "tiny"), out_dir, "synth")
  _run(
    _emotalker(
      "train",
      "--config",
      "configs/tiny.py",
      "--workdir",
      work,
      "--max-steps",
      "3",
      "--config.train.log_every=1",
      "--config.train.async_checkpointing=False",
      f"--config.data.data_dir={out_dir}/tfds",
    ),
    out_dir,
    "train",
  )
  with open(os.path.join(work, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  losses = {int(r["step"]): r["loss"] for r in rows if "loss" in r}
  ckpt = os.path.join(work, "checkpoints", "3", "state")
  train = {"losses": losses, **_tree_checksum(ckpt)}

  portrait, audio = _inputs(out_dir)
  video = os.path.join(out_dir, "gen.mp4")
  summary = _run(
    _emotalker(
      "generate",
      "--checkpoint",
      work,
      "--portrait",
      portrait,
      "--audio",
      audio,
      "--prompt",
      "mostly happy, a bit surprised",
      "--out",
      video,
      "--crop",
      "center",
      "--steps",
      "4",
      "--no-progress",
    ),
    out_dir,
    "generate",
  )
  info = json.loads(summary.strip().splitlines()[-1])
  sheet = iio.imread(os.path.join(out_dir, "gen.png")).astype(np.float64)
  keep = ("frames", "intensities", "intensities_calibrated", "steps", "guidance")
  generate = {
    "info": {k: info[k] for k in keep if k in info},
    "sheet_mean": float(sheet.mean()),
    "sheet_sumsq": float((sheet**2).sum()),
    "sheet_shape": list(sheet.shape),
  }

  judge = os.path.join(out_dir, "judge")
  _run(_judge_train_cmd(judge), out_dir, "judge")
  _run(
    _emotalker(
      "eval",
      "--checkpoint",
      work,
      "--judge",
      judge,
      "--out",
      os.path.join(out_dir, "eval"),
      "--identities",
      "2",
      "--frames",
      "2",
      "--lip-frames",
      "8",
      "--steps",
      "4",
    ),
    out_dir,
    "eval",
  )
  with open(os.path.join(out_dir, "eval", "metrics.json")) as f:
    metrics = json.load(f)
  evaluation = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
  fp = {"train": train, "generate": generate, "eval": evaluation}
  with open(os.path.join(out_dir, "fingerprint.json"), "w") as f:
    json.dump(fp, f, indent=1, sort_keys=True)
  return fp


def compare(a, b, path="", rtol=1e-5, atol=1e-6) -> list[str]:
  """Differences between two fingerprints beyond float round-off."""
  if isinstance(a, dict) and isinstance(b, dict):
    diffs = [
      f"{path}/{k}: only in {'before' if k in a else 'after'}" for k in sorted(set(a) ^ set(b))
    ]
    for k in sorted(set(a) & set(b)):
      if k == "seconds" or k.endswith("_seconds"):  # wall times, not results
        continue
      diffs += compare(a[k], b[k], f"{path}/{k}", rtol, atol)
    return diffs
  if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in compare(x, y, f"{path}[{i}]")]
  if isinstance(a, (int, float)) and isinstance(b, (int, float)):
    ok = np.isclose(a, b, rtol=rtol, atol=atol) or (np.isnan(a) and np.isnan(b))
    return [] if ok else [f"{path}: {a!r} -> {b!r}"]
  return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--compare", default=None, help="an earlier fingerprint.json")
  args = p.parse_args()
  fp = fingerprint(args.out)
  print(json.dumps(fp["train"]["losses"]), json.dumps(fp["generate"]["info"]))
  if args.compare:
    with open(args.compare) as f:
      # as written to fingerprint.json: JSON object keys are strings (the train losses'
      # step numbers are ints in memory)
      diffs = compare(json.load(f), json.loads(json.dumps(fp)))
    print("\n".join(diffs) if diffs else "same results (within float round-off)")
    return 1 if diffs else 0
  return 0


if __name__ == "__main__":
  sys.exit(main())
