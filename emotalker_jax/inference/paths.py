"""Paths on the inference side: local folders as before, remote ones (``gs://``, ``s3://``,
any ``scheme://``) through ``etils.epath`` and never turned into local paths.

A local path takes exactly the os / ``checkpoints.atomic_output`` route it always took
(temp file beside the target, fsync, rename). A remote one is read into memory
(``read_bytes``; ffmpeg's inputs go through a local scratch copy, ``local_copy``) and
written as one whole object (``write_target``: a local scratch file uploaded on success);
an object store shows an object only once its upload completes, so readers never see a
partial file there either, and no ``.tmp-*`` file is ever left in a remote folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from etils import epath

from emotalker_jax.checkpoints import TMP_PREFIX, atomic_output


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URI with a scheme (``gs://bucket/x``), False for a local path."""
  return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """``etils.epath.Path`` of a local or remote path (``gs://`` stays ``gs://``)."""
  return epath.Path(os.fspath(path))


def join(base: str | os.PathLike, rel: str) -> str:
  """``rel`` against the folder ``base``: ``rel`` as is when absolute or remote, else joined
  (os.path.join for a local base, epath for a remote one)."""
  base = os.fspath(base)
  if is_remote(rel) or os.path.isabs(rel):
    return rel
  if is_remote(base):
    return os.fspath(as_path(base) / rel)
  return os.path.join(base, rel)


def folder_of(path: str | os.PathLike) -> str:
  """The folder holding ``path``: absolute for a local path, the URI's parent otherwise."""
  path = os.fspath(path)
  if is_remote(path):
    return os.fspath(as_path(path).parent)
  return os.path.dirname(os.path.abspath(path))


def exists(path: str | os.PathLike) -> bool:
  return as_path(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str | os.PathLike) -> bool:
  return as_path(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path: str | os.PathLike) -> bool:
  return exists(path) and not isdir(path) if is_remote(path) else os.path.isfile(path)


def makedirs(path: str | os.PathLike) -> None:
  if is_remote(path):
    as_path(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str | os.PathLike) -> list[str]:
  """Names in a folder (sorted); [] when it does not exist."""
  if not isdir(path):
    return []
  if is_remote(path):
    return sorted(p.name for p in as_path(path).iterdir())
  return sorted(os.listdir(path))


def read_bytes(path: str | os.PathLike) -> bytes:
  if is_remote(path):
    return as_path(path).read_bytes()
  with open(path, "rb") as fh:
    return fh.read()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """The whole file at once: an object upload for a remote path, ``atomic_output`` for a
  local one."""
  with write_target(path) as tmp:
    with open(tmp, "wb") as fh:
      fh.write(data)


@contextlib.contextmanager
def write_target(path: str | os.PathLike):
  """``with write_target(p) as tmp: write(tmp)``: ``tmp`` is a local file with p's
  extension. Local p: ``checkpoints.atomic_output`` (renamed onto p, fsynced). Remote p: a
  scratch file in the system temp folder, uploaded whole to p on success (through epath)
  and deleted either way."""
  path = os.fspath(path)
  if not is_remote(path):
    with atomic_output(path) as tmp:
      yield tmp
    return
  fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb") as src, as_path(path).open("wb") as dst:
      shutil.copyfileobj(src, dst, 1 << 22)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike):
  """``with local_copy(p) as local:`` a local path with p's content: p itself when local,
  else a scratch copy (read through epath) removed afterwards. For readers that need a
  file name (ffmpeg)."""
  path = os.fspath(path)
  if not is_remote(path):
    yield path
    return
  fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1])
  try:
    with os.fdopen(fd, "wb") as dst, as_path(path).open("rb") as src:
      shutil.copyfileobj(src, dst, 1 << 22)
    yield tmp
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def fsync_dir(folder: str) -> None:
  """fsync of a local folder (makes its renames durable); a no-op for remote ones."""
  if is_remote(folder):
    return
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
