"""Training on Ray Train: expert-parallel for planned routers, data-parallel for token-routed ones.

``gemlab train`` composes the config (:mod:`.config`), prepares data, affinity and plan on the driver
(:mod:`.prepare`), launches a ``TorchTrainer`` (:mod:`.launch`) whose workers run :mod:`.loop`, and writes
the run's outputs (:mod:`.outputs`).
"""
