"""Curious-server attacks that audit privacy: what can the server infer from what it receives?

The server sees, per client, an upload (a flattened parameter delta, or a multi-hot of the item
ids a client requests). An attacker that knows some clients' private attributes (gender, age
group, occupation) trains a classifier from uploads to attributes and predicts the rest;
`attribute_inference` estimates how well that works by stratified cross-validation, and
`interaction_inference_auc` scores a server that guesses which candidates a client interacted
with. An AUC near 0.5 (and accuracy near the majority baseline) means the upload leaks nothing
this attacker can use; it is evidence, not a proof, since a stronger attacker may do better.

Everything is generic over features and labels, pure NumPy + JAX/optax, and deterministic given
the seed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

# L-BFGS stops once the gradient norm of the (mean) objective falls below this; in float32 the
# gradient cannot be resolved much further, and the predictions no longer change.
_GRAD_TOLERANCE = 1e-5
# A feature whose training-fold std is below this (relative to its magnitude) is constant up to
# rounding: dividing by that std would turn rounding noise into a huge feature.
_CONSTANT_STD = 1e-10
# Relative jitter that makes the (singular) training Gram matrix positive definite; see
# `_fold_features`.
_GRAM_JITTER = 1e-8


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks of `values`, tied values sharing the mean of their ranks."""
  order = np.argsort(values, kind="mergesort")
  ordered = values[order]
  # Start of each run of equal values in sorted order.
  starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
  ends = np.concatenate([starts[1:], [len(values)]])
  run_ranks = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(len(values), np.float64)
  ranks[order] = np.repeat(run_ranks, ends - starts)
  return ranks


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
  """Binary ROC AUC: P(score of a random positive > that of a random negative), ties half.

  Computed from ranks as the Mann-Whitney U statistic over n_pos * n_neg, in O(n log n).

  Args:
    scores: [n] finite real scores, higher meaning "more likely positive".
    positives: [n] booleans (or 0/1), True for the positive class.

  Returns:
    The AUC in [0, 1]; NaN if either class is empty.

  Raises:
    ValueError: the arrays are not 1-D of the same length, `positives` is not boolean/0-1, or a
      score is not finite.
  """
  scores = np.asarray(scores)
  positives = np.asarray(positives)
  if scores.ndim != 1 or scores.shape != positives.shape:
    raise ValueError(f"scores and positives must be 1-D of the same length, got shapes "
                     f"{scores.shape} and {positives.shape}")
  if positives.dtype != bool:
    if not np.isin(positives, (0, 1)).all():
      raise ValueError("positives must be boolean or 0/1")
    positives = positives.astype(bool)
  scores = scores.astype(np.float64)
  if not np.isfinite(scores).all():
    raise ValueError("scores must be finite (found NaN or inf)")
  num_pos = int(positives.sum())
  num_neg = len(positives) - num_pos
  if num_pos == 0 or num_neg == 0:
    return float("nan")
  rank_sum = _average_ranks(scores)[positives].sum()
  u_statistic = rank_sum - num_pos * (num_pos + 1) / 2.0
  return float(u_statistic / (num_pos * num_neg))


def macro_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
  """One-vs-rest ROC AUC averaged over the classes that occur and do not make up all of `labels`.

  Args:
    probabilities: [N, K] per-class scores (any monotone score works, e.g. logits).
    labels: [N] integer class indices in 0..K-1 (booleans count as 0/1).

  Returns:
    The unweighted mean of `roc_auc(probabilities[:, k], labels == k)` over classes k with both
    positives and negatives; NaN if there is none. For K = 2 this is
    `roc_auc(probabilities[:, 1], labels == 1)` (class 0's AUC is then the same number).

  Raises:
    ValueError: the shapes do not match or a label is outside 0..K-1.
  """
  probabilities = np.asarray(probabilities)
  labels = np.asarray(labels)
  if labels.dtype == bool:  # a binary attribute stored as a mask: class 1 = True
    labels = labels.astype(np.int64)
  if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
    raise ValueError(f"probabilities must be [N, K] and labels [N], got shapes "
                     f"{probabilities.shape} and {labels.shape}")
  num_classes = probabilities.shape[1]
  if not np.issubdtype(labels.dtype, np.integer) or (
      labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
    raise ValueError(f"labels must be integers in 0..{num_classes - 1}")
  aucs = [roc_auc(probabilities[:, k], labels == k) for k in range(num_classes)
          if 0 < int((labels == k).sum()) < len(labels)]
  return float(np.mean(aucs)) if aucs else float("nan")


class AttackReport(NamedTuple):
  """How well an attacker predicts a private attribute, from out-of-fold predictions."""
  auc: float  # macro one-vs-rest AUC of out-of-fold predictions (0.5 = no better than chance)
  accuracy: float  # out-of-fold accuracy of the argmax prediction
  majority_accuracy: float  # accuracy of always guessing the most frequent class (the baseline)
  num_classes: int
  num_examples: int


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
  """[N] fold index of every example: each class spread as evenly as possible over the folds.

  Members of each class are shuffled, then all classes are dealt round-robin in one sequence,
  so every fold size is within one of N / folds and every class count within one of
  count / folds. A class with fewer members than `folds` is simply absent from some test folds.
  """
  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(np.flatnonzero(labels == k))
                          for k in range(int(labels.max()) + 1)])
  assignment = np.empty(len(labels), np.int64)
  assignment[order] = np.arange(len(labels)) % folds
  return assignment


def _standardise(train: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """`rows` standardised with the mean/std of `train` only (the held-out fold never leaks in).

  Features constant on the training fold are zeroed: they carry no information the attacker
  could have learned, and dividing by a ~0 std would blow up rounding noise.
  """
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  constant = std <= _CONSTANT_STD * np.maximum(np.abs(mean), 1.0)
  scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
  return (rows - mean[None, :]) * scale[None, :]


def _fold_features(features: np.ndarray, train: np.ndarray, width: int,
                   reduce: bool) -> np.ndarray:
  """[N, width] float32 features of every example for a model trained on rows `train`.

  Without `reduce`, the standardised features A_all, zero-padded to `width`. With `reduce` (D
  larger than the training set), coordinates of A_all in the span of the training rows A: with
  the Cholesky factor L L^T = A A^T + eps I, the columns of V = A^T L^-T are an orthonormal basis
  of that span (exactly so for eps = 0), and the coordinates are A_all V = (A_all A^T) L^-T. Any
  L2-regularised linear model's optimal weights lie in this span (representer theorem) and
  ||V b|| = ||b||, so fitting on the coordinates with the same penalty solves the D-dimensional
  problem, at the cost of one N x D x n_train product; optimising D x K weights directly would
  cost that much per L-BFGS iteration.

  The jitter eps (1e-8 of the mean eigenvalue) makes the factorisation exist although A A^T is
  singular (centring alone removes one rank); it only shrinks directions holding under ~1e-8 of
  the training variance. Cholesky rather than an eigendecomposition or QR: all three give such a
  basis, but Cholesky is the cheapest (eigh was ~5x slower on a busy 2-core CPU, QR slower
  still). Float64 throughout: the attribute signal may sit in low-variance directions that a
  float32 factorisation would have to jitter away.
  """
  standardised = _standardise(features[train], features)
  if reduce:
    cross_gram = standardised @ standardised[train].T  # [N, n_train], train rows included
    gram = cross_gram[train]
    mean_eigenvalue = float(np.trace(gram)) / len(train)
    jitter = _GRAM_JITTER * mean_eigenvalue if mean_eigenvalue > 0 else 1.0  # else all zero
    factor = np.linalg.cholesky(gram + jitter * np.eye(len(train)))
    standardised = np.linalg.solve(factor, cross_gram.T).T  # cross_gram @ factor^-T
  padded = np.zeros((len(features), width), np.float32)
  padded[:, :standardised.shape[1]] = standardised
  return padded


def _objective(params: tuple[jax.Array, jax.Array], inputs: jax.Array, targets: jax.Array,
               weights: jax.Array, l2: jax.Array) -> jax.Array:
  """Weighted mean softmax cross-entropy plus (l2 / 2) ||W||^2 (the intercept is not penalised).

  `weights` is 1 for the training rows and 0 for the held-out and padding rows.
  """
  kernel, bias = params
  logits = inputs @ kernel + bias[None, :]
  per_row = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=1), axis=1)
  return jnp.sum(weights * per_row) / jnp.sum(weights) + 0.5 * l2 * jnp.sum(kernel * kernel)


def _fit_one(inputs: jax.Array, targets: jax.Array, weights: jax.Array, l2: jax.Array,
             steps: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Softmax-regression weights for one fold, by at most `steps` L-BFGS iterations.

  L-BFGS rather than Adam: the objective is smooth and (with l2 > 0) strongly convex, where a
  quasi-Newton method with a line search converges in tens of iterations without a learning
  rate to tune (Adam's would depend on the feature scale and on K), so `steps` is a cap, and the
  loop ends early once the gradient vanishes.
  """
  num_features, num_classes = inputs.shape[1], targets.shape[1]
  params = (jnp.zeros((num_features, num_classes), jnp.float32),
            jnp.zeros((num_classes,), jnp.float32))

  def loss(p):
    return _objective(p, inputs, targets, weights, l2)

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(p, updates), state

  def running(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    return (count == 0) | ((count < steps) & (grad_norm >= _GRAD_TOLERANCE))

  params, _ = jax.lax.while_loop(running, step, (params, solver.init(params)))
  return params


@jax.jit
def _fit_and_predict(inputs: jax.Array, targets: jax.Array, weights: jax.Array,
                     l2: jax.Array, steps: jax.Array) -> jax.Array:
  """[N, K] class probabilities of every example from a model fitted on the weighted rows.

  Every fold passes all N rows (held-out ones with weight 0) at the same width, so one compiled
  function serves all folds; `l2` and `steps` are traced so that changing them does not
  recompile. Folds run one after another rather than under vmap: a vmapped while-loop steps all
  folds until the slowest converges and compiled about twice as slowly.

  Args:
    inputs: [N, W] every example's features as seen by this fold's model.
    targets: [N, K] one-hot labels.
    weights: [N] 1 on the training rows, else 0.
    l2: scalar penalty.
    steps: scalar iteration cap.
  """
  kernel, bias = _fit_one(inputs, targets, weights, l2, steps)
  return jax.nn.softmax(inputs @ kernel + bias[None, :], axis=1)


def attribute_inference(features: np.ndarray, labels: np.ndarray, *, folds: int = 5,
                        seed: int = 0, l2: float = 1e-2, steps: int = 300) -> AttackReport:
  """Cross-validated attack: how well does a linear attacker predict `labels` from `features`?

  Stratified k-fold cross-validation of an L2-regularised multinomial logistic regression. Per
  fold, features are standardised with the training fold's mean/std only, the model is fitted by
  full-batch L-BFGS in JAX (objective: mean cross-entropy + l2/2 ||W||^2, unpenalised intercept),
  and the held-out fold is predicted; the report scores the out-of-fold predictions.

  When D exceeds the training-fold size, the fit runs on the exact coordinates of the features
  in the span of the training rows (see `_fold_features`): the same optimum as in D dimensions,
  not an approximation like a random projection, at the cost of one N x D x n_train product and
  an n_train^3 Cholesky per fold.

  Cost: the first call for a given (N, width, K) compiles the fit (a few seconds on CPU), where
  width = D, or the largest training fold when D exceeds it; later calls with the same shapes
  reuse it, whatever the data, seed, l2 or steps.

  Args:
    features: [N, D] what the server saw per client (e.g. a flattened update or a multi-hot).
    labels: [N] non-negative integer (or boolean) attribute values, any values: they are
      remapped to 0..K-1 in increasing order.
    folds: number of cross-validation folds, 2 <= folds <= N.
    seed: seeds the fold assignment (the only randomness).
    l2: L2 penalty on the weights, relative to the mean loss over standardised features.
    steps: maximum number of L-BFGS iterations per fold.

  Returns:
    An `AttackReport`.

  Raises:
    ValueError: N differs between features and labels, fewer than 2 distinct labels, folds
      outside 2..N, negative or non-integer labels, non-finite features, or bad l2/steps.
  """
  features = np.asarray(features)
  labels = np.asarray(labels)
  if labels.dtype == bool:  # e.g. a binary attribute stored as a mask
    labels = labels.astype(np.int64)
  if features.ndim != 2:
    raise ValueError(f"features must be [N, D], got shape {features.shape}")
  if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
    raise ValueError(f"labels must be [N] with N = features.shape[0] = {features.shape[0]}, "
                     f"got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
    raise ValueError("labels must be non-negative integers")
  num_examples = features.shape[0]
  classes, labels = np.unique(labels, return_inverse=True)  # remap values to 0..K-1
  num_classes = len(classes)
  if num_classes < 2:
    raise ValueError(f"labels must contain at least 2 classes, got {num_classes}")
  if not 2 <= folds <= num_examples:
    raise ValueError(f"folds must be between 2 and N = {num_examples}, got {folds}")
  if not (l2 > 0 and np.isfinite(l2)) or steps < 1:
    raise ValueError(f"l2 must be positive and finite and steps >= 1, got l2={l2}, "
                     f"steps={steps}")
  features = features.astype(np.float64)  # a copy: the caller's array is never modified
  if not np.isfinite(features).all():
    raise ValueError("features must be finite (found NaN or inf)")

  assignment = _stratified_folds(labels, folds, seed)
  # One width for every fold (padded with zero columns, which keep zero weight), so a single
  # compiled fit serves all folds.
  max_train = num_examples - int(np.bincount(assignment, minlength=folds).min())
  reduce = features.shape[1] > max_train
  width = max_train if reduce else features.shape[1]
  targets = jnp.asarray(np.eye(num_classes, dtype=np.float32)[labels])
  out_of_fold = np.empty((num_examples, num_classes), np.float32)
  for fold in range(folds):
    held_out = assignment == fold
    inputs = _fold_features(features, np.flatnonzero(~held_out), width, reduce)
    probabilities = _fit_and_predict(
        jnp.asarray(inputs), targets, jnp.asarray((~held_out).astype(np.float32)),
        jnp.asarray(l2, jnp.float32), jnp.asarray(steps, jnp.int32))
    # Each example's prediction comes from the one model that did not train on it.
    out_of_fold[held_out] = np.asarray(probabilities)[held_out]
  if not np.isfinite(out_of_fold).all():
    raise FloatingPointError("the attacker's fit diverged (non-finite probabilities)")

  counts = np.bincount(labels, minlength=num_classes)
  return AttackReport(
      auc=macro_auc(out_of_fold, labels),
      accuracy=float(np.mean(out_of_fold.argmax(axis=1) == labels)),
      majority_accuracy=float(counts.max() / num_examples),
      num_classes=num_classes,
      num_examples=num_examples)


def interaction_inference_auc(scores: np.ndarray, interacted: np.ndarray,
                              valid: np.ndarray) -> float:
  """How well a per-candidate score from a client's upload reveals which candidates it used.

  Args:
    scores: [N, K] the server's score for each of a client's K candidates (higher = guessed
      interacted). Entries where `valid` is False are ignored and may be non-finite.
    interacted: [N, K] booleans, True where the client interacted with the candidate.
    valid: [N, K] booleans, False for padding candidates.

  Returns:
    The mean over clients of each client's `roc_auc` over its valid candidates, skipping clients
    whose valid candidates are all one class (or none); NaN if every client is skipped.

  Raises:
    ValueError: the shapes differ or are not 2-D, or a valid score is not finite.
  """
  scores = np.asarray(scores)
  interacted = np.asarray(interacted, bool)
  valid = np.asarray(valid, bool)
  if scores.ndim != 2 or interacted.shape != scores.shape or valid.shape != scores.shape:
    raise ValueError(f"scores, interacted and valid must all be [N, K], got shapes "
                     f"{scores.shape}, {interacted.shape} and {valid.shape}")
  aucs = []
  for client_scores, client_interacted, client_valid in zip(scores, interacted, valid):
    positives = client_interacted[client_valid]
    if 0 < int(positives.sum()) < len(positives):  # both classes present, else AUC undefined
      aucs.append(roc_auc(client_scores[client_valid], positives))
  return float(np.mean(aucs)) if aucs else float("nan")
