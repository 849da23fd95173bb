"""MovieLens-100K under the protocol of most federated recommendation papers (FedNCF, FedMF,
PFedRec): leave-one-out by time, each held-out item ranked among 99 sampled negatives (HR@10 =
hit@10 and NDCG@10 in the results). Otherwise the main job's settings (configs/ml100k.py)."""

import dataclasses
import pathlib

from pprsf_jax.cli import load_config
from pprsf_jax.config import EvalConfig, RunConfig


def get_config() -> RunConfig:
  main_job = load_config(str(pathlib.Path(__file__).with_name("ml100k.py")))
  return dataclasses.replace(
      main_job, name="ml100k-loo",
      data=dataclasses.replace(main_job.data, split="leave_one_out"),
      eval=EvalConfig(sampled_negatives=99))
