"""MovieLens-100K under the protocol of most federated recommendation papers (FedNCF, FedMF,
PFedRec): leave-one-out by time, each held-out item ranked among 99 sampled negatives (HR@10 =
hit@10 and NDCG@10 in the results)."""

from pprsf_jax.config import DataConfig, EvalConfig, RunConfig


def get_config() -> RunConfig:
  return RunConfig(name="ml100k-loo", data=DataConfig(split="leave_one_out"),
                   eval=EvalConfig(sampled_negatives=99))
