"""Data: the MovieLens loader, the synthetic generator, and the federated split."""
