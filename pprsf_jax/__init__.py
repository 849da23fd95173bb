"""pprsf-jax: privacy-preserving federated recommendation as a JAX functional core.

Layers (one package each): `recall` (server), `ranking` (client), `aggregation` (server),
`rerank` (server), `service` (client); `data` and `metrics` serve them; `pipeline` wires them;
`cli` parses. The privacy boundary is in `types`.
"""

__version__ = "0.1.0"
