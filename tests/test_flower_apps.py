"""The Flower apps, driven in one process through a loopback `Grid`.

Every message still goes through Flower's records and the apps' own code; only the network is
missing. Checks: Theta equals the simulator's, what devices send is exactly the update, its
counts and the Top-T request, and devices sending NaN, misshapen or no updates are refused by
name while the run finishes. `test_flower_deployment.py` runs the same apps as processes.
"""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pytest

flwr = pytest.importorskip("flwr", reason="the flower extra is not installed "
                                          "(pip install 'pprsf-jax[flower]')")
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
# Flower stamps each message with the identity of the task that creates it, which its runtime
# sets per process; an in-process run sets it by hand (Flower internals, pinned by the extra).
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from pprsf_jax import pipeline  # noqa: E402
from pprsf_jax.config import apply_overrides  # noqa: E402
from pprsf_jax.deploy import coordinator, flower_client, flower_server, wire  # noqa: E402
from conftest import DEPLOY_CONFIG_FILE, DEPLOY_MF_OVERRIDES  # noqa: E402
from test_deploy import max_difference  # noqa: E402


class LoopbackGrid(Grid):
  """Delivers each message to the client app of its node in this process (no network).

  `tamper(node, round_message, reply) -> reply` may replace a device's replies, as a faulty or
  malicious device would (None: the device never answers).
  """

  def __init__(self, node_configs, run_config, tamper=None):
    self.contexts = {100 + index: Context(run_id=1, node_id=100 + index, node_config=node_config,
                                          state=RecordDict(), run_config=run_config)
                     for index, node_config in enumerate(node_configs)}
    self.tamper = tamper
    self.replies = []  # (message type, reply) of every reply delivered, for the tests
    self._pending = {}  # message id -> its reply, until pulled
    self._run = Run.create_empty(run_id=1)
    self._ids = itertools.count()

  def set_run(self, run):
    self._run = run

  @property
  def run(self):
    return self._run

  def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
    return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                   group_id=group_id, ttl=ttl)

  def get_node_ids(self):
    return list(self.contexts)

  def push_messages(self, messages):
    """Runs each message's client app at once; its reply waits to be pulled."""
    ids = []
    for message in messages:
      node = message.metadata.dst_node_id
      reply = flower_client.app(message, self.contexts[node])
      if self.tamper is not None:
        reply = self.tamper(node, message, reply)
      ids.append(str(next(self._ids)))
      if reply is not None:
        self.replies.append((message.metadata.message_type, reply))
        self._pending[ids[-1]] = reply
    return ids

  def pull_messages(self, message_ids):
    return [self._pending.pop(i) for i in message_ids if i in self._pending]

  def send_and_receive(self, messages, *, timeout=None):
    del timeout  # every reply is ready as soon as it is pushed
    return self.pull_messages(self.push_messages(messages))


def run_flower_apps(tmp_path, config, tamper=None, overrides=""):
  """Runs the server app against one client app per user; (Theta by leaf path, results)."""
  TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
  run_config = {"config": DEPLOY_CONFIG_FILE, "overrides": overrides, "out-dir": str(tmp_path),
                "wait-for-devices-s": 5, "reply-timeout-s": 5}
  num_users = config.data.synthetic.num_users
  grid = LoopbackGrid([{"client-id": user} for user in range(num_users)], run_config, tamper)
  flower_server.app(grid=grid, context=Context(run_id=1, node_id=0, node_config={},
                                               state=RecordDict(), run_config=run_config))
  theta = dict(np.load(tmp_path / "theta.npz"))
  return theta, json.loads((tmp_path / "results.json").read_text()), grid


def _as_flat(params) -> dict:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def test_flower_apps_reach_the_simulators_theta_and_send_nothing_private(tmp_path, deploy_config,
                                                                         deploy_simulated):
  theta, results, grid = run_flower_apps(tmp_path, deploy_config)
  _, reference = deploy_simulated
  want = _as_flat(reference.params)
  assert theta.keys() == want.keys()
  for name in want:
    np.testing.assert_allclose(theta[name], want[name], atol=1e-6, err_msg=name)
  assert [r["accepted"] for r in results["rounds"]] == [3, 3, 3]
  assert all("loss" not in r for r in results["rounds"])  # a device's loss stays on it
  # What devices sent is exactly: who they are, the update and its size, the Top-T request.
  sent = {"query.identify": {"identity"}, "train": {"delta", "metrics"}, "query.rank": {"request"}}
  for message_type, reply in grid.replies:
    assert set(reply.content.keys()) == sent[message_type], message_type
    if message_type == "query.identify":
      assert set(reply.content["identity"].keys()) == {"client-id", "user-features"}
    if message_type == "train":
      assert set(reply.content["delta"].keys()) == set(want)
      assert set(reply.content["metrics"].keys()) == {"num-bytes", "diverged"}
    if message_type == "query.rank":
      assert {k: v.numpy().shape for k, v in reply.content["request"].items()} == {
          "items": (deploy_config.ranking.top_t,), "scores": (deploy_config.ranking.top_t,)}
  assert len(results["final_lists"]) == deploy_config.data.synthetic.num_users
  assert not results["unanswered_rank_requests"]


def test_flower_server_refuses_bad_devices_and_finishes(tmp_path, deploy_config):
  """Device 1 uploads NaN, device 2 an array of the wrong shape, device 3 fails: the round
  counts only what is usable and says why for the rest."""

  def tamper(node, message, reply):
    client = node - 100
    if message.metadata.message_type != "train" or client == 0:
      return reply
    if client == 3:
      return None  # never answers
    delta = reply.content["delta"]
    name = sorted(delta.keys())[0]
    array = delta[name].numpy()
    delta[name] = Array(np.full_like(array, np.nan) if client == 1
                        else np.zeros((2, 2), array.dtype))
    return reply

  theta, results, _ = run_flower_apps(tmp_path, deploy_config, tamper,
                                      overrides="federated.rounds=2")
  for round_ in results["rounds"]:
    good = [c for c in round_["cohort"] if c == 0]
    assert round_["accepted"] == len(good)
    for client in round_["cohort"]:
      if client == 0:
        continue
      reason = round_["refused"][str(client)]
      assert {1: "non-finite", 2: "expected", 3: "no reply"}[client] in reason, reason
  assert all(np.all(np.isfinite(leaf)) for leaf in theta.values())


def test_wire_names_what_does_not_decode(deploy_config, deploy_setup):
  theta = coordinator.initial_theta(deploy_setup, 3)
  record = wire.tree_to_record(theta)
  assert max_difference(wire.tree_from_record(record, theta, what="Theta"), theta) == 0.0
  name = sorted(record.keys())[0]
  missing = ArrayRecord(array_dict={k: v for k, v in record.items() if k != name})
  with pytest.raises(wire.WireError, match="missing array"):
    wire.tree_from_record(missing, theta, what="Theta")
  extra = ArrayRecord(array_dict=dict(record.items()) | {"['extra']": Array(np.zeros(1))})
  with pytest.raises(wire.WireError, match="unexpected array"):
    wire.tree_from_record(extra, theta, what="Theta")
  shipped = coordinator.training_lists(deploy_setup, 0)[0]
  decoded = wire.candidates_from_record(wire.candidates_to_record(shipped),
                                        num_items=deploy_setup.public.num_items)
  for got, want in zip(decoded, shipped):
    np.testing.assert_array_equal(got, want)
  outside = shipped._replace(items=np.full_like(shipped.items, deploy_setup.public.num_items))
  with pytest.raises(wire.WireError, match="outside"):
    wire.candidates_from_record(wire.candidates_to_record(outside),
                                num_items=deploy_setup.public.num_items)
  with pytest.raises(wire.WireError, match="catalogue has"):
    wire.candidates_from_record(wire.candidates_to_record(shipped), num_items=7)


def test_local_dp_plan_reaches_the_devices(tmp_path, deploy_config, deploy_setup,
                                           deploy_simulated):
  """Under local DP the server sends its calibrated noise; devices add exactly the noise the
  simulated clients add (same keys), so Theta still equals the simulator's."""
  overrides = "privacy.mechanism=local privacy.noise_multiplier=0.5 federated.rounds=2"
  theta, results, _ = run_flower_apps(tmp_path, deploy_config, overrides=overrides)
  config = apply_overrides(deploy_config, overrides.split())
  examples, _ = deploy_simulated
  theta0 = coordinator.initial_theta(deploy_setup, examples.user_features.shape[1])
  reference = pipeline.train_federated(theta0, (), examples, deploy_setup.item_table, config,
                                       deploy_setup.local)
  want = _as_flat(reference.params)
  for name in want:
    np.testing.assert_allclose(theta[name], want[name], atol=1e-5, err_msg=name)
  # The noise is real: two rounds of plain FedAvg end elsewhere.
  plain = _as_flat(pipeline.train_federated(
      theta0, (), examples, deploy_setup.item_table,
      apply_overrides(deploy_config, ["federated.rounds=2"]), deploy_setup.local).params)
  assert max(float(np.max(np.abs(theta[name] - plain[name]))) for name in plain) > 1e-3
  assert [r["accepted"] for r in results["rounds"]] == [3, 3]


def test_flower_devices_keep_their_personal_state_between_rounds(tmp_path, deploy_config,
                                                                 deploy_mf):
  """FedMF through the Flower apps: each device keeps its user embedding in its node's context
  state (never in a reply), so Θ after three rounds is the simulator's, and so is every
  device's embedding."""
  theta, _, grid = run_flower_apps(tmp_path, deploy_config,
                                   overrides=" ".join(DEPLOY_MF_OVERRIDES))
  _, _, reference = deploy_mf
  want = _as_flat(reference.params)
  assert theta.keys() == want.keys()
  for name in want:
    np.testing.assert_allclose(theta[name], want[name], atol=1e-5, err_msg=name)
  for index, context in enumerate(grid.contexts.values()):
    kept = context.state[flower_client.PERSONAL_RECORD]["['user']"].numpy()
    np.testing.assert_allclose(kept, reference.clients.personal["user"][index], atol=1e-5)
