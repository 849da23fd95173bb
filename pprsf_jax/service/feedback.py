"""The service layer (client side): show the final list, log what the user did.

The simulator replays a held-out period: every interaction of the period happens; those that
were on the shown list count as clicks. Public interactions are logged to the server, private
ones stay in the client's store; both feed the next serving round.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pprsf_jax.types import Interactions, Period


class ServiceStats(NamedTuple):
  shown: int  # recommendations shown (non-empty slots)
  clicks: int  # shown items the user interacted with in the period
  click_rate: float  # clicks / shown
  logged_public: int  # interactions sent to the server
  kept_private: int  # interactions kept in client stores


class ServiceLog(NamedTuple):
  public: Interactions  # what the server receives
  private: Interactions  # what stays on the clients
  stats: ServiceStats


def serve_period(final_lists: np.ndarray, period: Period, num_items: int) -> ServiceLog:
  """Replays `period` against the lists shown to each user ([U, k], -1 = empty slot)."""
  interactions = period.interactions
  shown = final_lists >= 0
  users = np.repeat(np.arange(final_lists.shape[0]), final_lists.shape[1]).reshape(final_lists.shape)
  clicked = interactions.contains(users, np.where(shown, final_lists, 0), num_items)
  clicks = int(np.sum(clicked & shown))
  public = Interactions(interactions.user[~period.private], interactions.item[~period.private])
  private = Interactions(interactions.user[period.private], interactions.item[period.private])
  stats = ServiceStats(
      shown=int(shown.sum()),
      clicks=clicks,
      click_rate=clicks / max(int(shown.sum()), 1),
      logged_public=public.size,
      kept_private=private.size,
  )
  return ServiceLog(public=public, private=private, stats=stats)
