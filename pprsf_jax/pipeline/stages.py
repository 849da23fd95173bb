"""The run's stages, each a function with typed inputs and a typed output (`pipeline.STAGES`
names them in order; `pipeline.execute` composes them):

  load ─► recall ─► candidates ─► federated_ranking ─► baselines ─► serve ─► evaluate ─► report

Server-side stages receive only public data and what clients send; client-side work (example
building, local training, ranking, decoys) runs inside them for every simulated client at once,
on each client's own private data. What the server receives is recorded in `server_view`
(`pprsf_jax.privacy.server_view`).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any, Callable, NamedTuple

import numpy as np

from pprsf_jax import config as config_lib
from pprsf_jax import preflight
from pprsf_jax.config import RunConfig
from pprsf_jax.data.dataset import AGE_BUCKET_EDGES, FederatedDataset, Partition, build_dataset
from pprsf_jax.data.loo_protocol import pfedrec_protocol
from pprsf_jax.data.movielens import MovieLensTables
from pprsf_jax.metrics import (beyond_accuracy, compare_per_user, evaluate_lists, hit_matrix,
                               per_user_metrics)
from pprsf_jax.metrics.sampled import sample_candidates
from pprsf_jax.pipeline.clients import (drop_all_decoys, examples_from_recall, local_training,
                                        model_dims, pad_requests, rank_all, training_examples)
from pprsf_jax.pipeline.federated import FederatedTraining, attack_setup, train_federated
from pprsf_jax.pipeline.keys import stream_key
from pprsf_jax.pipeline.server import (RecallModels, candidates_for, load_tables, rerank_context,
                                       train_recall)
from pprsf_jax.privacy.curious_server import audit, observe_uploads
from pprsf_jax.privacy.server_view import IGNORED
from pprsf_jax.ranking import (ClientExamples, ItemTable, LocalTraining, ModelDims,
                               init_personal_states, make_item_table, train_central,
                               train_local_only)
from pprsf_jax.ranking.attacks import Attack, poison_examples
from pprsf_jax.ranking.features import standardised_log_counts
from pprsf_jax.recall import item_counts
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.recall.retrieve import rank_given
from pprsf_jax.rerank import Strategy, evaluation_grid, final_list, make_reranker
from pprsf_jax.service import serve_period
from pprsf_jax.service.feedback import ServiceLog
from pprsf_jax.types import Interactions, TopTRequest

logger = logging.getLogger(__name__)

P_FL, P_I, P_SUM = "federated (P_FL)", "local_only (P_i)", "central (P_Sum)"
P_FL_FT, PPRSF = "personalised (P_FL + fine-tune)", "pprsf (P_FL + re-rank)"


# ------------------------------------------------------------------------------------ load
class Loaded(NamedTuple):
  tables: MovieLensTables  # the raw tables (the experimenter's: they hold private attributes)
  data: FederatedDataset  # public (server) and private (device) parts, validation, test


def load(config: RunConfig, *, tables: MovieLensTables | None = None,
         partition: Partition | None = None, server_view=IGNORED) -> Loaded:
  """The data a config names, split into periods and public / private parts, and the job
  checked against it before anything trains (`pprsf_jax.preflight`: raises `PreflightError`).
  `partition` replaces nature's draw of periods and private rows
  (`data.dataset.draw_partition`)."""
  tables = load_tables(config.data, config.seed) if tables is None else tables
  data = build_dataset(tables, config.data, config.seed, partition)
  public = data.public
  preflight.check_run(config, tables, data)
  server_view.record("recall.history", public.history)
  server_view.record("recall.folds", public.fold)
  server_view.record("recall.devices", public.devices)
  logger.info("data: %d users, %d items, %d interactions", public.num_users, public.num_items,
              tables.num_ratings)
  return Loaded(tables, data)


# ------------------------------------------------------------------------------------ recall
def recall(config: RunConfig, loaded: Loaded, *, cache: dict | None = None) -> RecallModels:
  """Server: the recall models on public data. `cache` (a dict the caller keeps) reuses them
  across runs that share data, recall config and seed, as sweeps over federated settings do."""
  key = (config.data, config.recall, config.seed, config.baselines.recall_models)
  if cache is not None and key in cache:
    return cache[key]
  models = train_recall(loaded.data.public, config.recall, config.seed,
                        config.baselines.recall_models)
  if cache is not None:
    cache[key] = models
  return models


# ------------------------------------------------------------------------------------ candidates
class TrainingSet(NamedTuple):
  """What the clients train on: the examples they built from the candidates they were sent."""

  examples: ClientExamples  # [N, S, K, ...] every client's honest examples (the baselines')
  federated_examples: ClientExamples  # the same as the clients train federated (attackers poisoned)
  item_table: ItemTable  # public item features every client reads
  local: LocalTraining  # the ranking task (`ranking.model`) and the clients' local optimisation
  dims: ModelDims  # the sizes the ranking model is built for
  attack: Attack
  attackers: np.ndarray  # [N] bool
  target_item: int  # the item an `item_promotion` attack pushes


def candidates(config: RunConfig, loaded: Loaded, models: RecallModels, *,
               server_view=IGNORED) -> TrainingSet:
  """Server: each fold's K candidates per user; clients: examples from them and private data."""
  public, private = loaded.data.public, loaded.data.private
  examples = training_examples(models, public, private, config.recall, server_view)
  attack, attackers, target_item = attack_setup(config, public)
  # Attackers train on their own poisoned data; the baselines keep the honest examples.
  popularity = standardised_log_counts(item_counts(public.history, public.num_items))
  poisoned = poison_examples(examples, attackers, attack, target_item=target_item,
                             target_popularity=float(popularity[target_item]))
  item_table = make_item_table(public.catalogue)
  return TrainingSet(examples, poisoned, item_table, local_training(config),
                     model_dims(private.user_features.shape[1], item_table), attack, attackers,
                     target_item)


def initial_state(config: RunConfig, training: TrainingSet) -> tuple[Any, Any]:
  """Θ0 and every client's initial personal state [N, ...] (host): the ranking model's starting
  point, from the seed (every stage derives the same)."""
  task, dims = training.local.task, training.dims
  theta0 = task.init_shared(stream_key(config.seed, "theta0"), dims)
  personal0 = init_personal_states(task, dims, stream_key(config.seed, "personal"),
                                   training.examples.mask.shape[0])
  return theta0, personal0


# ------------------------------------------------------------------------------------ federated
def federated_ranking(config: RunConfig, loaded: Loaded, models: RecallModels,
                      training: TrainingSet, *, run_dir: pathlib.Path | None = None,
                      server_view=IGNORED) -> FederatedTraining:
  """P_FL: federated rounds from Θ0, checkpointed into `run_dir/checkpoints` (and resumed from
  there); P_FL's validation NDCG is recorded as it trains."""
  theta0, personal0 = initial_state(config, training)
  return train_federated(
      theta0, personal0, training.federated_examples, training.item_table, config,
      training.local, attackers=training.attackers,
      checkpoints=None if run_dir is None else run_dir / "checkpoints",
      evaluate=_validation_curve(config, loaded, models, training.item_table, training.local),
      server_view=server_view)


def _validation_curve(config: RunConfig, loaded: Loaded, models: RecallModels,
                      item_table: ItemTable, local: LocalTraining
                      ) -> Callable[[Any, Any], float]:
  """(Θ, the clients' personal states) -> validation NDCG@k of P_FL's lists (full ranking of
  the serving candidates at the start of the validation period): the run's learning curve."""
  public, private = loaded.data.public, loaded.data.private
  examples = examples_from_recall(models.serving, private.history, Interactions.empty(),
                                  public=public, private=private, config=config.recall)
  k, m = config.eval.top_k, public.num_items

  def evaluate(params, personal) -> float:
    request = rank_all(params, personal, examples, item_table, local=local,
                       top_t=config.ranking.top_t, per_client_params=False)
    valid = loaded.data.valid.interactions
    return evaluate_lists(np.asarray(request.items[:, :k]), valid, m)[f"ndcg@{k}"]

  return evaluate


# ------------------------------------------------------------------------------------ baselines
class Baselines(NamedTuple):
  """Each a pair (shared parameters, every client's personal state [N, ...])."""

  central: tuple[Any, Any]  # P_Sum: one Θ trained on the pooled examples of every client
  local_only: tuple[Any, Any]  # P_i: Θ [N, ...], each client's trained on its own examples only
  personalised: tuple[Any, Any]  # P_FL + fine-tune: Θ [N, ...], the final Θ fine-tuned on each


def baselines(config: RunConfig, loaded: Loaded, training: TrainingSet,
              federated: FederatedTraining) -> Baselines:
  """The comparison models, trained on the same (honest) examples as P_FL."""
  del loaded  # the training set holds all they read
  local = training.local
  theta0, personal0 = initial_state(config, training)
  examples, item_table = training.examples, training.item_table
  central = train_central(theta0, personal0, examples, item_table,
                          key=stream_key(config.seed, "central"), local=local,
                          epochs=config.baselines.central_epochs)
  local_only = train_local_only(
      theta0, personal0, examples, item_table, seed_key=stream_key(config.seed, "local_only"),
      local=dataclasses.replace(local, epochs=config.baselines.local_only_epochs))
  personalised = train_local_only(
      federated.params, federated.clients.personal, examples, item_table,
      seed_key=stream_key(config.seed, "finetune"),
      local=dataclasses.replace(local, epochs=config.baselines.finetune_epochs))
  return Baselines(central, local_only, personalised)


# ------------------------------------------------------------------------------------ serve
class Served(NamedTuple):
  """One serving period."""

  lists: dict[str, np.ndarray]  # [U, top_k] each method's final lists
  requests: np.ndarray  # [U, T + D] the items each request names, as the server received them
  candidates: np.ndarray  # [U, K] the candidates the server sent
  filtered: np.ndarray  # [U, K] bool: those each client filtered out as privately known
  variants: dict[str, np.ndarray]  # PPRSF's final lists under other re-rank settings
  orders: dict[str, np.ndarray]  # P_FL's and P_i's ordering of every candidate


class Serving(NamedTuple):
  valid: Served  # period 1
  service: ServiceLog  # what users did with period 1's lists, logged public / private
  test: Served  # period 2, after the logs fed back


class _Models(NamedTuple):
  """Everything a serving period ranks with."""

  recall: RecallModels
  item_table: ItemTable
  local: LocalTraining
  p_fl: tuple[Any, Any]  # (Θ, every client's personal state [N, ...])
  baselines: Baselines
  sampled_items: dict[int, np.ndarray] | None  # sampled protocol: each period's item set


def serve(config: RunConfig, loaded: Loaded, models: RecallModels, training: TrainingSet,
          federated: FederatedTraining, trained: Baselines, *, server_view=IGNORED) -> Serving:
  """Period 1 (validation), its service log fed back, then period 2 (test)."""
  public, private = loaded.data.public, loaded.data.private
  ranking = _Models(models, training.item_table, training.local,
                    (federated.params, federated.clients.personal), trained,
                    _sampled_items(config, loaded))
  valid = _serve_period(config, loaded, ranking, public.history, private.history, 1,
                        server_view=server_view)
  service = serve_period(valid.lists[PPRSF], loaded.data.valid, public.num_items)
  test = _serve_period(config, loaded, ranking, public.history + service.public,
                       private.history + service.private, 2, rerank_settings=True,
                       server_view=server_view)
  return Serving(valid, service, test)


def _sampled_items(config: RunConfig, loaded: Loaded) -> dict[int, np.ndarray] | None:
  """The sampled protocol fixes each period's item set (held-out items + negatives): PFedRec's
  own lists under `data.split="pfedrec_loo"`, else drawn here."""
  sampled = config.eval.sampled_negatives
  if not sampled:
    return None
  if config.data.split == "pfedrec_loo":
    return pfedrec_protocol(loaded.tables).lists
  data = loaded.data
  public, private = data.public, data.private
  everything_ever = (public.history + private.history + data.valid.interactions
                     + data.test.interactions)
  return {period: sample_candidates(truth.interactions, everything_ever, public.num_users,
                                    public.num_items, sampled, config.seed, period)
          for period, truth in ((1, data.valid), (2, data.test))}


def _serve_period(config: RunConfig, loaded: Loaded, ranking: _Models, known_public: Interactions,
                  known_private: Interactions, period: int, *, rerank_settings: bool = False,
                  server_view=IGNORED) -> Served:
  """One serving round: every method's lists, the requests the clients sent the server and
  the candidate lists it sent them. Under the sampled protocol every method ranks the
  period's sampled items instead of the whole catalogue."""
  public, private = loaded.data.public, loaded.data.private
  serving = ranking.recall.serving._replace(known=known_public)  # the logs grew since training
  server_view.record("service.public_log", known_public)
  if ranking.sampled_items is not None:
    sent = rank_given(serving.params, ranking.sampled_items[period],
                      user_chunk=config.recall.user_chunk)
  else:
    sent = candidates_for(serving.params, config.recall.num_candidates, serving.known,
                          config.recall)
  server_view.record("candidates.serving", sent)
  examples = examples_from_recall(serving, known_private, Interactions.empty(), public=public,
                                  private=private, config=config.recall, candidates=sent)
  orders, ranked = _rank_on_devices(config, ranking, examples)
  context = rerank_context(public, known_public)
  server_view.record("rerank.context", context)
  request, answer = _request_and_answer(config, ranked["p_fl"], examples, context, period)
  server_view.record("request.items", request.items)
  final = answer(make_reranker(config.rerank))
  # With `rerank_settings`, the same requests under other re-rank settings (their table).
  variants = ({name: final if setting == config.rerank else answer(make_reranker(setting))
               for name, setting in evaluation_grid(config.rerank).items()}
              if rerank_settings else {})
  top_k = config.eval.top_k
  lists = {
      **_recall_only_lists(config, ranking, known_public + known_private, period),
      P_I: np.asarray(ranked["p_i"].items[:, :top_k]),
      P_SUM: np.asarray(ranked["p_sum"].items[:, :top_k]),
      P_FL: np.asarray(ranked["p_fl"].items[:, :top_k]),
      P_FL_FT: np.asarray(ranked["p_fl_ft"].items[:, :top_k]),
      PPRSF: final,
  }
  n = public.num_users
  items = np.asarray(examples.items.reshape(n, -1))
  return Served(lists=lists, requests=np.asarray(request.items), candidates=items,
                filtered=(items >= 0) & (np.asarray(examples.mask.reshape(n, -1)) == 0),
                variants=variants, orders={name: np.asarray(o.items) for name, o in orders.items()})


def _rank_on_devices(config: RunConfig, ranking: _Models, examples: ClientExamples
                     ) -> tuple[dict[str, TopTRequest], dict[str, TopTRequest]]:
  """Every model ranks every client's candidates on the client. P_FL and P_i order every
  candidate (their Top-T is the head): the per-client comparison reads the whole ordering."""
  top_t = config.ranking.top_t
  rank = lambda model, per_client, t: rank_all(
      *model, examples, ranking.item_table, local=ranking.local, top_t=t,
      per_client_params=per_client)
  whole = examples.items.shape[-2] * examples.items.shape[-1]
  orders = {P_FL: rank(ranking.p_fl, False, whole),
            P_I: rank(ranking.baselines.local_only, True, whole)}
  head = lambda request: TopTRequest(items=request.items[:, :top_t],
                                     scores=request.scores[:, :top_t])
  ranked = {"p_fl": head(orders[P_FL]), "p_sum": rank(ranking.baselines.central, False, top_t),
            "p_i": head(orders[P_I]), "p_fl_ft": rank(ranking.baselines.personalised, True, top_t)}
  return orders, ranked


def _request_and_answer(config: RunConfig, request: TopTRequest, examples: ClientExamples,
                        context, period: int
                        ) -> tuple[TopTRequest, Callable[[Strategy], np.ndarray]]:
  """The request every client sends (P_FL's Top-T, hidden among decoys when configured), and
  `answer(strategy)`: [U, top_k] what each client shows of the server's re-ranked answer."""
  decoys, top_k = config.privacy.request_decoys, config.eval.top_k
  if not decoys:
    return request, lambda rerank: np.asarray(final_list(rerank(request, context), top_k))
  padded, mine = pad_requests(request, examples, stream_key(config.seed, "decoys", period),
                              num_decoys=decoys)
  # Each client drops its own decoys from the answer; the decoys never leave it.
  return padded, lambda rerank: np.asarray(
      drop_all_decoys(rerank(padded, context).items, mine, k=top_k))


def _recall_only_lists(config: RunConfig, ranking: _Models, everything: Interactions,
                       period: int) -> dict[str, np.ndarray]:
  """[U, top_k] each recall-only baseline's lists, excluding everything known (the protocol's
  full exclusion), or ranking the period's sampled items."""

  def lists(params: RecallParams) -> np.ndarray:
    if ranking.sampled_items is not None:
      return rank_given(params, ranking.sampled_items[period],
                        user_chunk=config.recall.user_chunk).items[:, :config.eval.top_k]
    return candidates_for(params, config.eval.top_k, everything, config.recall).items

  return {name: lists(params) for name, params in ranking.recall.baselines.items()}


# ------------------------------------------------------------------------------------ evaluate
class Evaluation(NamedTuple):
  valid: dict[str, dict[str, float]]  # method -> validation metrics
  test: dict[str, dict[str, float]]  # method -> test metrics (accuracy and beyond)
  rerank_settings: dict[str, dict[str, float]]  # PPRSF's test metrics under other re-rank settings
  audit: dict[str, Any] | None  # the curious server's attacks, when `privacy.audit`


def evaluate(config: RunConfig, loaded: Loaded, training: TrainingSet,
             federated: FederatedTraining, serving: Serving) -> Evaluation:
  """Every method's lists scored against the held-out periods; the privacy audit."""
  data, m = loaded.data, loaded.data.public.num_items
  public = data.public
  valid = {name: evaluate_lists(lists, data.valid.interactions, m)
           for name, lists in serving.valid.lists.items()}
  # Beyond accuracy: popularity (novelty) as the server knows it from the public train log.
  counts = item_counts(public.history, m)
  scores = lambda lists: (evaluate_lists(lists, data.test.interactions, m)
                          | beyond_accuracy(lists, public.catalogue.genres, counts,
                                            public.num_users))
  return Evaluation(
      valid=valid, test={name: scores(lists) for name, lists in serving.test.lists.items()},
      rerank_settings={name: scores(lists) for name, lists in serving.test.variants.items()},
      audit=(_audit(config, loaded, training, federated, serving.test)
             if config.privacy.audit else None))


def _audit(config: RunConfig, loaded: Loaded, training: TrainingSet,
           federated: FederatedTraining, served: Served) -> dict[str, Any]:
  """The curious server's attacks on the uploads of the round after training and the test
  period's Top-T requests, scored against the users' true attributes."""
  uploads, lifts, declared = observe_uploads(
      federated.params, training.federated_examples, training.item_table,
      local=training.local, algorithm=federated.algorithm,
      broadcast=federated.broadcast, states=federated.clients,
      seed_key=stream_key(config.seed, "clients"), round_index=config.federated.rounds,
      secure=federated.secure,
      stand_in_personal=training.local.task.init_personal(
          stream_key(config.seed, "audit"), training.dims))
  tables = loaded.tables
  attributes = {"gender": tables.gender.astype(np.int64),
                "age_group": np.searchsorted(AGE_BUCKET_EDGES, tables.age, side="right"),
                "occupation": tables.occupation.astype(np.int64)}
  return audit(uploads=uploads, lifts=lifts, declared=declared,
               examples=training.federated_examples, requests=served.requests,
               candidates=served.candidates, filtered=served.filtered,
               num_items=loaded.data.public.num_items, attributes=attributes, seed=config.seed)


# ------------------------------------------------------------------------------------ report
def report(config: RunConfig, loaded: Loaded, training: TrainingSet,
           federated: FederatedTraining, serving: Serving, evaluation: Evaluation,
           timings: dict[str, float]) -> dict[str, Any]:
  """The run's results as JSON-ready values (`results.json`; keys in docs/api.md)."""
  tables, data = loaded.tables, loaded.data
  public, m, top_k = data.public, data.public.num_items, config.eval.top_k
  ndcg = f"ndcg@{top_k}"
  p_fl, p_sum = evaluation.test[P_FL][ndcg], evaluation.test[P_SUM][ndcg]
  privacy = dict(federated.privacy)
  if evaluation.audit is not None:
    privacy["audit"] = evaluation.audit
  return {
      "config": config_lib.to_dict(config),
      "dataset": {"name": tables.name, "source_format": tables.source_format,
                  "users": public.num_users, "items": m, "interactions": tables.num_ratings,
                  "public_train": public.history.size, "private_train": data.private.history.size,
                  "valid": data.valid.interactions.size, "test": data.test.interactions.size},
      "test": evaluation.test,
      # PPRSF's final test lists under each re-rank setting of `rerank.evaluation_grid`.
      "rerank_settings": evaluation.rerank_settings,
      "valid": evaluation.valid,
      "delta": {"metric": ndcg, "p_fl": p_fl, "p_sum": p_sum, "absolute": abs(p_sum - p_fl),
                "relative": abs(p_sum - p_fl) / p_sum if p_sum > 0 else float("nan")},
      "local_only": _local_only_comparison(serving.test, ndcg, data.test.interactions, m),
      "federated": _federated_record(config, federated),
      "privacy": privacy,
      "attack": {"kind": training.attack.kind, "attackers": int(training.attackers.sum()),
                 "target_item": training.target_item,
                 # Share of each method's final test lists that contain the target item.
                 "target_exposure": {
                     name: float(np.mean(np.any(lists == training.target_item, axis=1)))
                     for name, lists in serving.test.lists.items()}},
      "service": serving.service.stats._asdict(),
      "communication_bytes_per_client_per_round": _communication(config, federated),
      "timings_s": timings,  # the caller's dict: it gains this stage's own time when it ends
  }


def _local_only_comparison(test: Served, ndcg: str, truth: Interactions,
                           num_items: int) -> dict[str, Any]:
  """P_FL against each client's own P_i on its final top-k list; "whole_candidate_list": the
  same on each model's ordering of all the client's candidates (K-deep NDCG)."""
  fl_user, local_user = _per_user_pair(test.lists, ndcg, truth, num_items)
  ndcg_whole = f"ndcg@{test.orders[P_FL].shape[1]}"
  fl_whole, local_whole = _per_user_pair(test.orders, ndcg_whole, truth, num_items)
  return {"mean": float(local_user.mean()), "best": float(local_user.max()),
          **compare_per_user(fl_user, local_user),
          "whole_candidate_list": {"metric": ndcg_whole,
                                   **compare_per_user(fl_whole, local_whole)},
          # Users with test items, in user order: the per-client figure of the run folder.
          "per_user": {"metric": ndcg, "p_fl": fl_user.tolist(), "p_i": local_user.tolist()}}


def _per_user_pair(lists: dict[str, np.ndarray], metric: str, truth: Interactions,
                   num_items: int) -> tuple[np.ndarray, np.ndarray]:
  """P_FL's and P_i's per-user `metric` on `lists` [U, k], users with test items only."""
  per_user = {name: per_user_metrics(*hit_matrix(lists[name], truth, num_items))[metric]
              for name in (P_FL, P_I)}
  has_test = ~np.isnan(per_user[P_FL])
  return per_user[P_FL][has_test], per_user[P_I][has_test]


def _federated_record(config: RunConfig, federated: FederatedTraining) -> dict[str, Any]:
  rounds = config.federated.rounds
  secure = federated.secure
  return {
      "rounds": rounds, "final_loss": federated.losses[-1], "losses": federated.losses,
      "rejected_uploads": federated.rejected,
      # P_FL's validation NDCG@k after every eval.every_rounds-th round (None between), beside
      # every method's final validation figure in "valid".
      "valid_curve": federated.curve,
      "dropped_clients": federated.dropped, "straggler_clients": federated.stragglers,
      "client_state_bytes_all_clients": federated.client_state_bytes,
      "secure_aggregation": (None if secure is None else {
          "fractional_bits": secure.fractional_bits, "bound": secure.max_abs_value,
          "clipped_entries": federated.secure_clipped}),
      # Every round's figures (metrics.jsonl holds the same, one line a round).
      "per_round": {"round": list(range(1, rounds + 1)), **federated.per_round,
                    "valid_ndcg": federated.curve},
  }


def _communication(config: RunConfig, federated: FederatedTraining) -> dict[str, float]:
  k, top_t = config.recall.num_candidates, config.ranking.top_t
  return {
      "down_theta_and_broadcast": federated.broadcast_bytes,
      "up_update": federated.upload_bytes, "up_update_uncompressed": federated.dense_upload_bytes,
      "down_candidates": k * 12,  # id, recall score, popularity
      "down_neighbor_lists": k * config.recall.num_neighbors * 8,
      "up_top_t": (top_t + config.privacy.request_decoys) * 8,  # id + score
  }
