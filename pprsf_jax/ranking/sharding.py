"""The cohort's clients spread over every device, on one host or several.

Every per-client array (examples, client states, ids, masks) is sharded along its leading client
axis over a 1-D mesh of all devices; Θ, the server state and the item table are replicated. The
round is the same jitted function: XLA compiles it SPMD, each device runs the local training of
its own clients, and the aggregation's sums over clients become cross-device reductions. Under
`jax.distributed` (several processes, each with its own devices) the mesh spans every process's
devices and each process supplies only the shards its devices hold; JAX's own runtime does the
communication.

With a single device nothing is placed and the round runs exactly as before.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CLIENTS = "clients"  # the mesh axis the client dimension is sharded over


def client_mesh() -> Mesh | None:
  """A 1-D mesh over every device of every process, or None when there is only one device."""
  if jax.device_count() == 1:
    return None
  return Mesh(np.asarray(jax.devices()), (CLIENTS,))


def padded_capacity(capacity: int, mesh: Mesh | None) -> int:
  """The cohort size rounded up so every device holds the same number of clients."""
  if mesh is None:
    return capacity
  devices = mesh.devices.size
  return -(-capacity // devices) * devices


def _put(tree: Any, sharding: NamedSharding) -> Any:
  def place(leaf):
    leaf = np.asarray(leaf)
    # Each process hands over only the slices its own devices hold (all of them on one host).
    return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

  return jax.tree.map(place, tree)


def shard_clients(tree: Any, mesh: Mesh | None) -> Any:
  """Host arrays [C, ...] -> device arrays sharded along the client axis (unchanged without a mesh)."""
  if mesh is None:
    return tree
  return _put(tree, NamedSharding(mesh, PartitionSpec(CLIENTS)))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
  """A copy of `tree` on every device (unchanged without a mesh)."""
  if mesh is None:
    return tree
  return _put(to_host(tree), NamedSharding(mesh, PartitionSpec()))


def _host_leaf(leaf: Any) -> np.ndarray:
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    # Spread over several processes: gather the global value (a replicated one comes back whole).
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return np.asarray(leaf)


def to_host(tree: Any) -> Any:
  """Host NumPy copies of (possibly sharded, possibly multi-process) arrays, whole on every
  process."""
  return jax.tree.map(_host_leaf, tree)


def initialize_distributed(coordinator: str, num_processes: int, process_id: int, *,
                           local_cpu_devices: int | None = None) -> None:
  """Joins a `jax.distributed` job before any other JAX call.

  `coordinator` is host:port of process 0; it binds exactly that address (127.0.0.1 keeps a
  localhost job off the network). On CPU, collectives go through Gloo; `local_cpu_devices`
  gives each process that many CPU devices.
  """
  # Only CPU collectives read this; asking for the backend here would start it too early.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if local_cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", local_cpu_devices)
  jax.distributed.initialize(coordinator_address=coordinator, coordinator_bind_address=coordinator,
                             num_processes=num_processes, process_id=process_id)
