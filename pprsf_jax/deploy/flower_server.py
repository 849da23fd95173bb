"""The Flower server app: the server's side of a PPRSF deployment, over Flower's message API.

Every decision is `coordinator.py`'s (the simulator's own server functions); this module only
addresses devices and moves records:
  1. recall on public data; wait for one device per user and ask each who it is;
  2. every round, send Theta and its candidate lists to the round's cohort (the simulator's
     schedule), decode the updates that come back, and aggregate them;
  3. send Theta and serving candidates to every device, re-rank the Top-T requests returned.
It writes `theta.npz` (leaf path -> array) and `results.json` into the run config's `out-dir`.

Run config keys beyond `config` / `overrides` (see `flower_config.py`): `out-dir`,
`wait-for-devices-s` (how long to wait for every device to connect) and `reply-timeout-s`
(how long a round waits for replies; a device that misses it counts as dropped).
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import jax
import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from pprsf_jax.aggregation import init_server_state
from pprsf_jax.config import ConfigError
from pprsf_jax.deploy import coordinator, local_data
from pprsf_jax.deploy.flower_config import run_config
from pprsf_jax.deploy.wire import WireError, candidates_to_record, tree_from_record, tree_to_record
from pprsf_jax.types import CandidateList, TopTRequest

app = ServerApp()
logger = logging.getLogger("flwr")


def _wait_for_devices(grid: Grid, count: int, timeout_s: float) -> list[int]:
  deadline = time.monotonic() + timeout_s
  while True:
    nodes = sorted(grid.get_node_ids())
    if len(nodes) >= count:
      return nodes
    if time.monotonic() > deadline:
      raise ConfigError(f"{len(nodes)} of {count} devices connected within {timeout_s:g} s: "
                        "start one SuperNode per user (--node-config 'client-id=<user>')")
    time.sleep(0.5)


def _exchange(grid: Grid, messages: list[Message], timeout_s: float) -> dict[int, Message]:
  """Sends, waits up to `timeout_s`, returns the replies by the node that sent them."""
  replies = grid.send_and_receive(messages, timeout=timeout_s)
  return {reply.metadata.src_node_id: reply for reply in replies}


def _identify(grid: Grid, nodes: list[int], num_users: int,
              timeout_s: float) -> tuple[dict[int, int], int]:
  """{client id: node id} for every user, and the devices' private feature width."""
  replies = _exchange(grid, [Message(RecordDict({"identity": ConfigRecord({})}), dst_node_id=node,
                                     message_type="query.identify") for node in nodes], timeout_s)
  node_of, widths = {}, set()
  for node in nodes:
    reply = replies.get(node)
    if reply is None or reply.has_error():
      why = "no reply" if reply is None else reply.error.reason
      raise ConfigError(f"device on node {node} could not identify itself: {why}")
    identity = reply.content["identity"]
    client = int(identity["client-id"])
    if client in node_of:
      raise ConfigError(f"two devices claim client-id={client} (nodes {node_of[client]}, {node})")
    node_of[client] = node
    widths.add(int(identity["user-features"]))
  missing = sorted(set(range(num_users)) - set(node_of))
  if missing:
    raise ConfigError(f"no device for users {missing[:10]}: the federation has {num_users} users")
  if len(widths) != 1:
    raise ConfigError(f"devices disagree on the private feature width: {sorted(widths)}")
  return node_of, widths.pop()


def _content(params, plan: dict, lists: list[CandidateList]) -> RecordDict:
  content = RecordDict({"theta": tree_to_record(params),
                        "plan": ConfigRecord(plan | {"lists": len(lists)})})
  for index, shipped in enumerate(lists):
    content[f"list-{index}"] = candidates_to_record(shipped)
  return content


def _decode_upload(client: int, reply: Message | None, params) -> coordinator.Received:
  """One device's reply, or why it cannot count."""
  empty = coordinator.Received(client, None, 0.0, None)
  if reply is None:
    return empty._replace(problem="no reply before the timeout")
  if reply.has_error():
    return empty._replace(problem=f"device error: {reply.error.reason}")
  metrics = reply.content["metrics"]
  received = empty._replace(num_bytes=float(metrics["num-bytes"]))
  if int(metrics["diverged"]) or "delta" not in reply.content:
    return received._replace(problem="local training diverged: no update sent")
  try:
    return received._replace(delta=tree_from_record(reply.content["delta"], params,
                                                     what=f"update of client {client}"))
  except WireError as error:
    return received._replace(problem=str(error))


def _payload_bytes(message: Message) -> int:
  return sum(record.count_bytes() for _, record in message.content.items())


def _privacy_plan(setup: coordinator.Setup) -> dict:
  """What a device must know of the DP plan: local DP's clip norm and calibrated noise."""
  plan = setup.plan
  if plan is None or plan.mechanism != "local":
    return {"mechanism": "none" if plan is None else plan.mechanism}
  return {"mechanism": "local", "clip-norm": float(plan.clip_norm),
          "noise-multiplier": float(plan.noise_multiplier)}


def _strict_json(value) -> str:
  """JSON without NaN / Infinity tokens (null instead), so any parser reads it."""
  clean = lambda x: (None if isinstance(x, float) and not np.isfinite(x) else
                     [clean(v) for v in x] if isinstance(x, list) else
                     {k: clean(v) for k, v in x.items()} if isinstance(x, dict) else x)
  return json.dumps(clean(value), indent=1, allow_nan=False)


@app.main()
def main(grid: Grid, context: Context) -> None:
  config = run_config(context)
  out_dir = pathlib.Path(str(context.run_config["out-dir"]))
  out_dir.mkdir(parents=True, exist_ok=True)
  wait_s = float(context.run_config.get("wait-for-devices-s", 120))
  timeout_s = float(context.run_config.get("reply-timeout-s", 600))

  setup = coordinator.prepare(config, local_data.server_part(config))
  num_users = setup.public.num_users
  node_of, width = _identify(grid, _wait_for_devices(grid, num_users, wait_s), num_users, wait_s)
  logger.info("pprsf: %d devices identified; recall trained on public data", num_users)
  server = init_server_state(setup.algorithm, coordinator.initial_theta(setup, width))
  privacy = _privacy_plan(setup)
  rounds = []
  for round_index, cohort in enumerate(setup.schedule):
    messages = [Message(_content(server.params, privacy | {"round": round_index,
                                                           "num-clients": num_users},
                                 coordinator.training_lists(setup, int(client))),
                        dst_node_id=node_of[int(client)], message_type="train")
                for client in cohort]
    replies = _exchange(grid, messages, timeout_s)
    received = [_decode_upload(int(client), replies.get(node_of[int(client)]), server.params)
                for client in cohort]
    outcome = coordinator.aggregate(setup, server, received, round_index)
    server = outcome.server
    rounds.append({
        "round": round_index, "cohort": [int(c) for c in cohort],
        "accepted": int(outcome.accepted.sum()),
        "refused": {str(client): why for client, why in outcome.refused.items()},
        # Payload bytes as Flower counts them (arrays and values, not framing).
        "bytes_down_per_device": float(np.mean([_payload_bytes(m) for m in messages] or [0.0])),
        "bytes_up_per_device": float(np.mean([_payload_bytes(r) for r in replies.values()
                                              if r.has_content()] or [0.0])),
    })
    logger.info("pprsf: round %d: %d of %d accepted", round_index, rounds[-1]["accepted"],
                len(cohort))

  candidates = coordinator.serving_candidates(setup)
  top_t = config.ranking.top_t
  replies = _exchange(grid, [Message(
      _content(server.params, {"round": -1, "num-clients": num_users},
               [coordinator.serving_list(setup, candidates, client)]),
      dst_node_id=node_of[client], message_type="query.rank") for client in range(num_users)],
                      timeout_s)
  items = np.full((num_users, top_t), -1, np.int32)
  scores = np.full((num_users, top_t), -np.inf, np.float32)
  unanswered = []
  for client in range(num_users):
    reply = replies.get(node_of[client])
    if reply is None or reply.has_error():
      unanswered.append(client)  # no request: the re-rank sees an empty list for this user
      continue
    items[client] = reply.content["request"]["items"].numpy()
    scores[client] = reply.content["request"]["scores"].numpy()
  final = coordinator.rerank(setup, TopTRequest(items=items, scores=scores))

  np.savez(out_dir / "theta.npz", **{jax.tree_util.keystr(path): np.asarray(leaf)
                                     for path, leaf in
                                     jax.tree_util.tree_leaves_with_path(server.params)})
  (out_dir / "results.json").write_text(_strict_json({
      "config": str(context.run_config["config"]),
      "overrides": str(context.run_config.get("overrides", "")),
      "devices": num_users, "rounds": rounds,
      "requests": {"items": items.tolist(),  # empty slots: item -1, score null
                   "scores": np.where(np.isfinite(scores), scores, np.nan).tolist()},
      "unanswered_rank_requests": unanswered, "final_lists": final.tolist(),
  }))
  logger.info("pprsf: wrote %s", out_dir)
