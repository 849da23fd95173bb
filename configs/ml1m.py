"""PPRSF on MovieLens-1M (6,040 users with the same demographics as ML-100K), with the main
job's settings (configs/ml100k.py; tuned on ML-100K, not re-tuned here).

The loader fetches ml-1m.zip from GroupLens (md5-checked) into the cache; where it cannot be
downloaded, the error says where to put the archive or its three .dat files by hand.
"""

import dataclasses
import pathlib

from pprsf_jax.cli import load_config
from pprsf_jax.config import RunConfig


def get_config() -> RunConfig:
  main_job = load_config(str(pathlib.Path(__file__).with_name("ml100k.py")))
  return dataclasses.replace(main_job, name="ml1m",
                             data=dataclasses.replace(main_job.data, source="ml-1m"))
