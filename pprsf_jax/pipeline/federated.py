"""Federated training of the ranking model in simulation: the round loop around the jitted
round (`pprsf_jax.ranking.make_round`), with cohorts, DP planning, attacks, sharding and
checkpoints."""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from pprsf_jax import checkpoint, progress
from pprsf_jax.aggregation import client_state_bytes, init_server_state
from pprsf_jax.config import RunConfig
from pprsf_jax.pipeline.keys import stream_key
from pprsf_jax.privacy import plan_privacy, privacy_report, private_algorithm
from pprsf_jax.privacy.central_dp import current_clip_norm
from pprsf_jax.privacy.secure_round import config_for_cohort
from pprsf_jax.privacy.server_view import IGNORED
from pprsf_jax.ranking import (DeviceState, LocalTraining, gather_client_states,
                               init_device_states, make_round, scatter_client_states)
from pprsf_jax.ranking import sharding
from pprsf_jax.ranking.attacks import Attack, choose_attackers
from pprsf_jax.ranking.faults import FaultModel
from pprsf_jax.ranking.sampling import cohort_schedule
from pprsf_jax.ranking.streaming import CohortSource, StackedCohorts, prefetched
from pprsf_jax.recall import item_counts
from pprsf_jax.types import PublicData

logger = logging.getLogger(__name__)

# What the run records after every round, and its dtype in a checkpoint. The record grows
# round by round (nothing is sized by `rounds`: a huge round count costs nothing up front).
_PER_ROUND = {"loss": np.float64, "rejected": np.int64, "dropped": np.int64,
              "stragglers": np.int64, "upload_bytes": np.float64, "secure_clipped": np.int64,
              "clip_norm": np.float64,  # the bound central DP used that round (else 0)
              "curve": np.float64}  # evaluate(Theta, personal) after the rounds it ran (else NaN)


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
  clients: DeviceState  # every client's final state, personal included (host, stacked [N, ...])
  broadcast: Any  # what the server last sent with Theta
  secure: Any  # the secure-aggregation encoding (SecureAggregationConfig), or None
  secure_clipped: int  # entries clipped to the secure-aggregation range, over all rounds
  curve: list[float | None]  # per round: the `evaluate` figure after it, None where not run
  per_round: dict[str, list]  # per round: every `_PER_ROUND` figure (results' "per_round")


def attack_setup(config: RunConfig, public: PublicData) -> tuple[Attack, np.ndarray, int]:
  """The simulated attack, its attackers [N] bool, and the item `item_promotion` pushes (the
  config's target was checked against the catalogue when the data loaded)."""
  fed = config.federated
  attack = Attack(kind=fed.attack, scale=fed.attack_scale, noise_std=fed.attack_noise_std)
  attackers = choose_attackers(public.num_users, fed.attacker_share if fed.attack != "none" else 0,
                               config.seed)
  if fed.attack_target >= 0:
    return attack, attackers, fed.attack_target
  by_popularity = np.argsort(-item_counts(public.history, public.num_items), kind="stable")
  return attack, attackers, int(by_popularity[min(99, public.num_items - 1)])


def parameter_bytes(params) -> int:
  return int(sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params)))


def _initial_state(algorithm, theta0, personal0, num_clients: int,
                   rounds_done: int = 0) -> dict[str, Any]:
  """Everything a resumed run needs after `rounds_done` rounds: the template a checkpoint must
  fit (its per-round record holds one entry a round done). The clients' rows are written in
  place round by round: `personal0` is copied, never changed."""
  return {"server": init_server_state(algorithm, theta0),
          "clients": init_device_states(algorithm, theta0, personal0, num_clients),
          "per_round": {name: np.zeros(rounds_done, dtype) for name, dtype in _PER_ROUND.items()}}


def _round_record(metrics, clip_norm: float) -> dict[str, float]:
  """One round's entry of the per-round record (its curve entry is filled in if evaluated)."""
  return {"loss": float(metrics.loss), "rejected": int(metrics.rejected),
          "dropped": int(metrics.dropped), "stragglers": int(metrics.stragglers),
          "upload_bytes": float(metrics.upload_bytes),
          "secure_clipped": int(metrics.secure_clipped), "clip_norm": clip_norm,
          "curve": float("nan")}


def train_federated(theta0, personal0, examples: Any | CohortSource, public,
                    config: RunConfig, local: LocalTraining, *,
                    attackers: np.ndarray | None = None,
                    checkpoints: pathlib.Path | None = None,
                    evaluate: Callable[[Any, Any], float] | None = None,
                    server_view=IGNORED) -> FederatedTraining:
  """Rounds of: sample a cohort, gather its padded batch on the host, run the jitted round.

  Training starts from Θ0 = `theta0` and every client's initial personal state `personal0`
  (stacked [N, ...] on the host, `ranking.init_personal_states`); `public` is what every client
  is shipped alike (the item table).

  `examples` are every client's precomputed examples [N, ...], or a `CohortSource` that builds
  each cohort's when it is drawn (`pprsf_jax.ranking.streaming`); either way the next cohort is
  prepared on a host thread while the device trains the current one.

  With `checkpoints`, the whole training state is saved there every `config.checkpoint_every`
  rounds (and after the last), and training resumes from the newest good checkpoint found:
  a resumed run ends bit for bit where an uninterrupted one would. `evaluate(Theta, personal)`
  (with the clients' personal states [N, ...]) is recorded after every
  `config.eval.every_rounds`-th round and the last (`curve`). What each round's uploads declare
  beside their updates is recorded in `server_view`.

  With several devices (or processes under `jax.distributed`), each cohort's clients are
  sharded over all of them (`pprsf_jax.ranking.sharding`); Θ then matches a single device's
  within float tolerance (sums over clients run in another order).
  """
  fed = config.federated
  # Any task's examples stacked [N, ...], or a source that builds each cohort's.
  source = examples if hasattr(examples, "cohort") else StackedCohorts(examples)
  num_clients = source.num_clients
  # Cohorts depend on (seed, round) only: a resumed run samples the same clients, and the DP
  # plan may count participations before any training.
  schedule = cohort_schedule(num_clients, fed.clients_per_round, fed.rounds, config.seed,
                             fed.sampling)
  mesh = sharding.client_mesh()
  # The padded cohort every round compiles to: a whole number of clients per device.
  capacity = sharding.padded_capacity(max(1, schedule.largest_cohort()), mesh)
  plan = plan_privacy(config.privacy, fed, num_clients, schedule)
  if plan is not None:
    logger.info("privacy: %s DP, noise multiplier %.4g, clip norm %g (%s), delta %g",
                plan.mechanism, plan.noise_multiplier, plan.clip_norm,
                "adaptive" if plan.adaptive else "fixed", plan.delta)
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
  public = sharding.replicate(jax.device_put(public), mesh)
  state = _initial_state(algorithm, theta0, personal0, num_clients)
  if checkpoints is not None:
    restored = checkpoint.restore_latest(
        checkpoints,
        lambda done: _initial_state(algorithm, theta0, personal0, num_clients, done + 1))
    if restored is not None:
      done, state = restored
      logger.info("resumed after round %d of %d from %s", done + 1, fed.rounds, checkpoints)
  server, clients = sharding.replicate(state["server"], mesh), state["clients"]
  # The record as lists while training (appended a round at a time), arrays in a checkpoint.
  record = {name: values.tolist() for name, values in state["per_round"].items()}
  first_round = len(record["loss"])
  cohorts = prefetched(source, schedule, capacity, range(first_round, fed.rounds))
  for round_index, ids, (cohort, client_ids, client_mask) in progress.steps(
      cohorts, desc="federated rounds", initial=first_round, total=fed.rounds):
    clip_norm = (float(current_clip_norm(server.aggregator))
                 if plan is not None and plan.mechanism == "central" else 0.0)
    per_client = sharding.shard_clients(
        (gather_client_states(clients, client_ids), cohort, client_ids, client_mask,
         attackers[client_ids] & (client_mask > 0)), mesh)
    server, rows, metrics = round_fn(server, *per_client[:4], public, seed_key, round_index,
                                     per_client[4])
    scatter_client_states(clients, ids, sharding.to_host(rows))
    metrics = sharding.to_host(metrics)
    server_view.record("upload.declared", (ids, jax.tree.map(lambda a: a[:len(ids)],
                                                             metrics.declared)))
    entry = _round_record(metrics, clip_norm)
    last = round_index == fed.rounds - 1
    every = config.eval.every_rounds
    if evaluate is not None and every and ((round_index + 1) % every == 0 or last):
      entry["curve"] = evaluate(sharding.to_host(server.params), clients.personal)
    for name, value in entry.items():
      record[name].append(value)
    if checkpoints is not None and config.checkpoint_every and (
        (round_index + 1) % config.checkpoint_every == 0 or last):
      state = {"server": sharding.to_host(server), "clients": clients,
               "per_round": {name: np.asarray(values, _PER_ROUND[name])
                             for name, values in record.items()}}
      if jax.process_index() == 0:  # one writer; every process restores the same file
        checkpoint.save(checkpoints, round_index, state)
  if mesh is not None:  # hand back host arrays, whole on every process
    server = sharding.to_host(server)
  return _finished(record, server, clients, plan, algorithm, secure)


def _finished(record: dict[str, list], server, clients, plan, algorithm,
              secure) -> FederatedTraining:
  central = plan is not None and plan.mechanism == "central"
  per_round = {name: record[name] for name in _PER_ROUND
               if name != "curve" and (name != "clip_norm" or central)}
  return FederatedTraining(
      params=server.params, losses=per_round["loss"],
      rejected=sum(record["rejected"]), dropped=sum(record["dropped"]),
      stragglers=sum(record["stragglers"]),
      upload_bytes=float(np.mean(record["upload_bytes"])),
      dense_upload_bytes=float(parameter_bytes(server.params)),
      broadcast_bytes=float(parameter_bytes(server.params) + parameter_bytes(server.broadcast)),
      client_state_bytes=client_state_bytes(clients),
      privacy=privacy_report(plan) | ({"clip_norm_per_round": per_round["clip_norm"]}
                                      if central else {}),
      algorithm=algorithm, clients=clients, broadcast=server.broadcast, secure=secure,
      secure_clipped=sum(record["secure_clipped"]),
      curve=[None if np.isnan(value) else float(value) for value in record["curve"]],
      per_round=per_round)
