"""Where the processes of a demo deployment get their data: the dataset files the simulator reads.

A real app already has its data where it runs: the server its logs and catalogue, each phone its
user's attributes and history. To deploy on a dataset instead (MovieLens, the synthetic
generator), every process reads the same files and keeps only its own part — the server
`PublicData`, device u its `DeviceData` — and drops the rest before any federated code runs.
"""

from __future__ import annotations

import numpy as np

from pprsf_jax.config import ConfigError, RunConfig
from pprsf_jax.data.dataset import FederatedDataset, build_dataset
from pprsf_jax.deploy.device import DeviceData
from pprsf_jax.pipeline import load_tables
from pprsf_jax.types import ItemCatalogue, PublicData


def load_federation(config: RunConfig) -> FederatedDataset:
  return build_dataset(load_tables(config.data, config.seed), config.data, config.seed)


def server_part(config: RunConfig) -> PublicData:
  """What the server of the demo federation keeps: the public data, nothing private."""
  return load_federation(config).public


def device_part(config: RunConfig, client_id: int) -> tuple[DeviceData, ItemCatalogue]:
  """What device `client_id` of the demo federation keeps: its own user's rows, and the public
  item catalogue (which an app ships with)."""
  data = load_federation(config)
  if not 0 <= client_id < data.public.num_users:
    raise ConfigError(f"client-id={client_id} is not a user of {config.data.source!r} "
                      f"(0 .. {data.public.num_users - 1})")
  return own_part(data, client_id)


def own_part(data: FederatedDataset, client_id: int) -> tuple[DeviceData, ItemCatalogue]:
  """User `client_id`'s rows of a federation, as its device keeps them, and the catalogue."""
  public, private = data.public, data.private
  mine_public = public.history.user == client_id
  mine_private = private.history.user == client_id
  device = DeviceData(
      client_id=client_id,
      user_features=np.asarray(private.user_features[client_id], np.float32),
      public_items=public.history.item[mine_public], public_fold=public.fold[mine_public],
      private_items=private.history.item[mine_private], private_fold=private.fold[mine_private])
  return device, public.catalogue

