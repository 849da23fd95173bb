"""Privacy you can measure: DP (central and local) with dp-accounting, and its plan for a run.

Client side: `local_dp` (noise before upload). Server side: `central_dp` (DP-FedAvg reducer).
Both act on exactly what a client uploads; `accounting` states the mechanism to dp-accounting.
"""

from pprsf_jax.privacy.accounting import (RoundMechanism, calibrate_noise_multiplier, epsilon,
                                          epsilon_curve, round_event, update_noise_multiplier)
from pprsf_jax.privacy.central_dp import (AdaptiveClipping, GaussianMeanState, current_clip_norm,
                                          gaussian_mean)
from pprsf_jax.privacy.local_dp import gaussian_privatizer
from pprsf_jax.privacy.plan import PrivacyPlan, plan_privacy, privacy_report, private_algorithm
