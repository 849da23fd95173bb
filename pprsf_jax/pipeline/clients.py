"""Client-side building blocks of a run, for every simulated client at once (vmapped): the
examples a client builds from the candidates it was sent, its ranking, its decoys. A deployed
device does the same for itself alone (`pprsf_jax.deploy.device`)."""

from __future__ import annotations

import functools

import jax

from pprsf_jax.config import RecallConfig, RunConfig
from pprsf_jax.pipeline.server import Recall, RecallModels, candidates_for
from pprsf_jax.privacy.decoys import drop_decoys, pad_request
from pprsf_jax.privacy.server_view import IGNORED
from pprsf_jax.ranking import (ClientExamples, ItemTable, LocalTraining, ModelDims, ModelSpec,
                               build_model, candidate_training, num_features, rank_candidates)
from pprsf_jax.ranking.examples import build_examples, stack_lists
from pprsf_jax.types import Candidates, Interactions, PrivateData, PublicData, TopTRequest


def examples_from_recall(source: Recall, known_private: Interactions, positives: Interactions, *,
                         public: PublicData, private: PrivateData, config: RecallConfig,
                         candidates: Candidates | None = None) -> ClientExamples:
  """Server: candidates excluding what it knows (or the given ones, ordered by the recall
  model); clients: features, private filter, labels. Every client at once ([N, 1, K, ...])."""
  if candidates is None:
    candidates = candidates_for(source.params, config.num_candidates, source.known, config)
  return build_examples(candidates, private.user_features,
                        history=source.known + known_private, positives=positives,
                        genres=public.catalogue.genres, neighbors=source.neighbors,
                        public_counts=source.counts)


def training_examples(recall: RecallModels, public: PublicData, private: PrivateData,
                      config: RecallConfig, server_view=IGNORED) -> ClientExamples:
  """Every client's ranking-training examples [N, S, K, ...]: the server sends each fold's
  candidates (recorded in `server_view`); clients label them with that fold's interactions,
  which its recall model never saw (one list per fold).
  """
  lists = []
  for f, fold_recall in enumerate(recall.folds):
    candidates = candidates_for(fold_recall.params, config.num_candidates, fold_recall.known,
                                config)
    server_view.record("candidates.training", candidates)
    lists.append(examples_from_recall(
        fold_recall, private.context(f), public.labels(f) + private.labels(f), public=public,
        private=private, config=config, candidates=candidates))
  return stack_lists(lists)


def local_training(config: RunConfig) -> LocalTraining:
  """The ranking task (the model `ranking.model` names, on the server's candidate lists under
  `ranking.loss`) and the clients' local optimisation a config describes."""
  ranking = config.ranking
  model = build_model(ranking.model, ModelSpec(
      hidden_sizes=ranking.hidden_sizes, embedding_dim=ranking.embedding_dim,
      cross_layers=ranking.cross_layers, embedding_init_std=ranking.embedding_init_std))
  per_step = ranking.batch_size if ranking.loss == "bce" else ranking.lists_per_step
  return candidate_training(model, loss=ranking.loss, units_per_step=per_step,
                            epochs=ranking.local_epochs, learning_rate=ranking.learning_rate,
                            personal_learning_rate=ranking.personal_learning_rate or None)


def model_dims(num_user_features: int, item_table: ItemTable) -> ModelDims:
  """The sizes the ranking model is built for: the feature-row width (which grows with the
  width of the clients' private attributes) and the catalogue."""
  return ModelDims(num_features=num_features(num_user_features, item_table),
                   num_items=int(item_table.features.shape[0]))


@functools.partial(jax.jit, static_argnames=("local", "top_t", "per_client_params"))
def rank_all(params, personal, examples: ClientExamples, item_table: ItemTable, *,
             local: LocalTraining, top_t: int, per_client_params: bool) -> TopTRequest:
  """Every client ranks its own candidates on its device (vmapped in simulation), with the
  shared parameters (one Θ, or one per client) and its own personal state ([N, ...])."""
  rank = lambda p, mine, ex: rank_candidates(p, mine, ex, item_table, task=local.task,
                                             top_t=top_t)
  items, scores = jax.vmap(rank, in_axes=(0 if per_client_params else None, 0, 0))(
      params, personal, examples)
  return TopTRequest(items=items, scores=scores)


@functools.partial(jax.jit, static_argnames=("num_decoys",))
def pad_requests(request: TopTRequest, examples: ClientExamples, key, *,
                 num_decoys: int) -> tuple[TopTRequest, jax.Array]:
  """Every client pads its request with decoys (client side; the decoys [U, T + D] stay there)."""
  users = request.items.shape[0]
  # Decoys come from what the server sent (items), never from the client's private filter (mask).
  items, scores, decoys = jax.vmap(pad_request, in_axes=(0, 0, 0, 0, None))(
      request.items, request.scores, examples.items.reshape(users, -1),
      jax.random.split(key, users), num_decoys)
  return TopTRequest(items=items, scores=scores), decoys


@functools.partial(jax.jit, static_argnames=("k",))
def drop_all_decoys(ranked_items, decoys, *, k: int) -> jax.Array:
  """[U, k] each client's final list: the server's re-ranked answer without its own decoys."""
  return jax.vmap(lambda items, mine: drop_decoys(items, mine, k))(ranked_items, decoys)
