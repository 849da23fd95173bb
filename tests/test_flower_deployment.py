"""A real Flower deployment on localhost, as separate processes.

One SuperLink, one SuperNode per device of `configs/deploy_tiny.py` (4), and `flwr run` on the
app in `pprsf_jax/deploy/flower_app`: Flower's deployment runtime (HTTP between processes, one
`flwr-serverapp` and one `flwr-clientapp` process per task), not its simulation engine. Every
listening socket is bound to 127.0.0.1 explicitly and the test checks it; every wait is
bounded. The run must end with the simulator's Theta for the same seed and cohorts.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed "
                                   "(pip install 'pprsf-jax[flower]')")
psutil = pytest.importorskip("psutil")

import pprsf_jax.deploy  # noqa: E402
from conftest import DEPLOY_CONFIG_FILE  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
APP = pathlib.Path(pprsf_jax.deploy.__file__).parent / "flower_app"
LOOPBACK = "127.0.0.1"
RUN_TIMEOUT_S = 480


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind((LOOPBACK, 0))
    return probe.getsockname()[1]


def _listening(pid: int) -> set[tuple[str, int]]:
  """(address, port) of every listening TCP socket of the process and its descendants."""
  try:
    root = psutil.Process(pid)
    family = [root] + root.children(recursive=True)
  except psutil.NoSuchProcess:
    return set()
  found = set()
  for process in family:
    try:
      found.update((c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                   if c.status == psutil.CONN_LISTEN)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
  return found


def _wait_listening(process: subprocess.Popen, port: int, log: pathlib.Path,
                    timeout_s: float = 60) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n"
                         f"{log.read_text()[-3000:]}")
    if any(p == port for _, p in _listening(process.pid)):
      return
    time.sleep(0.25)
  raise TimeoutError(f"{process.args[0]} did not listen on port {port} within {timeout_s} s")


@pytest.fixture
def localhost_federation(tmp_path, deploy_config):
  """A SuperLink and one SuperNode per user, all on 127.0.0.1; torn down whatever happens."""
  env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr_home"),
             PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
  link_port = _free_port()
  (tmp_path / "flwr_home").mkdir()
  (tmp_path / "flwr_home" / "config.toml").write_text(
      f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
      f'address = "{LOOPBACK}:{link_port}"\ninsecure = true\n')
  processes, logs = [], []

  def start(name: str, command: list[str], port: int) -> subprocess.Popen:
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as sink:
      process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=sink,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    processes.append(process)
    logs.append(log)
    _wait_listening(process, port, log)
    return process

  try:
    start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", LOOPBACK,
                        "--port", str(link_port), "--disable-runtime-dependency-installation"],
          link_port)
    ports = {"superlink": link_port}
    for user in range(deploy_config.data.synthetic.num_users):
      port = _free_port()
      start(f"supernode{user}", [str(BIN / "flower-supernode"), "--insecure",
                                 "--superlink", f"{LOOPBACK}:{link_port}", "--host", LOOPBACK,
                                 "--port", str(port), "--node-config", f"client-id={user}"], port)
      ports[f"supernode{user}"] = port
    yield {"env": env, "processes": processes, "ports": ports, "logs": logs}
  finally:
    _stop(processes)


def _stop(processes: list[subprocess.Popen]) -> None:
  """Terminates the processes and everything they started (SIGKILL after 15 s)."""
  family = []
  for process in processes:
    try:
      family += psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
      pass
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGTERM)
  for process in processes:
    try:
      process.wait(timeout=15)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=10)
  _, alive = psutil.wait_procs(family, timeout=15)
  for leftover in alive:
    leftover.kill()


def test_localhost_deployment_reaches_the_simulators_theta(tmp_path, localhost_federation,
                                                           deploy_simulated):
  federation = localhost_federation
  bound = set()
  for process in federation["processes"]:
    bound |= _listening(process.pid)
  # Flower's defaults bind every interface; here every listening socket is on loopback only.
  assert {port for _, port in bound} >= set(federation["ports"].values())
  assert {address for address, _ in bound} == {LOOPBACK}, bound

  out_dir = tmp_path / "out"
  run_config = (f'config="{DEPLOY_CONFIG_FILE}" out-dir="{out_dir}" '
                f'wait-for-devices-s=60 reply-timeout-s=300')
  started = time.monotonic()
  run = subprocess.run([str(BIN / "flwr"), "run", str(APP), "--stream", "--run-config",
                        run_config], env=federation["env"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=RUN_TIMEOUT_S, check=False)
  elapsed = time.monotonic() - started
  diagnostics = run.stdout[-4000:] + run.stderr[-2000:] + "".join(
      f"\n--- {log.name}\n{log.read_text()[-1500:]}" for log in federation["logs"])
  assert run.returncode == 0, diagnostics
  assert (out_dir / "results.json").is_file(), diagnostics
  print(f"flwr run: {elapsed:.1f} s\n{run.stdout[-2500:]}")

  results = json.loads((out_dir / "results.json").read_text())
  _, reference = deploy_simulated
  assert [r["accepted"] for r in results["rounds"]] == [3, 3, 3]
  theta = np.load(out_dir / "theta.npz")
  for path, want in jax.tree_util.tree_leaves_with_path(reference.params):
    name = jax.tree_util.keystr(path)
    np.testing.assert_allclose(theta[name], np.asarray(want), atol=1e-6, err_msg=name)
  assert not results["unanswered_rank_requests"]
  # Still loopback-only after the run (the server and client app processes came and went).
  bound = set()
  for process in federation["processes"]:
    bound |= _listening(process.pid)
  assert {address for address, _ in bound} == {LOOPBACK}, bound
