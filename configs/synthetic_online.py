"""A seconds-long online loop (`pprsf online`) on planted synthetic data with arrivals: for
tests and for trying changes quickly."""

from pprsf_jax.config import (BaselineConfig, DataConfig, FederatedConfig, OnlineConfig,
                              RankingConfig, RecallConfig, RunConfig, SyntheticConfig)


def get_config() -> RunConfig:
  return RunConfig(
      name="synthetic-online",
      # Two cross-fitting folds: three recall models a day instead of five.
      data=DataConfig(source="synthetic", label_folds=2,
                      synthetic=SyntheticConfig(num_users=60, num_items=50,
                                                interactions_per_user=15)),
      recall=RecallConfig(epochs=2, num_candidates=24, user_chunk=32, item_chunk=16),
      ranking=RankingConfig(top_t=12),
      federated=FederatedConfig(clients_per_round=16),
      baselines=BaselineConfig(central_epochs=1, local_only_epochs=1),
      online=OnlineConfig(days=3, history_share=0.4, rounds_per_day=2),
  )
