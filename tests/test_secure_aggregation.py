"""Simulated secure aggregation: masks cancel, dropouts are recovered, the range limit is real.

Most tests share one cohort shape ([12, 300], a few padding slots in the middle) so the jitted
functions compile once; the exact expectations are plain NumPy uint64 sums modulo 2**32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pprsf_jax.privacy.secure_aggregation import (MaskedUpload, SecureAggregationConfig,
                                                  check_range, decode, encode, mask_uploads,
                                                  pairwise_mask, secure_sum, unmask_sum)

CONFIG = SecureAggregationConfig(fractional_bits=16, max_abs_value=100.0)
NUM, DIM = 12, 300

mask_jit = jax.jit(mask_uploads)
unmask_jit = jax.jit(unmask_sum)
secure_jit = jax.jit(secure_sum, static_argnames="config")
encode_jit = jax.jit(encode, static_argnames="config")


def _cohort(seed: int, num: int = NUM, dim: int = DIM, padding: int = 3):
  """Random encoded rows, distinct non-contiguous ids, `padding` absent slots at random places."""
  rng = np.random.default_rng(seed)
  ids = rng.choice(10**7, size=num, replace=False).astype(np.int32)
  present = np.ones(num, bool)
  present[rng.choice(num, size=padding, replace=False)] = False
  encoded = rng.integers(0, 2**32, size=(num, dim), dtype=np.uint64).astype(np.uint32)
  return rng, ids, present, encoded


def _plain_sum(encoded: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """The exact sum modulo 2**32 of the selected rows."""
  return (encoded[rows].astype(np.uint64).sum(axis=0) % 2**32).astype(np.uint32)


def _key(seed: int) -> jax.Array:
  return jax.random.key(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_cancel_when_everyone_survives(seed):
  _, ids, present, encoded = _cohort(seed)
  uploads = mask_jit(encoded, ids, present, _key(seed))
  total = unmask_jit(uploads, ids, present, present, _key(seed))
  assert total.dtype == jnp.uint32
  np.testing.assert_array_equal(np.asarray(total), _plain_sum(encoded, present))
  # ... and they are really there: the masks alone (upload - encoded) sum to 0 but are not 0.
  masks = np.asarray(uploads.masked) - encoded
  np.testing.assert_array_equal(_plain_sum(masks, present), np.zeros(DIM, np.uint32))
  assert np.all(np.mean(masks[present] != 0, axis=1) > 0.99)


def test_single_upload_reveals_nothing_readable():
  assert MaskedUpload._fields == ("masked",)  # all the server gets from a client
  _, ids, present, encoded = _cohort(3)
  encoded[:] = 0  # the worst case for hiding: a low-entropy input
  masked = np.asarray(mask_jit(encoded, ids, present, _key(3)).masked)
  for row in np.flatnonzero(present):
    assert np.mean(masked[row] != encoded[row]) > 0.99
  # Every bit of the real uploads is close to a fair coin, nothing like the all-zero input.
  bits = np.unpackbits(masked[present].view(np.uint8)).reshape(-1, 32)
  assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.05)
  np.testing.assert_array_equal(masked[~present], 0)  # padding sends nothing


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_dropout_recovery(seed):
  rng, ids, present, encoded = _cohort(seed)
  survived = present & (rng.random(NUM) < 0.6)
  assert 0 < survived.sum() < present.sum()
  uploads = mask_jit(encoded, ids, present, _key(seed))
  total = unmask_jit(uploads, ids, present, survived, _key(seed))
  np.testing.assert_array_equal(np.asarray(total), _plain_sum(encoded, survived))
  # Without the recovery step the survivors' sum is garbage: the dropped masks do not cancel.
  naive = _plain_sum(np.asarray(uploads.masked), survived)
  assert np.mean(naive != _plain_sum(encoded, survived)) > 0.99


def test_dropout_edge_cases():
  _, ids, present, encoded = _cohort(7)
  uploads = mask_jit(encoded, ids, present, _key(7))
  last = np.flatnonzero(present)[-1]
  only_one = np.zeros(NUM, bool)
  only_one[last] = True
  total = unmask_jit(uploads, ids, present, only_one, _key(7))
  np.testing.assert_array_equal(np.asarray(total), encoded[last])
  nobody = np.zeros(NUM, bool)
  total = unmask_jit(uploads, ids, present, nobody, _key(7))
  np.testing.assert_array_equal(np.asarray(total), np.zeros(DIM, np.uint32))


def test_pairwise_mask_follows_the_seed_rule():
  """Each mask is the signed sum of PRG(fold_in(fold_in(key, min id), max id)) over partners."""
  _, ids, present, _ = _cohort(8)
  key, zeros = _key(8), np.zeros((NUM, DIM), np.uint32)
  masks = np.asarray(mask_jit(zeros, ids, present, key).masked)  # row i: client i's own mask
  streams = {}
  for i in range(NUM):
    expected = np.zeros(DIM, np.uint64)
    for j in range(NUM):
      if i == j or not (present[i] and present[j]):
        continue
      pair = tuple(sorted((int(ids[i]), int(ids[j]))))
      if pair not in streams:
        seed = jax.random.fold_in(jax.random.fold_in(key, pair[0]), pair[1])
        streams[pair] = np.asarray(jax.random.bits(seed, (DIM,), jnp.uint32)).astype(np.uint64)
      expected += streams[pair] if ids[i] < ids[j] else 2**32 - streams[pair]
    np.testing.assert_array_equal(masks[i], (expected % 2**32).astype(np.uint32))
  row = int(np.flatnonzero(present)[1])
  direct = jax.jit(pairwise_mask, static_argnums=3)(key, ids, row, DIM, present)
  np.testing.assert_array_equal(np.asarray(direct), masks[row])


# Configs for the property test, chosen with B exact in float32 and every one safe for 20
# clients; the last has a large range so float32 decoding is the dominant error.
PROPERTY_CONFIGS = [SecureAggregationConfig(16, 1000.0), SecureAggregationConfig(0, 5e7)]
MAX_C, MAX_D = 20, 50


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_secure_sum_within_quantization_bound(data):
  config = data.draw(st.sampled_from(PROPERTY_CONFIGS))
  bound = config.max_abs_value
  num = data.draw(st.integers(1, MAX_C))
  dim = data.draw(st.integers(1, MAX_D))
  values = data.draw(hnp.arrays(np.float32, (num, dim),
                                elements=st.floats(-bound, bound, width=32)))
  seed = data.draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  # Pad to one [MAX_C, MAX_D] shape (one compilation per config); padding slots hold garbage.
  padded = rng.normal(size=(MAX_C, MAX_D)).astype(np.float32) * 1e30
  padded[:num] = 0.0
  padded[:num, :dim] = values
  present = np.arange(MAX_C) < num
  survived = present & (rng.random(MAX_C) < 0.8)
  ids = rng.choice(10**6, size=MAX_C, replace=False).astype(np.int32)
  total, clipped = secure_jit(padded, ids, present, survived, _key(seed), config)
  reference = values[survived[:num]].astype(np.float64).sum(axis=0)
  summed = int(survived.sum())
  quantization = summed * 0.5 * 2.0**-config.fractional_bits
  # decode turns the exact integer sum (within `quantization` of the reference) into float32:
  # round to nearest with 24 significant bits, a relative error of at most 2**-24. The float64
  # reference sum itself is exact up to 2**-52 of the absolute values summed.
  decoding = 2.0**-24 * (np.abs(reference) + quantization)
  slack = 2.0**-52 * np.abs(values).astype(np.float64).sum(axis=0)
  error = np.abs(np.asarray(total)[:dim].astype(np.float64) - reference)
  assert np.all(error <= quantization + decoding + slack)
  assert int(clipped) == 0


def test_out_of_range_values_are_clipped_and_counted():
  rng, ids, present, _ = _cohort(9)
  survived = present & (rng.random(NUM) < 0.8)
  bound = CONFIG.max_abs_value
  values = rng.uniform(-bound, bound, size=(NUM, DIM)).astype(np.float32)
  outside = rng.random((NUM, DIM)) < 0.1
  values[outside] = (rng.choice([-1.0, 1.0], size=outside.sum())
                     * rng.uniform(1.001, 1e6, size=outside.sum()) * bound)
  values[0, 0], values[1, 1] = np.inf, -np.inf
  outside[0, 0] = outside[1, 1] = True
  total, clipped = secure_jit(values, ids, present, survived, _key(9), CONFIG)
  assert int(clipped) == int(outside[survived].sum())
  expected, none = secure_jit(np.clip(values, -bound, bound), ids, present, survived, _key(9),
                              CONFIG)
  assert int(none) == 0
  np.testing.assert_array_equal(np.asarray(total), np.asarray(expected))
  # Clipping lands exactly on +-B, not somewhere wrapped.
  encoded, counts = encode_jit(np.array([[3e9, -3e9, np.inf, 5.0]], np.float32), config=CONFIG)
  np.testing.assert_array_equal(np.asarray(decode(encoded, CONFIG)), [[bound, -bound, bound, 5.0]])
  np.testing.assert_array_equal(np.asarray(counts), [3])


def test_nan_is_encoded_as_zero_and_counted():
  values = np.array([[np.nan, 1.5, -2.25], [np.nan, np.nan, 0.0]], np.float32)
  encoded, counts = encode_jit(values, config=CONFIG)
  np.testing.assert_array_equal(np.asarray(decode(encoded, CONFIG)),
                                [[0.0, 1.5, -2.25], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(np.asarray(counts), [1, 2])
  rng, ids, present, _ = _cohort(10)
  values = rng.uniform(-1, 1, size=(NUM, DIM)).astype(np.float32)
  nans = rng.random((NUM, DIM)) < 0.05
  values[nans] = np.nan
  total, clipped = secure_jit(values, ids, present, present, _key(10), CONFIG)
  assert np.all(np.isfinite(np.asarray(total)))
  assert int(clipped) == int(nans[present].sum())
  expected, _ = secure_jit(np.where(nans, 0, values), ids, present, present, _key(10), CONFIG)
  np.testing.assert_array_equal(np.asarray(total), np.asarray(expected))


def test_check_range_refuses_exactly_the_configs_that_wrap():
  # 2 clients at B = 2**14 with f = 16 encode to 2**30 each: their sum 2**31 is out of int32.
  unsafe = SecureAggregationConfig(fractional_bits=16, max_abs_value=2.0**14)
  check_range(unsafe, 1)
  with pytest.raises(ValueError, match="fractional_bits") as raised:
    check_range(unsafe, 2)
  assert "max_abs_value" in str(raised.value) and "num_clients" in str(raised.value)
  with pytest.raises(ValueError, match="wrap"):
    secure_jit(np.zeros((2, 3), np.float32), np.arange(2), np.ones(2, bool), np.ones(2, bool),
               _key(0), unsafe)
  # Bypassing the check with the lower-level functions: the wrap is real.
  encoded, _ = encode(np.full((2, 1), 2.0**14, np.float32), unsafe)
  total = np.asarray(encoded).astype(np.uint64).sum(axis=0) % 2**32
  wrapped = float(decode(jnp.asarray(total, jnp.uint32), unsafe)[0])
  assert wrapped == -(2.0**15)  # not 2**15
  # Just below the limit (B one float32 step under 2**14) the check passes and the extreme sums
  # are exact.
  below = float(np.nextafter(np.float32(2.0**14), np.float32(0)))
  safe = SecureAggregationConfig(fractional_bits=16, max_abs_value=below)
  check_range(safe, 2)
  for sign in (1.0, -1.0):
    encoded, _ = encode(np.full((2, 1), sign * below, np.float32), safe)
    total = np.asarray(encoded).astype(np.uint64).sum(axis=0) % 2**32
    assert float(decode(jnp.asarray(total, jnp.uint32), safe)[0]) == 2 * sign * below
  # The int32 boundary itself: 2**31 - 1 reads back positive, 2**31 already wraps.
  edges = decode(jnp.array([2**31 - 1, 2**31], jnp.uint32), SecureAggregationConfig(0, 1.0))
  assert float(edges[0]) > 0 > float(edges[1])


def test_check_range_covers_the_rounding_edge():
  """C * B * 2**f < 2**31, but B * 2**f rounds up and C rounded values do wrap: refused too."""
  config = SecureAggregationConfig(fractional_bits=0, max_abs_value=2147483.6)
  num = 1000
  assert num * config.max_abs_value < 2**31
  with pytest.raises(ValueError, match="num_clients"):
    check_range(config, num)
  encoded, _ = encode(np.full((num, 1), 3e6, np.float32), config)
  total = np.asarray(encoded).astype(np.uint64).sum(axis=0) % 2**32
  assert float(decode(jnp.asarray(total, jnp.uint32), config)[0]) < 0  # wrapped
  check_range(config, num - 1)


@pytest.mark.parametrize("bits, bound, num", [
    (-1, 1.0, 1), (31, 1e-12, 1), (2.5, 1.0, 1), (8, 0.0, 1), (8, -1.0, 1),
    (8, float("inf"), 1), (8, float("nan"), 1), (8, 1.0, 0)])
def test_check_range_rejects_invalid_parameters(bits, bound, num):
  with pytest.raises(ValueError):
    check_range(SecureAggregationConfig(bits, bound), num)


def test_same_key_same_uploads_other_key_other_masks():
  _, ids, present, encoded = _cohort(11)
  first = np.asarray(mask_jit(encoded, ids, present, _key(11)).masked)
  again = np.asarray(mask_jit(encoded, ids, present, _key(11)).masked)
  other = np.asarray(mask_jit(encoded, ids, present, _key(12)).masked)
  assert first.tobytes() == again.tobytes()
  assert np.all(np.mean(first[present] != other[present], axis=1) > 0.99)
  # The total is the same whatever the key: only the masks change.
  np.testing.assert_array_equal(np.asarray(unmask_jit(MaskedUpload(other), ids, present, present,
                                                      _key(12))), _plain_sum(encoded, present))


def test_jit_matches_eager():
  # The shared cohort shape: the jitted functions are compiled already, only eager costs time.
  rng, ids, present, encoded = _cohort(13)
  survived = present & (rng.random(NUM) < 0.7)
  key = _key(13)
  eager = mask_uploads(encoded, ids, present, key)
  jitted = mask_jit(encoded, ids, present, key)
  assert np.asarray(eager.masked).tobytes() == np.asarray(jitted.masked).tobytes()
  eager_total = unmask_sum(eager, ids, present, survived, key)
  jit_total = unmask_jit(eager, ids, present, survived, key)
  np.testing.assert_array_equal(np.asarray(eager_total), np.asarray(jit_total))
  np.testing.assert_array_equal(np.asarray(eager_total), _plain_sum(encoded, survived))
  values = rng.uniform(-150, 150, size=(NUM, DIM)).astype(np.float32)
  eager_sum, eager_count = secure_sum(values, ids, present, survived, key, CONFIG)
  jit_sum, jit_count = secure_jit(values, ids, present, survived, key, CONFIG)
  assert np.asarray(eager_sum).tobytes() == np.asarray(jit_sum).tobytes()
  expected_count = int((np.abs(values[survived]) > CONFIG.max_abs_value).sum())
  assert int(eager_count) == int(jit_count) == expected_count


def test_padding_slots_are_ignored_whatever_their_content():
  rng, ids, present, encoded = _cohort(14)
  survived = present & (rng.random(NUM) < 0.7)
  key = _key(14)
  uploads = mask_jit(encoded, ids, present, key)
  # Other content, and ids that collide with real clients' (and with each other).
  garbage = encoded.copy()
  garbage[~present] = rng.integers(0, 2**32, size=(int((~present).sum()), DIM), dtype=np.uint64)
  other_ids = ids.copy()
  other_ids[~present] = ids[present][0]
  changed = mask_jit(garbage, other_ids, present, key)
  assert np.asarray(uploads.masked).tobytes() == np.asarray(changed.masked).tobytes()
  # The server ignores whatever a padding row of the uploads holds.
  noisy = np.asarray(uploads.masked).copy()
  noisy[~present] = garbage[~present]
  total = unmask_jit(MaskedUpload(noisy), other_ids, present, survived | ~present, key)
  np.testing.assert_array_equal(np.asarray(total), _plain_sum(encoded, survived))
  # Same for the float path, padding rows holding NaN and huge values.
  values = rng.uniform(-1, 1, size=(NUM, DIM)).astype(np.float32)
  padded = values.copy()
  padded[~present] = np.nan
  padded[~present, ::2] = 1e30
  clean = secure_jit(values, ids, present, survived, key, CONFIG)
  dirty = secure_jit(padded, other_ids, present, survived, key, CONFIG)
  assert np.asarray(clean[0]).tobytes() == np.asarray(dirty[0]).tobytes()
  assert int(clean[1]) == int(dirty[1]) == 0
