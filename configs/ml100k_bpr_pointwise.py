"""The main job as it stood before listwise ranking training: BPR serves recall, the ranking
model learns pointwise (binary cross-entropy over candidate rows, 2 local epochs of SGD at 0.03)
and the server steps plain SGD at 3 on the mean update.

The README's aggregation, Byzantine and privacy figures were measured with these settings;
this preset reproduces them.
"""

from pprsf_jax.config import RunConfig


def get_config() -> RunConfig:
  # The library defaults are exactly those settings.
  return RunConfig(name="ml100k-bpr-pointwise")
