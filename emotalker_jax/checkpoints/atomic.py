"""Atomic file writes: a temp file in the target's folder, fsync, ``os.replace``.

Shared by the checkpoint records (calibration.json) and the generated artifacts
(``inference.outputs``: mp4, png, npz, the dataset manifest), so a killed run never leaves
a partial file under its final name; its ``.tmp-*`` leftovers are removed on resume.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

TMP_PREFIX = ".tmp-"  # temp files live beside their target; a killed run's are removed


def _fsync_path(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
  """``with atomic_output(p) as tmp: write(tmp)``: ``tmp`` is a fresh file in p's folder
  (name ``.tmp-*`` with p's extension); on success it is fsynced and renamed onto ``p``
  (then the folder is fsynced), on error removed. Readers never see a partial ``p``."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  ext = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=ext)
  os.close(fd)
  try:
    yield tmp
    _fsync_path(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_path(folder)


def remove_temp_files(folder: str | os.PathLike) -> list[str]:
  """Deletes ``.tmp-*`` files a killed run left in ``folder``; returns their names."""
  folder = os.fspath(folder)
  gone = []
  if os.path.isdir(folder):
    for name in sorted(os.listdir(folder)):
      p = os.path.join(folder, name)
      if name.startswith(TMP_PREFIX) and os.path.isfile(p):
        os.remove(p)
        gone.append(name)
  return gone
