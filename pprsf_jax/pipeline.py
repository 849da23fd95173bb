"""The orchestrator: wires the four layers into one run. No maths lives here.

  server: recall on public data ─► K candidates ─► client: features + private data, local SGD
  ─► uploads ─► server: aggregate ─► … rounds … ─► client: rank, send Top-T ─► server: re-rank
  ─► client: service logs the period (public → server, private → device) ─► next period.

Each side only receives what it may see (see `pprsf_jax.types`). The comparison models (recall
only, P_i, P_Sum) are trained beside the pipeline on the same data.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from pprsf_jax import config as config_lib
from pprsf_jax import checkpoint
from pprsf_jax.aggregation import client_state_bytes, init_client_states, init_server_state
from pprsf_jax.config import DataConfig, RecallConfig, RunConfig
from pprsf_jax.data.dataset import AGE_BUCKET_EDGES, FederatedDataset, Partition, build_dataset
from pprsf_jax.data.movielens import MovieLensTables, load_movielens
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.metrics import (beyond_accuracy, compare_per_user, evaluate_lists, hit_matrix,
                               per_user_metrics)
from pprsf_jax.metrics.sampled import sample_candidates
from pprsf_jax.privacy import plan_privacy, privacy_report, private_algorithm
from pprsf_jax.privacy.central_dp import current_clip_norm
from pprsf_jax.privacy.curious_server import audit, observe_uploads
from pprsf_jax.privacy.decoys import drop_decoys, pad_request
from pprsf_jax.privacy.secure_round import config_for_cohort
from pprsf_jax.privacy.server_view import IGNORED
from pprsf_jax.ranking import (ClientExamples, ItemTable, LocalTraining, RankingMLP,
                               gather_client_states, init_params, make_item_table, make_round,
                               num_features, rank_candidates, scatter_client_states,
                               train_central, train_local_only)
from pprsf_jax.ranking import sharding
from pprsf_jax.ranking.attacks import Attack, choose_attackers, poison_examples
from pprsf_jax.ranking.examples import build_examples, stack_lists
from pprsf_jax.ranking.faults import FaultModel
from pprsf_jax.ranking.features import standardised_log_counts
from pprsf_jax.ranking.sampling import cohort_schedule
from pprsf_jax.ranking.streaming import CohortSource, StackedCohorts, prefetched
from pprsf_jax.recall import RECALL_MODELS, item_counts, retrieve
from pprsf_jax.recall.item_knn import ItemNeighbors, item_neighbors
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.recall.retrieve import padded_item_lists, rank_given
from pprsf_jax.rerank import (RerankContext, Strategy, evaluation_grid, final_list,
                             make_reranker)
from pprsf_jax.service import serve_period
from pprsf_jax.types import Candidates, Interactions, PrivateData, PublicData, TopTRequest

# The run's stages, in order: (name, what it does). `run` composes them; each is a function of
# this module that can be called or replaced on its own.
STAGES: tuple[tuple[str, str], ...] = (
    ("load", "read the data and split it into public (server) and private (device) parts"),
    ("recall", "train the server's recall models on public data"),
    ("candidates", "send each client K candidates per training fold; clients build examples"),
    ("federated_ranking", "train the ranking model by federated rounds (P_FL)"),
    ("baselines", "train the comparison models: pooled P_Sum, local-only P_i, fine-tuned P_FL"),
    ("serve", "serve the validation and test periods: rank on device, re-rank on the server"),
    ("evaluate", "score every method's lists; the privacy audit when configured"),
    ("report", "assemble the results (and write the run folder)"),
)

# Independent key streams, derived from the seed by name (so adding a stream changes no other).
_STREAMS = {"recall_serving": 2, "theta0": 3, "clients": 4, "central": 5, "local_only": 6,
            "recall_fold": 7, "decoys": 8, "finetune": 9, "recall_baselines": 10}


def stream_key(seed: int, stream: str, index: int = 0) -> jax.Array:
  """The run's key for one named stream (a simulator and a deployment derive the same keys)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAMS[stream]), index)


def load_tables(config: DataConfig, seed: int) -> MovieLensTables:
  """The raw tables a data config names: synthetic, a dataset name, or a directory."""
  if config.source == "synthetic":
    return generate_synthetic(config.synthetic, seed)
  return load_movielens(config.source)


# ------------------------------------------------------------------------------------ server side
class Recall(NamedTuple):
  """One recall model with what ships beside its candidates."""

  params: RecallParams
  neighbors: ItemNeighbors  # item-item neighbour lists from the same public interactions
  counts: np.ndarray  # [M] public interaction counts it was trained on (candidate popularity)
  # Public interactions the server knows: never proposed again; the client's public history.
  known: Interactions


class RecallModels(NamedTuple):
  # Recall-only baselines by model name, trained on all public history (the serving model's
  # own name maps to its parameters).
  baselines: dict[str, RecallParams]
  serving: Recall  # trained on all public history: candidates at serving time
  folds: tuple[Recall, ...]  # fold f trained on public.context(f): candidates for ranking training


def fit_recall(interactions: Interactions, public: PublicData, config: RecallConfig,
               key: jax.Array) -> Recall:
  """Server side: one recall model (and neighbour lists) from public interactions only."""
  n, m = public.num_users, public.num_items
  neighbors = item_neighbors(interactions, n, m, num_neighbors=config.num_neighbors)
  params = RECALL_MODELS[config.model](interactions, public, config, key=key, neighbors=neighbors)
  return Recall(params, neighbors, item_counts(interactions, m), interactions)


def train_recall(public: PublicData, config: RecallConfig, seed: int,
                 baselines: tuple[str, ...] = ()) -> RecallModels:
  """Server side: the serving model, one cross-fitted model per fold, and the recall-only
  `baselines` (model names) on the same public log."""
  serving = fit_recall(public.history, public, config, stream_key(seed, "recall_serving"))
  models = {config.model: serving.params}
  for name in baselines:
    if name not in models:
      # Keyed by the name's place in the registry: adding a baseline changes no other's key.
      key = stream_key(seed, "recall_baselines", sorted(RECALL_MODELS).index(name))
      # Neighbour lists come from the same log: ItemKNN reuses the serving model's.
      models[name] = RECALL_MODELS[name](public.history, public, config, key=key,
                                         neighbors=serving.neighbors)
  return RecallModels(
      baselines={name: models[name] for name in (*baselines, config.model)},
      serving=serving,
      folds=tuple(
          fit_recall(public.context(f), public, config, stream_key(seed, "recall_fold", f))
          for f in range(public.num_folds)),
  )


def candidates_for(params: RecallParams, k: int, exclude: Interactions,
                   config: RecallConfig) -> Candidates:
  return retrieve(params, k, exclude, user_chunk=config.user_chunk, item_chunk=config.item_chunk,
                  approximate=config.approximate_top_k, recall_target=config.approx_recall_target)


def rerank_context(public: PublicData, known_public: Interactions) -> RerankContext:
  """Server side: the public facts re-rank strategies use, from the public log as it stands."""
  n, m = public.num_users, public.num_items
  return RerankContext(
      genres=jnp.asarray(public.catalogue.genres),
      popularity=jnp.asarray(item_counts(known_public, m)),
      known=jnp.asarray(padded_item_lists(known_public, n)),
      cold=jnp.asarray(np.bincount(known_public.user, minlength=n) == 0),
      year=jnp.asarray(public.catalogue.year),
      year_known=jnp.asarray(public.catalogue.year_known))


# ------------------------------------------------------------------------------------ client side
def examples_from_recall(source: Recall, known_private: Interactions, positives: Interactions, *,
                         public: PublicData, private: PrivateData, config: RecallConfig,
                         candidates: Candidates | None = None) -> ClientExamples:
  """Server: candidates excluding what it knows (or the given ones, ordered by the recall
  model); clients: features, private filter, labels.

  Every client at once ([N, 1, K, ...]); a deployed client does the same for itself alone
  (`pprsf_jax.deploy.device`).
  """
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
  """The ranking model and the clients' local optimisation a config describes."""
  ranking = config.ranking
  return LocalTraining(model=RankingMLP(hidden_sizes=ranking.hidden_sizes),
                       epochs=ranking.local_epochs, batch_size=ranking.batch_size,
                       learning_rate=ranking.learning_rate, loss=ranking.loss,
                       lists_per_step=ranking.lists_per_step)


@functools.partial(jax.jit, static_argnames=("model", "top_t", "per_client_params"))
def rank_all(params, examples: ClientExamples, item_table: ItemTable, *, model: RankingMLP,
             top_t: int, per_client_params: bool) -> TopTRequest:
  """Every client ranks its own candidates on its device (vmapped in simulation)."""
  rank = lambda p, ex: rank_candidates(p, ex, item_table, model=model, top_t=top_t)
  items, scores = jax.vmap(rank, in_axes=(0 if per_client_params else None, 0))(params, examples)
  return TopTRequest(items=items, scores=scores)


@functools.partial(jax.jit, static_argnames=("num_decoys",))
def _pad_requests(request: TopTRequest, examples: ClientExamples, key, *,
                  num_decoys: int) -> tuple[TopTRequest, jax.Array]:
  """Every client pads its request with decoys (client side; the decoys [U, T + D] stay there)."""
  users = request.items.shape[0]
  # Decoys come from what the server sent (items), never from the client's private filter (mask).
  items, scores, decoys = jax.vmap(pad_request, in_axes=(0, 0, 0, 0, None))(
      request.items, request.scores, examples.items.reshape(users, -1),
      jax.random.split(key, users), num_decoys)
  return TopTRequest(items=items, scores=scores), decoys


@functools.partial(jax.jit, static_argnames=("k",))
def _drop_decoys(ranked_items, decoys, *, k: int) -> jax.Array:
  """[U, k] each client's final list: the server's re-ranked answer without its own decoys."""
  return jax.vmap(lambda items, mine: drop_decoys(items, mine, k))(ranked_items, decoys)


class FederatedTraining(NamedTuple):
  params: Any  # final global Theta
  losses: list[float]  # mean client training loss per round
  rejected: int  # uploads refused (non-finite, over the norm bound, diverged) over all rounds
  dropped: int  # sampled clients that left before uploading (simulated), over all rounds
  stragglers: int  # sampled clients that completed only part of their steps, over all rounds
  upload_bytes: float  # mean bytes per client upload, as encoded
  dense_upload_bytes: float  # bytes of an uncompressed float32 delta
  broadcast_bytes: float  # bytes sent down per client per round (Theta + algorithm broadcast)
  client_state_bytes: int  # bytes of per-client state all clients together keep (host, simulated)
  privacy: dict  # the DP plan and what it spent (pprsf_jax.privacy.privacy_report)
  algorithm: Any  # the FederatedAlgorithm trained with (DP stage in place)
  clients: Any  # every client's final state (host, stacked [N, ...])
  broadcast: Any  # what the server last sent with Theta
  secure: Any  # the secure-aggregation encoding (SecureAggregationConfig), or None
  secure_clipped: int  # entries clipped to the secure-aggregation range, over all rounds
  curve: list[float | None]  # per round: the `evaluate` figure after it, None where not run


def _attack_setup(config: RunConfig, public: PublicData) -> tuple[Attack, np.ndarray, int]:
  """The simulated attack, its attackers [N] bool, and the item `item_promotion` pushes."""
  fed = config.federated
  attack = Attack(kind=fed.attack, scale=fed.attack_scale, noise_std=fed.attack_noise_std)
  attackers = choose_attackers(public.num_users, fed.attacker_share if fed.attack != "none" else 0,
                               config.seed)
  if fed.attack_target >= public.num_items:
    raise config_lib.ConfigError(
        f"federated.attack_target={fed.attack_target} is invalid: allowed -1 or an item id "
        f"< {public.num_items}")
  if fed.attack_target >= 0:
    return attack, attackers, fed.attack_target
  by_popularity = np.argsort(-item_counts(public.history, public.num_items), kind="stable")
  return attack, attackers, int(by_popularity[min(99, public.num_items - 1)])


def train_federated(theta0, examples: ClientExamples | CohortSource, item_table: ItemTable,
                    config: RunConfig,
                    local: LocalTraining, *, progress: bool,
                    attackers: np.ndarray | None = None,
                    checkpoints: pathlib.Path | None = None,
                    log: Callable[[str], None] = lambda message: None,
                    evaluate: Callable[[Any], float] | None = None,
                    server_view=IGNORED) -> FederatedTraining:
  """Rounds of: sample a cohort, gather its padded batch on the host, run the jitted round.

  `examples` are every client's precomputed examples [N, ...], or a `CohortSource` that builds
  each cohort's when it is drawn (`pprsf_jax.ranking.streaming`); either way the next cohort is
  prepared on a host thread while the device trains the current one.

  With `checkpoints`, the whole training state is saved there every `config.checkpoint_every`
  rounds (and after the last), and training resumes from the newest good checkpoint found:
  a resumed run ends bit for bit where an uninterrupted one would. `evaluate(Theta)` is
  recorded after every `config.eval.every_rounds`-th round and the last (`curve`). What each
  round's uploads declare beside their updates is recorded in `server_view`.

  With several devices (or processes under `jax.distributed`), each cohort's clients are
  sharded over all of them (`pprsf_jax.ranking.sharding`); Θ then matches a single device's
  within float tolerance (sums over clients run in another order).
  """
  fed = config.federated
  source = StackedCohorts(examples) if isinstance(examples, ClientExamples) else examples
  num_clients = source.num_clients
  # Cohorts depend on (seed, round) only: a resumed run samples the same clients, and the DP
  # plan may count participations before any training.
  schedule = cohort_schedule(num_clients, fed.clients_per_round, fed.rounds, config.seed,
                             fed.sampling)
  mesh = sharding.client_mesh()
  # The padded cohort every round compiles to: a whole number of clients per device.
  capacity = sharding.padded_capacity(max(1, max(len(ids) for ids in schedule)), mesh)
  plan = plan_privacy(config.privacy, fed, num_clients, schedule)
  if plan is not None:
    log(f"privacy: {plan.mechanism} DP, noise multiplier {plan.noise_multiplier:.4g}, "
        f"clip norm {plan.clip_norm:g} ({'adaptive' if plan.adaptive else 'fixed'}), "
        f"delta {plan.delta:g}")
  algorithm = private_algorithm(fed, num_clients, plan)
  secure = (config_for_cohort(config.privacy.secure_aggregation_bound, capacity)
            if config.privacy.secure_aggregation else None)
  round_fn = make_round(local, algorithm, max_update_norm=fed.max_update_norm,
                        faults=FaultModel(dropout_rate=fed.dropout_rate,
                                          straggler_rate=fed.straggler_rate,
                                          straggler_min_work=fed.straggler_min_work),
                        attack=Attack(kind=fed.attack, scale=fed.attack_scale,
                                      noise_std=fed.attack_noise_std),
                        secure=secure)
  attackers = np.zeros(num_clients, bool) if attackers is None else attackers
  seed_key = stream_key(config.seed, "clients")
  item_table = sharding.replicate(jax.device_put(item_table), mesh)
  # Everything a resumed run needs, in fixed shapes (a checkpoint must fit its template).
  state = {
      "server": init_server_state(algorithm, theta0),
      "clients": init_client_states(algorithm, theta0, num_clients),
      "loss": np.zeros(fed.rounds, np.float64),
      "rejected": np.zeros(fed.rounds, np.int64),
      "dropped": np.zeros(fed.rounds, np.int64),
      "stragglers": np.zeros(fed.rounds, np.int64),
      "upload_bytes": np.zeros(fed.rounds, np.float64),
      "clip_norm": np.zeros(fed.rounds, np.float64),  # central DP: the bound used each round
      "secure_clipped": np.zeros(fed.rounds, np.int64),
      "curve": np.full(fed.rounds, np.nan),  # evaluate(Theta) after the rounds it ran (else NaN)
  }
  first_round = 0
  if checkpoints is not None:
    restored = checkpoint.restore_latest(checkpoints, state, log=log)
    if restored is not None:
      done, state = restored
      first_round = done + 1
      log(f"resumed after round {done + 1} of {fed.rounds} from {checkpoints}")
  server, clients = sharding.replicate(state["server"], mesh), state["clients"]
  cohorts = prefetched(source, schedule, capacity, range(first_round, fed.rounds))
  for round_index, ids, (cohort, client_ids, client_mask) in tqdm(
      cohorts, desc="federated rounds", initial=first_round, total=fed.rounds,
      disable=not progress):
    if plan is not None and plan.mechanism == "central":
      state["clip_norm"][round_index] = float(current_clip_norm(server.aggregator))
    per_client = sharding.shard_clients(
        (gather_client_states(clients, client_ids), cohort, client_ids, client_mask,
         attackers[client_ids] & (client_mask > 0)), mesh)
    server, rows, metrics = round_fn(server, *per_client[:4], item_table, seed_key, round_index,
                                     per_client[4])
    scatter_client_states(clients, ids, sharding.to_host(rows))
    metrics = sharding.to_host(metrics)
    server_view.record("upload.declared", (ids, jax.tree.map(lambda a: a[:len(ids)],
                                                             metrics.declared)))
    state["loss"][round_index] = float(metrics.loss)
    state["rejected"][round_index] = int(metrics.rejected)
    state["dropped"][round_index] = int(metrics.dropped)
    state["stragglers"][round_index] = int(metrics.stragglers)
    state["upload_bytes"][round_index] = float(metrics.upload_bytes)
    state["secure_clipped"][round_index] = int(metrics.secure_clipped)
    last = round_index == fed.rounds - 1
    every = config.eval.every_rounds
    if evaluate is not None and every and ((round_index + 1) % every == 0 or last):
      state["curve"][round_index] = evaluate(sharding.to_host(server.params))
    if checkpoints is not None and config.checkpoint_every and (
        (round_index + 1) % config.checkpoint_every == 0 or last):
      state["server"], state["clients"] = sharding.to_host(server), clients
      if jax.process_index() == 0:  # one writer; every process restores the same file
        checkpoint.save(checkpoints, round_index, state)
  if mesh is not None:  # hand back host arrays, whole on every process
    server = sharding.to_host(server)
  return FederatedTraining(
      params=server.params, losses=[float(loss) for loss in state["loss"]],
      rejected=int(state["rejected"].sum()), dropped=int(state["dropped"].sum()),
      stragglers=int(state["stragglers"].sum()),
      upload_bytes=float(state["upload_bytes"].mean()),
      dense_upload_bytes=float(_parameter_bytes(server.params)),
      broadcast_bytes=float(_parameter_bytes(server.params) + _parameter_bytes(server.broadcast)),
      client_state_bytes=client_state_bytes(clients),
      privacy=privacy_report(plan) | ({"clip_norm_per_round": state["clip_norm"].tolist()}
                                      if plan is not None and plan.mechanism == "central" else {}),
      algorithm=algorithm, clients=clients, broadcast=server.broadcast, secure=secure,
      secure_clipped=int(state["secure_clipped"].sum()),
      curve=[None if np.isnan(value) else float(value) for value in state["curve"]])


# ------------------------------------------------------------------------------------ the run
class Served(NamedTuple):
  """One serving period, as `run` evaluates it."""

  lists: dict[str, np.ndarray]  # [U, top_k] each method's final lists
  requests: np.ndarray  # [U, T + D] the items each request names, as the server received them
  candidates: np.ndarray  # [U, K] the candidates the server sent
  filtered: np.ndarray  # [U, K] bool: those each client filtered out as privately known
  variants: dict[str, np.ndarray]  # PPRSF's final lists under other re-rank settings
  orders: dict[str, np.ndarray]  # P_FL's and P_i's ordering of every candidate


def _audit(config: RunConfig, federated: FederatedTraining, examples: ClientExamples,
           item_table: ItemTable, local: LocalTraining, served: Served,
           tables: MovieLensTables, num_items: int) -> dict[str, Any]:
  """The curious server's attacks on the uploads of the round after training and the test
  period's Top-T requests, scored against the users' true attributes."""
  uploads, lifts, declared = observe_uploads(
      federated.params, examples, item_table, local=local, algorithm=federated.algorithm,
      broadcast=federated.broadcast, states=federated.clients,
      seed_key=stream_key(config.seed, "clients"), round_index=config.federated.rounds,
      secure=federated.secure)
  attributes = {"gender": tables.gender.astype(np.int64),
                "age_group": np.searchsorted(AGE_BUCKET_EDGES, tables.age, side="right"),
                "occupation": tables.occupation.astype(np.int64)}
  return audit(uploads=uploads, lifts=lifts, declared=declared, examples=examples,
               requests=served.requests, candidates=served.candidates,
               filtered=served.filtered, num_items=num_items, attributes=attributes,
               seed=config.seed)


def _validation_curve(config: RunConfig, recall: RecallModels, public: PublicData,
                      private: PrivateData, valid, item_table: ItemTable,
                      model: RankingMLP) -> Callable[[Any], float]:
  """Theta -> validation NDCG@k of P_FL's lists during training (full-ranking protocol: the
  serving candidates at the start of the validation period; the run's curve plot)."""
  examples = examples_from_recall(recall.serving, private.history, Interactions.empty(),
                                  public=public, private=private, config=config.recall)
  k, m = config.eval.top_k, public.num_items

  def evaluate(params) -> float:
    request = rank_all(params, examples, item_table, model=model, top_t=config.ranking.top_t,
                       per_client_params=False)
    return evaluate_lists(np.asarray(request.items[:, :k]), valid.interactions, m)[f"ndcg@{k}"]

  return evaluate


def _per_user_pair(lists: dict[str, np.ndarray], metric: str, truth: Interactions,
                   num_items: int) -> tuple[np.ndarray, np.ndarray]:
  """P_FL's and P_i's per-user `metric` on `lists` [U, k], users with test items only."""
  per_user = {name: per_user_metrics(*hit_matrix(lists[name], truth, num_items))[metric]
              for name in ("federated (P_FL)", "local_only (P_i)")}
  has_test = ~np.isnan(per_user["federated (P_FL)"])
  return per_user["federated (P_FL)"][has_test], per_user["local_only (P_i)"][has_test]


def _parameter_bytes(params) -> int:
  return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params)))


def run(config: RunConfig, *, progress: bool = True,
        tables: MovieLensTables | None = None,
        log: Callable[[str], None] = lambda message: None,
        run_dir: pathlib.Path | None = None,
        recall_cache: dict | None = None,
        partition: Partition | None = None,
        server_view=IGNORED) -> dict[str, Any]:
  """Runs PPRSF end to end and returns the results (see README for the keys).

  With `run_dir`, federated training checkpoints into `run_dir/checkpoints` and resumes from
  there; every other stage is deterministic and cheap, so it is recomputed. `recall_cache`
  (a dict the caller keeps) reuses recall models across runs that share data, recall config and
  seed, as sweeps over federated settings do. `partition` replaces nature's draw of periods and
  private rows (`pprsf_jax.data.dataset.draw_partition`); `server_view` keeps everything the
  server receives or computes (`pprsf_jax.privacy.server_view`).
  """
  timings: dict[str, float] = {}
  clock = time.perf_counter()

  def lap(name: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    timings[name] = round(now - clock, 3)
    clock = now

  tables = load_tables(config.data, config.seed) if tables is None else tables
  data: FederatedDataset = build_dataset(tables, config.data, config.seed, partition)
  public, private = data.public, data.private
  server_view.record("recall.history", public.history)
  server_view.record("recall.folds", public.fold)
  server_view.record("recall.devices", public.devices)
  n, m, k = public.num_users, public.num_items, config.recall.num_candidates
  lap("data")
  log(f"data: {n} users, {m} items, {tables.num_ratings} interactions")

  # Server: recall on public data.
  recall_key = (config.data, config.recall, config.seed, config.baselines.recall_models)
  if partition is not None:
    recall_cache = None  # a given partition is not part of the key: share no models under it
  if recall_cache is not None and recall_key in recall_cache:
    recall = recall_cache[recall_key]
  else:
    recall = train_recall(public, config.recall, config.seed, config.baselines.recall_models)
    if recall_cache is not None:
      recall_cache[recall_key] = recall
  item_table = make_item_table(public.catalogue)

  examples_for = functools.partial(examples_from_recall, public=public, private=private,
                                   config=config.recall)
  train_examples = training_examples(recall, public, private, config.recall, server_view)
  lap("recall")
  local = local_training(config)
  model = local.model
  theta0 = init_params(model, num_features(private.user_features.shape[1], item_table),
                       key=stream_key(config.seed, "theta0"))
  attack, attackers, target_item = _attack_setup(config, public)
  # Attackers train on their own poisoned data; the baselines below keep the honest examples.
  federated_examples = poison_examples(
      train_examples, attackers, attack, target_item=target_item,
      target_popularity=float(standardised_log_counts(item_counts(public.history, m))[target_item]))
  federated = train_federated(theta0, federated_examples, item_table, config, local,
                              progress=progress, log=log, attackers=attackers,
                              checkpoints=None if run_dir is None else run_dir / "checkpoints",
                              evaluate=_validation_curve(config, recall, public, private,
                                                         data.valid, item_table, model),
                              server_view=server_view)
  lap("federated_training")
  central = train_central(theta0, train_examples, item_table,
                          key=stream_key(config.seed, "central"), local=local,
                          epochs=config.baselines.central_epochs)
  lap("central_training")
  local_only_local = dataclasses.replace(local, epochs=config.baselines.local_only_epochs)
  local_only = train_local_only(theta0, train_examples, item_table,
                                seed_key=stream_key(config.seed, "local_only"),
                                local=local_only_local)
  lap("local_only_training")
  # Personalisation: each client fine-tunes the final Theta on its own examples.
  finetune_local = dataclasses.replace(local, epochs=config.baselines.finetune_epochs)
  personalised = train_local_only(federated.params, train_examples, item_table,
                                  seed_key=stream_key(config.seed, "finetune"),
                                  local=finetune_local)
  lap("finetune_training")

  reranker = make_reranker(config.rerank)
  top_t, top_k = config.ranking.top_t, config.eval.top_k

  decoys = config.privacy.request_decoys

  sampled = config.eval.sampled_negatives
  if sampled:  # the evaluation harness fixes each period's item set (held-out + negatives)
    everything_ever = (public.history + private.history + data.valid.interactions
                       + data.test.interactions)
    sampled_items = {period: sample_candidates(truth.interactions, everything_ever, n, m, sampled,
                                               config.seed, period)
                     for period, truth in ((1, data.valid), (2, data.test))}

  def serve(known_public: Interactions, known_private: Interactions, period: int,
            rerank_settings: bool = False) -> Served:
    """One serving round: every method's lists, the requests the clients sent the server and
    the candidate lists it sent them. Under the sampled protocol every method ranks the
    period's sampled items instead of the whole catalogue."""
    serving = recall.serving._replace(known=known_public)  # the logs grew since training

    def recall_only(params: RecallParams, exclude: Interactions) -> np.ndarray:
      if sampled:
        return rank_given(params, sampled_items[period], user_chunk=config.recall.user_chunk
                          ).items[:, :top_k]
      return candidates_for(params, top_k, exclude, config.recall).items

    server_view.record("service.public_log", known_public)
    candidates = (rank_given(serving.params, sampled_items[period],
                             user_chunk=config.recall.user_chunk) if sampled
                  else candidates_for(serving.params, config.recall.num_candidates,
                                      serving.known, config.recall))
    server_view.record("candidates.serving", candidates)
    examples = examples_for(serving, known_private, positives=Interactions.empty(),
                            candidates=candidates)
    # P_FL and P_i order every candidate (their Top-T is the head): the per-client comparison
    # also reads the whole ordering, where ties are rare.
    whole = examples.items.shape[-2] * examples.items.shape[-1]
    candidate_orders = {
        "federated (P_FL)": rank_all(federated.params, examples, item_table, model=model,
                                     top_t=whole, per_client_params=False),
        "local_only (P_i)": rank_all(local_only, examples, item_table, model=model, top_t=whole,
                                     per_client_params=True),
    }
    head = lambda request: TopTRequest(items=request.items[:, :top_t],
                                       scores=request.scores[:, :top_t])
    ranked = {
        "p_fl": head(candidate_orders["federated (P_FL)"]),
        "p_sum": rank_all(central, examples, item_table, model=model, top_t=top_t,
                          per_client_params=False),
        "p_i": head(candidate_orders["local_only (P_i)"]),
        "p_fl_ft": rank_all(personalised, examples, item_table, model=model, top_t=top_t,
                            per_client_params=True),
    }
    context = rerank_context(public, known_public)
    server_view.record("rerank.context", context)
    request = ranked["p_fl"]
    if decoys:  # request privacy: hide the Top-T among decoys, drop them from the answer
      request, decoy_items = _pad_requests(request, examples,
                                           stream_key(config.seed, "decoys", period),
                                           num_decoys=decoys)
    server_view.record("request.items", request.items)

    def answer(rerank: Strategy) -> np.ndarray:
      """[U, top_k] what each client shows: the server's re-ranked answer (decoys dropped)."""
      if decoys:
        return np.asarray(_drop_decoys(rerank(request, context).items, decoy_items, k=top_k))
      return np.asarray(final_list(rerank(request, context), top_k))

    final = answer(reranker)
    # With `rerank_settings`, the same requests under other re-rank settings (their table).
    variants = ({name: final if setting == config.rerank else answer(make_reranker(setting))
                 for name, setting in evaluation_grid(config.rerank).items()}
                if rerank_settings else {})
    # Recall-only baselines get the protocol's full exclusion of everything known.
    everything = known_public + known_private
    lists = {
        **{name: recall_only(params, everything) for name, params in recall.baselines.items()},
        "local_only (P_i)": np.asarray(ranked["p_i"].items[:, :top_k]),
        "central (P_Sum)": np.asarray(ranked["p_sum"].items[:, :top_k]),
        "federated (P_FL)": np.asarray(ranked["p_fl"].items[:, :top_k]),
        "personalised (P_FL + fine-tune)": np.asarray(ranked["p_fl_ft"].items[:, :top_k]),
        "pprsf (P_FL + re-rank)": final,
    }
    orders = {name: np.asarray(order.items) for name, order in candidate_orders.items()}
    items = np.asarray(examples.items.reshape(n, -1))
    return Served(lists=lists, requests=np.asarray(request.items), candidates=items,
                  filtered=(items >= 0) & (np.asarray(examples.mask.reshape(n, -1)) == 0),
                  variants=variants, orders=orders)

  # Period 1 (validation): serve, then the service layer logs what users did.
  valid_lists = serve(public.history, private.history, period=1).lists
  service = serve_period(valid_lists["pprsf (P_FL + re-rank)"], data.valid, m)
  valid_metrics = {name: evaluate_lists(lists, data.valid.interactions, m)
                   for name, lists in valid_lists.items()}
  lap("serve_valid")
  # Period 2 (test): the logs fed back — the server knows more public history, clients more private.
  served = serve(public.history + service.public, private.history + service.private, period=2,
                 rerank_settings=True)
  test_lists, test_variants, test_orders = served.lists, served.variants, served.orders
  # Beyond accuracy: popularity (novelty) as the server knows it from the public train log.
  public_counts = item_counts(public.history, m)
  scores = lambda lists: (evaluate_lists(lists, data.test.interactions, m)
                          | beyond_accuracy(lists, public.catalogue.genres, public_counts, n))
  test_metrics = {name: scores(lists) for name, lists in test_lists.items()}
  rerank_metrics = {name: scores(lists) for name, lists in test_variants.items()}
  lap("serve_test")
  privacy_results = dict(federated.privacy)
  if config.privacy.audit:
    privacy_results["audit"] = _audit(config, federated, federated_examples, item_table, local,
                                      served, tables, m)
    lap("privacy_audit")

  ndcg = f"ndcg@{top_k}"
  p_fl, p_sum = test_metrics["federated (P_FL)"][ndcg], test_metrics["central (P_Sum)"][ndcg]
  fl_user, local_user = _per_user_pair(test_lists, ndcg, data.test.interactions, m)
  ndcg_whole = f"ndcg@{test_orders['federated (P_FL)'].shape[1]}"
  fl_whole, local_whole = _per_user_pair(test_orders, ndcg_whole, data.test.interactions, m)
  return {
      "config": config_lib.to_dict(config),
      "dataset": {"name": tables.name, "source_format": tables.source_format, "users": n,
                  "items": m, "interactions": tables.num_ratings,
                  "public_train": public.history.size, "private_train": private.history.size,
                  "valid": data.valid.interactions.size, "test": data.test.interactions.size},
      "test": test_metrics,
      # PPRSF's final test lists under each re-rank setting of `rerank.evaluation_grid`.
      "rerank_settings": rerank_metrics,
      "valid": valid_metrics,
      "delta": {"metric": ndcg, "p_fl": p_fl, "p_sum": p_sum, "absolute": abs(p_sum - p_fl),
                "relative": abs(p_sum - p_fl) / p_sum if p_sum > 0 else float("nan")},
      # P_FL against each client's own P_i on its final top-k list; "whole_candidate_list":
      # the same on each model's ordering of all the client's candidates (K-deep NDCG).
      "local_only": {"mean": float(local_user.mean()), "best": float(local_user.max()),
                     **compare_per_user(fl_user, local_user),
                     "whole_candidate_list": {"metric": ndcg_whole,
                                              **compare_per_user(fl_whole, local_whole)}},
      "federated": {"rounds": config.federated.rounds, "final_loss": federated.losses[-1],
                    "losses": federated.losses, "rejected_uploads": federated.rejected,
                    # P_FL's validation NDCG@k after every eval.every_rounds-th round (None
                    # between), beside every method's final validation figure in "valid".
                    "valid_curve": federated.curve,
                    "dropped_clients": federated.dropped,
                    "straggler_clients": federated.stragglers,
                    "client_state_bytes_all_clients": federated.client_state_bytes,
                    "secure_aggregation": (None if federated.secure is None else {
                        "fractional_bits": federated.secure.fractional_bits,
                        "bound": federated.secure.max_abs_value,
                        "clipped_entries": federated.secure_clipped})},
      "privacy": privacy_results,
      "attack": {"kind": attack.kind, "attackers": int(attackers.sum()),
                 "target_item": target_item,
                 # Share of each method's final test lists that contain the target item.
                 "target_exposure": {name: float(np.mean(np.any(lists == target_item, axis=1)))
                                     for name, lists in test_lists.items()}},
      "service": service.stats._asdict(),
      "communication_bytes_per_client_per_round": {
          "down_theta_and_broadcast": federated.broadcast_bytes,
          "up_update": federated.upload_bytes, "up_update_uncompressed": federated.dense_upload_bytes,
          "down_candidates": k * 12,  # id, recall score, popularity
          "down_neighbor_lists": k * config.recall.num_neighbors * 8, "up_top_t": (top_t + decoys) * 8},  # id + score
      "timings_s": timings,
  }
