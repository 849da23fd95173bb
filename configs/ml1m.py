"""PPRSF on MovieLens-1M (6,040 users with the same demographics as ML-100K).

The loader fetches ml-1m.zip from GroupLens (md5-checked) into the cache; where it cannot be
downloaded, the error says where to put the archive or its three .dat files by hand.
"""

from pprsf_jax.config import DataConfig, RunConfig


def get_config() -> RunConfig:
  return RunConfig(name="ml1m", data=DataConfig(source="ml-1m"))
