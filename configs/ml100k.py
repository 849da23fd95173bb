"""The main job: PPRSF on MovieLens-100K (fetched and cached by the loader).

Tuned on the validation period of seed 0, never on test (README, "The paper's claims"):
- recall: the two-tower model (the best recall model on ML-100K), 200 candidates a client
  (50 / 100 / 300 ranked worse);
- ranking: listwise, each client step a softmax over all its candidate lists at once, one step
  a round, and FedAdam on the server — with more local steps the clients drift apart and the
  validation NDCG falls as rounds go on.
"""

from pprsf_jax.config import FederatedConfig, RankingConfig, RecallConfig, RunConfig


def get_config() -> RunConfig:
  return RunConfig(
      name="ml100k",
      recall=RecallConfig(model="two_tower", num_candidates=200),
      ranking=RankingConfig(loss="softmax", lists_per_step=4, local_epochs=1,
                            learning_rate=0.1),
      federated=FederatedConfig(server_optimizer="adam", server_learning_rate=0.01),
  )
