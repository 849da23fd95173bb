"""Privacy you can measure: DP with dp-accounting, secure aggregation, and an audit by attack.

Client side: `local_dp` (noise before upload), masking in `secure_aggregation`. Server side:
`central_dp` (DP-FedAvg reducer), unmasking. Both act on exactly what a client uploads;
`accounting` states the mechanism to dp-accounting, `plan` turns a config into all of it,
`curious_server` + `audit` attack what the server received, `tradeoff` sweeps epsilon.
"""

from pprsf_jax.privacy.accounting import (RoundMechanism, calibrate_noise_multiplier, epsilon,
                                          epsilon_curve, round_event, update_noise_multiplier)
from pprsf_jax.privacy.central_dp import (AdaptiveClipping, GaussianMeanState, current_clip_norm,
                                          gaussian_mean)
from pprsf_jax.privacy.local_dp import gaussian_privatizer
from pprsf_jax.privacy.plan import PrivacyPlan, plan_privacy, privacy_report, private_algorithm
