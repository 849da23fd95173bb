"""The audit: a curious server attacks exactly what it receives, and is scored against the truth.

What the server receives from client i is its upload (the update after any local DP noise and
compression, as decoded, and what the upload declares beside it: weight, step count, size) and
its Top-T request. The audit asks every client for the upload it would send in the round after
training (from the final Theta, with its own state and key, as if sampled), then runs these
attacks:

* attribute inference from uploads and, separately, from Top-T requests (gender, age group,
  occupation), a cross-validated linear attacker (`pprsf_jax.privacy.audit`); the same attack
  on the candidate lists the server computed itself is the baseline a request adds to;
* interaction inference from uploads: for each candidate the server sent, how much the upload
  raises its score, with the private inputs the server cannot know (user attributes, history
  profile, neighbour scores) set to zero. Higher = guessed interacted;
* the declared fields (weight, steps, bytes): attribute inference, and whether they tell which
  clients hold more private-history candidates than the median client;
* request membership: which candidates the server sent are in the client's private history,
  guessed from the request (a candidate it does not name, or names late, scores higher).

The private attributes enter only as the answer key of the scoring, never as attack input.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pprsf_jax.aggregation import FederatedAlgorithm
from pprsf_jax.privacy.audit import (AttackReport, attribute_inference, interaction_inference_auc,
                                     roc_auc)
from pprsf_jax.privacy.secure_aggregation import SecureAggregationConfig
from pprsf_jax.privacy.secure_round import what_the_server_sees
from pprsf_jax.ranking.client import LocalTraining, client_update
from pprsf_jax.ranking.features import ClientExamples, ItemTable
from pprsf_jax.ranking.federated import MASK_STREAM, client_key
from pprsf_jax.ranking.task import DeviceState


def _server_view(examples: ClientExamples) -> ClientExamples:
  """A client's candidate lists as the server knows them: private inputs zeroed, and every
  candidate it sent counted as real (the client's mask also drops items of its private
  history, which the server cannot know, and would leak them through rank and score features)."""
  return examples._replace(user_features=jnp.zeros_like(examples.user_features),
                           profile=jnp.zeros_like(examples.profile),
                           neighbor_scores=jnp.zeros_like(examples.neighbor_scores),
                           labels=jnp.zeros_like(examples.labels),
                           mask=(examples.items >= 0).astype(examples.mask.dtype))


def observe_uploads(params, examples: ClientExamples, item_table: ItemTable, *,
                    local: LocalTraining, algorithm: FederatedAlgorithm, broadcast,
                    states: DeviceState, seed_key: jax.Array, round_index: int,
                    secure: SecureAggregationConfig | None = None, stand_in_personal=(),
                    chunk: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every client's upload as the server would receive it, the interaction-attack scores, and
  what each upload declares beside its update.

  With `secure`, what the server receives is each client's masked vector (masked within its
  chunk of clients, as within a cohort); the attacks read it the only way they can, decoded on
  its own. The server holds no client's personal state: it scores the lift of an update with
  `stand_in_personal`, one of its own making (a fresh initial state).

  Returns:
    ([N, D] float32 uploads as seen, [N, S * K] float32 score increase per candidate, [N, 3]
    float32 declared weight, steps and bytes).
  """
  num_clients = examples.mask.shape[0]
  unravel = ravel_pytree(params)[1]

  @jax.jit
  def observe(chunk_examples, chunk_states, chunk_ids):
    def one(client_examples, state, client_id):
      upload, _, _ = client_update(params, client_examples, item_table,
                                   key=client_key(seed_key, round_index, client_id), local=local,
                                   algorithm=algorithm, broadcast=broadcast, state=state)
      declared = jnp.stack([upload.num_examples, upload.num_steps.astype(jnp.float32),
                            upload.num_bytes])
      return upload.delta, _server_view(client_examples), declared

    deltas, seen_examples, declared = jax.vmap(one)(chunk_examples, chunk_states, chunk_ids)
    if secure is None:
      seen = jax.vmap(lambda delta: ravel_pytree(delta)[0])(deltas)
    else:
      seen = what_the_server_sees(
          deltas, jnp.ones(chunk_ids.shape), client_ids=chunk_ids, config=secure,
          round_key=client_key(seed_key, round_index, MASK_STREAM))[:, :-1]

    def lift(flat, client_examples):
      moved = jax.tree.map(jnp.add, params, unravel(flat))
      score = lambda theta: local.task.score(theta, stand_in_personal, client_examples,
                                             item_table)
      return score(moved) - score(params)

    return seen, jax.vmap(lift)(seen, seen_examples), declared

  flats, lifts, declared = [], [], []
  for start in range(0, num_clients, chunk):
    ids = np.arange(start, min(start + chunk, num_clients))
    padded = np.concatenate([ids, np.full(chunk - len(ids), ids[-1])])  # one compiled shape
    take = lambda leaf: jnp.asarray(np.asarray(leaf)[padded])
    flat, lift, said = observe(jax.tree.map(take, examples), jax.tree.map(take, states),
                               jnp.asarray(padded, jnp.int32))
    flats.append(np.asarray(flat)[:len(ids)])
    lifts.append(np.asarray(lift)[:len(ids)])
    declared.append(np.asarray(said)[:len(ids)])
  return np.concatenate(flats), np.concatenate(lifts), np.concatenate(declared)


def request_features(requests: np.ndarray, num_items: int) -> np.ndarray:
  """[N, M] float32 multi-hot of the items each client's request names (-1 slots ignored)."""
  rows = np.repeat(np.arange(requests.shape[0]), requests.shape[1])
  items = requests.reshape(-1)
  keep = items >= 0
  hot = np.zeros((requests.shape[0], num_items), np.float32)
  hot[rows[keep], items[keep]] = 1.0
  return hot


def request_membership_auc(requests: np.ndarray, candidates: np.ndarray,
                           filtered: np.ndarray) -> float:
  """How well the server tells, from requests, which candidates it sent are in a client's
  private history (which the client filters out before ranking).

  The server's guess for each real candidate: 2 if the request does not name it, else its
  position in the request over the request's length (a late name is likelier a decoy). AUC over
  every (client, real candidate) pair; 0.5 = the request says nothing about it.

  Args:
    requests: [N, L] int32 the items each request names, in the order sent (-1 empty).
    candidates: [N, K] int32 the candidates the server sent (-1 pads).
    filtered: [N, K] bool the candidates each client filtered out as privately known (the answer
      key, never attack input).
  """
  match = candidates[:, :, None] == np.where(requests >= 0, requests, -2)[:, None, :]
  named = match.any(-1)
  position = np.argmax(match, -1) / max(requests.shape[1], 1)
  guess = np.where(named, position, 2.0)
  real = candidates >= 0
  return roc_auc(guess[real], filtered[real])


def _report(report: AttackReport) -> dict[str, Any]:
  return {"auc": report.auc, "accuracy": report.accuracy,
          "majority_accuracy": report.majority_accuracy, "classes": report.num_classes}


def audit(*, uploads: np.ndarray, lifts: np.ndarray, declared: np.ndarray,
          examples: ClientExamples, requests: np.ndarray, candidates: np.ndarray,
          filtered: np.ndarray, num_items: int, attributes: dict[str, np.ndarray],
          seed: int) -> dict[str, Any]:
  """Scores every attack. `attributes` maps a name to [N] integer labels (the answer key).

  The attack on the candidate lists the server itself computed (`candidates`, [N, K]) is the
  baseline for the one on requests: a request can only leak what goes beyond it. `declared`
  [N, 3] is what each upload says beside its update; `filtered` [N, K] marks the serving
  candidates each client filtered out as privately known (answer key of request membership).
  """
  interacted = np.asarray(examples.labels).reshape(lifts.shape) > 0
  valid = np.asarray(examples.mask).reshape(lifts.shape) > 0
  # A non-finite upload (a client whose training diverged from a noisy Theta, say) is refused
  # by the server and teaches it nothing: it reads as all zeros, and its candidates as unscored.
  unusable = ~(np.isfinite(uploads).all(axis=1) & np.isfinite(np.where(valid, lifts, 0)).all(axis=1))
  uploads = np.where(unusable[:, None], 0.0, uploads)
  valid = valid & ~unusable[:, None]
  requested = request_features(requests, num_items)
  return {
      "unusable_uploads": int(unusable.sum()),
      "attribute_from_uploads": {name: _report(attribute_inference(uploads, labels, seed=seed))
                                 for name, labels in attributes.items()},
      "attribute_from_requests": {name: _report(attribute_inference(requested, labels, seed=seed))
                                  for name, labels in attributes.items()},
      "attribute_from_candidates": {name: _report(attribute_inference(
          request_features(candidates, num_items), labels, seed=seed))
                                    for name, labels in attributes.items()},
      "interaction_from_uploads_auc": interaction_inference_auc(lifts, interacted, valid),
      "attribute_from_declared": {name: _report(attribute_inference(declared, labels, seed=seed))
                                  for name, labels in attributes.items()},
      "private_count_from_declared": _count_report(declared, _private_candidates(examples),
                                                   seed),
      "request_membership_auc": request_membership_auc(requests, candidates, filtered),
  }


def _private_candidates(examples: ClientExamples) -> np.ndarray:
  """[N] how many of the candidates each client trained on it filtered out as privately known."""
  items, mask = np.asarray(examples.items), np.asarray(examples.mask)
  return ((items >= 0) & (mask == 0)).reshape(items.shape[0], -1).sum(1)


def _count_report(declared: np.ndarray, counts: np.ndarray, seed: int) -> dict[str, Any]:
  """The attribute attack on "holds more privately known candidates than the median client"."""
  above = (counts > np.median(counts)).astype(np.int64)
  if above.min() == above.max():  # one class: nothing to tell apart
    return {"auc": float("nan"), "accuracy": float("nan"), "majority_accuracy": 1.0,
            "classes": 1}
  return _report(attribute_inference(declared, above, seed=seed))
