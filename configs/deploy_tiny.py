"""A federation small enough to deploy on one machine: 4 devices, synthetic data, 3 rounds.

Used by the Flower deployment test and the walk-through in docs/deployment.md.
"""

from pprsf_jax.config import (BaselineConfig, DataConfig, FederatedConfig, RankingConfig,
                              RecallConfig, RunConfig, SyntheticConfig)


def get_config() -> RunConfig:
  return RunConfig(
      name="deploy-tiny",
      data=DataConfig(source="synthetic",
                      synthetic=SyntheticConfig(num_users=4, num_items=40,
                                                interactions_per_user=15)),
      recall=RecallConfig(epochs=5, num_candidates=20, user_chunk=4, item_chunk=20),
      ranking=RankingConfig(top_t=10),
      federated=FederatedConfig(rounds=3, clients_per_round=3),
      baselines=BaselineConfig(central_epochs=2, local_only_epochs=2),
  )
