"""`emotalker generate-dataset`: batch generation from a JSONL manifest, resumable.

  emotalker generate-dataset --checkpoint WORKDIR --manifest rows.jsonl --out OUTDIR \\
      [--outputs npz,mp4,png --seed 0 --steps --guidance --eta --crop --batch-frames N]

Manifest: one JSON object per line,
  {"id": "a01", "portrait": "img.png", "audio": "a.wav",
   "prompt": "a little sad"  |  "emotion": {"happy": 0.7}  |  "intensities": [8 floats],
   "crop": "face" | "center"   (optional; default --crop)}
Relative paths are relative to the manifest's folder. Ids are file names
([A-Za-z0-9][A-Za-z0-9._-]*, at most 128 characters) and must be unique (checked before
any work).

Outputs per row: OUT/<id>.npz (frames (N, S, S, 3) uint8, intensities (8,), fps, seed),
OUT/<id>.mp4 (with the audio), OUT/<id>.png (contact sheet), each written atomically (a
``.tmp-*`` file in OUT, fsync, rename). Once all of a row's files are in place, a line
{"id", "outputs", "frames", "seed", "intensities"} is appended to OUT/done.jsonl and
fsynced. A re-run skips the ids listed there, so a killed run (even SIGKILL) resumes with
nothing lost or duplicated: leftover ``.tmp-*`` files are removed at start, a torn last
line of done.jsonl is cut off, and a row whose files exist but is not listed is simply
generated again (the same bytes: each row's seed is derived from its id and --seed).

A bad row (missing file, unreadable image, no face, bad prompt or intensities, ...) is
reported, written to OUT/failures.jsonl ({"id", "line", "error"}; rewritten each run, so
it lists the rows that failed in the latest run) and skipped; the run goes on. The
command prints a JSON summary and exits 0 when every row is done, 1 when some failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from typing import Any

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OUTPUT_KINDS = ("npz", "mp4", "png")
EMOTION_KEYS = ("prompt", "emotion", "intensities")
DONE = "done.jsonl"
FAILURES = "failures.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
  from emotalker_jax.commands.generate import add_common_arguments

  add_common_arguments(p)
  p.add_argument(
    "--manifest",
    required=True,
    help='JSONL, one row per line: {"id": "a01", "portrait": "img.png", '
    '"audio": "a.wav", and one of "prompt": "a little sad" | "emotion": '
    '{"happy": 0.7} | "intensities": [8 floats, MEAD order]; optional '
    '"crop": "face"|"center"}; relative paths are relative to the manifest',
  )
  p.add_argument("--out", required=True, help="output folder (resumable: re-run to continue)")
  p.add_argument(
    "--outputs",
    default="npz,mp4,png",
    help="comma list of what to write per row: npz, mp4, png (default all)",
  )


@dataclasses.dataclass
class Row:
  """One manifest line: id, resolved paths, the emotion (exactly one of prompt /
  intensities is set) and crop; ``error`` is set for a row that cannot be run."""

  line: int
  id: str | None
  portrait: str = ""
  audio: str = ""
  prompt: str | None = None
  intensities: Any = None
  crop: str | None = None
  error: str | None = None


def _parse_row(obj: Any, line: int, base: str) -> Row:
  from emotalker_jax.emotions import parse_emotion_spec

  if not isinstance(obj, dict):
    return Row(line, None, error=f"line {line} is not a JSON object")
  rid = obj.get("id")
  if isinstance(rid, int) and not isinstance(rid, bool):
    rid = str(rid)
  if not isinstance(rid, str) or not ID_RE.match(rid):
    return Row(
      line,
      rid if isinstance(rid, str) else None,
      error=f"line {line}: id {rid!r} is missing or not a file name "
      "([A-Za-z0-9][A-Za-z0-9._-]*, at most 128 characters)",
    )
  row = Row(line, rid)
  try:
    for k in ("portrait", "audio"):
      v = obj.get(k)
      if not isinstance(v, str) or not v:
        raise ValueError(f"'{k}' (a file path) is missing")
      setattr(row, k, v if os.path.isabs(v) else os.path.join(base, v))
    given = [k for k in EMOTION_KEYS if obj.get(k) is not None]
    if len(given) != 1:
      raise ValueError(f"give exactly one of {', '.join(EMOTION_KEYS)} (got {given or 'none'})")
    k = given[0]
    v = obj[k]
    if k == "prompt":
      if not isinstance(v, str) or not v.strip():
        raise ValueError(f"prompt {v!r} is empty or not a string")
      row.prompt = v
    elif k == "emotion":
      if isinstance(v, dict):
        v = ",".join(f"{name}={x}" for name, x in v.items())
      if not isinstance(v, str):
        raise ValueError(
          '\'emotion\' must be an object like {"happy": 0.7} or a string like "happy=0.7"'
        )
      row.intensities = parse_emotion_spec(v)
    else:
      import numpy as np

      from emotalker_jax.emotions import NUM_EMOTIONS

      try:
        s = np.asarray(v, np.float32).reshape(-1)
      except (TypeError, ValueError):
        s = np.zeros(0, np.float32)
      if s.shape[0] != NUM_EMOTIONS or not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError(
          f"'intensities' must be {NUM_EMOTIONS} numbers in [0, 1] (MEAD order), got {v!r}"
        )
      row.intensities = s
    crop = obj.get("crop")
    if crop is not None and crop not in ("face", "center"):
      raise ValueError(f"crop {crop!r} must be 'face' or 'center'")
    row.crop = crop
  except ValueError as e:
    row.error = str(e).replace("--emotion: ", "emotion: ")
  return row


def read_manifest(path: str) -> list[Row]:
  """Parses the manifest. Malformed rows come back with ``error`` set (they are reported
  and skipped); duplicate ids raise ValueError (before any work)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"manifest {path!r} not found; write one JSON row per line: "
      '{"id": ..., "portrait": ..., "audio": ..., "prompt": ...}'
    )
  base = os.path.dirname(os.path.abspath(path))
  rows: list[Row] = []
  with open(path, encoding="utf-8") as fh:
    for i, text in enumerate(fh, 1):
      if not text.strip():
        continue
      try:
        obj = json.loads(text)
      except json.JSONDecodeError as e:
        rows.append(Row(i, None, error=f"line {i} is not valid JSON: {e.msg}"))
        continue
      rows.append(_parse_row(obj, i, base))
  seen: dict[str, int] = {}
  dups = []
  for r in rows:
    if r.id is None:
      continue
    if r.id in seen:
      dups.append(f"{r.id!r} (lines {seen[r.id]} and {r.line})")
    else:
      seen[r.id] = r.line
  if dups:
    raise ValueError(
      f"manifest {path!r} has duplicate ids: {', '.join(dups[:5])}"
      f"{' ...' if len(dups) > 5 else ''}; every row needs its own id"
    )
  if not rows:
    raise ValueError(f"manifest {path!r} has no rows")
  return rows


def read_done(out: str) -> dict[str, dict]:
  """Ids listed in OUT/done.jsonl. A torn last line (a kill during the append) is cut off
  the file first, so later appends start on a fresh line."""
  path = os.path.join(out, DONE)
  if not os.path.isfile(path):
    return {}
  with open(path, "rb") as fh:
    data = fh.read()
  if data and not data.endswith(b"\n"):
    keep = data.rfind(b"\n") + 1
    os.truncate(path, keep)
    data = data[:keep]
  done = {}
  for line in data.decode("utf-8", "replace").splitlines():
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(rec, dict) and isinstance(rec.get("id"), str):
      done[rec["id"]] = rec
  return done


def _append_line(path: str, record: dict) -> None:
  with open(path, "a", encoding="utf-8") as fh:
    fh.write(json.dumps(record) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def parse_outputs(spec: str) -> tuple[str, ...]:
  kinds = tuple(dict.fromkeys(k.strip() for k in spec.split(",") if k.strip()))
  bad = [k for k in kinds if k not in OUTPUT_KINDS]
  if bad or not kinds:
    raise ValueError(f"--outputs {spec!r}: choose from {', '.join(OUTPUT_KINDS)}")
  return kinds


def process_manifest(
  gen,
  rows: list[Row],
  out: str,
  *,
  seed: int = 0,
  outputs: tuple[str, ...] = OUTPUT_KINDS,
  crop: str = "face",
  steps: int | None = None,
  guidance: float | None = None,
  eta: float | None = None,
  batch_frames: int = 8,
  max_audio_seconds: float = 600.0,
  progress: bool = True,
  log=print,
) -> dict:
  """Generates every row of ``rows`` not yet in OUT/done.jsonl with ``gen`` (a loaded
  ``inference.Generator``). Returns the summary dict (see the module docstring)."""
  import numpy as np
  from tqdm import tqdm

  from emotalker_jax import inference as I
  from emotalker_jax.checkpoints import remove_temp_files

  os.makedirs(out, exist_ok=True)
  removed = remove_temp_files(out)
  if removed:
    log(f"removed {len(removed)} temp file(s) left by an interrupted run: {', '.join(removed[:5])}")
  done = read_done(out)
  fail_path = os.path.join(out, FAILURES)
  with open(fail_path, "w", encoding="utf-8"):
    pass
  S, sr, fps = gen.image_size, gen.sample_rate, gen.fps
  todo = [r for r in rows if r.id is None or r.id not in done]
  skipped = len(rows) - len(todo)
  failures, generated, frames_total, t_sample, t_compile = [], 0, 0, 0.0, 0.0
  bar = tqdm(
    total=len(rows),
    initial=skipped,
    desc="generate-dataset",
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
        written = []
        if "npz" in outputs:
          I.write_npz(
            os.path.join(out, f"{row.id}.npz"),
            frames=frames,
            intensities=s,
            fps=np.float32(fps),
            seed=np.int64(row_seed),
            portrait=portrait.image,
          )
          written.append(f"{row.id}.npz")
        if "mp4" in outputs:
          I.write_mp4(os.path.join(out, f"{row.id}.mp4"), frames, audio, sr, fps)
          written.append(f"{row.id}.mp4")
        if "png" in outputs:
          I.write_png(os.path.join(out, f"{row.id}.png"), I.contact_sheet(frames, portrait.image))
          written.append(f"{row.id}.png")
        _append_line(
          os.path.join(out, DONE),
          {
            "id": row.id,
            "outputs": written,
            "frames": int(len(frames)),
            "seed": row_seed,
            "emotion_source": info["emotion_source"],
            "intensities": info["intensities"],
          },
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
        _append_line(fail_path, rec)
        log(f"row {row.id if row.id is not None else '#' + str(row.line)} failed: {msg}")
      bar.update(1)
  finally:
    bar.close()
  return {
    "out": os.fspath(out),
    "rows": len(rows),
    "already_done": skipped,
    "generated": generated,
    "failed": len(failures),
    "failures": failures,
    "frames": frames_total,
    "frames_per_s": round(frames_total / t_sample, 3) if t_sample > 0 else None,
    "compile_s": round(t_compile, 3),
    "temp_files_removed": len(removed),
  }


def run(args) -> int:
  import sys

  from emotalker_jax import inference as I
  from emotalker_jax.checkpoints import load_checkpoint_config
  from emotalker_jax.commands.generate import quiet_fork_warning
  from emotalker_jax.config_utils import checkpoint_overrides

  quiet_fork_warning()
  overrides = checkpoint_overrides(args.config_args)
  outputs = parse_outputs(args.outputs)
  rows = read_manifest(args.manifest)  # duplicate ids: error before any work
  load_checkpoint_config(args.checkpoint, overrides)  # a missing checkpoint fails fast
  gen = I.load_generator(args.checkpoint, overrides, use_ema=not args.raw_params)
  summary = process_manifest(
    gen,
    rows,
    args.out,
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
  print(json.dumps(summary))
  return 0 if summary["failed"] == 0 else 1
