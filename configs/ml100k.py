"""The main job: PPRSF on MovieLens-100K (fetched and cached by the loader).

Tuned on the validation period of seed 0 (never on test; README, "The paper's claims"): the
two-tower model serves recall (the best recall model on ML-100K), and the ranking model learns
listwise — each client step is a softmax over all its candidate lists at once (one step per
round), with FedAdam on the server: more local steps drift apart between clients and the
validation NDCG falls as rounds go on.
"""

from pprsf_jax.config import FederatedConfig, RankingConfig, RecallConfig, RunConfig


def get_config() -> RunConfig:
  return RunConfig(
      name="ml100k",
      recall=RecallConfig(model="two_tower"),
      ranking=RankingConfig(loss="softmax", lists_per_step=4, local_epochs=1,
                            learning_rate=0.1),
      federated=FederatedConfig(server_optimizer="adam", server_learning_rate=0.01),
  )
