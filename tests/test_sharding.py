"""The client axis sharded over devices and over processes gives the single-device Θ.

Several devices are faked on the CPU (`--xla_force_host_platform_device_count=8`), and two
processes join a `jax.distributed` job on 127.0.0.1 with two CPU devices each; both run
tests/federated_theta.py in subprocesses (device counts are fixed when JAX starts), and this
process trains the same federation on its single device.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

psutil = pytest.importorskip("psutil")

SCRIPT = pathlib.Path(__file__).with_name("federated_theta.py")
LOOPBACK = "127.0.0.1"
TIMEOUT_S = 300


def _load_script():
  spec = importlib.util.spec_from_file_location("federated_theta", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def single_device():
  assert jax.device_count() == 1
  return _load_script().train_thetas()


def _environment(**extra: str) -> dict[str, str]:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return env | extra


def _assert_same_theta(single: dict, saved: np.lib.npyio.NpzFile) -> None:
  for aggregator, (leaves, losses, evaluations) in single.items():
    if f"{aggregator}/losses" not in saved:
      continue
    for path, leaf in leaves.items():
      np.testing.assert_allclose(saved[f"{aggregator}/{path}"], leaf, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{aggregator} {path}")
    np.testing.assert_allclose(saved[f"{aggregator}/losses"], losses, rtol=1e-5)
    assert int(saved[f"{aggregator}/evaluations"]) == evaluations == 2


def test_eight_devices_give_the_single_device_theta(single_device, tmp_path):
  out = tmp_path / "theta.npz"
  subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, timeout=TIMEOUT_S,
                 env=_environment(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  saved = np.load(out)
  assert int(saved["devices"]) == 8
  assert all(f"{aggregator}/losses" in saved for aggregator in single_device)
  _assert_same_theta(single_device, saved)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind((LOOPBACK, 0))
    return probe.getsockname()[1]


def _listening(pids: list[int]) -> set[tuple[str, int]]:
  found = set()
  for pid in pids:
    try:
      connections = psutil.Process(pid).net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
    found.update((c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN)
  return found


def test_two_processes_give_the_single_device_theta(single_device, tmp_path):
  out = tmp_path / "theta.npz"
  coordinator = f"{LOOPBACK}:{_free_port()}"
  # Gloo's own connections use the loopback interface only.
  env = _environment(GLOO_SOCKET_IFNAME="lo")
  processes = [subprocess.Popen(
      [sys.executable, str(SCRIPT), str(out), "--coordinator", coordinator, "--num-processes", "2",
       "--process-id", str(index), "--local-devices", "2", "--aggregators", "fedavg"], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for index in range(2)]
  listening = set()
  try:
    deadline = time.monotonic() + TIMEOUT_S
    while any(process.poll() is None for process in processes):
      assert time.monotonic() < deadline, "the two-process job did not finish in time"
      listening |= _listening([process.pid for process in processes])
      time.sleep(0.2)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
    outputs = [process.communicate()[0] for process in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  assert listening, "expected the coordinator to listen while the job ran"
  assert {address for address, _ in listening} <= {LOOPBACK, f"::ffff:{LOOPBACK}"}, listening
  saved = np.load(out)
  assert int(saved["devices"]) == 4 and int(saved["processes"]) == 2
  assert "fedavg/losses" in saved
  _assert_same_theta(single_device, saved)
