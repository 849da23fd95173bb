"""Checkpoints: atomic, verified, bad ones skipped; a SIGKILLed run resumes bit for bit."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax import checkpoint
from pprsf_jax.aggregation import ScaffoldServer, ServerState

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "synthetic_tiny.py"


def _state(value: float, clients: int = 4):
  return {
      "server": ServerState(params={"w": jnp.full((3, 2), value, jnp.float32)},
                            aggregator=(), broadcast=ScaffoldServer(control={"w": jnp.zeros((3, 2))})),
      "clients": np.full((clients, 5), value, np.float32),
      "loss": np.asarray([value, 2 * value], np.float64),
  }


def _assert_equal(left, right):
  import jax  # pylint: disable=import-outside-toplevel
  assert jax.tree.structure(left) == jax.tree.structure(right)
  for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(a).dtype == np.asarray(b).dtype


# ----------------------------------------------------------------------------- the file format
def test_round_trip_is_bit_exact_and_old_checkpoints_are_pruned(tmp_path):
  for round_index in range(4):
    checkpoint.save(tmp_path, round_index, _state(0.1 * round_index + 1 / 3), keep=2)
  assert checkpoint.checkpoint_rounds(tmp_path) == [3, 2]
  assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
  round_index, restored = checkpoint.restore_latest(tmp_path, _state(0.0))
  assert round_index == 3
  _assert_equal(restored, _state(0.3 + 1 / 3))


def test_no_checkpoint_means_a_fresh_start(tmp_path):
  assert checkpoint.restore_latest(tmp_path / "absent", _state(0.0)) is None
  # A leftover temporary file from a killed save is not a checkpoint.
  (tmp_path / ".round-000007.ckpt.123.tmp").write_bytes(b"partial")
  assert checkpoint.restore_latest(tmp_path, _state(0.0)) is None


@pytest.mark.parametrize("damage,message", [
    (lambda data: data[:-10], "truncated"),
    (lambda data: data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:], "corrupted"),
    (lambda data: b"garbage\n" + data, "unreadable header"),
    (lambda data: b"", "unreadable header"),
])
def test_a_damaged_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage, message,
                                                                    caplog):
  checkpoint.save(tmp_path, 4, _state(1.0))
  newest = checkpoint.save(tmp_path, 5, _state(2.0))
  newest.write_bytes(damage(newest.read_bytes()))
  with caplog.at_level("WARNING", logger="pprsf_jax.checkpoint"):
    round_index, restored = checkpoint.restore_latest(tmp_path, _state(0.0))
  logged = [record.getMessage() for record in caplog.records]
  assert round_index == 4
  _assert_equal(restored, _state(1.0))
  assert len(logged) == 1 and message in logged[0] and "round-000005.ckpt" in logged[0]


def test_no_usable_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
  path = checkpoint.save(tmp_path, 0, _state(1.0))
  path.write_bytes(path.read_bytes()[:-1])
  with pytest.raises(checkpoint.CheckpointError, match="(?s)no usable checkpoint.*truncated"):
    checkpoint.restore_latest(tmp_path, _state(0.0))


def test_a_checkpoint_of_another_shape_is_refused_naming_the_leaf(tmp_path):
  checkpoint.save(tmp_path, 0, _state(1.0, clients=4))
  with pytest.raises(checkpoint.CheckpointError, match=r"\['clients'\] is float32\[4, 5\]"):
    checkpoint.restore_latest(tmp_path, _state(0.0, clients=6))


# ------------------------------------------------------------------------ writes that fail
def _temporaries(directory: Path) -> list[str]:
  return [name for name in os.listdir(directory) if name.endswith(".tmp")]


def _full_disk_after(room: int):
  """An `open` for checkpoint.py whose files take `room` bytes, then fail as a full disk does."""
  real_open = open

  class FullDisk:

    def __init__(self, path, mode):
      self._file, self._room = real_open(path, mode), room

    def write(self, data):
      taken = min(len(data), self._room)
      self._file.write(data[:taken])
      self._room -= taken
      if taken < len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      return taken

    def __getattr__(self, name):
      return getattr(self._file, name)

    def __enter__(self):
      return self

    def __exit__(self, *failure):
      self._file.close()

  return FullDisk


@pytest.mark.parametrize("room", [0, 100])  # nothing written, or the header and some payload
def test_a_full_disk_removes_the_temporary_file_and_keeps_the_earlier_checkpoints(
    tmp_path, monkeypatch, room):
  checkpoint.save(tmp_path, 1, _state(1.0))
  checkpoint.save(tmp_path, 2, _state(2.0))
  monkeypatch.setattr(checkpoint, "open", _full_disk_after(room), raising=False)
  for _ in range(3):  # a retry leaves nothing behind either
    with pytest.raises(OSError) as caught:
      checkpoint.save(tmp_path, 3, _state(3.0))
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "round-000003.ckpt")  # the write names none
  assert _temporaries(tmp_path) == [] and checkpoint.checkpoint_rounds(tmp_path) == [2, 1]
  monkeypatch.undo()
  round_index, restored = checkpoint.restore_latest(tmp_path, _state(0.0))
  assert round_index == 2
  _assert_equal(restored, _state(2.0))
  checkpoint.save(tmp_path, 3, _state(3.0))  # space again: the run goes on
  assert checkpoint.restore_latest(tmp_path, _state(0.0))[0] == 3


def test_a_failed_rename_removes_the_temporary_file(tmp_path, monkeypatch):
  checkpoint.save(tmp_path, 1, _state(1.0))

  def replace(source, target):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), source, None, target)

  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(OSError, match="No space left on device"):
    checkpoint.save(tmp_path, 2, _state(2.0))
  monkeypatch.undo()
  assert _temporaries(tmp_path) == [] and checkpoint.checkpoint_rounds(tmp_path) == [1]


def test_temporary_files_of_a_killed_save_are_removed_when_the_next_run_starts(tmp_path, caplog):
  checkpoint.save(tmp_path, 4, _state(1.0))
  stale = [".round-000005.ckpt.4242.tmp", ".round-000006.ckpt.4243.tmp"]
  for name in stale:
    (tmp_path / name).write_bytes(b"half a checkpoint")
  others = ["notes.tmp", "round-000005.ckpt.tmp", ".round-x.ckpt.1.tmp"]  # not save's: kept
  for name in others:
    (tmp_path / name).write_bytes(b"")
  with caplog.at_level("INFO", logger="pprsf_jax.checkpoint"):
    round_index, restored = checkpoint.restore_latest(tmp_path, _state(0.0))
  assert round_index == 4
  _assert_equal(restored, _state(1.0))
  assert sorted(os.listdir(tmp_path)) == sorted(["round-000004.ckpt", *others])
  assert [record.getMessage() for record in caplog.records] == [
      f"removed 2 temporary checkpoint file(s) an interrupted save left in {tmp_path}: "
      f"{', '.join(stale)}"]


# ----------------------------------------------------------------------------- kill and resume
OVERRIDES = [
    "federated.rounds=60", "federated.local_algorithm=scaffold", "federated.compression=top_k",
    "federated.server_optimizer=adam", "federated.server_learning_rate=0.01", "checkpoint_every=1",
]


def _command(run_dir: Path) -> list[str]:
  return [sys.executable, "-m", "pprsf_jax.cli", "run", str(CONFIG_PATH), *OVERRIDES,
          "--run-dir", str(run_dir), "--no-progress"]


def _results(run_dir: Path) -> dict:
  results = json.loads((run_dir / "results.json").read_text())
  results.pop("timings_s")
  return results


def test_a_run_killed_mid_training_resumes_to_identical_results(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  subprocess.run(_command(whole), check=True, env=env, capture_output=True, timeout=600)

  process = subprocess.Popen(_command(killed), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and process.poll() is None:  # bounded wait
    if any(r >= 3 for r in checkpoint.checkpoint_rounds(killed / "checkpoints")):
      break
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  rounds = checkpoint.checkpoint_rounds(killed / "checkpoints")
  assert rounds and rounds[0] < 59 and not (killed / "results.json").exists()

  # Damage the newest checkpoint too: the resume must fall back to the one before it.
  newest = killed / "checkpoints" / f"round-{rounds[0]:06d}.ckpt"
  newest.write_bytes(newest.read_bytes()[:-7])
  resumed = subprocess.run(_command(killed), env=env, capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming the run in" in resumed.stderr
  assert "checkpoint skipped" in resumed.stderr and "truncated" in resumed.stderr
  assert f"resumed after round {rounds[1] + 1} of 60" in resumed.stderr
  assert _results(killed) == _results(whole)


def test_a_run_folder_refuses_a_different_config(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  (run_dir / "config.json").write_text(json.dumps({"seed": 123}))
  result = subprocess.run(_command(run_dir), env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 2
  assert "was started with a different config" in result.stderr and "seed: 123 -> 0" in result.stderr
