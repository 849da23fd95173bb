"""Deployment: a deployed device and server compute exactly what the simulator computes.

No federated runtime is needed here: the device functions (`deploy.device`) and the server's
(`deploy.coordinator`) are driven directly, one device at a time, and compared with the
simulator's vmapped round (fixtures `deploy_*` in conftest.py). `test_flower_apps.py` drives the
Flower apps built on them in one process; `test_flower_deployment.py` runs them as separate
processes under Flower's deployment runtime.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.config import ConfigError, apply_overrides
from pprsf_jax.deploy import coordinator, device, local_data
from pprsf_jax.ranking import init_personal_states, make_item_table
from pprsf_jax.types import Interactions


def device_uploads(setup, config, devices, server, round_index, cohort):
  """Every device of the cohort trains on its own: what reaches the server, in cohort order."""
  algorithm = make_algorithm(config.federated, setup.public.num_users)
  received = []
  for user in map(int, cohort):
    own, catalogue = devices[user]
    examples = device.device_examples(own, coordinator.training_lists(setup, user),
                                      catalogue.genres)
    item_table = make_item_table(catalogue)
    state = device.initial_state(
        server.params, local=setup.local, algorithm=algorithm,
        dims=pipeline.model_dims(own.user_features.shape[0], item_table),
        seed_key=pipeline.stream_key(config.seed, "personal"), client_id=user)
    reply, _ = device.train_on_device(
        server.params, examples, item_table,
        seed_key=pipeline.stream_key(config.seed, "clients"), round_index=round_index,
        client_id=user, local=setup.local, algorithm=algorithm, state=state)
    received.append(coordinator.Received(user, reply.delta, reply.num_bytes, None))
  return received


def max_difference(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))


def test_a_device_builds_exactly_its_row_of_the_simulators_examples(deploy_setup, deploy_devices,
                                                                     deploy_simulated):
  examples, _ = deploy_simulated
  for user, (own, catalogue) in enumerate(deploy_devices):
    mine = device.device_examples(own, coordinator.training_lists(deploy_setup, user),
                                  catalogue.genres)
    row = jax.tree.map(lambda leaf, u=user: leaf[u], examples)
    for name, got, want in zip(mine._fields, mine, row):
      np.testing.assert_array_equal(got, want, err_msg=f"user {user}: {name}")


def test_devices_and_coordinator_reach_the_simulators_theta(deploy_config, deploy_setup,
                                                            deploy_devices, deploy_simulated):
  _, reference = deploy_simulated
  width = deploy_devices[0][0].user_features.size
  server = init_server_state(deploy_setup.algorithm,
                             coordinator.initial_theta(deploy_setup, width))
  for round_index, cohort in enumerate(deploy_setup.schedule):
    received = device_uploads(deploy_setup, deploy_config, deploy_devices, server, round_index,
                              cohort)
    outcome = coordinator.aggregate(deploy_setup, server, received, round_index)
    assert outcome.accepted.all() and not outcome.refused
    server = outcome.server
  assert max_difference(server.params, reference.params) <= 1e-6


def test_devices_keep_their_personal_state_and_reach_the_simulators_model(deploy_devices,
                                                                          deploy_mf):
  """FedMF deployed: each device keeps its user embedding from round to round (never sent);
  Θ and every device's embedding end where the simulator's do."""
  config, setup, reference = deploy_mf
  width = deploy_devices[0][0].user_features.size
  dims = pipeline.model_dims(width, setup.item_table)
  theta0 = coordinator.initial_theta(setup, width)
  personal_key = pipeline.stream_key(config.seed, "personal")
  algorithm = make_algorithm(config.federated, setup.public.num_users)
  states = [device.initial_state(theta0, local=setup.local, algorithm=algorithm, dims=dims,
                                 seed_key=personal_key, client_id=user)
            for user in range(len(deploy_devices))]
  server = init_server_state(setup.algorithm, theta0)
  for round_index, cohort in enumerate(setup.schedule):
    received = []
    for user in map(int, cohort):
      own, catalogue = deploy_devices[user]
      examples_of_user = device.device_examples(own, coordinator.training_lists(setup, user),
                                                catalogue.genres)
      reply, states[user] = device.train_on_device(
          server.params, examples_of_user, make_item_table(catalogue),
          seed_key=pipeline.stream_key(config.seed, "clients"), round_index=round_index,
          client_id=user, local=setup.local, algorithm=algorithm, state=states[user])
      received.append(coordinator.Received(user, reply.delta, reply.num_bytes, None))
    server = coordinator.aggregate(setup, server, received, round_index).server
  assert max_difference(server.params, reference.params) <= 1e-5
  for user, state in enumerate(states):
    want = jax.tree.map(lambda leaf, u=user: leaf[u], reference.clients.personal)
    assert max_difference(state.personal, want) <= 1e-5
  assert max_difference(states[0].personal, init_personal_states(
      setup.local.task, dims, personal_key, 1)) > 1e-3  # the embeddings did train


def test_on_device_ranking_matches_the_simulators(deploy_config, deploy_setup, deploy_devices,
                                                  deploy_simulated):
  _, reference = deploy_simulated
  data = local_data.load_federation(deploy_config)
  examples = pipeline.examples_from_recall(
      deploy_setup.recall.serving, data.private.history, Interactions.empty(),
      public=data.public, private=data.private, config=deploy_config.recall)
  top_t = deploy_config.ranking.top_t
  want = pipeline.rank_all(reference.params, reference.clients.personal, examples,
                           deploy_setup.item_table, local=deploy_setup.local, top_t=top_t,
                           per_client_params=False)
  candidates = coordinator.serving_candidates(deploy_setup)
  for user, (own, catalogue) in enumerate(deploy_devices):
    got = device.rank(coordinator.serving_list(deploy_setup, candidates, user), own,
                      reference.params, item_table=make_item_table(catalogue),
                      genres=catalogue.genres, local=deploy_setup.local, top_t=top_t)
    np.testing.assert_array_equal(got.items, np.asarray(want.items[user]))
    np.testing.assert_allclose(got.scores, np.asarray(want.scores[user]), rtol=1e-6)


def test_rank_refuses_a_training_list(deploy_setup, deploy_devices):
  own, catalogue = deploy_devices[0]
  with pytest.raises(ValueError, match="serving candidate list"):
    device.rank(coordinator.training_lists(deploy_setup, 0)[0], own, None,
                item_table=make_item_table(catalogue), genres=catalogue.genres,
                local=deploy_setup.local, top_t=5)


@pytest.mark.parametrize("overrides, field", [
    ("federated.local_algorithm=scaffold", "federated.local_algorithm"),
    ("federated.compression=top_k", "federated.compression"),
    ("privacy.secure_aggregation=true", "privacy.secure_aggregation"),
    ("privacy.request_decoys=5", "privacy.request_decoys"),
    ("privacy.audit=true", "privacy.audit"),
    ("federated.dropout_rate=0.1", "federated.dropout_rate"),
    ("federated.straggler_rate=0.1", "federated.straggler_rate"),
    ("federated.attack=sign_flip federated.attacker_share=0.25", "federated.attack"),
])
def test_settings_a_deployment_cannot_honour_are_refused_by_name(deploy_config, overrides, field):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    coordinator.check_deployable(apply_overrides(deploy_config, overrides.split()))


def test_bad_uploads_are_refused_with_their_reason_and_change_nothing(deploy_config, deploy_setup,
                                                                      deploy_devices):
  theta0 = coordinator.initial_theta(deploy_setup, deploy_devices[0][0].user_features.size)
  server = init_server_state(deploy_setup.algorithm, theta0)
  good = device_uploads(deploy_setup, deploy_config, deploy_devices, server, 0,
                        deploy_setup.schedule[0])
  template = good[0]
  bad = [
      template._replace(client_id=90, delta=jax.tree.map(
          lambda leaf: np.full_like(leaf, np.nan), template.delta)),
      template._replace(client_id=91, delta=jax.tree.map(
          lambda leaf: np.zeros(leaf.shape + (1,), leaf.dtype), template.delta)),
      template._replace(client_id=92, delta=None, problem="no reply before the timeout"),
  ]
  outcome = coordinator.aggregate(deploy_setup, server, good + bad, 0)
  assert outcome.accepted.tolist() == [True] * len(good) + [False] * len(bad)
  assert "non-finite" in outcome.refused[90] and "shape" in outcome.refused[91]
  assert outcome.refused[92] == "no reply before the timeout"
  clean = coordinator.aggregate(deploy_setup, server, good, 0)
  assert max_difference(outcome.server.params, clean.server.params) == 0.0
  assert max_difference(clean.server.params, theta0) > 0
  # Over the norm bound: refused when a bound is set, as in the simulated round.
  bounded = deploy_setup._replace(
      config=apply_overrides(deploy_config, ["federated.max_update_norm=10"]))
  huge = template._replace(delta=jax.tree.map(lambda leaf: np.full_like(leaf, 1e6),
                                              template.delta))
  outcome = coordinator.aggregate(bounded, server, good + [huge], 0)
  assert not outcome.accepted[-1]
  assert "exceeds the bound" in outcome.refused[template.client_id]
  # Nothing usable: Theta stays where it was.
  nothing = coordinator.aggregate(deploy_setup, server, bad, 0)
  assert not nothing.accepted.any()
  assert max_difference(nothing.server.params, theta0) == 0.0


def test_a_device_that_is_not_a_user_is_named(deploy_config):
  with pytest.raises(ConfigError, match="client-id=7 is not a user"):
    local_data.device_part(deploy_config, 7)


def test_an_upload_from_an_unknown_client_id_is_refused(deploy_config, deploy_setup,
                                                         deploy_devices):
  """The server weighs an upload by the lists it sent that client: an id it never sent lists to
  has none, and its upload is refused by name rather than counted."""
  theta0 = coordinator.initial_theta(deploy_setup, deploy_devices[0][0].user_features.size)
  server = init_server_state(deploy_setup.algorithm, theta0)
  good = device_uploads(deploy_setup, deploy_config, deploy_devices, server, 0,
                        deploy_setup.schedule[0])
  stranger = good[0]._replace(client_id=deploy_setup.public.num_users + 5)
  outcome = coordinator.aggregate(deploy_setup, server, good + [stranger], 0)
  assert outcome.accepted.tolist() == [True] * len(good) + [False]
  assert "is not a user of this federation" in outcome.refused[stranger.client_id]
  clean = coordinator.aggregate(deploy_setup, server, good, 0)
  assert max_difference(outcome.server.params, clean.server.params) == 0.0
