"""Request privacy: decoys hide a client's Top-T without touching what it is finally shown."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pprsf_jax.privacy.decoys import drop_decoys, pad_request

pad = jax.jit(pad_request, static_argnames=("num_decoys",))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(4, 30), t=st.integers(1, 8), d=st.integers(1, 12), padding=st.integers(0, 5),
       seed=st.integers(0, 2**16))
def test_padded_request_keeps_the_top_t_and_adds_distinct_outside_decoys(k, t, d, padding, seed):
  t = min(t, k - 1)
  rng = np.random.default_rng(seed)
  candidates = np.concatenate([rng.permutation(1000)[:k], -np.ones(padding, int)]).astype(np.int32)
  scores = np.sort(rng.normal(size=t)).astype(np.float32)[::-1]
  top = candidates[:t]
  items, sent_scores, decoys = pad(jnp.asarray(top), jnp.asarray(scores), jnp.asarray(candidates),
                                   jax.random.key(seed), num_decoys=d)
  items, sent_scores, decoys = map(np.asarray, (items, sent_scores, decoys))
  assert items.shape == sent_scores.shape == (t + d,) == decoys.shape
  assert set(top) <= set(items.tolist())
  real_decoys = decoys[decoys >= 0]
  assert len(real_decoys) == min(d, k - t)  # as many as the client has left, and no more
  assert len(set(real_decoys.tolist())) == len(real_decoys)
  assert set(real_decoys.tolist()) <= set(candidates[t:k].tolist())
  assert np.all(np.diff(sent_scores[np.isfinite(sent_scores)]) <= 0)  # sorted, as any request
  finite = sent_scores[np.isfinite(sent_scores)]
  if t > 1:  # decoy scores sit inside the real range and repeat no real score
    decoy_scores = sent_scores[np.isin(items, real_decoys)]
    assert np.all((decoy_scores >= scores.min()) & (decoy_scores <= scores.max()))
    assert len(set(finite.tolist())) == len(finite)
  assert np.all(items[~np.isfinite(sent_scores)] == -1)


def test_dropping_decoys_keeps_the_servers_order_of_real_items():
  ranked = jnp.asarray([7, 3, 9, 1, 5, 2], jnp.int32)
  decoys = jnp.asarray([3, 5, -1], jnp.int32)
  np.testing.assert_array_equal(np.asarray(drop_decoys(ranked, decoys, 3)), [7, 9, 1])
  np.testing.assert_array_equal(np.asarray(drop_decoys(ranked, decoys, 5)), [7, 9, 1, 2, -1])


@settings(max_examples=40, deadline=None)
@given(k=st.integers(4, 30), t=st.integers(1, 8), d=st.integers(0, 30), filtered=st.data(),
       seed=st.integers(0, 2**16))
def test_which_candidates_a_request_names_ignores_the_private_filter(k, t, d, filtered, seed):
  """The client ranks only candidates outside its private history (so its Top-T may be short);
  the request still names min(T + D, K) candidates, all of them when D = K - T: its membership
  cannot tell the server which candidates the client filtered out."""
  t = min(t, k - 1)
  rng = np.random.default_rng(seed)
  candidates = rng.permutation(1000)[:k].astype(np.int32)
  hidden = np.asarray(filtered.draw(st.lists(st.booleans(), min_size=k, max_size=k)))
  ranked = candidates[~hidden][:t]  # the client's Top-T over what it did not filter out
  top = np.concatenate([ranked, -np.ones(t - ranked.size, int)]).astype(np.int32)
  scores = np.where(top >= 0, np.sort(rng.normal(size=t))[::-1], -np.inf).astype(np.float32)
  items, _, decoys = pad(jnp.asarray(top), jnp.asarray(scores), jnp.asarray(candidates),
                         jax.random.key(seed), num_decoys=d)
  named = np.asarray(items)[np.asarray(items) >= 0]
  assert named.size == len(set(named.tolist())) == min(t + d, k)
  if d == k - t:
    assert set(named.tolist()) == set(candidates.tolist())
  assert set(np.asarray(decoys)[np.asarray(decoys) >= 0].tolist()) == set(named.tolist()) - set(
      ranked.tolist())
