"""`emotalker generate-dataset`: batch generation from a JSONL manifest, resumable, sharded.

  emotalker generate-dataset --checkpoint WORKDIR --manifest rows.jsonl --out OUTDIR \\
      [--shard I/N] [--outputs npz,mp4,png --seed 0 --steps --guidance --eta --crop \\
      --batch-frames N --distributed auto|on|off]
  emotalker generate-dataset --merge --out OUTDIR [--manifest rows.jsonl]

Manifest: one JSON object per line,
  {"id": "a01", "portrait": "img.png", "audio": "a.wav",
   "prompt": "a little sad"  |  "emotion": {"happy": 0.7}  |  "intensities": [8 floats],
   "crop": "face" | "center"   (optional; default --crop)}
Relative paths are relative to the manifest's folder. Ids are file names
([A-Za-z0-9][A-Za-z0-9._-]*, at most 128 characters) and must be unique (checked before
any work). The manifest, portraits, audio, the checkpoint and OUT may be ``gs://`` paths
(read and written through ``etils.epath``, never turned into local paths).

Outputs per row: OUT/<id>.npz (frames (N, S, S, 3) uint8, intensities (8,), fps, seed),
OUT/<id>.mp4 (with the audio), OUT/<id>.png (contact sheet), each written atomically (in
the shard's staging folder OUT/.staging.<i>-of-<n>/: a ``.tmp-*`` file, fsync, rename;
then renamed into OUT). Once all of a row's files are in place, a line {"id", "outputs",
"frames", "seed", "intensities", ...} is appended to the shard's done file and fsynced. A
re-run skips the ids listed in any shard's done file, so a killed run (even SIGKILL)
resumes with nothing lost or duplicated: the shard's staging folder is emptied at start,
a torn last line of its done file is cut off, and a row whose files exist but is not
listed is simply generated again (the same bytes: each row's seed is derived from its id
and --seed).

Shards (``inference.dataset``): with ``--shard I/N``, or under jax.distributed (process
index of process count; each process then samples on its own local devices), a process
generates only the rows whose id hashes to its shard and writes
done.<I>-of-<N>.jsonl / failures.<I>-of-<N>.jsonl (one shard: done.jsonl /
failures.jsonl). Every shard's done file is read at start, so a restart with another N
also resumes (but all processes of one run must use the same N).

A bad row (missing file, unreadable image, no face, bad prompt or intensities, ...) is
reported, appended to the shard's failures file ({"id", "line", "error", "shard",
"time"}; never truncated: the merge view gives each row's latest failure unless it was
done since) and skipped; the run goes on. The command prints a JSON summary and exits 0
when every row of its shard is done, 1 when some failed.

``--merge``: the union of all shards' logs (``dataset.merge_status``): ids done, ids done
twice (an error), the current failures, the manifest's rows still pending, listed
outputs missing; writes OUT/outputs.jsonl (one done record per id, manifest order) and
prints the summary; exits 0 when complete, 1 otherwise. It needs no checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil


def add_arguments(p: argparse.ArgumentParser) -> None:
  from emotalker_jax.commands.generate import add_common_arguments

  add_common_arguments(p, checkpoint_required=False)
  p.add_argument(
    "--manifest",
    help='JSONL, one row per line: {"id": "a01", "portrait": "img.png", '
    '"audio": "a.wav", and one of "prompt": "a little sad" | "emotion": '
    '{"happy": 0.7} | "intensities": [8 floats, MEAD order]; optional '
    '"crop": "face"|"center"}; relative paths are relative to the manifest (local or gs://)',
  )
  p.add_argument(
    "--out", required=True, help="output folder, local or gs:// (resumable: re-run to continue)"
  )
  p.add_argument(
    "--outputs",
    default="npz,mp4,png",
    help="comma list of what to write per row: npz, mp4, png (default all)",
  )
  p.add_argument(
    "--shard",
    default=None,
    help="I/N: generate only shard I of N (rows by a hash of their id), e.g. 0/2 and 1/2 "
    "in two independent jobs on one --out (default: the jax.distributed process index of "
    "the process count; 0/1 in a single process)",
  )
  p.add_argument(
    "--merge",
    action="store_true",
    help="no generation: the union of every shard's done files in --out (checks that no "
    "id is done twice, lists pending rows with --manifest and current failures), writes "
    "OUT/outputs.jsonl; exit 0 when complete",
  )
  p.add_argument(
    "--distributed",
    choices=("auto", "on", "off"),
    default="auto",
    help="jax.distributed.initialize() for multi-host jobs (default: auto); each process "
    "then takes its own shard and samples on its local devices",
  )


def _clear_staging(stage: str) -> list[str]:
  """Empties a shard's local staging folder (what a killed run of this shard left);
  returns the names removed."""
  if not os.path.isdir(stage):
    return []
  gone = sorted(os.listdir(stage))
  shutil.rmtree(stage)
  return gone


def process_manifest(
  gen,
  rows: list,
  out: str,
  *,
  shard=None,
  seed: int = 0,
  outputs: tuple[str, ...] = ("npz", "mp4", "png"),
  crop: str = "face",
  steps: int | None = None,
  guidance: float | None = None,
  eta: float | None = None,
  batch_frames: int = 8,
  max_audio_seconds: float = 600.0,
  progress: bool = True,
  log=print,
) -> dict:
  """Generates every row of ``rows`` (``dataset.read_manifest``) in ``shard``
  (``dataset.Shard``; default: the one shard 0/1) that no shard has done yet (OUT's done
  files) with ``gen`` (a loaded ``inference.Generator``; anything with its
  ``image_size``, ``sample_rate``, ``fps`` and ``generate``). ``out``: a local folder or a
  remote one (``gs://...``). Returns the summary dict: out, shard, rows (of this shard),
  manifest_rows, already_done, generated, failed, failures, frames, frames_per_s,
  compile_s, temp_files_removed."""
  import numpy as np
  from tqdm import tqdm

  from emotalker_jax import inference as I
  from emotalker_jax.checkpoints import remove_temp_files
  from emotalker_jax.inference import paths
  from emotalker_jax.inference.dataset import AppendLog, Shard, read_done, staging_dirs

  shard = Shard() if shard is None else shard
  out = os.fspath(out)
  remote = paths.is_remote(out)
  paths.makedirs(out)
  removed: list[str] = []
  stage = paths.join(out, shard.staging_name)
  if not remote:  # .tmp-* right in OUT: an older version's leftovers (shards use staging)
    removed = remove_temp_files(out) + _clear_staging(stage)
    os.makedirs(stage)
  if removed:
    log(f"removed {len(removed)} temp file(s) left by an interrupted run: {', '.join(removed[:5])}")
  for name, other in staging_dirs(out):
    if other.count != shard.count:
      log(
        f"warning: {name} in {out!r} is from a run with {other.count} shards (this one has "
        f"{shard.count}); if that run is still going, stop it: runs with different shard "
        "counts on one folder generate rows twice"
      )
  done = read_done(out, own=shard)
  done_log = AppendLog(paths.join(out, shard.done_name))
  fail_log = AppendLog(paths.join(out, shard.failures_name))
  S, sr, fps = gen.image_size, gen.sample_rate, gen.fps
  mine = [r for r in rows if shard.owns(r)]
  todo = [r for r in mine if r.id is None or r.id not in done]
  skipped = len(mine) - len(todo)
  failures, generated, frames_total, t_sample, t_compile = [], 0, 0, 0.0, 0.0
  bar = tqdm(
    total=len(mine),
    initial=skipped,
    desc="generate-dataset" if shard.count == 1 else f"generate-dataset {shard.tag}",
    unit="row",
    disable=not progress,
    dynamic_ncols=True,
  )
  try:
    for row in todo:
      try:
        if row.error is not None:
          raise ValueError(row.error)
        row_seed = I.seed_for(row.id, seed)
        portrait = I.prepare_portrait(row.portrait, S, crop=row.crop or crop)
        audio = I.load_generation_audio(row.audio, sr, fps, max_audio_seconds)
        frames, info = gen.generate(
          portrait.image,
          audio,
          prompt=row.prompt,
          intensities=row.intensities,
          steps=steps,
          guidance=guidance,
          eta=eta,
          seed=row_seed,
          face_mask=portrait.face_mask,
          batch_frames=batch_frames,
          max_audio_seconds=max_audio_seconds,
        )
        frames = I.to_portrait_colour(frames, portrait)  # grey for a greyscale photo
        t_sample += info["timing"]["sample_s"]
        t_compile += info["timing"]["compile_s"]
        s = np.asarray([info["intensities"][k] for k in info["intensities"]], np.float32)
        # Local: written in the staging folder, renamed into OUT once all are there.
        target = (lambda n: paths.join(out, n)) if remote else (lambda n: os.path.join(stage, n))
        written = []
        if "npz" in outputs:
          I.write_npz(
            target(f"{row.id}.npz"),
            frames=frames,
            intensities=s,
            fps=np.float32(fps),
            seed=np.int64(row_seed),
            portrait=portrait.image,
          )
          written.append(f"{row.id}.npz")
        if "mp4" in outputs:
          I.write_mp4(target(f"{row.id}.mp4"), frames, audio, sr, fps)
          written.append(f"{row.id}.mp4")
        if "png" in outputs:
          I.write_png(target(f"{row.id}.png"), I.contact_sheet(frames, portrait.image))
          written.append(f"{row.id}.png")
        if not remote:
          for name in written:
            os.replace(os.path.join(stage, name), os.path.join(out, name))
          paths.fsync_dir(out)
        done_log.append(
          {
            "id": row.id,
            "outputs": written,
            "frames": int(len(frames)),
            "seed": row_seed,
            "emotion_source": info["emotion_source"],
            "intensities": info["intensities"],
            "shard": shard.tag,
          }
        )
        generated += 1
        frames_total += len(frames)
        bar.set_postfix(frames_per_s=f"{frames_total / max(t_sample, 1e-9):.1f}", refresh=False)
      except Exception as e:  # noqa: BLE001 - a bad row never stops the run
        msg = (
          str(e)
          if isinstance(e, (ValueError, FileNotFoundError, OSError))
          else f"{type(e).__name__}: {e}"
        )
        rec = {"id": row.id, "line": row.line, "error": msg}
        failures.append(rec)
        fail_log.append(
          {
            **rec,
            "shard": shard.tag,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
          }
        )
        log(f"row {row.id if row.id is not None else '#' + str(row.line)} failed: {msg}")
      bar.update(1)
  finally:
    bar.close()
    if not remote:
      _clear_staging(stage)  # empty unless a row failed half-written
  return {
    "out": out,
    "shard": shard.tag,
    "rows": len(mine),
    "manifest_rows": len(rows),
    "already_done": skipped,
    "generated": generated,
    "failed": len(failures),
    "failures": failures,
    "frames": frames_total,
    "frames_per_s": round(frames_total / t_sample, 3) if t_sample > 0 else None,
    "compile_s": round(t_compile, 3),
    "temp_files_removed": len(removed),
  }


def run_merge(args) -> int:
  from emotalker_jax.inference.dataset import merge_status, read_manifest, write_merged

  rows = read_manifest(args.manifest) if args.manifest else None
  status = merge_status(args.out, rows)
  merged = write_merged(args.out, status)
  summary = {k: v for k, v in status.items() if k != "records"}
  summary.update(outputs=len(status["records"]), merged=merged)
  print(json.dumps(summary))
  return 0 if status["complete"] else 1


def run(args) -> int:
  import sys

  if args.merge:
    return run_merge(args)
  if not args.checkpoint or not args.manifest:
    raise ValueError(
      "--checkpoint WORKDIR and --manifest rows.jsonl are required to generate "
      "(only --merge --out OUT works without them)"
    )
  from emotalker_jax import parallel
  from emotalker_jax.inference.dataset import (
    parse_outputs,
    parse_shard,
    read_manifest,
    resolve_shard,
  )

  if args.shard is not None:
    parse_shard(args.shard)  # a bad flag fails before anything starts
  parallel.maybe_initialize_distributed(args.distributed)  # before any other JAX call
  import jax

  from emotalker_jax import inference as I
  from emotalker_jax.checkpoints import load_checkpoint_config
  from emotalker_jax.commands.generate import quiet_fork_warning
  from emotalker_jax.config_utils import checkpoint_overrides

  quiet_fork_warning()
  nproc = jax.process_count()
  shard = resolve_shard(args.shard)
  overrides = checkpoint_overrides(args.config_args)
  outputs = parse_outputs(args.outputs)
  rows = read_manifest(args.manifest)  # duplicate ids: error before any work
  load_checkpoint_config(args.checkpoint, overrides)  # a missing checkpoint fails fast
  # Several processes: each samples its own rows on its own devices (no collectives).
  devices = jax.local_devices() if nproc > 1 else None
  gen = I.load_generator(args.checkpoint, overrides, use_ema=not args.raw_params, devices=devices)
  summary = process_manifest(
    gen,
    rows,
    args.out,
    shard=shard,
    seed=args.seed,
    outputs=outputs,
    crop=args.crop,
    steps=args.steps,
    guidance=args.guidance,
    eta=args.eta,
    batch_frames=args.batch_frames,
    max_audio_seconds=args.max_audio_seconds,
    progress=not args.no_progress,
    log=lambda m: print(m, file=sys.stderr, flush=True),
  )
  if nproc > 1:  # the coordinator must not exit (taking the service down) before the rest
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("emotalker generate-dataset: all shards finished")
  print(json.dumps(summary))
  return 0 if summary["failed"] == 0 else 1
