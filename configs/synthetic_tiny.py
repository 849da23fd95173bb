"""A seconds-long run on planted synthetic data: for tests and for trying changes quickly."""

from pprsf_jax.config import (BaselineConfig, DataConfig, FederatedConfig, RecallConfig,
                              RunConfig, SyntheticConfig)


def get_config() -> RunConfig:
  return RunConfig(
      name="synthetic-tiny",
      data=DataConfig(source="synthetic",
                      synthetic=SyntheticConfig(num_users=120, num_items=80,
                                                interactions_per_user=20)),
      recall=RecallConfig(epochs=5, num_candidates=40, user_chunk=64, item_chunk=32),
      federated=FederatedConfig(rounds=5, clients_per_round=32),
      # Recall-only baselines without the two-tower: seconds matter here (tests run this often).
      baselines=BaselineConfig(central_epochs=2, local_only_epochs=2,
                               recall_models=("popularity", "item_knn")),
  )
