"""Real devices: the simulator's client and server functions behind a federated runtime.

`device` (client side) and `coordinator` (server side) hold no runtime code; `flower_client`
and `flower_server` are the Flower apps built on them (`pip install "pprsf-jax[flower]"`);
`wire` encodes what travels; `local_data` splits a dataset into what each process keeps.
"""
