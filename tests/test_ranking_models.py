"""Every ranking model against the federated core's contract (a conformance table), and NumPy
references for one FedMF step and one PFedRec-style step.

Each row of the table runs one model through the real core (`local_train`, `client_update`,
`make_round`, `train_federated`) on the session's synthetic federation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.config import ConfigError, FederatedConfig, RankingConfig, RunConfig
from pprsf_jax.ranking import (RANKING_MODELS, ClientExamples, ModelSpec, build_model,
                               candidate_training, client_key, client_update, cohort_slice,
                               gather_client_states, init_device_states, init_personal_states,
                               local_train, make_round)

MODELS = sorted(RANKING_MODELS)
SPEC = ModelSpec(hidden_sizes=(8,), embedding_dim=6, cross_layers=1)
SEED_KEY = jax.random.key(11)


@pytest.fixture(scope="module", params=MODELS)
def model_name(request) -> str:
  return request.param


@pytest.fixture(scope="module")
def local(model_name):
  return candidate_training(build_model(model_name, SPEC), units_per_step=8, epochs=2,
                            learning_rate=0.1)


@pytest.fixture(scope="module")
def start(local, dims, examples):
  """(Θ0, every client's initial personal state [N, ...])."""
  return (local.task.init_shared(jax.random.key(3), dims),
          init_personal_states(local.task, dims, jax.random.key(4), examples.mask.shape[0]))


def _client(tree, index):
  return jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf)[index]), tree)


def _busy_client(examples) -> int:
  """A client with several real candidates and a positive among them."""
  mask, labels = np.asarray(examples.mask), np.asarray(examples.labels)
  real = mask.reshape(mask.shape[0], -1).sum(1)
  positive = (mask * labels).reshape(mask.shape[0], -1).sum(1)
  return int(np.flatnonzero((real >= 16) & (positive >= 2))[0])


def _assert_close(left, right, atol=1e-6):
  assert jax.tree.structure(left) == jax.tree.structure(right)
  for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


def _changed(before, after) -> bool:
  return any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


# ------------------------------------------------------------------------------ the table
def test_local_training_trains_and_jit_equals_eager(local, start, examples, item_table):
  theta0, personal = start
  client = _busy_client(examples)
  one, mine = _client(examples, client), _client(personal, client)
  train = lambda ex, p: local_train(theta0, p, ex, item_table, key=jax.random.key(1), local=local)
  eager = train(one, mine)
  jitted = jax.jit(train)(one, mine)
  _assert_close(eager[:2], jitted[:2], atol=1e-5)
  assert int(eager[2].steps) > 0 and not bool(eager[2].diverged)
  assert _changed(theta0, eager[0])  # the shared part trained
  if jax.tree.leaves(mine):
    assert _changed(mine, eager[1])  # and so did the personal part


def test_padding_examples_and_padding_clients_change_nothing(local, start, examples, item_table,
                                                             pad_candidates, pad_lists):
  theta0, personal = start
  algorithm = make_algorithm(FederatedConfig(), examples.mask.shape[0])
  client = _busy_client(examples)
  state = jax.tree.map(lambda leaf: leaf[client],
                       init_device_states(algorithm, theta0, personal, examples.mask.shape[0]))
  update = jax.jit(lambda ex: client_update(theta0, ex, item_table,
                                            key=client_key(SEED_KEY, 0, client), local=local,
                                            algorithm=algorithm, broadcast=(), state=state))
  one = jax.tree.map(lambda a: np.asarray(a)[client], examples)
  upload, next_state, _ = update(one)
  for padded in (pad_candidates(one, 5), pad_lists(one, 1)):
    padded_upload, padded_state, _ = update(padded)
    _assert_close(upload.delta, padded_upload.delta)
    _assert_close(next_state.personal, padded_state.personal)
  # Padding clients: a cohort of 6 real clients padded to 8 gives the round of the 6 alone.
  ids = np.arange(6, dtype=np.int32) * 3
  states = init_device_states(algorithm, theta0, personal, examples.mask.shape[0])
  round_fn = make_round(local, algorithm)
  results = []
  for size in (6, 8):
    cohort, padded_ids, client_mask = cohort_slice(examples, ids, size)
    results.append(round_fn(init_server_state(algorithm, theta0),
                            gather_client_states(states, padded_ids), cohort, padded_ids,
                            client_mask, item_table, SEED_KEY, 0))
  _assert_close(results[0][0].params, results[1][0].params)
  _assert_close(results[0][1].personal, jax.tree.map(lambda a: a[:6], results[1][1].personal))


def _config(model_name: str, rounds: int) -> RunConfig:
  config = RunConfig(seed=5, checkpoint_every=1,
                     ranking=RankingConfig(model=model_name, hidden_sizes=SPEC.hidden_sizes,
                                           embedding_dim=SPEC.embedding_dim,
                                           cross_layers=SPEC.cross_layers, batch_size=8),
                     federated=FederatedConfig(rounds=rounds, clients_per_round=12,
                                               server_learning_rate=1.0))
  return dataclasses.replace(config, eval=dataclasses.replace(config.eval, every_rounds=0))


def _train(model_name, rounds, examples, item_table, dims, checkpoints=None):
  config = _config(model_name, rounds)
  local = pipeline.local_training(config)
  theta0 = local.task.init_shared(jax.random.key(3), dims)
  personal0 = init_personal_states(local.task, dims, jax.random.key(4), examples.mask.shape[0])
  return pipeline.train_federated(theta0, personal0, examples, item_table, config, local,
                                  checkpoints=checkpoints)


def test_same_seed_same_model_and_a_resumed_run_ends_where_an_uninterrupted_one_does(
    model_name, examples, item_table, dims, tmp_path, assert_trees_identical):
  whole = _train(model_name, 4, examples, item_table, dims)
  again = _train(model_name, 4, examples, item_table, dims)
  assert_trees_identical(whole.params, again.params)
  assert_trees_identical(whole.clients, again.clients)
  # Two rounds checkpointed (personal states included), then the run resumed to four.
  _train(model_name, 2, examples, item_table, dims, checkpoints=tmp_path)
  resumed = _train(model_name, 4, examples, item_table, dims, checkpoints=tmp_path)
  assert_trees_identical(whole.params, resumed.params)
  assert_trees_identical(whole.clients, resumed.clients)
  assert whole.losses == resumed.losses


def test_personal_state_never_reaches_the_server(local, start, examples, item_table):
  """Poisoning every client's personal state changes the uploads it legitimately shapes and
  nothing else the server receives; no upload carries the state itself."""
  theta0, personal = start
  num_clients = examples.mask.shape[0]
  algorithm = make_algorithm(FederatedConfig(), num_clients)
  ids = np.arange(0, 24, 2, dtype=np.int32)
  cohort, padded_ids, client_mask = cohort_slice(examples, ids, 12)
  marker = 1234.5  # a value no trained parameter or update takes
  poisoned = jax.tree.map(lambda leaf: np.full_like(leaf, marker), personal)
  round_fn = make_round(local, algorithm)
  server = init_server_state(algorithm, theta0)

  def run(personal_states):
    states = init_device_states(algorithm, theta0, personal_states, num_clients)
    return round_fn(server, gather_client_states(states, padded_ids), cohort, padded_ids,
                    client_mask, item_table, SEED_KEY, 0)

  _, honest_rows, honest = run(personal)
  _, poisoned_rows, metrics = run(poisoned)
  # What the server receives beside the updates is the same.
  _assert_close(honest.declared, metrics.declared, atol=0)
  assert int(metrics.rejected) == int(honest.rejected) == 0
  # The personal state stays on the device: trained from the poison, never uploaded.
  uploads = jax.vmap(lambda ex, key, state: client_update(
      theta0, ex, item_table, key=key, local=local, algorithm=algorithm, broadcast=(),
      state=state)[0])(cohort, jax.vmap(lambda c: client_key(SEED_KEY, 0, c))(padded_ids),
                       gather_client_states(init_device_states(algorithm, theta0, poisoned,
                                                               num_clients), padded_ids))
  assert jax.tree.structure(uploads.delta) == jax.tree.structure(
      jax.tree.map(lambda leaf: leaf[None], theta0))
  for leaf in jax.tree.leaves(uploads):
    assert not np.any(np.isclose(np.asarray(leaf, np.float64), marker, rtol=1e-3))
  if jax.tree.leaves(personal):
    assert _changed(honest_rows.personal, poisoned_rows.personal)


# ------------------------------------------------------------------------------ NumPy references
def _tiny_examples(rng, item_table, length: int) -> ClientExamples:
  """One client, one list of `length` candidates; ids-only models read items, labels, mask."""
  num_items, genres = item_table.genres.shape
  items = rng.choice(num_items, length, replace=False).astype(np.int32)[None]
  zeros = np.zeros((1, length), np.float32)
  return ClientExamples(
      items=items, recall_scores=zeros, popularity=zeros,
      neighbor_scores=np.zeros((1, length, 2), np.float32),
      labels=(rng.random((1, length)) < 0.4).astype(np.float32),
      mask=np.ones((1, length), np.float32), user_features=np.zeros(3, np.float32),
      profile=np.zeros((1, genres + 1), np.float32))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _one_step(model_name: str, spec: ModelSpec, dims, examples, item_table, lr: float):
  """One local SGD step over every candidate of one list (epochs=1, one mini-batch)."""
  local = candidate_training(build_model(model_name, spec), units_per_step=examples.items.size,
                             epochs=1, learning_rate=lr)
  shared = local.task.init_shared(jax.random.key(7), dims)
  personal = local.task.init_personal(jax.random.key(8), dims)
  new_shared, new_personal, metrics = local_train(shared, personal, examples, item_table,
                                                  key=jax.random.key(9), local=local)
  assert int(metrics.steps) == 1
  as_numpy = lambda tree: jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)
  return as_numpy(shared), as_numpy(personal), as_numpy(new_shared), as_numpy(new_personal)


def test_one_fedmf_step_matches_numpy(dims, item_table):
  rng = np.random.default_rng(0)
  examples = _tiny_examples(rng, item_table, 10)
  lr = 0.5
  spec = ModelSpec(embedding_dim=4)
  shared, personal, new_shared, new_personal = _one_step("mf", spec, dims, examples, item_table,
                                                         lr)
  items, labels = examples.items[0], examples.labels[0].astype(np.float64)
  user, embeddings, bias = personal["user"], shared["items"], shared["item_bias"]
  logits = embeddings[items] @ user + bias[items]
  residual = (_sigmoid(logits) - labels) / len(items)  # d mean BCE / d logit
  want_user = user - lr * residual @ embeddings[items]
  want_embeddings, want_bias = embeddings.copy(), bias.copy()
  np.add.at(want_embeddings, items, -lr * residual[:, None] * user[None])
  np.add.at(want_bias, items, -lr * residual)
  np.testing.assert_allclose(new_personal["user"], want_user, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_shared["items"], want_embeddings, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_shared["item_bias"], want_bias, rtol=1e-5, atol=1e-6)


def test_one_pfedrec_step_matches_numpy(dims, item_table):
  """PFedRec-style with a linear score function: logit = <w, v_item> + b, (w, b) personal."""
  rng = np.random.default_rng(1)
  examples = _tiny_examples(rng, item_table, 10)
  lr = 0.5
  spec = ModelSpec(hidden_sizes=(), embedding_dim=4)
  shared, personal, new_shared, new_personal = _one_step("pfedrec", spec, dims, examples,
                                                         item_table, lr)
  items, labels = examples.items[0], examples.labels[0].astype(np.float64)
  head = personal["score_function"]["Dense_0"]
  w, b, embeddings = head["kernel"][:, 0], head["bias"][0], shared["items"]
  logits = embeddings[items] @ w + b
  residual = (_sigmoid(logits) - labels) / len(items)
  want_w = w - lr * residual @ embeddings[items]
  want_b = b - lr * residual.sum()
  want_embeddings = embeddings.copy()
  np.add.at(want_embeddings, items, -lr * residual[:, None] * w[None])
  new_head = new_personal["score_function"]["Dense_0"]
  np.testing.assert_allclose(new_head["kernel"][:, 0], want_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_head["bias"][0], want_b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_shared["items"], want_embeddings, rtol=1e-5, atol=1e-6)


def test_the_config_names_every_model_and_refuses_others():
  for name in RANKING_MODELS:
    assert RankingConfig(model=name).model == name
  with pytest.raises(ConfigError, match="ranking.model="):
    RankingConfig(model="word2vec")


def test_a_task_whose_units_do_not_line_up_is_refused_while_tracing(examples, item_table, dims):
  local = candidate_training(build_model("mf", SPEC), units_per_step=8)
  task = local.task
  short = lambda own, public, key: task.units(own, public, key)._replace(
      data=jax.tree.map(lambda leaf: leaf[:-1], task.units(own, public, key).data))
  broken = dataclasses.replace(local, task=task._replace(units=short))
  one = _client(examples, 0)
  with pytest.raises(AssertionError, match="shape"):
    local_train(task.init_shared(jax.random.key(0), dims),
                task.init_personal(jax.random.key(1), dims), one, item_table,
                key=jax.random.key(2), local=broken)
