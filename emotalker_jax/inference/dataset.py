"""Dataset generation bookkeeping (``emotalker generate-dataset``): the manifest, shards,
the per-shard done / failure logs and the merge view of an output folder.

Shards: row ``id`` goes to shard ``shard_of(id, line, n)`` = the first 8 bytes of
sha256(id), big-endian, mod n (a row without a valid id: (line - 1) mod n, so exactly one
shard reports it). The assignment depends only on the id and n, not on the manifest's
order, so a restart with the same n resumes each shard and rows appended to the manifest
do not move the others.

Files in OUT, per shard ``i-of-n`` (one shard, n = 1: the names without the tag):
  done.<i>-of-<n>.jsonl      one line per finished row, appended and fsynced after its files
  failures.<i>-of-<n>.jsonl  one line per failed attempt, appended (never truncated)
  .staging.<i>-of-<n>/       the shard's files while they are written (then renamed into OUT)
A process reads every shard's done file at start (so a restart with another n resumes
too) but only ever writes, repairs or cleans its own shard's files. ``merge_status`` is
the union view: every done id once, ids done twice, the current failures, the rows still
pending and the final list of outputs (``write_merged``: OUT/outputs.jsonl).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from typing import Any

import jax
import numpy as np

from emotalker_jax.emotions import NUM_EMOTIONS, parse_emotion_spec
from emotalker_jax.inference import paths

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OUTPUT_KINDS = ("npz", "mp4", "png")
EMOTION_KEYS = ("prompt", "emotion", "intensities")
DONE = "done.jsonl"
FAILURES = "failures.jsonl"
MERGED = "outputs.jsonl"
_LOG_RE = re.compile(r"^(done|failures)(?:\.(\d+)-of-(\d+))?\.jsonl$")
_STAGING_RE = re.compile(r"^\.staging\.(\d+)-of-(\d+)$")


# ---------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------
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
      setattr(row, k, paths.join(base, v))
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


def read_manifest(path: str | os.PathLike) -> list[Row]:
  """Parses the manifest (local or remote, ``gs://...`` through epath). Relative portrait /
  audio paths are relative to the manifest's folder. Malformed rows come back with
  ``error`` set (they are reported and skipped); duplicate ids raise ValueError (before
  any work)."""
  path = os.fspath(path)
  if not paths.isfile(path):
    raise FileNotFoundError(
      f"manifest {path!r} not found; write one JSON row per line: "
      '{"id": ..., "portrait": ..., "audio": ..., "prompt": ...}'
    )
  base = paths.folder_of(path)
  rows: list[Row] = []
  text = paths.read_bytes(path).decode("utf-8")
  for i, line in enumerate(io.StringIO(text, newline=None), 1):  # as open(): universal
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
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


def parse_outputs(spec: str) -> tuple[str, ...]:
  kinds = tuple(dict.fromkeys(k.strip() for k in spec.split(",") if k.strip()))
  bad = [k for k in kinds if k not in OUTPUT_KINDS]
  if bad or not kinds:
    raise ValueError(f"--outputs {spec!r}: choose from {', '.join(OUTPUT_KINDS)}")
  return kinds


# ---------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shard:
  """Shard ``index`` of ``count`` (0 <= index < count); the file names it writes."""

  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not (isinstance(self.count, int) and self.count >= 1 and 0 <= self.index < self.count):
      raise ValueError(
        f"shard {self.index}/{self.count}: give I/N with N >= 1 and 0 <= I < N (e.g. 0/2)"
      )

  @property
  def tag(self) -> str:
    return f"{self.index}-of-{self.count}"

  def _log_name(self, kind: str) -> str:
    return f"{kind}.jsonl" if self.count == 1 else f"{kind}.{self.tag}.jsonl"

  @property
  def done_name(self) -> str:
    return self._log_name("done")

  @property
  def failures_name(self) -> str:
    return self._log_name("failures")

  @property
  def staging_name(self) -> str:
    return f".staging.{self.tag}"

  def owns(self, row: Row) -> bool:
    return shard_of(row.id, row.line, self.count) == self.index


def shard_of(row_id: str | None, line: int, count: int) -> int:
  """The shard (0 .. count-1) of a row: sha256(id)[:8] big-endian mod count; a row
  without an id by its line number, (line - 1) mod count."""
  if count == 1:
    return 0
  if row_id is None:
    return (int(line) - 1) % count
  return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") % count


def parse_shard(spec: str) -> Shard:
  """'I/N' (e.g. '0/2') -> Shard(I, N); ValueError naming the flag otherwise."""
  m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
  if not m:
    raise ValueError(f"--shard {spec!r}: give I/N, this process's shard of N (e.g. 0/2)")
  i, n = int(m.group(1)), int(m.group(2))
  if n < 1 or i >= n:
    raise ValueError(f"--shard {spec!r}: need N >= 1 and 0 <= I < N (shards 0/{n} .. {n - 1}/{n})")
  return Shard(i, n)


def resolve_shard(spec: str | None) -> Shard:
  """The shard of this process: ``--shard I/N`` when given, else the jax.distributed
  process index of the process count (Shard(0, 1) in a single process). Call it after
  ``jax.distributed.initialize`` (it starts the backends)."""
  if spec is not None:
    return parse_shard(spec)
  return Shard(jax.process_index(), jax.process_count())


# ---------------------------------------------------------------------------------------
# Done / failure logs
# ---------------------------------------------------------------------------------------
def _read_log(path: str, repair: bool = False) -> tuple[list[dict], bool]:
  """The JSON records of a log and whether its last line was torn (no newline: a kill
  during the append). repair: cut the torn line off the file (local logs of the calling
  shard only: another shard may be appending to its own at this moment)."""
  if not paths.exists(path):
    return [], False
  data = paths.read_bytes(path)
  torn = bool(data) and not data.endswith(b"\n")
  if torn:
    keep = data.rfind(b"\n") + 1
    if repair and not paths.is_remote(path):
      os.truncate(path, keep)
    data = data[:keep]
  recs = []
  for line in data.decode("utf-8", "replace").splitlines():
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(rec, dict):
      recs.append(rec)
  return recs, torn


def log_files(out: str, kind: str = "done") -> list[tuple[str, Shard]]:
  """(file name, shard) of every ``kind`` log ('done' | 'failures') in OUT, any n."""
  found = []
  for name in paths.listdir(out):
    m = _LOG_RE.match(name)
    if m and m.group(1) == kind:
      shard = Shard() if m.group(2) is None else Shard(int(m.group(2)), int(m.group(3)))
      found.append((name, shard))
  return found


def staging_dirs(out: str) -> list[tuple[str, Shard]]:
  """(folder name, shard) of the staging folders in OUT (a shard running or killed)."""
  found = []
  for name in paths.listdir(out):
    m = _STAGING_RE.match(name)
    if m and int(m.group(1)) < int(m.group(2)):
      found.append((name, Shard(int(m.group(1)), int(m.group(2)))))
  return found


def read_done(out: str, own: Shard | None = None) -> dict[str, dict]:
  """Ids done in OUT by any shard (every done file, any n) -> their record (the first).
  ``own``: the calling shard, whose torn last line (a kill during its append) is cut off
  its file so later appends start on a fresh line; other shards' files are only read."""
  done: dict[str, dict] = {}
  for name, shard in log_files(out, "done"):
    recs, _ = _read_log(paths.join(out, name), repair=shard == own)
    for rec in recs:
      if isinstance(rec.get("id"), str):
        done.setdefault(rec["id"], rec)
  return done


class AppendLog:
  """A JSONL file one process appends to. Local: each line appended, flushed and fsynced
  (a kill leaves at most a torn last line, cut off on resume). Remote (no append on an
  object store): the whole object rewritten with each line (the shard's own file, so no
  other writer; an upload is all or nothing)."""

  def __init__(self, path: str):
    self.path = path
    self.remote = paths.is_remote(path)
    if self.remote:
      recs, _ = _read_log(path)
      self.text = "".join(json.dumps(r) + "\n" for r in recs)

  def append(self, record: dict) -> None:
    line = json.dumps(record) + "\n"
    if self.remote:
      self.text += line
      paths.as_path(self.path).write_text(self.text)
      return
    with open(self.path, "a", encoding="utf-8") as fh:
      fh.write(line)
      fh.flush()
      os.fsync(fh.fileno())


# ---------------------------------------------------------------------------------------
# The merge view
# ---------------------------------------------------------------------------------------
def merge_status(out: str | os.PathLike, rows: list[Row] | None = None) -> dict:
  """The union of every shard's logs in OUT (nothing is modified).

  Returns {"out", "shards": {file: records}, "done": number of ids done, "duplicates":
  {id: [files]} (an id done more than once, in one file or several), "torn": [files with
  a torn last line], "failed": [{"id", "line", "error", ...}] the latest failure of each row
  not done since, "missing_files": {id: [names]} (listed but absent), "records": the done
  records, one per id (in manifest order when ``rows`` is given, else by id)}; with
  ``rows`` also "rows", "pending" (valid ids neither done nor failed), "not_in_manifest"
  (ids done that the manifest lacks); "complete": no duplicates, no missing files, no
  failure and (with rows) nothing pending.
  """
  out = os.fspath(out)
  if not paths.isdir(out):
    raise FileNotFoundError(f"output folder {out!r} not found; pass the --out of the run")
  names = set(paths.listdir(out))
  first: dict[str, dict] = {}
  where: dict[str, list[str]] = {}
  per_file, torn = {}, []
  for name, _ in log_files(out, "done"):
    recs, t = _read_log(paths.join(out, name))
    per_file[name] = len(recs)
    if t:
      torn.append(name)
    for rec in recs:
      rid = rec.get("id")
      if isinstance(rid, str):
        first.setdefault(rid, rec)
        where.setdefault(rid, []).append(name)
  failures: dict[str, dict] = {}
  for name, _ in log_files(out, "failures"):
    for rec in _read_log(paths.join(out, name))[0]:
      key = rec.get("id") if isinstance(rec.get("id"), str) else f"#{rec.get('line')}"
      if rec.get("id") not in first:
        failures[key] = {**rec, "file": name}  # later lines are later attempts
  missing = {}
  for rid, rec in first.items():
    gone = [f for f in rec.get("outputs", []) if f not in names]
    if gone:
      missing[rid] = gone
  if rows is None:
    order = sorted(first)
  else:
    ids = [r.id for r in rows if r.id is not None]
    order = [i for i in ids if i in first] + sorted(set(first) - set(ids))
  status = {
    "out": out,
    "shards": per_file,
    "done": len(first),
    "duplicates": {k: v for k, v in where.items() if len(v) > 1},
    "torn": torn,
    "failed": sorted(failures.values(), key=lambda r: (str(r.get("id")), r.get("line") or 0)),
    "missing_files": missing,
    "records": [first[i] for i in order],
  }
  complete = not (status["duplicates"] or missing or failures)
  if rows is not None:
    valid = [r.id for r in rows if r.id is not None and r.error is None]
    status["rows"] = len(rows)
    status["pending"] = [i for i in valid if i not in first and i not in failures]
    status["not_in_manifest"] = sorted(set(first) - {r.id for r in rows})
    bad_rows = [r for r in rows if r.error is not None]
    complete = complete and not status["pending"] and not bad_rows
  status["complete"] = bool(complete)
  return status


def write_merged(out: str | os.PathLike, status: dict) -> str:
  """Writes OUT/outputs.jsonl (atomically): one done record per id, in the status's
  order (``merge_status``); returns its path."""
  path = paths.join(os.fspath(out), MERGED)
  text = "".join(json.dumps(r) + "\n" for r in status["records"])
  paths.write_bytes(path, text.encode("utf-8"))
  return path
