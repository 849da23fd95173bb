"""Atomic, verified checkpoints of a pytree (the federated training state).

A checkpoint is one file `round-NNNNNN.ckpt`: a JSON header line (format, round, byte count,
sha256 of the payload) then the payload, the pytree's state dict in msgpack
(`flax.serialization`). It is written to a temporary file in the same folder, fsynced, then
renamed over its final name (`os.replace` is atomic on POSIX), so a process killed at any moment
leaves either the previous checkpoints or the new one complete, never a half-written file under
a checkpoint name. A write that fails (a full disk) removes its temporary file; those a killed
process left behind are removed when the next run restores from the folder. On restore the byte
count and digest are checked, and every leaf's shape and dtype must match the template; a
checkpoint failing any check is reported and the previous one is tried.

Chosen over orbax-checkpoint: the state is a small single-host pytree, and this format needs no
extra dependency, detects truncation and corruption itself (a digest over the bytes), and
restores bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np

logger = logging.getLogger(__name__)

FORMAT = "pprsf-checkpoint-v1"
_NAME = re.compile(r"^round-(\d{6,})\.ckpt$")
_TEMPORARY = re.compile(r"^\.round-\d{6,}\.ckpt\.\d+\.tmp$")  # `save`'s, named by its pid


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was expected (each failure named)."""


def _path(directory: Path, round_index: int) -> Path:
  return directory / f"round-{round_index:06d}.ckpt"


def checkpoint_rounds(directory: str | os.PathLike) -> list[int]:
  """Rounds with a checkpoint file in `directory`, newest first (unverified)."""
  directory = Path(directory)
  if not directory.is_dir():
    return []
  rounds = [int(match.group(1)) for match in map(_NAME.match, os.listdir(directory)) if match]
  return sorted(rounds, reverse=True)


def save(directory: str | os.PathLike, round_index: int, tree: Any, *, keep: int = 2) -> Path:
  """Writes `tree` as the checkpoint of `round_index` atomically; keeps the newest `keep`."""
  if keep < 1:
    raise ValueError(f"checkpoint.save: keep={keep} must be >= 1")
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  state = jax.tree.map(np.asarray, flax.serialization.to_state_dict(tree))
  payload = flax.serialization.msgpack_serialize(state)
  header = json.dumps({"format": FORMAT, "round": round_index, "bytes": len(payload),
                       "sha256": hashlib.sha256(payload).hexdigest()}).encode() + b"\n"
  final = _path(directory, round_index)
  temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
  try:
    with open(temporary, "wb") as handle:
      handle.write(header)
      handle.write(payload)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(temporary, final)
  except BaseException as error:  # an interrupt too: no partial file stays behind
    with contextlib.suppress(OSError):  # (cannot remove it either: the first error matters)
      temporary.unlink(missing_ok=True)
    if isinstance(error, OSError):
      # A failed write() names no file, and the temporary one is gone: name the checkpoint.
      raise OSError(error.errno, error.strerror or str(error), os.fspath(final)) from error
    raise
  _fsync_directory(directory)
  for old in checkpoint_rounds(directory)[keep:]:
    _path(directory, old).unlink(missing_ok=True)
  return final


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
  """Removes the temporary files of saves that never finished (a killed process); returns them.

  Called when a run starts on `directory` (`restore_latest`). A run folder has one writer, so
  any temporary file there is a dead process's; the run-folder lock of issue 24 will make sure
  of that (today two runs started on one folder by hand could still remove each other's).
  """
  directory = Path(directory)
  if not directory.is_dir():
    return []
  stale = [directory / name for name in sorted(os.listdir(directory)) if _TEMPORARY.match(name)]
  for path in stale:
    path.unlink(missing_ok=True)
  if stale:
    logger.info("removed %d temporary checkpoint file(s) an interrupted save left in %s: %s",
                len(stale), directory, ", ".join(path.name for path in stale))
  return stale


def _fsync_directory(directory: Path) -> None:
  # The rename itself must reach the disk, not only the file's bytes.
  descriptor = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def _read(path: Path, template: Any) -> Any:
  """The verified tree in `path`, or CheckpointError saying what is wrong with it."""
  with open(path, "rb") as handle:
    header_line = handle.readline()
    payload = handle.read()
  try:
    header = json.loads(header_line)
  except ValueError as error:
    raise CheckpointError(f"{path}: unreadable header ({error})") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise CheckpointError(f"{path}: not a {FORMAT} file")
  if len(payload) != header.get("bytes"):
    raise CheckpointError(
        f"{path}: truncated: {len(payload)} payload bytes, header says {header.get('bytes')}")
  if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
    raise CheckpointError(f"{path}: corrupted: sha256 of the payload does not match its header")
  try:
    restored = flax.serialization.from_state_dict(
        template, flax.serialization.msgpack_restore(payload))
  except (ValueError, KeyError, TypeError) as error:
    raise CheckpointError(f"{path}: does not fit this run's state ({error})") from None
  for (where, want), got in zip(jax.tree_util.tree_leaves_with_path(template),
                                jax.tree.leaves(restored)):
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape or want.dtype != got.dtype:
      raise CheckpointError(
          f"{path}: {jax.tree_util.keystr(where)} is {got.dtype}{list(got.shape)}, this run "
          f"expects {want.dtype}{list(want.shape)} (written by a different config?)")
  # Copies: msgpack hands out read-only views, and host state is updated in place.
  return jax.tree.map(np.array, restored)


def restore_latest(directory: str | os.PathLike,
                   template: Any | Callable[[int], Any]) -> tuple[int, Any] | None:
  """(round, tree) of the newest checkpoint that verifies; None if there are none at all.

  `template` is the tree a checkpoint must fit, or a function of the checkpoint's round giving
  it (a state that grows with the rounds done). A bad checkpoint is logged (a warning) and
  skipped in favour of the previous one; if checkpoints exist but none verifies, raises
  CheckpointError listing each failure (rather than silently starting over). Temporary files
  of saves a killed process never finished are removed first (`remove_temporaries`).
  """
  template_for = template if callable(template) else lambda round_index: template
  remove_temporaries(directory)
  rounds = checkpoint_rounds(directory)
  failures = []
  for round_index in rounds:
    path = _path(Path(directory), round_index)
    try:
      return round_index, _read(path, template_for(round_index))
    except (CheckpointError, OSError) as error:
      failures.append(str(error))
      logger.warning("checkpoint skipped: %s", error)
  if failures:
    raise CheckpointError("no usable checkpoint:\n  " + "\n  ".join(failures))
  return None
