"""Client-side algorithms: how a client's local SGD differs from plain FedAvg, and what persists.

These run on the client, inside the vmapped client update (written for ONE client); they live in
`aggregation` because each is the client half of an aggregation algorithm and is selected with it
by name. A `LocalAlgorithm` has four pure parts:

  client_state = init_client(params)          # one client's persistent state (zeros)
  broadcast    = init_server(params)          # what the server sends with Theta each round
  grads        = correct(grads, params, anchor=Theta, client_state, broadcast)   # every step
  client_state, upload = finish(delta, client_state, broadcast, steps, learning_rate)
  broadcast    = server_update(broadcast, uploads [C, ...], accepted [C])

`upload` is what the algorithm adds to the client's parameter upload (SCAFFOLD's control-variate
change); the server sees it, never the client state itself.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from pprsf_jax.aggregation.base import EmptyState


class LocalAlgorithm(NamedTuple):
  """The client half of a federated algorithm (see module docstring)."""

  init_client: Callable[[Any], Any]
  init_server: Callable[[Any], Any]
  correct: Callable[..., Any]
  finish: Callable[..., tuple[Any, Any]]
  server_update: Callable[..., Any]


def _empty(params) -> EmptyState:
  del params
  return EmptyState()


def _no_finish(delta, client_state, broadcast, steps, learning_rate):
  del delta, broadcast, steps, learning_rate
  return client_state, EmptyState()


def _no_server_update(broadcast, uploads, accepted):
  del uploads, accepted
  return broadcast


def local_sgd() -> LocalAlgorithm:
  """Plain local SGD (FedAvg's client)."""
  correct = lambda grads, params, anchor, client_state, broadcast: grads
  return LocalAlgorithm(_empty, _empty, correct, _no_finish, _no_server_update)


def fedprox(mu: float) -> LocalAlgorithm:
  """FedProx (Li et al., 2020): each local step also descends (mu / 2) ||theta - Theta||^2,
  which keeps clients with unusual data from drifting far from the global model."""
  if mu < 0:
    raise ValueError(f"fedprox: mu={mu} must be >= 0")

  def correct(grads, params, anchor, client_state, broadcast):
    del client_state, broadcast
    return jax.tree.map(lambda g, p, a: g + mu * (p - a), grads, params, anchor)

  return LocalAlgorithm(_empty, _empty, correct, _no_finish, _no_server_update)


class ScaffoldServer(NamedTuple):
  control: Any  # c: the server control variate, same structure as params


class ScaffoldClient(NamedTuple):
  control: Any  # c_i: this client's control variate


def scaffold(num_clients: int) -> LocalAlgorithm:
  """SCAFFOLD (Karimireddy et al., 2020), option II.

  Local steps follow g - c_i + c. After tau_i steps of rate eta the client sets
  c_i+ = c_i - c - delta_i / (tau_i eta) and uploads c_i+ - c_i; the server adds the sum of the
  accepted changes / num_clients to c. Client drift under heterogeneous data is cancelled by the
  control variates, at twice the upload (and broadcast) size.
  """
  if num_clients < 1:
    raise ValueError(f"scaffold: num_clients={num_clients} must be >= 1")

  def init_client(params):
    return ScaffoldClient(control=jax.tree.map(jnp.zeros_like, params))

  def init_server(params):
    return ScaffoldServer(control=jax.tree.map(jnp.zeros_like, params))

  def correct(grads, params, anchor, client_state, broadcast):
    del params, anchor
    return jax.tree.map(lambda g, ci, c: g - ci + c, grads, client_state.control,
                        broadcast.control)

  def finish(delta, client_state, broadcast, steps, learning_rate):
    moved = steps > 0  # a client that took no step learned nothing about its gradient
    scale = 1.0 / (jnp.maximum(steps, 1).astype(jnp.float32) * learning_rate)
    new_control = jax.tree.map(
        lambda ci, c, d: jnp.where(moved, ci - c - d * scale.astype(d.dtype), ci),
        client_state.control, broadcast.control, delta)
    change = jax.tree.map(jnp.subtract, new_control, client_state.control)
    return ScaffoldClient(control=new_control), change

  def server_update(broadcast, uploads, accepted):
    def add(c, changes):
      rows = jnp.where(accepted.reshape((-1,) + (1,) * (changes.ndim - 1)) > 0, changes, 0)
      return c + jnp.sum(rows, axis=0) / num_clients

    return ScaffoldServer(control=jax.tree.map(add, broadcast.control, uploads))

  return LocalAlgorithm(init_client, init_server, correct, finish, server_update)
