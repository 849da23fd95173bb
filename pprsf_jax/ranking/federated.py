"""One federated round of the ranking model: vmapped client updates, then the aggregator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.aggregation import FederatedAlgorithm, ServerState
from pprsf_jax.aggregation.base import client_norms
from pprsf_jax.privacy.secure_aggregation import SecureAggregationConfig
from pprsf_jax.privacy.secure_round import secure_weighted_mean
from pprsf_jax.ranking.client import LocalTraining, client_update
from pprsf_jax.ranking.attacks import Attack, poison_upload
from pprsf_jax.ranking.faults import FaultModel, draw_faults
from pprsf_jax.ranking.task import DeviceState
from pprsf_jax.types import ClientUpload


# The server's own randomness in a round uses a stream no client id can take; so do the
# pairwise masks of secure aggregation.
SERVER_STREAM = 2**31 - 1
MASK_STREAM = 2**31 - 2


class RoundMetrics(NamedTuple):
  # [] float32 weighted mean training loss of the accepted clients: a diagnostic of the
  # simulation (the experimenter's view, like the test metrics). It is never uploaded: a
  # deployed device keeps its loss, and the server receives only what `declared` holds.
  loss: jax.Array
  clients: jax.Array  # [] int32 real clients in the cohort
  rejected: jax.Array  # [] int32 uploads refused: non-finite, over the norm bound, or diverged
  dropped: jax.Array  # [] int32 real clients that left before uploading (simulated)
  stragglers: jax.Array  # [] int32 real clients that completed only part of their steps
  upload_bytes: jax.Array  # [] float32 mean bytes on the wire per upload that arrived
  secure_clipped: jax.Array  # [] int32 entries clipped to secure aggregation's fixed-point range
  # [C] per upload, what it declares beside its update (delta and extra left empty): the
  # server's view of the cohort (`pprsf_jax.privacy.server_view`).
  declared: ClientUpload


def client_key(seed_key: jax.Array, round_index, client_id) -> jax.Array:
  """A client's key is derived, not threaded: results do not depend on cohort order or padding."""
  return jax.random.fold_in(jax.random.fold_in(seed_key, round_index), client_id)


def _finite_rows(tree) -> jax.Array:
  """[C] bool: every entry of the client's slice of every leaf is finite."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return True
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
                            for leaf in leaves]), axis=0)


def _rows_where(flags, new, old):
  """Per client: its row of `new` where `flags` [C], else its row of `old`."""
  return jax.tree.map(
      lambda n, o: jnp.where(flags.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


def next_client_states(clients: DeviceState, proposed: DeviceState, *, accepted,
                       arrived) -> DeviceState:
  """What each client keeps after a round ([C] bool flags).

  Its new algorithm state only if the server took its upload (else both would disagree on what
  was sent: error feedback would lose it, SCAFFOLD's c would drift from mean c_i). Its personal
  state is its own: kept whenever it trained and sent.
  """
  return DeviceState(_rows_where(accepted, proposed.algorithm, clients.algorithm),
                     _rows_where(arrived, proposed.personal, clients.personal))


def make_round(local: LocalTraining, algorithm: FederatedAlgorithm, *,
               faults: FaultModel = FaultModel(), max_update_norm: float = 0.0,
               attack: Attack = Attack(),
               secure: SecureAggregationConfig | None = None) -> Callable:
  """Builds the jitted round.

  With `secure`, uploads travel masked (`pprsf_jax.privacy.secure_round`): the server learns
  only the weighted sum of those that arrived, so it can neither check nor refuse one (only
  FedAvg-style reducers apply; the config enforces it).

  `faults` simulates dropouts and stragglers; the server refuses uploads that are not finite or,
  with `max_update_norm` > 0, whose update is longer than it (a refused client keeps its state).
  Clients flagged in `malicious` replace their upload as `attack` says.

  Returns:
    round_fn(server, clients, cohort, client_ids, client_mask, public, seed_key, round_index,
             malicious=None) -> (server, clients, RoundMetrics), where `server` is a
    ServerState, `clients` the cohort's DeviceState rows [C, ...], `cohort` the task's examples
    stacked [C, ...], `client_ids` [C] int32, `client_mask` [C] float32, `public` what every
    client is shipped alike (the task's item table) and `malicious` [C] bool (simulated
    attackers). Returned clients' algorithm state changes only for accepted clients, their
    personal state for every client whose upload arrived.
  """

  def round_fn(server: ServerState, clients: DeviceState, cohort, client_ids, client_mask, public,
               seed_key, round_index, malicious=None):
    params = server.params
    # Every per-client input has the cohort's leading axis (checked at trace time).
    size = client_ids.shape[0]
    chex.assert_shape((client_ids, client_mask), (size,))
    chex.assert_tree_shape_prefix((cohort, clients), (size,))
    keys = jax.vmap(lambda c: client_key(seed_key, round_index, c))(client_ids)
    client_faults = jax.vmap(lambda key: draw_faults(key, faults))(keys)

    def one_client(examples, key, state, work):
      return client_update(params, examples, public, key=key, local=local,
                           algorithm=algorithm, broadcast=server.broadcast, state=state,
                           work=work)

    uploads, proposed, metrics = jax.vmap(one_client)(cohort, keys, clients, client_faults.work)
    if malicious is not None and attack.kind != "none":
      poisoned = jax.vmap(lambda delta, key: poison_upload(delta, attack, key))(uploads.delta, keys)
      flags = malicious.astype(bool)
      uploads = uploads._replace(delta=jax.tree.map(
          lambda bad, good: jnp.where(flags.reshape((-1,) + (1,) * (good.ndim - 1)), bad, good),
          poisoned, uploads.delta))
    real = client_mask > 0
    arrived = real & ~client_faults.dropped & ~metrics.diverged  # a diverged client sends nothing
    server_key = client_key(seed_key, round_index, SERVER_STREAM)
    if secure is None:
      server, accepted = server_round(server, uploads, arrived, algorithm=algorithm,
                                      max_update_norm=max_update_norm, key=server_key)
      secure_clipped = jnp.zeros((), jnp.int32)
    else:
      accepted = arrived  # nothing to inspect: every upload that arrives is summed
      # The masked vector also carries the client's weight: one more 32-bit word on the wire.
      uploads = uploads._replace(num_bytes=uploads.num_bytes + 4.0)
      mask = accepted.astype(client_mask.dtype)
      # Weights over a public constant (a client's example slots) stay within the fixed-point
      # range; the mean is unchanged by the common scale.
      slots = float(np.prod(cohort.mask.shape[1:]))
      mean, secure_clipped, _ = secure_weighted_mean(
          uploads.delta, params, weights=client_weights(uploads, algorithm) / slots,
          present=real, sending=arrived, client_ids=client_ids,
          round_key=client_key(seed_key, round_index, MASK_STREAM), config=secure)
      # The server's remaining stages see the securely computed mean as a single update.
      single = jnp.ones((1,), client_mask.dtype)
      update, aggregator_state = algorithm.aggregator.aggregate(
          jax.tree.map(lambda leaf: leaf[None], mean), server.aggregator, weights=single,
          mask=single * jnp.any(accepted), steps=jnp.ones((1,), jnp.int32), key=server_key,
          params=params)
      server = _step_server(server, algorithm, update, aggregator_state, uploads.extra, mask,
                            accepted)
    mask = accepted.astype(client_mask.dtype)
    clients = next_client_states(clients, proposed, accepted=accepted, arrived=arrived)
    example_weights = uploads.num_examples * mask
    count = lambda flags: jnp.sum(flags).astype(jnp.int32)
    round_metrics = RoundMetrics(
        # where, not a product: a rejected client's loss may be NaN, and 0 * NaN is NaN.
        loss=jnp.sum(jnp.where(accepted, metrics.loss * example_weights, 0.0))
        / jnp.maximum(jnp.sum(example_weights), 1.0),
        clients=count(real),
        rejected=count(real & ~client_faults.dropped & ~accepted),
        dropped=count(real & client_faults.dropped),
        stragglers=count(real & (client_faults.work < 1)),
        upload_bytes=jnp.sum(jnp.where(arrived, uploads.num_bytes, 0.0))
        / jnp.maximum(jnp.sum(arrived), 1),
        secure_clipped=secure_clipped.astype(jnp.int32),
        declared=uploads._replace(delta=(), extra=()),
    )
    return server, clients, round_metrics

  return jax.jit(round_fn)


def client_weights(uploads: ClientUpload, algorithm: FederatedAlgorithm) -> jax.Array:
  """[C] each upload's weight in the mean: its example count, or 1 under uniform weighting."""
  if algorithm.weighting == "examples":
    return uploads.num_examples
  return jnp.ones_like(uploads.num_examples)


def _step_server(server: ServerState, algorithm: FederatedAlgorithm, update, aggregator_state,
                 extra, mask, accepted) -> ServerState:
  stepped = ServerState(
      params=optax.apply_updates(server.params, update), aggregator=aggregator_state,
      broadcast=algorithm.local.server_update(server.broadcast, extra, mask))
  # A round in which nothing was accepted changes nothing: no server-optimizer step on a zero
  # update (momentum would otherwise move Theta on no evidence), no state drift. Under DP the
  # noisy release happens regardless (`always_step`).
  nothing = ~jnp.any(accepted) & (not algorithm.always_step)
  return jax.tree.map(lambda old, new: jnp.where(nothing, old, new), server, stepped)


def server_round(server: ServerState, uploads: ClientUpload, arrived, *,
                 algorithm: FederatedAlgorithm, max_update_norm: float,
                 key: jax.Array) -> tuple[ServerState, jax.Array]:
  """The server's half of a round: check the uploads that arrived, reduce them, step Theta.

  The simulator (`make_round`) and a real deployment (`pprsf_jax.deploy`) both call this on
  uploads stacked [C, ...]; `arrived` [C] bool marks the ones that reached the server.
  Returns the next ServerState and [C] bool: the uploads it accepted.
  """
  # The server accepts an upload only if everything in it is finite and within the norm bound.
  # Refused uploads only leave the mask: every reducer honours it (by `where`, so a NaN in a
  # masked slot cannot leak through 0 * NaN).
  valid = _finite_rows(uploads.delta) & _finite_rows(uploads.extra)
  if max_update_norm > 0:
    valid = valid & (client_norms(uploads.delta) <= max_update_norm)
  accepted = arrived & valid
  mask = accepted.astype(jnp.float32)
  update, aggregator_state = algorithm.aggregator.aggregate(
      uploads.delta, server.aggregator, weights=client_weights(uploads, algorithm), mask=mask,
      steps=uploads.num_steps, key=key, params=server.params)
  return _step_server(server, algorithm, update, aggregator_state, uploads.extra, mask,
                      accepted), accepted


def cohort_slice(examples, client_ids, size: int) -> tuple[Any, Any, Any]:
  """Gathers `client_ids` from host-resident stacked examples and pads the cohort to `size`.

  Padding clients repeat client 0's arrays with mask 0 and weight 0, so shapes (and the compiled
  round) stay fixed whatever the cohort's real size.
  """
  count = len(client_ids)
  padded_ids = np.concatenate([client_ids, np.zeros(size - count, client_ids.dtype)])
  cohort = jax.tree.map(lambda a: a[padded_ids], examples)
  client_mask = (np.arange(size) < count).astype(np.float32)
  cohort = cohort._replace(
      mask=cohort.mask * client_mask.reshape((-1,) + (1,) * (cohort.mask.ndim - 1)))
  return cohort, padded_ids.astype(np.int32), client_mask


def gather_client_states(states: DeviceState, padded_ids) -> DeviceState:
  """The cohort's rows of the host-resident per-client states (padding slots repeat a row)."""
  return jax.tree.map(lambda a: a[padded_ids], states)


def scatter_client_states(states: DeviceState, client_ids, rows: DeviceState) -> None:
  """Writes the real clients' rows (the first len(client_ids)) back into the host states."""
  count = len(client_ids)

  def put(table, new):
    table[client_ids] = np.asarray(new[:count])

  jax.tree.map(put, states, rows)
