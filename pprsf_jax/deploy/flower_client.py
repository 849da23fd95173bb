"""The Flower client app: one device's side of a PPRSF deployment.

It answers three messages, each with the simulator's own client functions (`device.py`):
  query.identify -> which user this device is, and the width of its private feature vector;
  train          -> Theta + its candidate lists in, Theta-relative update and its size out;
  query.rank     -> Theta + its serving candidates in, its Top-T request out.
The device's data (`DeviceData`) is read from its own storage (`local_data.device_part` for
the demo federation) and is never put in a reply: replies hold only the update (with its size
and whether training diverged, in which case no update is sent) and the Top-T request. The
loss, the example and step counts stay on the device; the server derives the weight and step
count it needs from the lists it sent.

Node config (`flower-supernode --node-config`): `client-id` (the user this device is) and,
optionally, `data-config` (the pprsf config file naming the device's dataset; default: the run's).
"""

from __future__ import annotations

import jax
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from pprsf_jax import pipeline
from pprsf_jax.aggregation import make_algorithm
from pprsf_jax.cli import load_config
from pprsf_jax.config import ConfigError, RunConfig
from pprsf_jax.deploy import device as device_lib
from pprsf_jax.deploy import local_data
from pprsf_jax.deploy.flower_config import run_config
from pprsf_jax.deploy.wire import candidates_from_record, tree_from_record, tree_to_record
from pprsf_jax.privacy import gaussian_privatizer
from pprsf_jax.ranking.task import personal_key
from pprsf_jax.ranking import make_item_table

app = ClientApp()


def _device(context: Context, config: RunConfig):
  if "client-id" not in context.node_config:
    raise ConfigError("this SuperNode has no client-id: start it with "
                      "--node-config 'client-id=<user id>'")
  data_config = (load_config(str(context.node_config["data-config"]))
                 if "data-config" in context.node_config else config)
  return local_data.device_part(data_config, int(context.node_config["client-id"]))


def _theta_template(config: RunConfig, num_user_features: int, item_table):
  """Theta's structure, shapes and dtypes (no values: nothing is drawn)."""
  task = pipeline.local_training(config).task
  dims = pipeline.model_dims(num_user_features, item_table)
  return jax.eval_shape(lambda: task.init_shared(jax.random.key(0), dims))


# Where a device keeps its personal state between messages: Flower's per-node context state,
# which stays on the SuperNode and is never part of a reply.
PERSONAL_RECORD = "pprsf.personal"


def _personal_state(context: Context, config: RunConfig, device, item_table):
  """The device's personal state: stored from its last round, else its initial one (the
  simulator's row for this client)."""
  task = pipeline.local_training(config).task
  dims = pipeline.model_dims(device.user_features.shape[0], item_table)
  initial = task.init_personal(
      personal_key(pipeline.stream_key(config.seed, "personal"), device.client_id), dims)
  if PERSONAL_RECORD not in context.state:
    return initial
  return tree_from_record(context.state[PERSONAL_RECORD], jax.eval_shape(lambda: initial),
                          what="the device's personal state")


@app.query("identify")
def identify(message: Message, context: Context) -> Message:
  config = run_config(context)
  device, _ = _device(context, config)
  return Message(RecordDict({"identity": ConfigRecord({
      "client-id": device.client_id, "user-features": int(device.user_features.shape[0])})}),
                 reply_to=message)


def _received(message: Message, context: Context):
  """Decodes what the server sent: (config, device, item table, genres, Theta, lists)."""
  config = run_config(context)
  device, catalogue = _device(context, config)
  item_table = make_item_table(catalogue)
  theta = tree_from_record(message.content["theta"],
                           _theta_template(config, device.user_features.shape[0], item_table),
                           what="Theta")
  count = int(message.content["plan"]["lists"])
  lists = [candidates_from_record(message.content[f"list-{i}"],
                                  num_items=catalogue.genres.shape[0]) for i in range(count)]
  return config, device, item_table, catalogue.genres, theta, lists


@app.train()
def train(message: Message, context: Context) -> Message:
  config, device, item_table, genres, theta, lists = _received(message, context)
  plan = message.content["plan"]
  algorithm = make_algorithm(config.federated, int(plan["num-clients"]))
  if plan["mechanism"] == "local":  # local DP: the server calibrated the noise for the run
    algorithm = algorithm._replace(privatizer=gaussian_privatizer(
        clip_norm=float(plan["clip-norm"]), noise_multiplier=float(plan["noise-multiplier"])))
  examples = device_lib.device_examples(device, lists, genres)
  local = pipeline.local_training(config)
  state = device_lib.initial_state(
      theta, local=local, algorithm=algorithm,
      dims=pipeline.model_dims(device.user_features.shape[0], item_table),
      seed_key=pipeline.stream_key(config.seed, "personal"), client_id=device.client_id)
  state = state._replace(personal=_personal_state(context, config, device, item_table))
  reply, state = device_lib.train_on_device(
      theta, examples, item_table, seed_key=pipeline.stream_key(config.seed, "clients"),
      round_index=int(plan["round"]), client_id=device.client_id, local=local,
      algorithm=algorithm, state=state)
  if jax.tree.leaves(state.personal):  # kept on the device for its next round and its ranking
    context.state[PERSONAL_RECORD] = tree_to_record(state.personal)
  content = RecordDict({"metrics": MetricRecord({
      "num-bytes": reply.num_bytes, "diverged": int(reply.delta is None)})})
  if reply.delta is not None:  # as in the simulator, a diverged device sends no update
    content["delta"] = tree_to_record(reply.delta)
  return Message(content, reply_to=message)


@app.query("rank")
def rank(message: Message, context: Context) -> Message:
  config, device, item_table, genres, theta, lists = _received(message, context)
  request = device_lib.rank(lists[0], device, theta, item_table=item_table, genres=genres,
                            local=pipeline.local_training(config), top_t=config.ranking.top_t,
                            personal=_personal_state(context, config, device, item_table))
  return Message(RecordDict({"request": ArrayRecord(array_dict={
      "items": Array(np.asarray(request.items, np.int32)),
      "scores": Array(np.asarray(request.scores, np.float32))})}), reply_to=message)
