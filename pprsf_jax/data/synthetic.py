"""A synthetic federation with planted structure: tastes that depend on private attributes.

Each user's latent taste is a sum of vectors tied to its (private) gender, age bucket and
occupation, plus noise; items have latent vectors, genres read off those vectors, and a
popularity bias. Interactions are drawn without replacement with probability proportional to
exp(taste . item + bias). So the private attributes genuinely predict what a user likes, which is
what the ranking layer is meant to exploit and what the tests can check.
"""

from __future__ import annotations

import numpy as np

from pprsf_jax.config import SyntheticConfig
from pprsf_jax.data.dataset import AGE_BUCKET_EDGES
from pprsf_jax.data.tables import GENRES, MovieLensTables

OCCUPATIONS = ("artist", "engineer", "student", "teacher", "writer")
FIRST_TIME, TIME_WINDOW = 880_000_000, 10**7  # Unix seconds: about 16 weeks from November 1997


def generate_synthetic(config: SyntheticConfig, seed: int) -> MovieLensTables:
  """Generates rating tables in the same layout the MovieLens loader returns."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5717]))
  n, m, d = config.num_users, config.num_items, config.latent_dim
  num_buckets = len(AGE_BUCKET_EDGES) + 1

  gender = rng.integers(0, 2, n).astype(np.int8)
  age = rng.integers(16, 70, n).astype(np.int32)
  bucket = np.searchsorted(AGE_BUCKET_EDGES, age, side="right")
  occupation = rng.integers(0, len(OCCUPATIONS), n).astype(np.int32)

  scale = config.attribute_strength / np.sqrt(3.0)
  taste = (
      scale * rng.normal(size=(2, d))[gender]
      + scale * rng.normal(size=(num_buckets, d))[bucket]
      + scale * rng.normal(size=(len(OCCUPATIONS), d))[occupation]
      + rng.normal(size=(n, d))
  ) / np.sqrt(d)
  item_latent = rng.normal(size=(m, d))
  popularity = rng.normal(scale=1.0, size=m)

  # Genres: each genre is a direction in taste space; an item carries the genres it points along.
  directions = rng.normal(size=(len(GENRES), d))
  genres = (item_latent @ directions.T > 1.0).astype(np.float32)
  genres[genres.sum(1) == 0, 0] = 1.0  # "unknown" for items that carry none

  # Gumbel top-n: n_u draws without replacement, proportional to exp(logit).
  logits = taste @ item_latent.T + popularity[None, :]
  perturbed = logits + rng.gumbel(size=logits.shape)
  order = np.argsort(-perturbed, axis=1)
  counts = np.clip(rng.poisson(config.interactions_per_user, n), 10, m - 1)
  taken = np.arange(m)[None, :] < counts[:, None]
  rows, cols = np.nonzero(taken)[0], order[taken]
  chosen_logit = logits[rows, cols]
  # Ratings 1-5 by quantile of the user-item affinity.
  ratings = 1 + np.searchsorted(np.quantile(chosen_logit, [0.2, 0.4, 0.6, 0.8]), chosen_logit)

  # Arrivals over time: half the users join and a fifth of the items are released during the
  # window; a user's interactions with an item fall after both. A generator of its own keeps
  # every other array as it was.
  arrival_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA441]))
  user_arrival = np.where(arrival_rng.random(n) < 0.5, 0.0, arrival_rng.uniform(0, 0.8, n))
  item_release = np.where(arrival_rng.random(m) < 0.8, 0.0, arrival_rng.uniform(0, 0.8, m))
  start = np.maximum(user_arrival[rows], item_release[cols])
  offset = rng.integers(0, TIME_WINDOW, rows.size) / TIME_WINDOW  # where in what is left
  timestamps = FIRST_TIME + ((start + (1.0 - start) * offset) * TIME_WINDOW).astype(np.int64)

  return MovieLensTables(
      name="synthetic",
      source_format="synthetic",
      user_ids=rows.astype(np.int32),
      item_ids=cols.astype(np.int32),
      ratings=ratings.astype(np.float32),
      timestamps=timestamps,
      user_raw_ids=tuple(str(u + 1) for u in range(n)),
      item_raw_ids=tuple(str(i + 1) for i in range(m)),
      age=age,
      gender=gender,
      occupation=occupation,
      occupation_vocab=OCCUPATIONS,
      zip_code=tuple(f"{rng.integers(0, 10)}{rng.integers(0, 10000):04d}" for _ in range(n)),
      item_year=rng.integers(1950, 2000, m).astype(np.int32),
      item_genres=genres,
  )
