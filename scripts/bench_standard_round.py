"""Time the cross-framework "standard round" through the package's own round; print JSON.

  python scripts/bench_standard_round.py [--cohorts 100 1000 10000] [--repeats 5] [--chunk 10]
                                         [--loop-max-clients 10000] [--backprop autodiff]
                                         [--ablation-max-clients 1000] [--profile-cohort 1000]
                                         [--matmul-size 2048] [--cpu-devices 1]

The standard round is fixed so that figures compare across frameworks. Every client holds 100
examples of 64 float32 features drawn from N(0, 1), labelled by one planted random linear rule
(label = [x . w* > 0]) so that the loss falls. The model is an MLP 64-64-32-1 with ReLU, trained
on sigmoid binary cross-entropy (optax.sigmoid_binary_cross_entropy). In one round every client
starts from Theta, runs one local epoch of plain SGD (learning rate 0.1, batch 20, so 5 steps, in
a fixed batch order: step k uses examples 20k..20k+19, no shuffle) and returns its parameters; the
server takes their example-weighted mean.

For each cohort size C, measured in the same process:
  package   the package's round (`pprsf_jax.ranking.make_round`, the one every run trains with),
            on a task built with the package's interface: the `feature_mlp` ranking model (64-32
            hidden) on `ranking.row_task.labelled_rows_task` (BCE over each client's rows, 20 per
            step, layout order), FedAvg with example weights and server learning rate 1. Its
            round also checks every upload (finite, declared counts) and draws the simulated
            faults; it vmaps the whole cohort at once.
  vmapped   the hand-written reference kernel: one jax.jit of a lax.scan over chunks of --chunk clients, each chunk
            a vmap over its clients of a lax.scan over the 5 SGD steps, whose example-weighted
            parameter sums are carried from chunk to chunk (so the [C, params] stack of client
            models is never built); Theta is donated.
  loop      the FedJAX-style baseline: a Python loop over clients calling one jitted SGD step
            5 times per client, then one jitted weighted accumulate per client. Above
            --loop-max-clients only that many clients are timed and the time is scaled to C
            (reported as extrapolated).
  ablations (C <= --ablation-max-clients) the same engine without chunking (one vmap over all
            clients, then the weighted mean) and with the other backward pass: by default the
            engine uses jax.grad, as the package's ranking model does, and the ablation a
            hand-written backward pass with its weight-gradient operands transposed for speed
            (`--backprop manual` swaps the two).
Also measured: the float32 matmul roofline (a jitted n x n @ n x n matmul, 2 n^3 flops), a
profile of the round at --profile-cohort (forward-only round, weighted mean alone, an in-cache
probe of the per-client matmul shape), peak host memory after each cohort size, and versions.

Achieved GFLOP/s count 6 x params x examples per round. Wall figures are medians of --repeats
calls, each ended with block_until_ready; CPU-seconds of the whole process are reported beside
them because on a shared machine the wall figures alone mislead. The vmapped round feeds its
Theta back, so the per-round mean losses show learning. The script asserts that the package's
round, the vmapped round and the loop give the same Theta at the smallest cohort, and that the
hand-written gradients match jax.grad.

--cpu-devices N (off by default; the JAX setting jax_num_cpu_devices, XLA_FLAGS are left alone)
splits the host into N logical devices and also times the engine with the cohort sharded over
them by shard_map ("vmapped_sharded"); everything else still runs on device 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
import psutil

from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.config import FederatedConfig
from pprsf_jax.ranking import (LocalTraining, ModelSpec, build_model, init_device_states,
                               make_round)
from pprsf_jax.ranking.row_task import labelled_rows, labelled_rows_task

FEATURES = 64
HIDDEN = (64, 32)
EXAMPLES = 100  # per client
BATCH = 20
STEPS = EXAMPLES // BATCH  # one local epoch
LEARNING_RATE = 0.1
LAYERS = (FEATURES,) + HIDDEN + (1,)
NUM_PARAMS = sum(i * o + o for i, o in zip(LAYERS[:-1], LAYERS[1:]))  # 6273
FLOP_FORMULA = ("flops per round = 6 * params * examples, params = 64*64+64 + 64*32+32 + 32*1+1 "
                "= 6273, examples = 100 * C (2 forward + 4 backward flops per parameter and "
                "example)")
RULE_SEED = 1234  # the planted labelling rule, shared by every cohort

Params = dict  # {"w1": f32[64, 64], "b1": f32[64], "w2": f32[64, 32], "b2": f32[32],
#                 "w3": f32[32, 1], "b3": f32[1]}; a leading client axis where stacked
SgdStep = Callable  # (params, x f32[B, 64], y f32[B]) -> (params, loss f32[])


class RoundSums(NamedTuple):
  """Example-weighted sums over a cohort (or a chunk of it); a mean is sums / weight."""
  params: Params  # sum_c n_c * theta_c, shaped like Theta
  loss: jax.Array  # f32[], sum_c n_c * (client c's mean batch loss over its epoch)
  weight: jax.Array  # f32[], sum_c n_c


class Cohort(NamedTuple):
  """Client data stacked on a leading client axis; padding clients have num_examples 0."""
  features: np.ndarray  # f32[C, 100, 64]
  labels: np.ndarray  # f32[C, 100], 0 or 1
  num_examples: np.ndarray  # i32[C], the aggregation weights


# ---------------------------------------------------------------------------------------------
# Model, data and the per-client SGD step.


def init_params(key: jax.Array) -> Params:
  """He-normal kernels and zero biases for the 64-64-32-1 MLP."""
  params = {}
  keys = jax.random.split(key, len(LAYERS) - 1)
  for layer, (layer_key, fan_in, fan_out) in enumerate(zip(keys, LAYERS[:-1], LAYERS[1:]), 1):
    params[f"w{layer}"] = jax.nn.initializers.he_normal()(layer_key, (fan_in, fan_out), jnp.float32)
    params[f"b{layer}"] = jnp.zeros((fan_out,), jnp.float32)
  return params


def make_cohort(clients: int, *, seed: int) -> Cohort:
  """Random client data labelled by the planted linear rule.

  Example:
    >>> make_cohort(3, seed=0).features.shape
    (3, 100, 64)
  """
  rule = np.random.default_rng(RULE_SEED).standard_normal(FEATURES, dtype=np.float32)
  features = np.random.default_rng(seed).standard_normal((clients, EXAMPLES, FEATURES),
                                                         dtype=np.float32)
  return Cohort(features, (features @ rule > 0).astype(np.float32),
                np.full(clients, EXAMPLES, np.int32))


def pad_cohort(cohort: Cohort, multiple: int) -> Cohort:
  """Appends zero-weight clients so that the cohort size is a multiple of `multiple`."""
  extra = -len(cohort.num_examples) % multiple
  return Cohort(*(np.concatenate([a, np.zeros((extra,) + a.shape[1:], a.dtype)]) for a in cohort))


def forward(params: Params, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """Logits f32[B] of one batch, and the activations the backward pass needs."""
  # jax.nn.relu, not jnp.maximum(z, 0): the latter's gradient splits ties 50/50 and costs jax.grad
  # several extra elementwise ops per layer (~25% of the autodiff round).
  z1 = x @ params["w1"] + params["b1"][None, :]
  h1 = jax.nn.relu(z1)
  z2 = h1 @ params["w2"] + params["b2"][None, :]
  h2 = jax.nn.relu(z2)
  return h2 @ params["w3"][:, 0] + params["b3"][0], (z1, h1, z2, h2)


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean sigmoid binary cross-entropy of one batch."""
  return optax.sigmoid_binary_cross_entropy(forward(params, x)[0], y).mean()


def manual_value_and_grad(params: Params, x: jax.Array,
                          y: jax.Array) -> tuple[jax.Array, Params]:
  """`jax.value_and_grad(loss_fn)` by hand, with the weight-gradient operands laid out for speed.

  Example:
    >>> params, x, y = init_params(jax.random.key(0)), jnp.ones((20, 64)), jnp.ones(20)
    >>> float(manual_value_and_grad(params, x, y)[0]) == float(loss_fn(params, x, y))
    True
  """
  logits, (z1, h1, z2, h2) = forward(params, x)
  loss = optax.sigmoid_binary_cross_entropy(logits, y).mean()
  d3 = (jax.nn.sigmoid(logits) - y) / y.shape[0]  # d loss / d logits, f32[B]
  d2 = jnp.where(z2 > 0, d3[:, None] * params["w3"][None, :, 0], 0.0)  # f32[B, 32]
  d1 = jnp.where(z1 > 0, d2 @ params["w2"].T, 0.0)  # f32[B, 64]
  # x^T @ d1 as XLA:CPU sees it after autodiff contracts the row axis of both operands and goes to
  # Eigen at about half the speed of the YNNPACK kernel that a materialised x^T gets; the barrier
  # keeps the transposes, which XLA would otherwise fold back into the dot.
  x_t, h1_t = jax.lax.optimization_barrier((x.T, h1.T))
  grads = {"w1": x_t @ d1, "b1": d1.sum(0), "w2": h1_t @ d2, "b2": d2.sum(0),
           "w3": (h2.T @ d3)[:, None], "b3": d3.sum(keepdims=True)}
  return loss, grads


def make_sgd_step(value_and_grad: Callable) -> SgdStep:
  """Plain SGD on one batch with the given (loss, grads) function."""
  def sgd_step(params, x, y):
    loss, grads = value_and_grad(params, x, y)
    return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads), loss
  return sgd_step


BACKPROPS = {"manual": manual_value_and_grad, "autodiff": jax.value_and_grad(loss_fn)}


def forward_only_step(params: Params, x: jax.Array, y: jax.Array) -> tuple[Params, jax.Array]:
  """A step that only evaluates the loss: the forward share of the round in the profile."""
  return params, loss_fn(params, x, y)


# ---------------------------------------------------------------------------------------------
# The vmapped engine round.


def client_epoch(sgd_step: SgdStep, theta: Params, x: jax.Array,
                 y: jax.Array) -> tuple[Params, jax.Array]:
  """One client's local epoch from Theta: f32[100, 64], f32[100] -> (params, mean batch loss)."""
  def body(params, step):
    # Slicing by step index, rather than scanning over x reshaped to [5, 20, 64], spares vmap a
    # [C, 5, ...] -> [5, C, ...] transpose of the cohort's data in every round.
    return sgd_step(params, jax.lax.dynamic_slice_in_dim(x, step * BATCH, BATCH),
                    jax.lax.dynamic_slice_in_dim(y, step * BATCH, BATCH))
  params, losses = jax.lax.scan(body, theta, jnp.arange(STEPS))
  return params, losses.mean()


def cohort_sums(sgd_step: SgdStep, theta: Params, cohort: Cohort, *,
                chunk: int | None) -> RoundSums:
  """Example-weighted sums of the clients' updated parameters and losses.

  Args:
    sgd_step: the per-batch update.
    theta: the server parameters every client starts from.
    cohort: the clients' data (device arrays); C must be a multiple of `chunk`.
    chunk: clients per vmap; None vmaps the whole cohort at once.

  Returns:
    The sums over the cohort.
  """
  epochs = jax.vmap(functools.partial(client_epoch, sgd_step), in_axes=(None, 0, 0))

  def sums(features, labels, num_examples):
    weights = num_examples.astype(jnp.float32)
    params, losses = epochs(theta, features, labels)
    return RoundSums(jax.tree.map(lambda p: jnp.tensordot(weights, p, axes=1), params),
                     weights @ losses, weights.sum())

  if chunk is None:
    return sums(*cohort)
  # A chunk's client models, gradients and activations (~0.6 MB at 10 clients) stay in L2 across
  # its 5 steps; one vmap over all clients streams every client model through memory each step.
  chunked = jax.tree.map(lambda a: a.reshape((-1, chunk) + a.shape[1:]), cohort)
  zero = RoundSums(jax.tree.map(jnp.zeros_like, theta), jnp.zeros((), jnp.float32),
                   jnp.zeros((), jnp.float32))
  total, _ = jax.lax.scan(lambda acc, part: (jax.tree.map(jnp.add, acc, sums(*part)), None),
                          zero, chunked)
  return total


def finish_round(theta: Params, sums: RoundSums) -> tuple[Params, jax.Array]:
  """The example-weighted means; a cohort without examples leaves Theta unchanged."""
  scale = jnp.where(sums.weight > 0, 1.0 / jnp.where(sums.weight > 0, sums.weight, 1.0), 0.0)
  params = jax.tree.map(lambda s, t: jnp.where(sums.weight > 0, s * scale, t), sums.params, theta)
  return params, sums.loss * scale


def make_vmapped_round(sgd_step: SgdStep, *, chunk: int | None) -> Callable:
  """(theta, cohort) -> (new theta, mean client loss) for one device."""
  def round_fn(theta, cohort):
    return finish_round(theta, cohort_sums(sgd_step, theta, cohort, chunk=chunk))
  return round_fn


def make_sharded_round(sgd_step: SgdStep, *, chunk: int, mesh: jax.sharding.Mesh) -> Callable:
  """The vmapped round with the cohort sharded over the mesh axis "clients" (drjax-style)."""
  spec = jax.sharding.PartitionSpec
  # check_vma=False: the per-shard scans carry sums that start replicated and become per-shard;
  # the psum makes them replicated again.
  shard_sums = jax.shard_map(
      lambda theta, cohort: jax.lax.psum(cohort_sums(sgd_step, theta, cohort, chunk=chunk),
                                         "clients"),
      mesh=mesh, in_specs=(spec(), spec("clients")), out_specs=spec(), check_vma=False)

  def round_fn(theta, cohort):
    return finish_round(theta, shard_sums(theta, cohort))
  return round_fn


# ---------------------------------------------------------------------------------------------
# The package's round.


def to_package(theta: Params) -> dict:
  """The reference's Theta in the layout of the package's `feature_mlp` (Flax Dense layers)."""
  return {f"Dense_{layer - 1}": {"kernel": theta[f"w{layer}"], "bias": theta[f"b{layer}"]}
          for layer in range(1, len(LAYERS))}


def from_package(params: dict) -> Params:
  return {name: params[f"Dense_{int(name[1:]) - 1}"]["kernel" if name[0] == "w" else "bias"]
          for name in ("w1", "b1", "w2", "b2", "w3", "b3")}


class PackageRound(NamedTuple):
  """The package's jitted round and everything it is called with, for one cohort size."""
  round_fn: Callable  # make_round(local, algorithm)
  algorithm: object
  clients: object  # the cohort's DeviceState rows (no state: the algorithm keeps none)
  rows: object  # LabelledRows [C, ...]
  ids: jax.Array  # [C] int32
  mask: jax.Array  # [C] float32

  def __call__(self, server, round_index):
    server, _, metrics = self.round_fn(server, self.clients, self.rows, self.ids, self.mask, (),
                                       jax.random.key(0), round_index)
    return server, metrics.loss


def make_package_round(cohort: Cohort) -> PackageRound:
  """The standard round as a package user builds it: a model, a task, local training, FedAvg."""
  clients = len(cohort.num_examples)
  model = build_model("feature_mlp", ModelSpec(hidden_sizes=HIDDEN))
  local = LocalTraining(task=labelled_rows_task(model, BATCH), epochs=1,
                        learning_rate=LEARNING_RATE, shuffle=False)
  algorithm = make_algorithm(FederatedConfig(server_learning_rate=1.0), clients)
  rows = labelled_rows(cohort.features, cohort.labels)  # every client real: no padding
  states = init_device_states(algorithm, to_package(init_params(jax.random.key(0))), (), clients)
  return PackageRound(make_round(local, algorithm), algorithm, jax.device_put(states),
                      jax.device_put(rows), jnp.arange(clients, dtype=jnp.int32),
                      jnp.ones(clients, jnp.float32))


def measure_package(theta: Params, cohort: Cohort, clients: int,
                    repeats: int) -> tuple[dict, Params]:
  """First call (compiles) and steady state of the package's round; returns the first Theta."""
  package = make_package_round(cohort)
  server = init_server_state(package.algorithm, to_package(theta))
  first = time.perf_counter()
  state = {"server": jax.block_until_ready(package(server, 0))[0]}
  first_s = time.perf_counter() - first
  first_theta = from_package(state["server"].params)
  rounds = iter(range(1, repeats + 1))

  def one_round():  # feeds Theta back, as a training run would
    state["server"], loss = package(state["server"], next(rounds))
    return loss
  walls, cpus, losses = timed(one_round, repeats)
  figures = {"compile_and_first_call_s": round(first_s, 3),
             **rates(clients, float(np.median(walls)), float(np.median(cpus))),
             "seconds_all": [round(w, 5) for w in walls],
             "mean_loss_by_round": [round(float(l), 5) for l in losses]}
  return figures, first_theta


# ---------------------------------------------------------------------------------------------
# The FedJAX-style loop baseline.


class LoopRound(NamedTuple):
  """A per-client Python loop of jitted steps (FedJAX's `for_each_client` pattern)."""
  step: Callable  # jitted SgdStep
  accumulate: Callable  # jitted (RoundSums, params, losses tuple, weight) -> RoundSums
  finish: Callable  # jitted finish_round

  def __call__(self, theta: Params, batches: list, num_examples: np.ndarray):
    total = RoundSums(jax.tree.map(jnp.zeros_like, theta), jnp.zeros((), jnp.float32),
                      jnp.zeros((), jnp.float32))
    for client_batches, weight in zip(batches, num_examples.astype(np.float32)):
      params, losses = theta, []
      for x, y in client_batches:
        params, loss = self.step(params, x, y)
        losses.append(loss)
      total = self.accumulate(total, params, tuple(losses), weight)
    return self.finish(theta, total)


def make_loop_round(sgd_step: SgdStep) -> LoopRound:
  """Jits the step once; the loop itself stays in Python, one dispatch per step and client."""
  def accumulate(total, params, losses, weight):
    return RoundSums(jax.tree.map(lambda s, p: s + weight * p, total.params, params),
                     total.loss + weight * sum(losses) / len(losses), total.weight + weight)
  return LoopRound(jax.jit(sgd_step), jax.jit(accumulate), jax.jit(finish_round))


def client_batches(cohort: Cohort, clients: int) -> list:
  """Per-client lists of (x, y) batches, staged on the device before timing.

  FedJAX feeds NumPy batches; staging them here leaves the loop with nothing but its dispatches.
  """
  x = cohort.features[:clients].reshape(clients, STEPS, BATCH, FEATURES)
  y = cohort.labels[:clients].reshape(clients, STEPS, BATCH)
  return jax.device_put([[(x[c, s], y[c, s]) for s in range(STEPS)] for c in range(clients)])


# ---------------------------------------------------------------------------------------------
# Measurement.


def timed(fn: Callable, repeats: int) -> tuple[list, list, list]:
  """Calls fn() `repeats` times; returns wall seconds, process CPU-seconds and outputs."""
  walls, cpus, outputs = [], [], []
  for _ in range(repeats):
    cpu, wall = time.process_time(), time.perf_counter()
    out = jax.block_until_ready(fn())
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
    outputs.append(out)
  return walls, cpus, outputs


def rates(clients: int, seconds: float, cpu_seconds: float) -> dict:
  flops = 6 * NUM_PARAMS * EXAMPLES * clients
  return {"seconds_per_round": round(seconds, 5), "cpu_seconds_per_round": round(cpu_seconds, 5),
          "cores_used": round(cpu_seconds / seconds, 2),
          "client_updates_per_s": round(clients / seconds, 1),
          "gflops": round(flops / seconds / 1e9, 2),
          "gflop_per_cpu_second": round(flops / cpu_seconds / 1e9, 2)}


def copy_tree(tree):
  return jax.tree.map(jnp.copy, tree)


def measure_engine(round_fn: Callable, theta: Params, cohort: Cohort, clients: int,
                   repeats: int) -> tuple[dict, Params]:
  """Compile, first call and steady state of a jitted round; returns figures and the first Theta."""
  compiling = time.perf_counter()
  compiled = jax.jit(round_fn, donate_argnums=0).lower(theta, cohort).compile()
  compile_s = time.perf_counter() - compiling
  first = time.perf_counter()
  first_theta, first_loss = jax.block_until_ready(compiled(copy_tree(theta), cohort))
  first_s = time.perf_counter() - first
  state = {"theta": copy_tree(first_theta)}

  def one_round():  # feeds Theta back, as a training run would
    state["theta"], loss = compiled(state["theta"], cohort)
    return loss
  walls, cpus, losses = timed(one_round, repeats)
  figures = {"compile_s": round(compile_s, 3), "first_call_s": round(first_s, 4),
             **rates(clients, float(np.median(walls)), float(np.median(cpus))),
             "seconds_all": [round(w, 5) for w in walls],
             "mean_loss_by_round": [round(float(l), 5) for l in [first_loss] + losses]}
  return figures, first_theta


def measure_loop(loop: LoopRound, theta: Params, cohort: Cohort, clients: int, max_clients: int,
                 repeats: int) -> tuple[dict, Params]:
  """Times the loop over min(C, max_clients) clients and scales the time to C."""
  timed_clients = min(clients, max_clients)
  batches = client_batches(cohort, timed_clients)
  weights = cohort.num_examples[:timed_clients]
  first = time.perf_counter()
  first_theta, _ = jax.block_until_ready(loop(theta, batches, weights))
  first_s = time.perf_counter() - first
  walls, cpus, _ = timed(lambda: loop(theta, batches, weights), repeats)
  scale = clients / timed_clients
  seconds, cpu_seconds = float(np.median(walls)) * scale, float(np.median(cpus)) * scale
  figures = {"compile_s": round(max(first_s - seconds / scale, 0.0), 3),
             "compile_s_method": "first round minus steady-state round (near 0 after the first "
                                 "cohort: the step's shapes do not depend on C)",
             **rates(clients, seconds, cpu_seconds),
             "clients_timed": timed_clients, "extrapolated": timed_clients < clients}
  if timed_clients < clients:
    figures["extrapolation"] = (f"{timed_clients} of {clients} clients timed; seconds scaled by "
                                f"{scale:g} (the loop's cost is linear in the clients)")
  return figures, first_theta


def matmul_roofline(size: int, repeats: int) -> dict:
  """GFLOP/s of a jitted float32 [n, n] @ [n, n] matmul (2 n^3 flops), median of the repeats."""
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (size, size), jnp.float32) for k in keys)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  walls, cpus, _ = timed(lambda: matmul(a, b), repeats)
  flops = 2 * size ** 3
  return {"shape": f"f32[{size},{size}] @ f32[{size},{size}]", "flops": flops,
          "repeats": repeats, "gflops": round(flops / float(np.median(walls)) / 1e9, 2),
          "best_gflops": round(flops / min(walls) / 1e9, 2),
          "gflop_per_cpu_second": round(flops / float(np.median(cpus)) / 1e9, 2),
          "cores_used": round(float(np.median(cpus)) / float(np.median(walls)), 2)}


def small_matmul_probe(chunk: int, repeats: int, iterations: int = 2000) -> dict:
  """GFLOP per CPU-second of the per-client layer-1 matmul shape, operands resident in cache."""
  a = jnp.ones((chunk, BATCH, FEATURES), jnp.float32)
  w = jnp.ones((chunk, FEATURES, HIDDEN[0]), jnp.float32)

  def probe(a, w):
    def body(carry, _):
      # The carry feeds the next product, so XLA cannot hoist the matmul out of the loop.
      out = jnp.einsum("cbi,cio->cbo", a + carry, w)
      return out[0, 0, 0] * 1e-9, None
    return jax.lax.scan(body, jnp.zeros((), jnp.float32), None, length=iterations)[0]
  probe = jax.jit(probe)
  jax.block_until_ready(probe(a, w))
  walls, cpus, _ = timed(lambda: probe(a, w), repeats)
  flops = 2 * chunk * BATCH * FEATURES * HIDDEN[0] * iterations
  return {"shape": f"f32[{chunk},{BATCH},{FEATURES}] @ f32[{chunk},{FEATURES},{HIDDEN[0]}] "
                   f"(batched over clients)",
          "gflops": round(flops / float(np.median(walls)) / 1e9, 2),
          "gflop_per_cpu_second": round(flops / float(np.median(cpus)) / 1e9, 2)}


def profile_round(theta: Params, cohort: Cohort, clients: int, chunk: int, full: dict,
                  repeats: int) -> dict:
  """Splits the round's time: forward only, backward + update (the rest), the weighted mean."""
  forward_round = jax.jit(make_vmapped_round(forward_only_step, chunk=chunk))
  jax.block_until_ready(forward_round(theta, cohort))
  walls, cpus, _ = timed(lambda: forward_round(theta, cohort), repeats)
  forward_s, forward_cpu = float(np.median(walls)), float(np.median(cpus))
  stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (clients,) + p.shape) + 0.0, theta)
  weights = jnp.asarray(cohort.num_examples[:clients], jnp.float32)
  mean = jax.jit(lambda s, w: jax.tree.map(lambda p: jnp.tensordot(w / w.sum(), p, axes=1), s))
  jax.block_until_ready(mean(stacked, weights))
  mean_walls, mean_cpus, _ = timed(lambda: mean(stacked, weights), repeats)
  full_cpu = full["cpu_seconds_per_round"]
  return {
      "clients": clients,
      "forward_only_round": {"seconds": round(forward_s, 5), "cpu_seconds": round(forward_cpu, 5),
                             "share_of_round_cpu": round(forward_cpu / full_cpu, 3)},
      "backward_and_update_share_of_round_cpu": round(1 - forward_cpu / full_cpu, 3),
      "weighted_mean_alone": {"input": f"f32[{clients}, {NUM_PARAMS}] (as a pytree)",
                              "seconds": round(float(np.median(mean_walls)), 6),
                              "cpu_seconds": round(float(np.median(mean_cpus)), 6),
                              "share_of_round_cpu": round(float(np.median(mean_cpus)) / full_cpu,
                                                          4)},
      "small_matmul_probe": small_matmul_probe(chunk, repeats),
  }


def peak_rss_mib() -> float:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def max_difference(a: Params, b: Params) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def check_gradients(theta: Params, cohort: Cohort) -> float:
  """Asserts the hand-written backward pass against jax.grad on one batch; returns the max error."""
  x, y = jnp.asarray(cohort.features[0, :BATCH]), jnp.asarray(cohort.labels[0, :BATCH])
  loss, grads = jax.jit(manual_value_and_grad)(theta, x, y)
  want_loss, want = jax.jit(jax.value_and_grad(loss_fn))(theta, x, y)
  error = max(max_difference(grads, want), abs(float(loss - want_loss)))
  assert error < 1e-5, f"hand-written gradients differ from jax.grad by {error}"
  return error


def check_rounds(engine: Callable, theta: Params, data: Cohort, theta_vmapped: Params,
                 theta_loop: Params, theta_package: Params, loop_clients: int,
                 chunk: int) -> dict:
  """Asserts that the package's round, the vmapped round and the loop agree (the loop on the
  clients it ran)."""
  package_difference = max_difference(theta_package, theta_vmapped)
  assert package_difference < 1e-5, f"package and vmapped rounds differ by {package_difference}"
  if loop_clients < len(data.num_examples):  # the loop ran a subset: rerun the engine on it
    subset = Cohort(*(a[:loop_clients] for a in data))
    theta_vmapped, _ = jax.jit(engine)(theta, jax.device_put(pad_cohort(subset, chunk)))
  difference = max_difference(theta_vmapped, theta_loop)
  assert difference < 1e-5, f"vmapped and loop rounds differ by {difference}"
  return {"clients": loop_clients, "max_abs_difference_vmapped_vs_loop": difference,
          "max_abs_difference_package_vs_vmapped": package_difference,
          "tolerance": 1e-5, "gradient_check_max_abs_difference": check_gradients(theta, data)}


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def explain(rows: list, roofline: dict, profile: dict | None, load: tuple) -> list[str]:
  """Short factual notes from this run's own figures."""
  notes = []
  wanted = profile["clients"] if profile else 1000
  row = next((r for r in rows if r["clients"] == wanted), rows[-1])
  engine = row["vmapped"]
  fraction = engine["gflops"] / roofline["gflops"]
  notes.append(
      f"C={row['clients']}: vmapped round {engine['gflops']:.1f} GFLOP/s = {fraction:.0%} of the "
      f"{roofline['gflops']:.1f} GFLOP/s matmul roofline (target >= 40%: "
      f"{'met' if fraction >= 0.4 else 'not met'}); {row['speedup']:.1f}x the loop (target >= 3x: "
      f"{'met' if row['speedup'] >= 3 else 'not met'}).")
  package = row["package"]
  notes.append(
      f"C={row['clients']}: the package's own round (make_round on the feature_mlp row task) "
      f"{package['seconds_per_round']:.4f} s per round, {package['gflops']:.1f} GFLOP/s = "
      f"{row['package_fraction_of_roofline']:.0%} of the roofline; "
      f"{row['package_seconds_over_reference']:.2f}x the hand-written reference's time, "
      f"{row['package_speedup_over_loop']:.1f}x faster than the loop.")
  notes.append(
      f"Cores: the round kept {engine['cores_used']:.2f} cores busy (CPU-s / wall-s), the roofline "
      f"matmul {roofline['cores_used']:.2f} of {os.cpu_count()}. The round's matmuls are far too "
      f"small for intra-op threading and XLA:CPU runs the chunk loop on one thread, so on one "
      f"device the round is bounded by one core; --cpu-devices N shards clients over N devices.")
  if roofline["cores_used"] < 0.9 * os.cpu_count():
    notes.append(
        f"The roofline matmul got only {roofline['cores_used']:.2f} of {os.cpu_count()} cores "
        f"here, so the roofline is understated and the fraction above overstated; see the "
        f"per-CPU-second figures.")
  per_core = engine["gflop_per_cpu_second"] / roofline["gflop_per_cpu_second"]
  notes.append(
      f"Per CPU-second the round does {engine['gflop_per_cpu_second']:.0f} GFLOP against "
      f"{roofline['gflop_per_cpu_second']:.0f} for the large matmul ({per_core:.0%}); so where the "
      f"matmul keeps all {os.cpu_count()} cores busy (an idle machine) a one-device round can "
      f"reach about {per_core / os.cpu_count():.0%} of the roofline.")
  if profile:
    probe = profile["small_matmul_probe"]
    notes.append(
        f"Profile at C={profile['clients']}: forward "
        f"{profile['forward_only_round']['share_of_round_cpu']:.0%} of the round's CPU time, "
        f"backward + SGD update "
        f"{profile['backward_and_update_share_of_round_cpu']:.0%}; the weighted mean alone takes "
        f"{profile['weighted_mean_alone']['share_of_round_cpu']:.2%}. The per-client matmuls are "
        f"[20,64]@[64,64] and smaller: that shape, batched over a chunk and in cache, reaches "
        f"{probe['gflop_per_cpu_second']:.0f} GFLOP per CPU-s. A jax.profiler trace (taken while "
        f"writing this script) put the rest in the K=20 weight-gradient contractions, the "
        f"elementwise fusions (bias, ReLU masks, loss, update: ~1/3 of the op time) and the "
        f"per-op overhead of ~30 small ops per step.")
  sharded = row.get("vmapped_sharded")
  if sharded:
    notes.append(
        f"Sharded over {sharded['devices']} CPU devices: {sharded['gflops']:.1f} GFLOP/s = "
        f"{sharded['gflops'] / roofline['gflops']:.0%} of the roofline, "
        f"{sharded['cores_used']:.2f} cores busy, {sharded['speedup']:.1f}x the loop.")
  if max(load) > os.cpu_count():
    notes.append(
        f"The machine was shared (load average {max(load):.1f} on {os.cpu_count()} CPUs): wall "
        f"figures understate; the CPU-second figures are the steadier ones.")
  return notes


TRIED = [
    # Measured while writing this script on a shared 2-core AMD EPYC (load average 4-7), C=1000,
    # in GFLOP per CPU-second of the whole round (its wall figures were unusable).
    "one vmap over all clients, then the weighted mean (ablation 'unchunked'): ~30 GFLOP/s wall, "
    "two threads busy; chunks of clients in a lax.scan (weighted sums carried): chunk 1: 65, "
    "2-5: ~80-93, 8-10: ~95-100, 20: ~85, 25-100: 50-80 (chunk 10 kept)",
    "lax.map(batch_size=10) over clients then the weighted mean of the [C, 6273] stack: ~10% "
    "slower than carrying the weighted sums through the chunk scan (kept the carry)",
    "hand-written backward pass: same HLO dots as jax.grad, +5%; with the transposes x^T and h1^T "
    "kept physical by optimization_barrier (weight-gradient dots move from Eigen to YNNPACK): "
    "94 -> 123 GFLOP per CPU-s, +30% (checked against jax.grad; --backprop manual, reported as "
    "the ablation: the default engine keeps jax.grad, as the package's client update does)",
    "forcing W2^T physical as well: no gain; feature-major activations ([features, batch], with "
    "or without pre-transposed data): 66-86, worse",
    "jax.grad through jnp.maximum(z, 0) instead of jax.nn.relu: 72 vs 95 GFLOP per CPU-s (the "
    "maximum's tie-splitting gradient adds elementwise ops; relu kept)",
    "the loop fed NumPy batches, as FedJAX does: 0.31 CPU-s per 1000 clients against 0.22 with "
    "batches staged on the device (staged kept, in the loop's favour)",
    "unrolling the 5-step scan or the chunk scan: no consistent change; donating Theta: no "
    "measurable change (25 KB); the data cannot be donated, it is reused every round",
    "two independent client groups inside one jit: XLA:CPU still ran them on one thread at a "
    "time; two jit calls dispatched concurrently: also serialised; jax_num_cpu_devices=2 with "
    "shard_map: both threads busy (opt-in --cpu-devices, not XLA_FLAGS)",
]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cohorts", type=int, nargs="+", default=[100, 1000, 10000])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--chunk", type=int, default=10, help="clients per vmap in the engine")
  parser.add_argument("--loop-max-clients", type=int, default=10000)
  # jax.grad by default: what the engine's own client update uses; "manual" is the ablation.
  parser.add_argument("--backprop", default="autodiff", choices=sorted(BACKPROPS))
  parser.add_argument("--ablation-max-clients", type=int, default=1000)
  parser.add_argument("--profile-cohort", type=int, default=1000, help="0 skips the profile")
  parser.add_argument("--matmul-size", type=int, default=2048)
  parser.add_argument("--cpu-devices", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.cpu_devices > 1:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before the backend starts

  load_before = os.getloadavg()
  theta0 = init_params(jax.random.key(args.seed))
  sgd_step = make_sgd_step(BACKPROPS[args.backprop])
  engine = make_vmapped_round(sgd_step, chunk=args.chunk)
  loop = make_loop_round(sgd_step)
  mesh = None
  if args.cpu_devices > 1:
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:args.cpu_devices]), ("clients",))
  roofline = matmul_roofline(args.matmul_size, max(args.repeats, 10))

  rows, check, profile = [], {}, None
  for index, clients in enumerate(sorted(args.cohorts)):
    data = make_cohort(clients, seed=args.seed + clients)
    cohort = jax.device_put(pad_cohort(data, args.chunk))
    row = {"clients": clients, "examples": EXAMPLES * clients}
    row["package"], theta_package = measure_package(theta0, data, clients, args.repeats)
    row["vmapped"], theta_vmapped = measure_engine(engine, theta0, cohort, clients, args.repeats)
    row["loop"], theta_loop = measure_loop(loop, theta0, data, clients, args.loop_max_clients,
                                           args.repeats)
    row["speedup"] = round(row["loop"]["seconds_per_round"] / row["vmapped"]["seconds_per_round"],
                           2)
    row["package_speedup_over_loop"] = round(
        row["loop"]["seconds_per_round"] / row["package"]["seconds_per_round"], 2)
    row["package_seconds_over_reference"] = round(
        row["package"]["seconds_per_round"] / row["vmapped"]["seconds_per_round"], 2)
    row["fraction_of_roofline"] = round(row["vmapped"]["gflops"] / roofline["gflops"], 3)
    row["package_fraction_of_roofline"] = round(row["package"]["gflops"] / roofline["gflops"], 3)
    row["fraction_of_best_roofline"] = round(row["vmapped"]["gflops"] / roofline["best_gflops"], 3)
    if index == 0:
      check = check_rounds(engine, theta0, data, theta_vmapped, theta_loop, theta_package,
                           row["loop"]["clients_timed"], args.chunk)
    if mesh is not None:
      sharded_cohort = jax.device_put(
          pad_cohort(data, args.chunk * args.cpu_devices),
          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients")))
      figures, theta_sharded = measure_engine(
          make_sharded_round(sgd_step, chunk=args.chunk, mesh=mesh), theta0, sharded_cohort,
          clients, args.repeats)
      assert max_difference(theta_sharded, theta_vmapped) < 1e-5
      row["vmapped_sharded"] = {"devices": args.cpu_devices, **figures, "speedup": round(
          row["loop"]["seconds_per_round"] / figures["seconds_per_round"], 2)}
    if clients <= args.ablation_max_clients:
      other = "autodiff" if args.backprop == "manual" else "manual"
      row["ablations"] = {
          "unchunked": measure_engine(make_vmapped_round(sgd_step, chunk=None), theta0, cohort,
                                      clients, args.repeats)[0],
          other: measure_engine(make_vmapped_round(make_sgd_step(BACKPROPS[other]),
                                                   chunk=args.chunk),
                                theta0, cohort, clients, args.repeats)[0]}
    if clients == args.profile_cohort:
      profile = profile_round(theta0, cohort, clients, args.chunk, row["vmapped"], args.repeats)
    row["peak_rss_mib"] = peak_rss_mib()
    row["rss_mib"] = round(psutil.Process().memory_info().rss / 2 ** 20, 1)
    rows.append(row)
    del cohort, data

  load_after = os.getloadavg()
  device = jax.devices()[0]
  print(json.dumps({
      "benchmark": "standard_round",
      "standard_round": {
          "clients_hold": f"{EXAMPLES} examples x {FEATURES} float32 features, N(0, 1); binary "
                          f"label = [x . w* > 0] for one planted random w*",
          "model": "MLP 64-64-32-1, ReLU, float32", "params": NUM_PARAMS,
          "loss": "optax.sigmoid_binary_cross_entropy on the logit, batch mean",
          "local_training": f"1 epoch of plain SGD, lr {LEARNING_RATE}, batch {BATCH} "
                            f"({STEPS} steps), fixed batch order (step k: examples "
                            f"{BATCH}k..{BATCH}k+{BATCH - 1}), no shuffle",
          "aggregation": "example-weighted mean of the client parameters",
          "backprop": args.backprop, "engine_chunk": args.chunk},
      "flop_formula": FLOP_FORMULA,
      "environment": {
          "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "backend": jax.default_backend(), "device_kind": device.device_kind,
          "devices": len(jax.devices()), "cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "load_average_before": [round(l, 2) for l in load_before],
          "load_average_after": [round(l, 2) for l in load_after]},
      "roofline": roofline,
      "check": check,
      "results": rows,
      "profile": profile,
      "notes": explain(rows, roofline, profile, load_before + load_after),
      "tried": TRIED,
  }, indent=2))


if __name__ == "__main__":
  main()
