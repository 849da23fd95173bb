"""The server side of a real deployment, independent of the federated runtime.

The Flower server app (`flower_server.py`) only moves messages; every decision is made here,
with the simulator's own server functions: recall (`pipeline.train_recall`), the cohort schedule,
the DP plan, the round's server half (`ranking.federated.server_round`) and re-rank. Inputs are
public data and client uploads only (see `pprsf_jax.types`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from pprsf_jax import pipeline
from pprsf_jax.aggregation import FederatedAlgorithm, ServerState, stack_uploads
from pprsf_jax.config import ConfigError, RunConfig, check_against_data
from pprsf_jax.privacy import PrivacyPlan, plan_privacy, private_algorithm
from pprsf_jax.privacy.server_view import IGNORED
from pprsf_jax.ranking import ItemTable, LocalTraining, make_item_table
from pprsf_jax.ranking.client import public_upload_counts
from pprsf_jax.ranking.federated import SERVER_STREAM, client_key, server_round
from pprsf_jax.ranking.sampling import CohortSchedule, cohort_schedule
from pprsf_jax.rerank import final_list, make_reranker
from pprsf_jax.types import (SERVING, CandidateList, Candidates, ClientUpload, PublicData,
                             TopTRequest)


def check_deployable(config: RunConfig) -> None:
  """Refuses settings a deployment of stateless devices cannot honour, naming the field.

  Raises:
    ConfigError: for client state kept across rounds (SCAFFOLD, top-k error feedback), secure
      aggregation, request decoys, the audit, and simulated faults or attacks.
  """
  fed, privacy = config.federated, config.privacy
  refused = {
      "federated.local_algorithm": (fed.local_algorithm == "scaffold",
                                    "SCAFFOLD keeps a control variate on each device"),
      "federated.compression": (fed.compression == "top_k",
                                "top-k keeps an error-feedback residual on each device"),
      "privacy.secure_aggregation": (privacy.secure_aggregation,
                                     "pairwise masking needs a key agreement round"),
      "privacy.request_decoys": (privacy.request_decoys > 0, "decoys are simulated only"),
      "privacy.audit": (privacy.audit, "the curious-server audit is a simulation"),
      "federated.dropout_rate": (fed.dropout_rate > 0, "real devices drop out by themselves"),
      "federated.straggler_rate": (fed.straggler_rate > 0, "real devices straggle by themselves"),
      "federated.attack": (fed.attack != "none", "attacks are simulated only"),
  }
  for field, (bad, why) in refused.items():
    if bad:
      raise ConfigError(f"{field} is not supported in a deployment: {why}")


class Setup(NamedTuple):
  """What the server prepares before the first round. Public only."""

  config: RunConfig
  public: PublicData
  recall: pipeline.RecallModels
  item_table: ItemTable
  local: LocalTraining
  training_candidates: tuple[Candidates, ...]  # one [N, K] list per cross-fitting fold
  # [N] each user's upload weight and planned steps, from the lists above (`declared_counts`)
  declared_weights: np.ndarray
  declared_steps: np.ndarray
  schedule: CohortSchedule  # [rounds] client ids per round, each computed when asked for
  plan: PrivacyPlan | None
  algorithm: FederatedAlgorithm


def prepare(config: RunConfig, public: PublicData, server_view=IGNORED) -> Setup:
  """Recall on public data, training candidates, the cohort schedule and the DP plan (what it
  reads and sends is recorded in `server_view`, `pprsf_jax.privacy.server_view`)."""
  check_deployable(config)
  check_against_data(config, public.num_users, public.num_items)
  fed = config.federated
  server_view.record("recall.history", public.history)
  server_view.record("recall.folds", public.fold)
  server_view.record("recall.devices", public.devices)
  recall = pipeline.train_recall(public, config.recall, config.seed)
  candidates = tuple(pipeline.candidates_for(fold.params, config.recall.num_candidates,
                                             fold.known, config.recall)
                     for fold in recall.folds)
  for fold_candidates in candidates:
    server_view.record("candidates.training", fold_candidates)
  schedule = cohort_schedule(public.num_users, fed.clients_per_round, fed.rounds, config.seed,
                             fed.sampling)
  plan = plan_privacy(config.privacy, fed, public.num_users, schedule)
  local = pipeline.local_training(config)
  return Setup(config=config, public=public, recall=recall,
               item_table=make_item_table(public.catalogue),
               local=local, training_candidates=candidates,
               **declared_counts(candidates, local),
               schedule=schedule, plan=plan,
               algorithm=private_algorithm(fed, public.num_users, plan))


def initial_theta(setup: Setup, num_user_features: int):
  """Theta_0, as the simulator draws it (the devices report the width of their features)."""
  return setup.local.task.init_shared(pipeline.stream_key(setup.config.seed, "theta0"),
                                     pipeline.model_dims(num_user_features, setup.item_table))


def candidate_list(source: pipeline.Recall, candidates: Candidates, user: int,
                   fold: int) -> CandidateList:
  """One user's list as it ships: ids, scores, the candidates' neighbour rows, public counts."""
  items = candidates.items[user]
  rows = np.maximum(items, 0)
  real = (items >= 0)[:, None]
  return CandidateList(
      fold=fold, items=items.astype(np.int32), scores=candidates.scores[user].astype(np.float32),
      neighbor_items=np.where(real, source.neighbors.items[rows], -1).astype(np.int32),
      neighbor_similarity=np.where(real, source.neighbors.similarity[rows], 0).astype(np.float32),
      public_counts=source.counts.astype(np.float32))


def training_lists(setup: Setup, user: int) -> list[CandidateList]:
  """Everything a device needs from the server to train in any round: one list per fold."""
  return [candidate_list(fold, candidates, user, f)
          for f, (fold, candidates) in enumerate(zip(setup.recall.folds,
                                                     setup.training_candidates))]


def serving_candidates(setup: Setup, server_view=IGNORED) -> Candidates:
  """[N, K] candidates for serving, from the model trained on the whole public log."""
  serving = setup.recall.serving
  candidates = pipeline.candidates_for(serving.params, setup.config.recall.num_candidates,
                                       setup.public.history, setup.config.recall)
  server_view.record("candidates.serving", candidates)
  return candidates


def serving_list(setup: Setup, candidates: Candidates, user: int) -> CandidateList:
  return candidate_list(setup.recall.serving, candidates, user, SERVING)


class Received(NamedTuple):
  """One device's reply to a training round, decoded (or why it could not be)."""

  client_id: int
  delta: Any  # the parameter update, or None when the reply was unusable
  num_bytes: float
  problem: str | None  # why the upload cannot be used (error reply, undecodable), or None


class RoundOutcome(NamedTuple):
  server: ServerState
  accepted: np.ndarray  # [C] bool, in cohort order
  refused: dict[int, str]  # client id -> reason, for uploads that did not count


def declared_counts(candidates: tuple[Candidates, ...], local: LocalTraining) -> dict:
  """Every user's upload weight and planned local steps, from the lists the server sends it
  (vmapped once per run): the simulator's clients declare the same
  (`ranking.client.public_upload_counts`)."""
  items = jax.numpy.asarray(np.stack([c.items for c in candidates], axis=1))  # [N, S, K]
  weights, steps = jax.vmap(lambda own: public_upload_counts(own, local))(items)
  return {"declared_weights": np.asarray(weights), "declared_steps": np.asarray(steps)}


@functools.partial(jax.jit, static_argnames=("algorithm", "max_update_norm"))
def _server_round(server, uploads, arrived, key, *, algorithm, max_update_norm):
  return server_round(server, uploads, arrived, algorithm=algorithm,
                      max_update_norm=max_update_norm, key=key)


def aggregate(setup: Setup, server: ServerState, received: Sequence[Received],
              round_index: int, server_view=IGNORED) -> RoundOutcome:
  """The server's half of a round on the uploads that came back (cohort order).

  Uploads of the wrong structure, shape or dtype, non-finite ones and (with
  `federated.max_update_norm`) oversized ones are refused by `stack_uploads`, with the reason;
  a device that did not answer or answered an error counts as dropped.
  """
  fed = setup.config.federated
  deltas = [r.delta for r in received]
  stacked = stack_uploads([d if d is not None else () for d in deltas], server.params,
                          max_norm=fed.max_update_norm)
  refused = {}
  num_users = setup.public.num_users
  known = np.asarray([0 <= r.client_id < num_users for r in received], bool)
  for r, reason, ours in zip(received, stacked.reasons, known):
    if not ours and reason is None:
      reason = f"client id {r.client_id} is not a user of this federation (0 .. {num_users - 1})"
    if r.problem is not None or reason is not None:
      refused[r.client_id] = r.problem or reason
  # A refused upload is masked out whatever it declares: unknown ids read user 0's counts.
  ids = np.where(known, np.asarray([r.client_id for r in received], np.int64), 0)
  uploads = ClientUpload(delta=stacked.updates, num_examples=setup.declared_weights[ids],
                         num_steps=setup.declared_steps[ids], extra=(),
                         num_bytes=np.asarray([r.num_bytes for r in received], np.float32))
  server_view.record("upload.declared", (np.asarray([r.client_id for r in received]),
                                         uploads._replace(delta=(), extra=())))
  arrived = (stacked.mask > 0) & known
  key = client_key(pipeline.stream_key(setup.config.seed, "clients"), round_index, SERVER_STREAM)
  server, accepted = _server_round(server, uploads, arrived, key, algorithm=setup.algorithm,
                                   max_update_norm=fed.max_update_norm)
  accepted = np.asarray(accepted)
  for r, taken in zip(received, accepted):
    if not taken and r.client_id not in refused:  # the round's float32 check, at the boundary
      refused[r.client_id] = "refused by the round's own finiteness / norm check"
  return RoundOutcome(server=server, accepted=accepted, refused=refused)


def rerank(setup: Setup, requests: TopTRequest, server_view=IGNORED) -> np.ndarray:
  """[N, top_k] final lists: the configured re-rank over every client's Top-T request."""
  server_view.record("request.items", requests.items)
  context = pipeline.rerank_context(setup.public, setup.public.history)
  server_view.record("rerank.context", context)
  reranked = make_reranker(setup.config.rerank)(
      TopTRequest(items=jax.numpy.asarray(requests.items),
                  scores=jax.numpy.asarray(requests.scores)), context)
  return np.asarray(final_list(reranked, setup.config.eval.top_k))
