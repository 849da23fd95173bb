"""The federated-recommendation papers' protocol, trained by the package's own client update and
server round: FedMF, FedNCF and PFedRec-style models on PFedRec's leave-one-out split of
MovieLens-100K (`pprsf_jax.data.loo_protocol`), every client in every round, each held-out item
ranked among its 99 sampled negatives (HR@10, NDCG@10).

Two training-negative protocols (`loo_protocol.TRAINING_NEGATIVE_POOLS`): "leak_free" (the
headline: negatives from outside the client's training positives, held-out items eligible) and
"published" (PFedRec's released code: never the held-out items, while their evaluation
competitors are — a leak; reported for comparison only).

Each round reports two views of every model: "global" — the aggregated Θ with the client's
personal state (what FedMF and FedNCF evaluate) — and "own" — each client's model right after
its local training, before aggregation (PFedRec's evaluation: its dual personalisation). The
reported figure is selected as PFedRec selects it: test metrics at the last round whose
validation HR@10 is at least the best so far.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax import progress
from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.config import FederatedConfig
from pprsf_jax.data.loo_protocol import LeaveOneOutSplit
from pprsf_jax.metrics.sampled import held_out_metrics
from pprsf_jax.ranking import (DeviceState, LocalTraining, ModelDims, ModelSpec, build_model,
                               client_key, client_update, init_device_states,
                               init_personal_states)
from pprsf_jax.ranking.federated import SERVER_STREAM, next_client_states, server_round
from pprsf_jax.ranking.sampled_task import (ClientInteractions, RankedLists, client_interactions,
                                            sampled_negatives_task)

logger = logging.getLogger(__name__)

PROTOCOLS = ("leak_free", "published")
TOP_K = 10


class Setting(NamedTuple):
  """One model's training under the protocol."""

  spec: ModelSpec
  learning_rate: float  # local SGD on the shared parameters
  personal_learning_rate: float  # local SGD on the personal state
  positives_per_step: int  # positives (each with its negatives) per local SGD step
  num_negatives: int = 4  # training negatives per positive, drawn every round
  local_epochs: int = 1


# PFedRec's released defaults (docs/pfedrec_reference.md): 32-d item embedding drawn from
# N(0, 1), a linear score function, lr 0.1 on it and 0.1 x 1682 x 80 on the item embedding,
# batches of 256 rows = 51 positives with 4 negatives each, one local epoch. FedMF and FedNCF
# run on the same data pipeline (the setting of PFedRec's comparison), their step sizes chosen
# on validation HR@10 after 25 leak-free rounds (docs/reproducing.md lists the grid): a row of
# an item table sees 1/256 of a batch's gradient, so it takes steps hundreds of times larger
# than a user's vector, as PFedRec's item-embedding rate does.
SETTINGS = {
    "pfedrec": Setting(ModelSpec(hidden_sizes=(), embedding_dim=32, embedding_init_std=1.0),
                       learning_rate=0.1 * 1682 * 80, personal_learning_rate=0.1,
                       positives_per_step=51),
    "mf": Setting(ModelSpec(embedding_dim=32, embedding_init_std=0.1), learning_rate=1000.0,
                  personal_learning_rate=10.0, positives_per_step=51),
    # One step size for the whole shared part: 30 and above diverge the network, 10 (the best
    # of the grid) leaves the item tables slow (docs/reproducing.md).
    "ncf": Setting(ModelSpec(hidden_sizes=(32, 16), embedding_dim=32, embedding_init_std=0.1),
                   learning_rate=10.0, personal_learning_rate=1.0, positives_per_step=51),
}


def excluded_items(split: LeaveOneOutSplit, protocol: str) -> np.ndarray:
  """[N, M] bool: per client, the items its training negatives never come from."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
  excluded = np.zeros((split.num_users, split.num_items), bool)
  excluded[split.train_user, split.train_item] = True
  if protocol == "published":  # the held-out items are never a negative
    users = np.arange(split.num_users)
    excluded[users, split.val_item] = True
    excluded[users, split.test_item] = True
  return excluded


def ranked_lists(held_out: np.ndarray, negatives: np.ndarray) -> RankedLists:
  """[N, 1, 1 + 99]: each client's held-out item first, then its negatives."""
  items = np.concatenate([held_out[:, None], negatives], axis=1).astype(np.int32)[:, None]
  return RankedLists(items=items, mask=np.ones(items.shape, np.float32))


def local_training(setting: Setting, model_name: str) -> LocalTraining:
  task = sampled_negatives_task(build_model(model_name, setting.spec), setting.num_negatives,
                                setting.positives_per_step)
  return LocalTraining(task=task, epochs=setting.local_epochs,
                       learning_rate=setting.learning_rate,
                       personal_learning_rate=setting.personal_learning_rate)


@functools.partial(jax.jit, static_argnames=("local", "algorithm"))
def _train(server, states: DeviceState, clients: ClientInteractions, client_ids, seed_key,
           round_index, *, local, algorithm):
  """One bucket of clients trains from Θ: the package's `client_update`, vmapped."""
  keys = jax.vmap(lambda c: client_key(seed_key, round_index, c))(client_ids)
  return jax.vmap(
      lambda own, key, state: client_update(server.params, own, (), key=key, local=local,
                                            algorithm=algorithm, broadcast=server.broadcast,
                                            state=state))(clients, keys, states)


@functools.partial(jax.jit, static_argnames=("local", "algorithm"))
def _aggregate_and_score(server, states: DeviceState, uploads, proposed, metrics,
                         valid: RankedLists, test: RankedLists, seed_key, round_index, *, local,
                         algorithm):
  """The server's round (`server_round`); every client scored with its own model and with Θ'."""
  arrived = ~metrics.diverged
  own_models = jax.tree.map(lambda theta, delta: theta[None] + delta, server.params,
                            uploads.delta)
  server, accepted = server_round(server, uploads, arrived, algorithm=algorithm,
                                  max_update_norm=0.0,
                                  key=client_key(seed_key, round_index, SERVER_STREAM))
  states = next_client_states(states, proposed, accepted=accepted, arrived=arrived)
  score = local.task.score
  scores = {}
  for name, lists in (("valid", valid), ("test", test)):
    scores[f"global_{name}"] = jax.vmap(lambda mine, own: score(server.params, mine, own, ()))(
        states.personal, lists)
    scores[f"own_{name}"] = jax.vmap(lambda theta, mine, own: score(theta, mine, own, ()))(
        own_models, states.personal, lists)
  loss = jnp.sum(jnp.where(arrived, metrics.loss, 0.0)) / jnp.maximum(jnp.sum(arrived), 1)
  return server, states, loss, scores


class Buckets(NamedTuple):
  """Clients ordered by how many positives they hold, cut into contiguous buckets, each padded
  only to its own longest client: local SGD runs as many steps as the bucket's longest client
  needs, not the federation's (a masked step costs as much as a real one)."""

  order: np.ndarray  # [N] client ids, fewest positives first
  bounds: list[tuple[int, int, int]]  # (start, stop, width) per bucket, in `order` positions


def bucket_clients(clients: ClientInteractions, num_buckets: int) -> Buckets:
  counts = np.asarray(clients.mask).reshape(clients.mask.shape[0], -1).sum(1).astype(int)
  order = np.argsort(counts, kind="stable")
  edges = np.unique(np.linspace(0, order.size, num_buckets + 1).astype(int))
  bounds = [(int(a), int(b), max(int(counts[order[b - 1]]), 1))
            for a, b in zip(edges[:-1], edges[1:])]
  return Buckets(order, bounds)


def _train_round(server, states, buckets: Buckets, pieces, seed_key, round_index, *, local,
                 algorithm):
  """Every bucket trains; their outputs joined in `buckets.order`."""
  outputs = [_train(server, jax.tree.map(lambda leaf, a=start, b=stop: leaf[a:b], states),
                    piece, jnp.asarray(buckets.order[start:stop], jnp.int32), seed_key,
                    round_index, local=local, algorithm=algorithm)
             for (start, stop, _), piece in zip(buckets.bounds, pieces)]
  return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outputs)


class Reproduction(NamedTuple):
  model: str
  protocol: str
  per_round: list[dict[str, float]]  # round, loss, seconds, {view}_{valid,test}_{hr,ndcg}@10
  selected: dict[str, dict[str, float]]  # per view: the round and test metrics selected


def reproduce(split: LeaveOneOutSplit, model_name: str, protocol: str, *, rounds: int,
              seed: int = 0, setting: Setting | None = None,
              num_buckets: int = 4) -> Reproduction:
  """Trains `model_name` federated on `split` under `protocol` for `rounds` rounds, every
  client every round (in `num_buckets` buckets by size: `Buckets`)."""
  setting = SETTINGS[model_name] if setting is None else setting
  local = local_training(setting, model_name)
  clients = client_interactions(split.train_user, split.train_item,
                                excluded_items(split, protocol))
  buckets = bucket_clients(clients, num_buckets)
  # Everything per client is kept in bucket order; keys still come from the client's own id.
  in_order = lambda tree: jax.tree.map(lambda leaf: np.asarray(leaf)[buckets.order], tree)
  clients = in_order(clients)
  pieces = [jax.device_put(ClientInteractions(
      items=clients.items[start:stop, :, :width], mask=clients.mask[start:stop, :, :width],
      pool=clients.pool[start:stop], pool_size=clients.pool_size[start:stop]))
            for start, stop, width in buckets.bounds]
  valid = jax.device_put(in_order(ranked_lists(split.val_item, split.val_negatives)))
  test = jax.device_put(in_order(ranked_lists(split.test_item, split.test_negatives)))
  dims = ModelDims(num_features=0, num_items=split.num_items)
  root = jax.random.key(seed)
  theta0 = local.task.init_shared(jax.random.fold_in(root, 0), dims)
  algorithm = make_algorithm(FederatedConfig(weighting="uniform", server_learning_rate=1.0),
                             split.num_users)
  personal = in_order(init_personal_states(local.task, dims, jax.random.fold_in(root, 1),
                                           split.num_users))
  states = jax.device_put(init_device_states(algorithm, theta0, personal, split.num_users))
  server = init_server_state(algorithm, theta0)
  per_round = []
  for round_index in progress.steps(range(rounds), desc=f"{model_name}, {protocol}: rounds"):
    start = time.perf_counter()
    seed_key = jax.random.fold_in(root, 2)
    trained = _train_round(server, states, buckets, pieces, seed_key, round_index, local=local,
                           algorithm=algorithm)
    server, states, loss, scores = _aggregate_and_score(
        server, states, *trained, valid, test, seed_key, round_index, local=local,
        algorithm=algorithm)
    scores = jax.block_until_ready(scores)
    record = {"round": round_index + 1, "loss": float(loss),
              "seconds": round(time.perf_counter() - start, 4)}
    for name, values in scores.items():
      for metric, value in held_out_metrics(values, TOP_K).items():
        record[f"{name}_{metric.replace('@', '')}"] = value
    per_round.append(record)
  return Reproduction(model_name, protocol, per_round,
                      {view: select(per_round, view) for view in ("global", "own")})


def select(per_round: list[dict[str, Any]], view: str) -> dict[str, float]:
  """PFedRec's selection: test metrics at the last round whose validation HR@10 is >= the best
  before it (ties go to the later round)."""
  best, chosen = -1.0, per_round[0]
  for record in per_round:
    if record[f"{view}_valid_hr10"] >= best:
      best, chosen = record[f"{view}_valid_hr10"], record
  return {"round": chosen["round"], "valid_hr10": chosen[f"{view}_valid_hr10"],
          "test_hr10": chosen[f"{view}_test_hr10"], "test_ndcg10": chosen[f"{view}_test_ndcg10"]}
