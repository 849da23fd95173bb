"""Service layer (client side): serving final lists and logging interactions."""

from pprsf_jax.service.feedback import ServiceLog, ServiceStats, serve_period

__all__ = ["ServiceLog", "ServiceStats", "serve_period"]
