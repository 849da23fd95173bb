"""Curious-server attacks: AUC scoring against brute force, and the attribute-inference attacker.

The attacker is checked from both sides: it must find a planted linear signal (else an audit
would report "no leak" for a leaking upload), and it must stay at chance on pure noise (else
leakage between folds would make every upload look leaky). Everything runs on small synthetic
data; the cross-validation shapes are shared between tests so JAX compiles the fit only a few
times.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pprsf_jax.privacy import audit
from pprsf_jax.privacy.audit import (AttackReport, attribute_inference, interaction_inference_auc,
                                     macro_auc, roc_auc)


def _brute_force_auc(scores: np.ndarray, positives: np.ndarray) -> float:
  """P(positive outscores negative) over all pairs, ties counting half: the definition."""
  pos, neg = scores[positives], scores[~positives]
  if len(pos) == 0 or len(neg) == 0:
    return float("nan")
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _planted(num: int, dim: int, num_classes: int, separation: float,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Each class's features are N(class mean, I); the means are `separation` apart on average.

  separation = 0 gives labels independent of the features (pure noise).
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num)
  means = rng.normal(size=(num_classes, dim)) * separation / np.sqrt(2 * dim)
  return (means[labels] + rng.normal(size=(num, dim))).astype(np.float32), labels


# ----------------------------------------------------------------------------- AUC
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=0, max_size=25))
def test_roc_auc_matches_brute_force_with_ties(pairs):
  # Scores from {0, .., 3} make ties the rule, not the exception.
  scores = np.array([s for s, _ in pairs], np.float64)
  positives = np.array([p for _, p in pairs], bool)
  expected = _brute_force_auc(scores, positives)
  got = roc_auc(scores, positives)
  if np.isnan(expected):
    assert np.isnan(got)
  else:
    assert got == pytest.approx(expected, abs=1e-12)


def test_roc_auc_extremes():
  scores = np.array([0.1, 0.4, 0.35, 0.8])
  positives = np.array([False, True, False, True])
  assert roc_auc(scores, positives) == 1.0
  assert roc_auc(-scores, positives) == 0.0
  assert roc_auc(np.full(4, 3.0), positives) == 0.5
  assert roc_auc(scores, positives.astype(int)) == 1.0  # 0/1 works like bool
  assert np.isnan(roc_auc(scores, np.zeros(4, bool)))
  assert np.isnan(roc_auc(scores, np.ones(4, bool)))


def test_roc_auc_rejects_bad_input():
  with pytest.raises(ValueError, match="same length"):
    roc_auc(np.zeros(3), np.zeros(4, bool))
  with pytest.raises(ValueError, match="finite"):
    roc_auc(np.array([0.0, np.nan]), np.array([True, False]))
  with pytest.raises(ValueError, match="finite"):
    roc_auc(np.array([0.0, np.inf]), np.array([True, False]))
  with pytest.raises(ValueError, match="0/1"):
    roc_auc(np.zeros(2), np.array([0, 2]))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_macro_auc_is_roc_auc_when_binary(seed):
  rng = np.random.default_rng(seed)
  probabilities = rng.dirichlet(np.ones(2), size=20).round(1)  # rounding creates ties
  labels = rng.integers(0, 2, 20)
  expected = roc_auc(probabilities[:, 1], labels == 1)
  got = macro_auc(probabilities, labels)
  assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected)
  assert np.array_equal(macro_auc(probabilities, labels == 1), got, equal_nan=True)


def test_macro_auc_three_classes_by_hand():
  probabilities = np.array([[.7, .2, .1, .0],
                            [.4, .4, .2, .0],
                            [.3, .5, .2, .0],
                            [.1, .6, .3, .0],
                            [.2, .2, .6, .0],
                            [.5, .1, .3, .0]])
  labels = np.array([0, 0, 1, 1, 2, 2])
  # Class 0: .7 beats all 4 negatives, .4 beats 3 of them -> 7/8. Class 1: 8/8.
  # Class 2: .6 beats all 4, .3 beats 3 and ties 1 -> 7.5/8. Class 3 never occurs: skipped.
  assert macro_auc(probabilities, labels) == pytest.approx((7 / 8 + 1 + 7.5 / 8) / 3)
  with pytest.raises(ValueError, match="labels"):
    macro_auc(probabilities, np.array([0, 0, 1, 1, 2, 4]))


# ----------------------------------------------------------------------------- attack
N, D = 400, 50  # the shape most attack tests share (one compilation)


def test_attack_finds_a_planted_signal():
  features, labels = _planted(N, D, 2, separation=4.0, seed=0)
  report = attribute_inference(features, labels)
  assert isinstance(report, AttackReport)
  assert report.num_classes == 2 and report.num_examples == N
  assert report.auc > 0.9
  assert report.accuracy > report.majority_accuracy + 0.2


def test_attack_on_noise_is_at_chance():
  # If held-out rows leaked into training (overlapping folds, or fitting on all rows), a
  # 50-dimensional model memorises noise: in-sample AUC here is about 0.7.
  features, labels = _planted(N, D, 2, separation=0.0, seed=1)
  report = attribute_inference(features, labels)
  assert abs(report.auc - 0.5) < 0.08
  assert report.accuracy < report.majority_accuracy + 0.05


def test_attack_imbalanced_labels_report_the_majority_baseline():
  rng = np.random.default_rng(2)
  labels = np.repeat([3, 10], [360, 40])[rng.permutation(N)]  # any label values, 90/10
  signal = np.where(labels == 10, 1.5, 0.0)
  features = rng.normal(size=(N, D)) + signal[:, None] * (np.arange(D) < 3)[None, :]
  report = attribute_inference(features, labels)
  assert report.majority_accuracy == 0.9
  assert report.num_classes == 2
  assert report.auc > 0.85
  noise = attribute_inference(rng.normal(size=(N, D)), labels)
  assert noise.majority_accuracy == 0.9
  assert noise.accuracy <= 0.9 + 0.02  # noise cannot beat "always the majority" meaningfully


def test_attack_many_classes_high_dimensional():
  # D >> N: the fit runs on the training rows' span (see audit._fold_features).
  features, labels = _planted(200, 5000, 5, separation=8.0, seed=3)
  report = attribute_inference(features, labels)
  assert report.num_classes == 5
  assert report.auc > 0.8
  assert report.accuracy > report.majority_accuracy + 0.2
  noise = attribute_inference(np.random.default_rng(4).normal(size=(200, 5000)), labels)
  assert abs(noise.auc - 0.5) < 0.1


def test_span_reduction_solves_the_same_problem():
  # Fitting on coordinates in the training rows' span must give the predictions of the fit in
  # all D dimensions (same L2 penalty), not an approximation of them. 40 training rows < D = 50
  # dimensions; both inputs are [N, D] so this reuses the compilation of the tests above.
  rng = np.random.default_rng(5)
  features = rng.normal(size=(N, D)) + np.arange(D)[None, :] * 0.1
  labels = (features[:, :5].sum(axis=1) + rng.normal(size=N) > 1.2).astype(np.int64)
  train = np.arange(40)
  targets = jnp.asarray(np.eye(2, dtype=np.float32)[labels])
  weights = jnp.asarray((np.arange(N) < 40).astype(np.float32))
  fits = []
  for reduce in (False, True):
    inputs = audit._fold_features(features, train, D, reduce)
    fits.append(np.asarray(audit._fit_and_predict(
        jnp.asarray(inputs), targets, weights, jnp.float32(0.1), jnp.int32(500))))
  assert 0.1 < fits[0][40:, 1].mean() < 0.9  # a real fit, not a constant
  np.testing.assert_allclose(fits[1][40:], fits[0][40:], atol=2e-3)


@pytest.mark.parametrize("dim,reduce", [(8, False), (50, True)])
def test_fold_features_ignore_held_out_rows(dim, reduce):
  # Standardisation (and the span basis) must come from the training rows only: changing the
  # held-out rows changes nothing else.
  rng = np.random.default_rng(8)
  features = rng.normal(size=(40, dim)) * 3 + 1
  train, held_out = np.arange(30), np.arange(30, 40)
  before = audit._fold_features(features, train, 30 if reduce else dim, reduce)
  changed = features.copy()
  changed[held_out[1:]] = rng.normal(size=(9, dim)) * 100 + 50
  after = audit._fold_features(changed, train, 30 if reduce else dim, reduce)
  np.testing.assert_array_equal(after[train], before[train])
  np.testing.assert_array_equal(after[held_out[0]], before[held_out[0]])
  assert np.abs(before[train].mean(axis=0)).max() < 1e-4  # centred on the training rows


def test_attack_classes_smaller_than_folds():
  rng = np.random.default_rng(6)
  labels = np.array([0] * 30 + [1] * 27 + [2] * 2 + [5])  # two classes with < 5 members
  features = rng.normal(size=(60, 4)) + 2.0 * labels[:, None]
  report = attribute_inference(features, labels, folds=5)
  assert report.num_classes == 4 and report.num_examples == 60
  # The one-member class is unseen whenever it is held out, so its AUC is noise; the others
  # are learnt.
  assert np.isfinite(report.auc) and report.auc > 0.6
  assert report.accuracy > report.majority_accuracy + 0.1


def test_stratified_folds_balance_classes():
  labels = np.repeat([0, 1, 2], [50, 23, 7])
  assignment = audit._stratified_folds(labels, 5, seed=0)
  for k in range(3):
    per_fold = np.bincount(assignment[labels == k], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1
  sizes = np.bincount(assignment, minlength=5)
  assert sizes.max() - sizes.min() <= 1


def test_attack_is_deterministic_and_leaves_inputs_alone():
  features, labels = _planted(N, D, 2, separation=1.0, seed=7)
  features_before, labels_before = features.copy(), labels.copy()
  first = attribute_inference(features, labels, seed=11)
  assert attribute_inference(features, labels, seed=11) == first
  np.testing.assert_array_equal(features, features_before)
  np.testing.assert_array_equal(labels, labels_before)
  assert features.dtype == np.float32
  # Relabelling the classes changes nothing but the names.
  assert attribute_inference(features, labels * 4 + 9, seed=11) == first


@pytest.mark.parametrize("features,labels,kwargs,message", [
    (np.zeros((10, 3)), np.arange(9) % 2, {}, "labels must be \\[N\\]"),
    (np.zeros(10), np.arange(10) % 2, {}, "features must be \\[N, D\\]"),
    (np.zeros((10, 3)), np.full(10, 4), {}, "at least 2 classes"),
    (np.zeros((10, 3)), np.arange(10) % 2, {"folds": 1}, "folds"),
    (np.zeros((10, 3)), np.arange(10) % 2, {"folds": 11}, "folds"),
    (np.full((10, 3), np.nan), np.arange(10) % 2, {}, "finite"),
    (np.zeros((10, 3)), np.arange(10) % 2 - 1, {}, "non-negative"),
    (np.zeros((10, 3)), (np.arange(10) % 2) * 0.5, {}, "integers"),
    (np.zeros((10, 3)), np.arange(10) % 2, {"l2": 0.0}, "l2"),
    (np.zeros((10, 3)), np.arange(10) % 2, {"steps": 0}, "steps"),
])
def test_attack_rejects_bad_input(features, labels, kwargs, message):
  with pytest.raises(ValueError, match=message):
    attribute_inference(features, labels, **kwargs)


# ----------------------------------------------------------------------------- interactions
def test_interaction_inference_auc_by_hand():
  scores = np.array([[0.9, 0.1, 0.5, np.nan],
                     [0.2, 0.8, 0.2, 0.4],
                     [0.3, 0.2, 0.9, 0.1]])
  interacted = np.array([[1, 0, 1, 0],
                         [1, 0, 0, 0],
                         [0, 0, 1, 0]], bool)
  valid = np.array([[1, 1, 1, 0],
                    [1, 1, 1, 1],
                    [1, 1, 0, 1]], bool)
  # Client 0: both positives beat the one negative -> 1 (the NaN is padding, ignored).
  # Client 1: 0.2 vs {0.8, 0.2, 0.4} -> (0 + 0.5 + 0) / 3. Client 2: its only positive is
  # padding, so all valid candidates are negatives: skipped.
  assert interaction_inference_auc(scores, interacted, valid) == pytest.approx((1 + 0.5 / 3) / 2)
  assert np.isnan(interaction_inference_auc(scores[2:], interacted[2:], valid[2:]))
  with pytest.raises(ValueError, match="\\[N, K\\]"):
    interaction_inference_auc(scores, interacted[:, :3], valid)


def test_request_membership_attack_reads_absences_and_nothing_else():
  """Requests that leave out the privately known candidates give them away (AUC 1); requests
  that name every candidate, privately known ones as decoys in random places, do not (≈ 0.5)."""
  from pprsf_jax.privacy.curious_server import (  # pylint: disable=import-outside-toplevel
      request_membership_auc)
  rng = np.random.default_rng(0)
  n, k = 200, 12
  candidates = np.stack([rng.permutation(100)[:k] for _ in range(n)]).astype(np.int32)
  filtered = rng.random((n, k)) < 0.25
  leaky = np.where(filtered, -1, candidates)  # the old decoys: never a filtered candidate
  assert request_membership_auc(leaky, candidates, filtered) == 1.0
  shuffled = np.stack([rng.permutation(row) for row in candidates])  # everything, any order
  assert abs(request_membership_auc(shuffled, candidates, filtered) - 0.5) < 0.05
